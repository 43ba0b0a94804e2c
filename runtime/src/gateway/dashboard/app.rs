//! An app's overview: its versions, domains, trigger backlog, and the
//! routes and triggers of the version it serves.
//!
//! What a version declares is read from its bundle's manifest once and kept
//! (a version never changes), so the apps list can show every app's route
//! count without decoding 50 bundles per page view.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Path, State};
use maud::html;
use picloud_actors::app::manifest::TriggerKind;
use picloud_actors::app::{Bundle, MANIFEST_FILE, Manifest};
use picloud_lua_sdk::Code;
use picloud_storage::AppRecord;
use serde::Deserialize;

use super::layout;
use super::{BASE, PageQuery, PageResult, Session, may};
use crate::gateway::admin::routes::Need;
use crate::gateway::{ApiError, Gateway};

/// Most versions whose summaries are kept (past it, the cache starts over).
pub const SUMMARIES_MAX: usize = 1024;
/// Most routes or triggers one overview lists (the rest are counted).
pub const ROWS_SHOWN_MAX: usize = 500;

/// What one deployed version declares, as the dashboard shows it.
#[derive(Debug, Default)]
pub struct Summary {
    /// When the version was deployed.
    pub deployed_ms: Option<u64>,
    /// (method, path, script).
    pub routes: Vec<(String, String, String)>,
    /// (kind, source, script).
    pub triggers: Vec<(String, String, String)>,
    /// The manifest's `domains`.
    pub domains: Vec<String>,
    /// Why the manifest could not be read, if it could not.
    pub problem: Option<String>,
}

/// A trigger's kind and what it watches, as one line each.
fn trigger_row(kind: &TriggerKind) -> (String, String) {
    let on = |flags: &[(&str, bool)]| {
        flags
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        TriggerKind::Kv {
            pattern,
            on_set,
            on_delete,
        } => (
            "kv".into(),
            format!(
                "{pattern} ({})",
                on(&[("set", *on_set), ("delete", *on_delete)])
            ),
        ),
        TriggerKind::Cron {
            schedule, timezone, ..
        } => ("cron".into(), format!("{schedule} ({timezone})")),
        TriggerKind::DeadLetter => ("dead_letter".into(), "this app's dead letters".into()),
        TriggerKind::Docs {
            collection,
            on_insert,
            on_update,
            on_delete,
        } => (
            "docs".into(),
            format!(
                "{collection} ({})",
                on(&[
                    ("insert", *on_insert),
                    ("update", *on_update),
                    ("delete", *on_delete)
                ])
            ),
        ),
        TriggerKind::Pubsub { pattern } => ("pubsub".into(), pattern.clone()),
        TriggerKind::Files {
            pattern,
            on_put,
            on_delete,
        } => (
            "files".into(),
            format!(
                "{pattern} ({})",
                on(&[("put", *on_put), ("delete", *on_delete)])
            ),
        ),
        TriggerKind::Email { pattern } => ("email".into(), pattern.clone()),
    }
}

fn read_summary(gateway: &Gateway, app: &str, version: u64) -> Result<Summary, ApiError> {
    let reader = gateway.node.reader();
    let deployed_ms = reader
        .deploys(app)?
        .iter()
        .find(|deploy| deploy.version == version)
        .map(|deploy| deploy.created_ms);
    let mut summary = Summary {
        deployed_ms,
        ..Summary::default()
    };
    let Some(bytes) = reader.bundle(app, version)? else {
        summary.problem = Some(format!("version {version} has no stored bundle"));
        return Ok(summary);
    };
    let manifest = Bundle::decode(&bytes)
        .map_err(|error| error.to_string())
        .and_then(|bundle| {
            let text = bundle
                .files
                .get(MANIFEST_FILE)
                .ok_or_else(|| format!("the bundle has no {MANIFEST_FILE}"))?;
            Manifest::parse(text).map_err(|error| error.to_string())
        });
    match manifest {
        Ok(manifest) => {
            summary.routes = manifest
                .routes
                .into_iter()
                .map(|route| (route.method, route.path, route.script))
                .collect();
            summary.triggers = manifest
                .triggers
                .iter()
                .map(|trigger| {
                    let (kind, source) = trigger_row(&trigger.kind);
                    (kind, source, trigger.script.clone())
                })
                .collect();
            summary.domains = manifest.domains;
        }
        Err(problem) => summary.problem = Some(problem),
    }
    Ok(summary)
}

