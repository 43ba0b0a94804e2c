//! The page shell every dashboard page is drawn in: head, navigation,
//! flash messages, forms with their CSRF field, the error page, and the
//! embedded CSS and JS.
//!
//! Navigation comes from two lists, [`NAV`] (top level) and [`APP_PAGES`]
//! (an app's subpages): a new page adds one entry.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use picloud_lua_sdk::Code;
use sha2::{Digest, Sha256};

use super::session::CSRF_FIELD;
use super::{BASE, PageError, Session};
use crate::gateway::ApiError;

/// The top-level pages: (label, path below [`BASE`]).
pub const NAV: &[(&str, &str)] = &[
    ("Apps", "/apps"),
    ("Cluster", "/cluster"),
    ("Metrics", "/metrics"),
];

/// One subpage of an app: its label and path below `/apps/{app}`.
pub struct AppPage {
    pub label: &'static str,
    pub suffix: &'static str,
}

/// An app's subpages, in the order the app's navigation shows them.
pub const APP_PAGES: &[AppPage] = &[
    AppPage {
        label: "Overview",
        suffix: "",
    },
    AppPage {
        label: "History",
        suffix: "/deploys",
    },
    AppPage {
        label: "Logs",
        suffix: "/logs",
    },
    AppPage {
        label: "Dead letters",
        suffix: "/dead-letters",
    },
    AppPage {
        label: "KV",
        suffix: "/kv",
    },
    AppPage {
        label: "Documents",
        suffix: "/docs",
    },
    AppPage {
        label: "Files",
        suffix: "/files",
    },
    AppPage {
        label: "Secrets",
        suffix: "/secrets",
    },
    AppPage {
        label: "Users",
        suffix: "/users",
    },
    AppPage {
        label: "Members",
        suffix: "/members",
    },
];

/// The embedded assets: (file name, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    ),
];

/// How long browsers keep an asset: its URL changes with its content.
const ASSET_MAX_AGE_S: u64 = 365 * 24 * 3600;

/// The assets' version in their URLs: a hash of every asset, so a new
/// build's CSS or JS is never served from an old cache.
pub fn assets_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hash = Sha256::new();
        for (name, _, text) in ASSETS {
            hash.update(name.as_bytes());
            hash.update(text.as_bytes());
        }
        hash.finalize()[..6]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    })
}

fn asset_url(name: &str) -> String {
    format!("{BASE}/assets/{}/{name}", assets_version())
}

/// `GET /assets/{version}/{file}`: an embedded asset, cached for a year;
/// another version is 404 (its content is not in this binary).
pub async fn asset(Path((version, file)): Path<(String, String)>) -> Result<Response, PageError> {
    let found = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .filter(|_| version == assets_version());
    let Some((_, content_type, text)) = found else {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no dashboard asset {version}/{file}"),
        )
        .into());
    };
    let cache = format!("public, max-age={ASSET_MAX_AGE_S}, immutable");
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                CACHE_CONTROL,
                HeaderValue::from_str(&cache).unwrap_or(HeaderValue::from_static("no-cache")),
            ),
        ],
        *text,
    )
        .into_response())
}

