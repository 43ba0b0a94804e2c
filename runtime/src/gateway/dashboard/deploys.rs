//! An app's deploy history: its kept versions (paged, newest first), what
//! changed in a version against the one before it (or any other kept
//! version), and rolling back to a version (the admin API's rollback).
//!
//! Only the versions the cluster keeps (`deploy_versions_kept`) have a
//! bundle to show; who deployed a version is not recorded, so the history
//! does not say.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use picloud_actors::app::Bundle;
use picloud_lua_sdk::Code;
use picloud_storage::AppRecord;
use serde::Deserialize;

use super::app::record;
use super::diff::{self, FileChange, Line};
use super::layout;
use super::session::Empty;
use super::{BASE, PageQuery, PageResult, Posted, Session, may};
use crate::gateway::admin::routes::Need;
use crate::gateway::{ApiError, Gateway, admin};

/// Most versions one page of the history shows.
pub const VERSIONS_PAGE_MAX: usize = 25;
/// Unchanged lines shown around each change of a diff.
pub const DIFF_CONTEXT_LINES: usize = 3;
/// Most diff lines one page shows (the rest are counted).
pub const DIFF_LINES_SHOWN_MAX: usize = 5_000;
/// Most versions whose file counts are kept (past it, the cache starts over).
pub const FILE_COUNTS_MAX: usize = 4_096;

#[derive(Deserialize)]
pub struct HistoryQuery {
    /// Show the versions older than this one (the previous page's last).
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    flash: Option<String>,
}

/// A kept version's bundle, or 404 `version_not_found`.
fn bundle(gateway: &Gateway, app: &str, version: u64) -> Result<Bundle, ApiError> {
    let missing = || {
        ApiError::new(
            Code::VersionNotFound,
            format!("app {app} keeps no version {version}"),
        )
    };
    let bytes = gateway
        .node
        .reader()
        .bundle(app, version)?
        .ok_or_else(missing)?;
    Bundle::decode(&bytes).map_err(|error| {
        ApiError::internal(format!(
            "version {version} of {app} cannot be decoded: {error}"
        ))
    })
}

/// How many files a version holds (scripts, manifest, static files): the
/// one figure of the history that needs the bundle, so it is decoded once
/// per version and kept (a version never changes; keyed by the app's
/// creation time too, as `app::summary`). `None` when it cannot be read.
fn file_count(gateway: &Gateway, record: &AppRecord, version: u64) -> Option<usize> {
    type Cache = Mutex<HashMap<(String, u64, u64), usize>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (record.name.clone(), record.created_ms, version);
    let cache = CACHE.get_or_init(Cache::default);
    if let Some(count) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Some(*count);
    }
    let bundle = bundle(gateway, &record.name, version).ok()?;
    let count = bundle.files.len() + bundle.public.len();
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= FILE_COUNTS_MAX {
        cache.clear();
    }
    cache.insert(key, count);
    Some(count)
}

/// `GET /apps/{app}/deploys`: needs read.
pub async fn history(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query): PageQuery<HistoryQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    let record = record(&gateway, &app)?;
    let mut deploys = gateway.node.reader().deploys(&app)?;
    deploys.sort_by_key(|deploy| std::cmp::Reverse(deploy.version));
    let before = query.before.unwrap_or(u64::MAX);
    let page: Vec<_> = deploys
        .iter()
        .filter(|deploy| deploy.version < before)
        .take(VERSIONS_PAGE_MAX + 1)
        .collect();
    let more = page.len() > VERSIONS_PAGE_MAX;
    let page = &page[..page.len().min(VERSIONS_PAGE_MAX)];
    let mut rows = Vec::with_capacity(page.len());
    for deploy in page {
        let files = file_count(&gateway, &record, deploy.version);
        let previous = deploys
            .iter()
            .map(|other| other.version)
            .find(|version| *version < deploy.version);
        rows.push((deploy, files, previous));
    }
    let writer = may(&session.caller, Need::Write, &app);
    let flash = query.flash.as_deref().and_then(layout::flash_text);
    let body = html! {
        h1 { (app) }
        (layout::app_nav(&app, "History"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        h2 { "Deploy history" }
        @if rows.is_empty() {
            p.muted { "No versions" @if query.before.is_some() { " before version " (before) } "." }
        } @else {
            table #versions {
                caption.muted { "Kept versions, newest first (the cluster keeps the last few; who deployed is not recorded)" }
                thead {
                    tr {
                        th scope="col" { "Version" } th scope="col" { "Deployed" } th scope="col" { "Files" }
                        th scope="col" { "Bundle" } th scope="col" { "Active" }
                        th scope="col" { span.visually-hidden { "Actions" } }
                    }
                }
                tbody {
                    @for (deploy, files, previous) in &rows {
                        @let active = record.active_version == Some(deploy.version);
                        tr data-version=(deploy.version) data-active=(active) {
                            th scope="row" { (deploy.version) }
                            td { (layout::time(deploy.created_ms)) }
                            td { @match files { Some(n) => (n), None => span.muted { "—" } } }
                            td { (deploy.bundle_bytes) " bytes" }
                            td { @if active { strong.up { "active" } } }
                            td.actions {
                                a href={ (BASE) "/apps/" (app) "/deploys/" (deploy.version) "/diff" }
                                    aria-label={ "Changes in version " (deploy.version) } {
                                    @if previous.is_some() { "Changes" } @else { "Files" }
                                }
                                @if writer && !active {
                                    (layout::form_post(&format!("{BASE}/apps/{app}/deploys/{}/rollback", deploy.version), &session, html! {
                                        button.link type="submit" aria-label={ "Roll back to version " (deploy.version) } { "Roll back to this" }
                                    }))
                                }
                            }
                        }
                    }
                }
            }
        }
        @if more {
            @if let Some((last, ..)) = rows.last() {
                p.pager { a href={ (BASE) "/apps/" (app) "/deploys?before=" (last.version) } rel="next" { "Older versions" } }
            }
        }
    };
    Ok(layout::ok(&format!("{app} history"), &session, body))
}

