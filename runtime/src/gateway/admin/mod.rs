//! The admin API under `/_/api/v1/`: one file per resource, one route table
//! (below). Every request is checked against its row of the scope matrix
//! (`routes.rs`) by [`enforce`](super::auth::enforce) before its handler
//! runs; handlers authenticate with [`Caller`](super::auth::Caller) (a key
//! or an operator) and add finer checks before they read or propose
//! anything.
//!
//! # Layout
//! - `apps.rs`: apps (list, show, create, delete)
//! - `deploys.rs`: deploys and rollback (the deploy-time bundle checks)
//! - `kv.rs`: an app's kv store
//! - `files.rs`: an app's files (list, sign a URL; the streamed file routes
//!   are mounted outside the body-buffering layer by `gateway::router`)
//! - `docs.rs`: an app's documents and indexes
//! - `logs.rs`: an app's log lines, recent or followed
//! - `triggers.rs`: dead letters and the trigger backlog
//! - `mail.rs`: mail captured in dev mode (list, show)
//! - `secrets.rs`: app secrets and master-key rotation
//! - `users.rs`: an app's end users (list, show, create, delete, roles,
//!   invite)
//! - `realtime.rs`: rotating an app's realtime token signing key
//! - `libs.rs`: shared libraries (publish, list, resolve pins at deploy)
//! - `keys.rs`: API keys and `whoami`
//! - `operators.rs`: operator login and logout, setup tokens, admins
//! - `members.rs`: an app's members and their roles
//! - `routes.rs`: the scope matrix (every route and what it needs)
//! - `cluster.rs`: cluster status, join token, node removal
//! - `backup.rs`: a backup of the whole cluster, streamed
//! - `metrics.rs`: `/_/metrics` (mounted outside `/_/api/v1` by `gateway`)
//! - `openapi.rs`: `/openapi.json`, the OpenAPI 3.1 document of these routes
//! - `checks.rs`: the checks the resources share

pub(crate) mod apps;
mod backup;
pub(crate) mod checks;
pub(crate) mod cluster;
pub(crate) mod deploys;
pub(crate) mod docs;
pub mod files;
mod keys;
pub(crate) mod kv;
mod libs;
pub(crate) mod logs;
mod mail;
pub(crate) mod members;
pub mod metrics;
pub mod openapi;
mod operators;
mod realtime;
pub mod routes;
pub(crate) mod secrets;
pub(crate) mod triggers;
pub(crate) mod users;

use axum::routing::{delete, get, post, put};
use axum::{Router, middleware};
use picloud_lua_sdk::Code;

use super::auth::enforce;
use super::{ApiError, Gateway};

