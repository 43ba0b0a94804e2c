//! An app's files browser: files by prefix ([`FILES_PAGE_MAX`] a page,
//! the service's cursor), download (a dashboard URL the session cookie
//! authenticates, answered by the admin API's own `gateway::files::download`,
//! as an attachment), upload (a `multipart/form-data` form into the same
//! `gateway::files::upload`), delete with a confirmation. Reads need read,
//! changes write.
//!
//! An upload through the dashboard is at most `http_body_bytes_max`
//! (1 MiB by default): the dashboard's bodies are received whole by the
//! admission layer, as the admin API's are, so a form is never larger
//! than that; `file_bytes_max` and the app's quota apply on top. Bigger
//! files go through `picloud files put` or a signed PUT URL, which stream.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use picloud_lua_sdk::Code;
use serde::Deserialize;

use super::kv::query;
use super::layout;
use super::session::{CSRF_FIELD, csrf_failed, csrf_matches};
use super::{BASE, PageQuery, PageResult, Posted, PrefixPage, Session, may};
use crate::gateway::admin::checks::require_app;
use crate::gateway::admin::routes::Need;
use crate::gateway::files::{download as download_file, upload as upload_file};
use crate::gateway::{ApiError, Gateway, read_body};

/// Most files one page lists.
pub const FILES_PAGE_MAX: usize = 50;
/// Most parts an upload form may have (csrf, path, file).
const FORM_PARTS_MAX: usize = 8;
/// Longest header block of one form part, in bytes.
const PART_HEADERS_BYTES_MAX: usize = 4 * 1024;

/// `GET /apps/{app}/files` (read).
pub async fn list(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(list): PageQuery<PrefixPage>,
) -> PageResult {
    session.caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let prefix = list.prefix.unwrap_or_default();
    let page = gateway
        .files
        .service
        .list(
            &app,
            &prefix,
            FILES_PAGE_MAX,
            list.cursor.clone().filter(|cursor| !cursor.is_empty()),
        )
        .await?;
    let write = may(&session.caller, Need::Write, &app);
    let flash = list.flash.as_deref().and_then(layout::flash_text);
    let here = format!("{BASE}/apps/{app}/files");
    let body = html! {
        h1 { (app) ": files" }
        (layout::app_nav(&app, "Files"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        form method="get" action=(here) role="search" {
            label for="files-prefix" { "Path prefix" }
            input #files-prefix type="text" name="prefix" value=(prefix) autocomplete="off";
            button type="submit" { "Filter" }
        }
        @if page.files.is_empty() {
            p.muted { "No files" @if !prefix.is_empty() { " under " code { (prefix) } } "." }
        } @else {
            table #files {
                thead { tr {
                    th scope="col" { "Path" } th scope="col" { "Size (bytes)" } th scope="col" { "Type" }
                    th scope="col" { "Updated" } th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody {
                    @for file in &page.files {
                        tr data-path=(file.path) {
                            th scope="row" { a.mono href={ (here) "/download" (query(&[("path", &file.path)])) } download aria-label={ "Download " (file.path) } { (file.path) } }
                            td { (file.size) }
                            td.mono { (file.content_type) }
                            td { (layout::time(file.updated_ms)) }
                            td { @if write { a href={ (here) "/delete" (query(&[("path", &file.path)])) } aria-label={ "Delete file " (file.path) } { "Delete" } } }
                        }
                    }
                }
            }
        }
        p.pager {
            @if list.cursor.is_some() { a href={ (here) (query(&[("prefix", &prefix)])) } { "First page" } }
            @if let Some(cursor) = &page.cursor {
                a href={ (here) (query(&[("prefix", &prefix), ("cursor", cursor)])) } rel="next" { "Next page" }
            }
        }
        @if write {
            section aria-labelledby="files-upload" {
                h2 #files-upload { "Upload a file" }
                p.muted { "At most " (gateway.config.http_body_bytes_max) " bytes here (http_body_bytes_max); use " code { "picloud files put" } " for bigger files." }
                form method="post" action={ (here) "/upload" } enctype="multipart/form-data" {
                    input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                    label for="upload-path" { "Path (empty: the file's name)" }
                    input #upload-path type="text" name="path" autocomplete="off";
                    label for="upload-file" { "File" }
                    input #upload-file type="file" name="file" required;
                    button type="submit" { "Upload" }
                }
            }
        }
    };
    Ok(layout::ok(&format!("{app} files"), &session, body))
}

#[derive(Deserialize)]
pub struct PathQuery {
    #[serde(default)]
    path: String,
}

/// `GET /apps/{app}/files/download?path=`: the file as an attachment
/// (read). It is never rendered as a page of the dashboard's origin: an
/// uploaded HTML file must not run with the session.
pub async fn download(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    headers: HeaderMap,
    PageQuery(file): PageQuery<PathQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let mut response = download_file(&gateway, &app, &file.path, &headers, false).await?;
    let name = file.path.rsplit('/').next().unwrap_or("file").replace(
        |c: char| !c.is_ascii_alphanumeric() && !matches!(c, '.' | '-' | '_'),
        "_",
    );
    let headers = response.headers_mut();
    for (header, value) in [
        (
            CONTENT_DISPOSITION.as_str(),
            format!("attachment; filename=\"{name}\""),
        ),
        (
            "content-security-policy",
            "sandbox; default-src 'none'".to_string(),
        ),
        ("x-content-type-options", "nosniff".to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header, value);
        }
    }
    Ok(response)
}

/// One part of a `multipart/form-data` body.
struct Part<'a> {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: &'a [u8],
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

/// A `name="value"` parameter of a `Content-Disposition` header.
fn parameter(header: &str, name: &str) -> Option<String> {
    header.split(';').map(str::trim).find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim().trim_matches('"').to_string())
    })
}