/// A whole page: head, header with navigation and the signed-in user (and
/// the logout form), then `body`.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · PiCloud" }
                link rel="stylesheet" href=(asset_url("dashboard.css"));
                script src=(asset_url("dashboard.js")) defer {}
            }
            body {
                header {
                    a.brand href={ (BASE) "/apps" } { "PiCloud" }
                    @if let Some(session) = session {
                        nav aria-label="Main" {
                            ul {
                                @for (label, path) in NAV {
                                    li { a href={ (BASE) (path) } { (label) } }
                                }
                            }
                        }
                        div.who {
                            span { (session.who()) }
                            (form_post(&format!("{BASE}/logout"), session, html! {
                                button type="submit" { "Sign out" }
                            }))
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// An app's subpage navigation, `current` marked.
pub fn app_nav(app: &str, current: &str) -> Markup {
    html! {
        nav.subnav aria-label={ "App " (app) } {
            ul {
                @for entry in APP_PAGES {
                    li {
                        @if entry.label == current {
                            a href={ (BASE) "/apps/" (app) (entry.suffix) } aria-current="page" { (entry.label) }
                        } @else {
                            a href={ (BASE) "/apps/" (app) (entry.suffix) } { (entry.label) }
                        }
                    }
                }
            }
        }
    }
}

/// A confirmation page's body: what is about to happen, an optional
/// warning, the form that does it (its hidden fields and danger button) and
/// a way back. Every delete or remove the dashboard offers goes through one.
pub struct Confirm<'a> {
    pub heading: Markup,
    pub warning: Option<&'a str>,
    pub action: String,
    pub fields: &'a [(&'a str, &'a str)],
    pub button: &'a str,
    pub cancel: String,
}

pub fn confirm(session: &Session, confirm: Confirm<'_>) -> Markup {
    html! {
        h1 { (confirm.heading) }
        @if let Some(warning) = confirm.warning { p { (warning) } }
        (form_post(&confirm.action, session, html! {
            @for (name, value) in confirm.fields {
                input type="hidden" name=(name) value=(value);
            }
            button.danger type="submit" { (confirm.button) }
        }))
        p { a href=(confirm.cancel) { "Cancel" } }
    }
}

/// A form that POSTs to `action` with the session's CSRF token.
pub fn form_post(action: &str, session: &Session, fields: Markup) -> Markup {
    html! {
        form method="post" action=(action) {
            input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
            (fields)
        }
    }
}

/// The fixed texts of the flash messages a redirect may ask for
/// (`?flash=<key>`): a fixed list, so a link cannot put words on a page.
pub fn flash_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "app-created" => "App created.",
        "app-deleted" => "App deleted.",
        "node-removed" => "Node removed from the cluster.",
        "logged-out" => "Signed out.",
        "rolled-back" => "Rolled back.",
        "dead-letter-retried" => "Dead letter queued to run again.",
        "dead-letter-deleted" => "Dead letter deleted.",
        "kv-saved" => "Value saved.",
        "kv-deleted" => "Key deleted.",
        "doc-deleted" => "Document deleted.",
        "file-uploaded" => "File uploaded.",
        "file-deleted" => "File deleted.",
        "secret-set" => "Secret set.",
        "secret-deleted" => "Secret deleted.",
        "user-roles" => "Roles changed.",
        "user-invited" => "Invitation sent.",
        "user-deleted" => "User deleted.",
        "member-set" => "Member saved.",
        "member-removed" => "Member removed.",
        _ => return None,
    })
}

pub fn flash_box(text: &str) -> Markup {
    html! { p.flash role="status" { (text) } }
}

pub fn error_box(error: &ApiError) -> Markup {
    html! {
        div.error role="alert" {
            strong { code { (error.code.as_str()) } }
            " " (error.message)
        }
    }
}

/// An HTML response with the headers every page gets: not cached (pages
/// show state and carry CSRF tokens), not framed, scripts and styles only
/// from this origin.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("x-content-type-options", "nosniff"),
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A 200 page.
pub fn ok(title: &str, session: &Session, body: Markup) -> Response {
    respond(StatusCode::OK, page(title, Some(session), body))
}

/// The error page: the code, the message, the registry's status.
pub fn error_page(error: &ApiError) -> Response {
    let title = if error.code == Code::NotFound || error.status == StatusCode::NOT_FOUND {
        "Not found"
    } else {
        "Error"
    };
    let body = html! {
        h1 { (title) }
        (error_box(error))
        p { a href={ (BASE) "/apps" } { "Back to the apps" } }
    };
    respond(error.status, page(title, None, body))
}

/// A time in ms since the epoch, as UTC text.
pub fn time(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    httpdate::fmt_http_date(time)
}