#[derive(Deserialize)]
pub struct DiffQuery {
    /// The version to compare against; the one before by default.
    #[serde(default)]
    against: Option<u64>,
}

/// A bundle's files as the diff sees them: scripts and the manifest as
/// text, static files (`public/…`) as their base64 under that prefix.
fn files_of(bundle: Bundle) -> BTreeMap<String, String> {
    let mut files = bundle.files;
    for (path, base64) in bundle.public {
        files.insert(format!("public/{path}"), base64);
    }
    files
}

/// The lines of a diff worth showing: every change with
/// [`DIFF_CONTEXT_LINES`] around it; `Err(n)` stands for a run of `n`
/// hidden unchanged lines.
fn hunks<'a>(lines: &'a [Line<'a>]) -> Vec<Result<&'a Line<'a>, usize>> {
    let changed: Vec<usize> = (lines.iter().enumerate())
        .filter(|(_, line)| !matches!(line, Line::Same(_)))
        .map(|(index, _)| index)
        .collect();
    let near = |index: usize| {
        let at = changed.partition_point(|&c| c < index.saturating_sub(DIFF_CONTEXT_LINES));
        changed
            .get(at)
            .is_some_and(|&c| c <= index + DIFF_CONTEXT_LINES)
    };
    let mut out = Vec::new();
    let mut hidden = 0;
    for (index, line) in lines.iter().enumerate() {
        if near(index) {
            if hidden > 0 {
                out.push(Err(hidden));
                hidden = 0;
            }
            out.push(Ok(line));
        } else {
            hidden += 1;
        }
    }
    if hidden > 0 {
        out.push(Err(hidden));
    }
    out
}