fn bad_form(message: &str) -> ApiError {
    ApiError::new(Code::BadBody, format!("upload form: {message}"))
}

/// Splits a multipart body on its boundary (RFC 7578); what a browser
/// sends, no more: each part's `Content-Disposition` and `Content-Type`.
fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, ApiError> {
    let delimiter = format!("--{boundary}");
    let mut at = find(body, delimiter.as_bytes(), 0).ok_or_else(|| bad_form("no boundary"))?;
    let mut parts = Vec::new();
    loop {
        at += delimiter.len();
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(parts);
        }
        if parts.len() == FORM_PARTS_MAX {
            return Err(bad_form("too many parts"));
        }
        at = find(body, b"\r\n", at).ok_or_else(|| bad_form("truncated"))? + 2;
        let headers_end = find(body, b"\r\n\r\n", at).ok_or_else(|| bad_form("truncated"))?;
        if headers_end - at > PART_HEADERS_BYTES_MAX {
            return Err(bad_form("part headers too long"));
        }
        let headers = String::from_utf8_lossy(&body[at..headers_end]).into_owned();
        let data_start = headers_end + 4;
        let next = find(body, format!("\r\n{delimiter}").as_bytes(), data_start)
            .ok_or_else(|| bad_form("truncated"))?;
        let (mut name, mut filename, mut content_type) = (None, None, None);
        for line in headers.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                name = parameter(value, "name");
                filename = parameter(value, "filename");
            } else if key.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(value.trim().to_string());
            }
        }
        parts.push(Part {
            name: name.ok_or_else(|| bad_form("a part has no name"))?,
            filename,
            content_type,
            data: &body[data_start..next],
        });
        at = next + 2;
    }
}

/// `POST /apps/{app}/files/upload`: a `multipart/form-data` form with
/// `csrf`, `path` and `file` (write). The CSRF field is checked before
/// anything else is looked at.
pub async fn upload(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> PageResult {
    let bytes = read_body(body, gateway.config.http_body_bytes_max).await?;
    let boundary = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .filter(|value| value.starts_with("multipart/form-data"))
        .and_then(|value| parameter(value, "boundary"))
        .ok_or_else(|| bad_form("expected multipart/form-data with a boundary"))?;
    let parts = parts(&bytes, &boundary)?;
    let field = |name: &str| parts.iter().find(|part| part.name == name);
    let csrf = field(CSRF_FIELD)
        .map(|part| String::from_utf8_lossy(part.data).into_owned())
        .unwrap_or_default();
    if !csrf_matches(&session.csrf, &csrf) {
        return Err(csrf_failed());
    }
    session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let file = field("file").ok_or_else(|| bad_form("no file part"))?;
    let typed = field("path")
        .map(|part| String::from_utf8_lossy(part.data).trim().to_string())
        .unwrap_or_default();
    let path = if typed.is_empty() {
        file.filename.clone().unwrap_or_default()
    } else {
        typed
    };
    let content_type = file.content_type.clone();
    let mut announced = HeaderMap::new();
    announced.insert(
        axum::http::header::CONTENT_LENGTH,
        HeaderValue::from(file.data.len()),
    );
    let data = Body::from(bytes.slice_ref(file.data));
    upload_file(&gateway, &app, &path, &announced, data, None, content_type).await?;
    let to = format!(
        "{BASE}/apps/{app}/files{}",
        query(&[("flash", "file-uploaded")])
    );
    Ok(Redirect::to(&to).into_response())
}

/// `GET /apps/{app}/files/delete?path=`: the confirmation (write).
pub async fn delete_confirm(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(file): PageQuery<PathQuery>,
) -> PageResult {
    session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let here = format!("{BASE}/apps/{app}/files");
    let body = layout::confirm(
        &session,
        layout::Confirm {
            heading: html! { "Delete file " code { (file.path) } "?" },
            warning: Some("It is deleted on every node. It cannot be undone."),
            action: format!("{here}/delete"),
            fields: &[("path", &file.path)],
            button: "Delete file",
            cancel: here.clone(),
        },
    );
    Ok(layout::ok(&format!("Delete {}", file.path), &session, body))
}

/// `POST /apps/{app}/files/delete` (write).
pub async fn delete(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<PathQuery>,
) -> PageResult {
    posted.session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    gateway
        .files
        .service
        .delete(&app, &posted.form.path)
        .await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{app}/files?flash=file-deleted")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_are_split_on_the_boundary() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\r\n--X\r\n\r\n--XyZ--\r\n";
        let split = parts(body, "XyZ").expect("parses");
        assert_eq!(split.len(), 2);
        assert_eq!(
            (split[0].name.as_str(), split[0].data),
            ("csrf", &b"abc"[..])
        );
        assert_eq!(split[1].filename.as_deref(), Some("a.bin"));
        assert_eq!(
            split[1].content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(split[1].data, b"\x00\r\n--X\r\n");
        for bad in [
            &b""[..],
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
        ] {
            assert!(parts(bad, "XyZ").is_err());
        }
    }
}