/// Every admin API route, by resource.
pub fn router(gateway: Gateway) -> Router<Gateway> {
    Router::new()
        // operators
        .route("/login", post(operators::login))
        .route("/logout", post(operators::logout))
        .route("/admins/setup", post(operators::setup))
        .route("/admins", get(operators::list).post(operators::add))
        .route("/admins/{email}", delete(operators::remove))
        .route("/apps/{app}/members", get(members::list))
        .route(
            "/apps/{app}/members/{email}",
            put(members::set).delete(members::remove),
        )
        // keys
        .route("/whoami", get(keys::whoami))
        .route("/keys", get(keys::list_keys).post(keys::create_key))
        .route("/keys/{id}", delete(keys::revoke_key))
        // apps
        .route("/apps", get(apps::list_apps).post(apps::create_app))
        .route("/apps/{app}", get(apps::get_app).delete(apps::delete_app))
        // deploys
        .route(
            "/apps/{app}/deploys",
            get(deploys::list_deploys).post(deploys::deploy),
        )
        .route("/apps/{app}/rollback", post(deploys::rollback))
        // kv
        .route("/apps/{app}/kv", get(kv::kv_list))
        .route(
            "/apps/{app}/kv/{*key}",
            get(kv::kv_get).put(kv::kv_put).delete(kv::kv_delete),
        )
        // files (the streamed `/apps/{app}/files/{*path}` is in `gateway::router`)
        .route("/apps/{app}/files", get(files::list))
        .route("/apps/{app}/file-urls", post(files::sign))
        // docs
        .route("/apps/{app}/docs/{coll}", post(docs::insert))
        .route("/apps/{app}/docs/{coll}/find", post(docs::find))
        .route("/apps/{app}/docs/{coll}/count", post(docs::count))
        .route(
            "/apps/{app}/docs/{coll}/{id}",
            get(docs::get_doc).delete(docs::delete),
        )
        .route("/apps/{app}/indexes", get(docs::indexes))
        // logs
        .route("/apps/{app}/logs", get(logs::logs))
        // realtime
        .route(
            "/apps/{app}/realtime/rotate-key",
            post(realtime::rotate_key),
        )
        // triggers
        .route("/apps/{app}/dead-letters", get(triggers::dead_letters_list))
        .route(
            "/apps/{app}/dead-letters/{id}",
            get(triggers::dead_letter_show).delete(triggers::dead_letter_delete),
        )
        .route(
            "/apps/{app}/dead-letters/{id}/retry",
            post(triggers::dead_letter_retry),
        )
        // mail captured without a relay
        .route("/apps/{app}/mail", get(mail::list))
        .route("/apps/{app}/mail/{id}", get(mail::show))
        // end users
        .route("/apps/{app}/users", get(users::list).post(users::create))
        .route(
            "/apps/{app}/users/{id}",
            get(users::show).delete(users::delete),
        )
        .route("/apps/{app}/users/{id}/roles", post(users::roles))
        .route("/apps/{app}/users/invite", post(users::invite))
        // secrets
        .route("/apps/{app}/secrets", get(secrets::list))
        .route(
            "/apps/{app}/secrets/{name}",
            put(secrets::set).delete(secrets::delete),
        )
        .route("/secrets/rotate-key", post(secrets::rotate_key))
        // libs
        .route("/libs", get(libs::list))
        .route("/libs/{name}", post(libs::publish))
        // cluster
        .route("/cluster/status", get(cluster::cluster_status))
        .route("/cluster/token", get(cluster::cluster_token))
        .route("/cluster/nodes/{id}", delete(cluster::remove_node))
        // this API, described
        .route("/openapi.json", get(openapi::openapi))
        // backup
        .route("/backup", get(backup::backup))
        // Every matched route, checked against its row before the handler.
        .route_layer(middleware::from_fn_with_state(gateway, enforce))
        .fallback(api_not_found)
}

async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        Code::NotFound,
        format!("no admin API endpoint at {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::routes::{Mount, ROUTES};

    /// The `(method, path)` pairs `router()` mounts, read from this file's
    /// source: each `.route("path", get(..).post(..))` call.
    pub(super) fn mounted() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let body = source
            .split("pub fn router(")
            .nth(1)
            .and_then(|rest| rest.split("async fn api_not_found").next())
            .expect("router body");
        let mut routes = BTreeSet::new();
        for call in body.split(".route(").skip(1) {
            let path = call.split('"').nth(1).expect("path").to_string();
            let handlers = call.split_once(',').expect("handlers").1;
            for (method, marker) in [
                ("GET", "get("),
                ("POST", "post("),
                ("PUT", "put("),
                ("DELETE", "delete("),
            ] {
                let starts = handlers.match_indices(marker).any(|(at, _)| {
                    at == 0 || !handlers[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if starts {
                    routes.insert((method.to_string(), path.clone()));
                }
            }
        }
        routes
    }

    /// Every route the router mounts has exactly one row in the scope
    /// matrix, and every admin row is mounted: a new route must say what it
    /// needs, or `enforce` refuses it.
    #[test]
    fn the_scope_matrix_and_the_router_agree() {
        let table: Vec<(String, String)> = ROUTES
            .iter()
            .filter(|route| route.mount == Mount::Admin)
            .map(|route| (route.method.to_string(), route.path.to_string()))
            .collect();
        let rows: BTreeSet<(String, String)> = table.iter().cloned().collect();
        assert_eq!(rows.len(), table.len(), "a route has two rows");
        let mounted = mounted();
        assert!(
            mounted.len() > 50,
            "the source walk found {} routes",
            mounted.len()
        );
        assert_eq!(mounted, rows);
    }
}