/// The summary of `record`'s active version (`None` before the first
/// deploy), read once per version. Keyed by the app's creation time too: a
/// deleted app's name may be created again and start at version 1.
pub fn summary(gateway: &Gateway, record: &AppRecord) -> Result<Option<Arc<Summary>>, ApiError> {
    type Cache = Mutex<HashMap<(String, u64, u64), Arc<Summary>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let Some(version) = record.active_version else {
        return Ok(None);
    };
    let key = (record.name.clone(), record.created_ms, version);
    let cache = CACHE.get_or_init(Cache::default);
    if let Some(found) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Some(found.clone()));
    }
    let summary = Arc::new(read_summary(gateway, &record.name, version)?);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= SUMMARIES_MAX {
        cache.clear();
    }
    cache.insert(key, summary.clone());
    Ok(Some(summary))
}

/// The app's record, or 404 `app_not_found`.
pub fn record(gateway: &Gateway, app: &str) -> Result<AppRecord, ApiError> {
    gateway
        .node
        .reader()
        .app(app)?
        .ok_or_else(|| ApiError::new(Code::AppNotFound, format!("app {app} not found")))
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    #[serde(default)]
    flash: Option<String>,
}

/// `GET /apps/{app}`: needs read.
pub async fn overview(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query): PageQuery<OverviewQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    let record = record(&gateway, &app)?;
    let summary = summary(&gateway, &record)?;
    let serving = gateway.apps.domains().declared(&app);
    let backlog = gateway.node.reader().outbox_len(&app)?;
    let flash = query.flash.as_deref().and_then(layout::flash_text);
    let body = html! {
        h1 { (app) }
        (layout::app_nav(&app, "Overview"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        dl.facts {
            dt { "Active version" }
            dd #active-version { @match record.active_version { Some(v) => (v), None => "none (not deployed yet)" } }
            dt { "Latest version" } dd { (record.latest_version) }
            dt { "Created" } dd { (layout::time(record.created_ms)) }
            @if let Some(ms) = summary.as_ref().and_then(|s| s.deployed_ms) {
                dt { "Deployed" } dd { (layout::time(ms)) }
            }
            dt { "Domains" }
            dd #domains {
                @if serving.is_empty() { span.muted { "none" } }
                @for domain in &serving { code { (domain) } " " }
            }
            dt { "Trigger backlog" } dd { (backlog) " pending on this node" }
        }
        @if let Some(summary) = &summary {
            @if let Some(problem) = &summary.problem {
                p.error role="alert" { "The active version's manifest could not be read: " (problem) }
            }
            section aria-labelledby="routes" {
                h2 #routes { "Routes (" (summary.routes.len()) ")" }
                table #routes-table {
                    thead { tr { th scope="col" { "Method" } th scope="col" { "Path" } th scope="col" { "Script" } } }
                    tbody {
                        @for (method, path, script) in summary.routes.iter().take(ROWS_SHOWN_MAX) {
                            tr { td.mono { (method) } td.mono { (path) } td.mono { (script) } }
                        }
                    }
                }
                @if summary.routes.len() > ROWS_SHOWN_MAX {
                    p.muted { "and " (summary.routes.len() - ROWS_SHOWN_MAX) " more" }
                }
            }
            section aria-labelledby="triggers" {
                h2 #triggers { "Triggers (" (summary.triggers.len()) ")" }
                @if summary.triggers.is_empty() {
                    p.muted { "No triggers." }
                } @else {
                    table #triggers-table {
                        thead { tr { th scope="col" { "Kind" } th scope="col" { "Source" } th scope="col" { "Script" } } }
                        tbody {
                            @for (kind, source, script) in summary.triggers.iter().take(ROWS_SHOWN_MAX) {
                                tr { td.mono { (kind) } td.mono { (source) } td.mono { (script) } }
                            }
                        }
                    }
                }
            }
        } @else {
            p.muted { "Deploy it with " code { "picloud deploy DIR" } "." }
        }
        @if may(&session.caller, Need::Owner, &app) {
            section aria-labelledby="danger" {
                h2 #danger { "Danger zone" }
                a.danger href={ (BASE) "/apps/" (app) "/delete" } { "Delete this app…" }
            }
        }
    };
    Ok(layout::ok(&app, &session, body))
}
