//! The dashboard: server-rendered HTML pages under `/_/dashboard` on every
//! node, for people in a browser (the admin API is for programs).
//!
//! ```text
//!   GET  /_/dashboard                      → 303 to apps
//!   GET  /_/dashboard/login                email + password form, API key form
//!   POST /_/dashboard/login                operator login → session cookie, 303 to next
//!   POST /_/dashboard/login/key            API key login → cookie, 303 to next
//!   POST /_/dashboard/logout               revokes an operator session, clears the cookie
//!   GET  /_/dashboard/apps                 apps the caller may read (paged)   → apps.rs
//!   POST /_/dashboard/apps                 create an app (admin)
//!   GET  /_/dashboard/apps/{app}           an app's overview                  → app.rs
//!   GET  /_/dashboard/apps/{app}/delete    confirm page (owner)
//!   POST /_/dashboard/apps/{app}/delete    delete, the name typed again (owner)
//!   GET  /_/dashboard/apps/{app}/deploys   deploy history (paged)             → deploys.rs
//!   GET  /_/dashboard/apps/{app}/deploys/{v}/diff   files changed against a version
//!   POST /_/dashboard/apps/{app}/deploys/{v}/rollback   roll back (write)
//!   GET  /_/dashboard/apps/{app}/logs      every node's recent lines          → logs.rs
//!   GET  /_/dashboard/apps/{app}/logs/live server-sent events of new lines
//!   GET  /_/dashboard/apps/{app}/dead-letters        paged list          → dead_letters.rs
//!   GET  /_/dashboard/apps/{app}/dead-letters/{id}   one letter
//!   POST /_/dashboard/apps/{app}/dead-letters/{id}/retry|delete   (write)
//!   GET  /_/dashboard/apps/{app}/kv        keys by prefix, show, set, delete  → kv.rs
//!   GET  /_/dashboard/apps/{app}/docs      collection, query, explain, delete → docs.rs
//!   GET  /_/dashboard/apps/{app}/files     list, download, upload, delete     → files.rs
//!   GET  /_/dashboard/apps/{app}/secrets   names and times, set, delete       → secrets.rs
//!   GET  /_/dashboard/apps/{app}/users     users, roles, invite, delete       → users.rs
//!   GET  /_/dashboard/apps/{app}/members   members, add/change/remove (owner) → members.rs
//!   GET  /_/dashboard/cluster              nodes, backlog, repair             → cluster.rs
//!   POST /_/dashboard/cluster/token        show the join token (admin)
//!   GET  /_/dashboard/cluster/nodes/{id}/remove   confirm page (admin)
//!   POST /_/dashboard/cluster/nodes/{id}/remove   remove the node (admin)
//!   GET  /_/dashboard/metrics              this node's charts (inline SVG)    → metrics.rs
//!   GET  /_/dashboard/assets/{version}/{file}     CSS and JS, cached for a year
//! ```
//!
//! Every page resolves its caller from the `picloud_session` cookie with
//! the admin API's own check ([`Caller::from_credential`]) and asks the same
//! [`Need`](super::admin::routes::Need)s through `Caller::require*` before
//! it reads or changes anything; what a caller may not do is neither shown
//! nor accepted. Forms POST and redirect (303): everything works with
//! JavaScript off. Every POST carries a CSRF token, checked before anything
//! else (`session.rs`).
//!
//! # Layout
//! - `session.rs`: the cookie, CSRF, the [`Session`] and [`Posted`]
//!   extractors
//! - `login.rs`: the login page and forms, logout (apart from
//!   `session.rs` because they draw pages, which `layout.rs` needs
//!   `session.rs` for)
//! - `layout.rs`: the page shell, navigation (top level and an app's
//!   subpages, each from one list), forms with their CSRF field, flash
//!   messages, the error page, the embedded assets
//! - `apps.rs`: the apps list, create, delete with confirmation
//! - `app.rs`: an app's overview (version, domains, routes, triggers)
//! - `cluster.rs`: the cluster's nodes, join token, node removal
//! - `deploys.rs`: an app's deploy history, a version's changes, rollback
//!   (`diff.rs`: the pure, bounded line diff it uses)
//! - `logs.rs`: an app's live logs (drawn, then followed over SSE)
//! - `dead_letters.rs`: an app's dead letters (paged), retry, delete
//! - `metrics.rs`: the metrics page and its sampler (a bounded ring)
//! - `kv.rs`, `docs.rs`, `files.rs`, `secrets.rs`, `users.rs`,
//!   `members.rs`: an app's data browsers, each calling the admin API's
//!   own functions (`admin::kv::put`, `admin::docs::read`,
//!   `gateway::files::upload`, `admin::secrets::seal_and_set`, ...)
//!
//! To add a page: a handler taking [`Session`] (GET) or [`Posted<Form>`]
//! (POST) in a file of its group, a route below, and an entry in
//! `layout::NAV` or `layout::APP_PAGES`.

pub mod app;
pub mod apps;
pub mod cluster;
pub mod dead_letters;
pub mod deploys;
pub mod diff;
pub mod docs;
pub mod files;
pub mod kv;
pub mod layout;
pub mod login;
pub mod logs;
pub mod members;
pub mod metrics;
pub mod secrets;
pub mod session;
pub mod users;

use axum::Router;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use picloud_lua_sdk::Code;

pub use session::{Posted, Session};

use super::auth::Caller;
use super::{ApiError, Gateway};

/// Where the dashboard is mounted.
pub const BASE: &str = "/_/dashboard";