fn change_markup(path: &str, change: &FileChange<'_>, shown: &mut usize) -> Markup {
    let (kind, summary) = match change {
        FileChange::Added { bytes } => ("added", format!("added ({bytes} bytes)")),
        FileChange::Removed { bytes } => ("removed", format!("removed ({bytes} bytes)")),
        FileChange::Changed { lines } => {
            let added = lines.iter().filter(|l| matches!(l, Line::Added(_))).count();
            let removed = lines
                .iter()
                .filter(|l| matches!(l, Line::Removed(_)))
                .count();
            ("changed", format!("changed (+{added} −{removed} lines)"))
        }
        FileChange::ChangedBytes {
            old_bytes,
            new_bytes,
        } => (
            "changed",
            format!("changed ({old_bytes} bytes → {new_bytes} bytes)"),
        ),
    };
    // The lines this file may still show of the page's allowance.
    let entries: Vec<_> = match change {
        FileChange::Changed { lines } => hunks(lines)
            .into_iter()
            .take(DIFF_LINES_SHOWN_MAX.saturating_sub(*shown))
            .collect(),
        _ => Vec::new(),
    };
    *shown += entries.len();
    let cut = matches!(change, FileChange::Changed { .. }) && entries.is_empty();
    html! {
        section.file data-file=(path) data-change=(kind) {
            h3 { code { (path) } " " span.muted { (summary) } }
            @if cut {
                p.muted { "Not shown: this page already shows " (DIFF_LINES_SHOWN_MAX) " lines." }
            }
            @if !entries.is_empty() {
                pre.diff {
                    @for entry in &entries {
                        @match entry {
                            Ok(Line::Same(text)) => { span.same { "  " (text) } "\n" }
                            Ok(Line::Added(text)) => { ins { "+ " (text) } "\n" }
                            Ok(Line::Removed(text)) => { del { "- " (text) } "\n" }
                            Err(hidden) => { span.muted { "  … " (hidden) " unchanged lines" } "\n" }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /apps/{app}/deploys/{version}/diff`: needs read.
pub async fn changes(
    State(gateway): State<Gateway>,
    session: Session,
    Path((app, version)): Path<(String, String)>,
    PageQuery(query): PageQuery<DiffQuery>,
) -> PageResult {
    let version = version_number(&version)?;
    session.caller.require_read(&app)?;
    let record = record(&gateway, &app)?;
    let mut kept: Vec<u64> = gateway
        .node
        .reader()
        .deploys(&app)?
        .iter()
        .map(|deploy| deploy.version)
        .collect();
    kept.sort_unstable_by_key(|version| std::cmp::Reverse(*version));
    let new = files_of(bundle(&gateway, &app, version)?);
    let against = query
        .against
        .or_else(|| kept.iter().copied().find(|v| *v < version));
    let old = match against {
        Some(against) => files_of(bundle(&gateway, &app, against)?),
        None => BTreeMap::new(),
    };
    let changes = diff::files(&old, &new);
    let writer = may(&session.caller, Need::Write, &app);
    let active = record.active_version == Some(version);
    let mut shown = 0;
    let body = html! {
        h1 { (app) }
        (layout::app_nav(&app, "History"))
        h2 #diff-title {
            "Version " (version)
            @match against { Some(v) => { " against version " (v) }, None => { " (no earlier version kept: every file is new)" } }
        }
        form.inline method="get" action={ (BASE) "/apps/" (app) "/deploys/" (version) "/diff" } {
            label for="against" { "Compare with version" }
            select #against name="against" {
                @for v in kept.iter().filter(|v| **v != version) {
                    option value=(v) selected[against == Some(*v)] { (v) }
                }
            }
            button type="submit" { "Compare" }
        }
        @if writer && !active {
            (layout::form_post(&format!("{BASE}/apps/{app}/deploys/{version}/rollback"), &session, html! {
                button type="submit" { "Roll back to version " (version) }
            }))
        }
        @if changes.is_empty() {
            p.muted #no-changes { "No file differs." }
        } @else {
            p #change-summary { (changes.len()) @if changes.len() == 1 { " file differs." } @else { " files differ." } }
            @for (path, change) in &changes {
                (change_markup(path, change, &mut shown))
            }
        }
        p { a href={ (BASE) "/apps/" (app) "/deploys" } { "Back to the history" } }
    };
    Ok(layout::ok(
        &format!("{app} version {version}"),
        &session,
        body,
    ))
}

fn version_number(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            Code::InvalidField,
            format!("version: expected a version number, got {text:?}"),
        )
    })
}

/// `POST /apps/{app}/deploys/{version}/rollback`: needs write (checked by
/// the admin API's own rollback).
pub async fn rollback(
    State(gateway): State<Gateway>,
    Path((app, version)): Path<(String, String)>,
    posted: Posted<Empty>,
) -> PageResult {
    let version = version_number(&version)?;
    admin::deploys::rollback_to(&gateway, &posted.session.caller, &app, Some(version)).await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{app}/deploys?flash=rolled-back")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_keep_context_around_changes() {
        let mut lines: Vec<Line<'_>> = (0..20).map(|_| Line::Same("x")).collect();
        lines[10] = Line::Added("new");
        let shown = hunks(&lines);
        let kinds: Vec<String> = shown
            .iter()
            .map(|entry| match entry {
                Ok(Line::Same(_)) => "=".to_string(),
                Ok(_) => "+".to_string(),
                Err(n) => format!("…{n}"),
            })
            .collect();
        assert_eq!(kinds, ["…7", "=", "=", "=", "+", "=", "=", "=", "…6"]);
        let none: Vec<Line<'_>> = vec![Line::Same("a")];
        assert_eq!(hunks(&none).len(), 1, "only hidden lines");
    }
}