/// Every dashboard route (relative to [`BASE`]).
pub fn router() -> Router<Gateway> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login::login_page).post(login::login))
        .route("/login/key", post(login::login_key))
        .route("/logout", post(login::logout))
        .route("/apps", get(apps::list).post(apps::create))
        .route("/apps/{app}", get(app::overview))
        .route(
            "/apps/{app}/delete",
            get(apps::delete_confirm).post(apps::delete),
        )
        .route("/apps/{app}/deploys", get(deploys::history))
        .route("/apps/{app}/deploys/{version}/diff", get(deploys::changes))
        .route(
            "/apps/{app}/deploys/{version}/rollback",
            post(deploys::rollback),
        )
        .route("/apps/{app}/logs", get(logs::recent))
        .route("/apps/{app}/logs/live", get(logs::live))
        .route("/apps/{app}/dead-letters", get(dead_letters::list))
        .route("/apps/{app}/dead-letters/{id}", get(dead_letters::show))
        .route(
            "/apps/{app}/dead-letters/{id}/retry",
            post(dead_letters::retry),
        )
        .route(
            "/apps/{app}/dead-letters/{id}/delete",
            post(dead_letters::delete),
        )
        .route("/metrics", get(metrics::overview))
        .merge(data_routes())
        .route("/cluster", get(cluster::status))
        .route("/cluster/token", post(cluster::token))
        .route(
            "/cluster/nodes/{id}/remove",
            get(cluster::remove_confirm).post(cluster::remove),
        )
        .route("/assets/{version}/{file}", get(layout::asset))
        .fallback(not_found)
}

/// An app's data browsers (kv, documents, files, secrets, users,
/// members): one file each; GETs show, POSTs change and redirect.
fn data_routes() -> Router<Gateway> {
    Router::new()
        .route("/apps/{app}/kv", get(kv::list))
        .route("/apps/{app}/kv/show", get(kv::show))
        .route("/apps/{app}/kv/set", post(kv::set))
        .route(
            "/apps/{app}/kv/delete",
            get(kv::delete_confirm).post(kv::delete),
        )
        .route("/apps/{app}/docs", get(docs::browse))
        .route("/apps/{app}/docs/show", get(docs::show))
        .route(
            "/apps/{app}/docs/delete",
            get(docs::delete_confirm).post(docs::delete),
        )
        .route("/apps/{app}/files", get(files::list))
        .route("/apps/{app}/files/download", get(files::download))
        .route("/apps/{app}/files/upload", post(files::upload))
        .route(
            "/apps/{app}/files/delete",
            get(files::delete_confirm).post(files::delete),
        )
        .route("/apps/{app}/secrets", get(secrets::list).post(secrets::set))
        .route(
            "/apps/{app}/secrets/delete",
            get(secrets::delete_confirm).post(secrets::delete),
        )
        .route("/apps/{app}/users", get(users::list))
        .route("/apps/{app}/users/show", get(users::show))
        .route("/apps/{app}/users/roles", post(users::roles))
        .route("/apps/{app}/users/invite", post(users::invite))
        .route(
            "/apps/{app}/users/delete",
            get(users::delete_confirm).post(users::delete),
        )
        .route("/apps/{app}/members", get(members::list))
        .route("/apps/{app}/members/set", post(members::set))
        .route(
            "/apps/{app}/members/remove",
            get(members::remove_confirm).post(members::remove),
        )
}

async fn index() -> Redirect {
    Redirect::to(&format!("{BASE}/apps"))
}

async fn not_found(OriginalUri(uri): OriginalUri) -> PageError {
    ApiError::new(
        Code::NotFound,
        format!("no dashboard page at {}", uri.path()),
    )
    .into()
}

/// Why a page was not shown: an error (rendered as the error page with its
/// code and the registry's status), or no valid session (303 to login).
#[derive(Debug)]
pub enum PageError {
    Api(ApiError),
    /// No cookie, or its credential is unknown, expired or revoked.
    Login {
        next: String,
    },
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Api(error) => layout::error_page(&error),
            PageError::Login { next } => {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &next)
                    .finish();
                Redirect::to(&format!("{BASE}/login?{query}")).into_response()
            }
        }
    }
}

/// Every error type a page meets becomes an [`ApiError`] first, so the
/// page shows the admin API's code and status for the same failure.
macro_rules! page_error_from {
    ($($error:ty),*) => {$(
        impl From<$error> for PageError {
            fn from(error: $error) -> Self {
                PageError::Api(error.into())
            }
        }
    )*};
}

page_error_from!(
    ApiError,
    picloud_storage::StorageError,
    picloud_lua_sdk::HostError,
    picloud_cluster::ClusterError
);

/// The query of a page of items by prefix (the kv and files browsers): the
/// prefix, the cursor of the page, and a flash message key.
#[derive(serde::Deserialize)]
pub struct PrefixPage {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub flash: Option<String>,
}

/// A page's query string; a malformed one is the 400 `invalid_query`
/// error page (the admin API's [`ApiQuery`](super::ApiQuery) rule).
pub struct PageQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for PageQuery<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        let super::ApiQuery(query) = super::ApiQuery::from_request_parts(parts, state).await?;
        Ok(PageQuery(query))
    }
}

/// What a page handler answers.
pub type PageResult = Result<Response, PageError>;

/// The access a caller has in `app`, for deciding what to show (the
/// action itself is checked again when posted).
pub fn may(caller: &Caller, need: super::admin::routes::Need, app: &str) -> bool {
    caller.require(need, app).is_ok()
}
