//! The scope matrix: every admin API route with what its caller needs, and
//! the pure rule that decides a caller's [`Access`] against a [`Need`].
//!
//! The gateway checks every request of the admin router against
//! [`ROUTES`] before any handler or body extractor runs (see
//! `gateway::auth::enforce`); a route missing from the table is refused.
//! The handlers keep their own checks (finer ones, like a `PUT` file URL
//! needing write), so a row can only tighten, never loosen, access.
//!
//! This file imports nothing from the crate on purpose: the process test
//! `t280_operators` mounts it to walk the same table against a real node.

/// What a request must be allowed to do. App-scoped needs are about the
/// `{app}` of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No credentials (logging in, setting a password with a setup token).
    Public,
    /// Any valid key or operator session.
    Caller,
    /// Read the app: a `read:<app>` key, a viewer.
    Read,
    /// Change the app: a `deploy:<app>` key, a developer.
    Write,
    /// Manage the app's members or delete it: an owner.
    Owner,
    /// Cluster-wide: an `admin` key or an admin operator.
    Admin,
}

/// What a caller may do in one app, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    Read,
    Write,
    Owner,
    /// Everything, in every app and the cluster.
    Admin,
}

/// Whether a caller with `access` in the path's app may do what `need`s.
pub fn allows(access: Access, need: Need) -> bool {
    match need {
        Need::Public | Need::Caller => true,
        Need::Read => access >= Access::Read,
        Need::Write => access >= Access::Write,
        Need::Owner => access >= Access::Owner,
        Need::Admin => access == Access::Admin,
    }
}

/// Where a route is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    /// In `admin::router()` under `/_/api/v1`, checked by `enforce`.
    Admin,
    /// Outside it (streamed bodies, `/_/metrics`): the handler checks the
    /// same need itself.
    Outside,
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// Relative to `/_/api/v1` for [`Mount::Admin`]; absolute otherwise.
    pub path: &'static str,
    pub need: Need,
    pub mount: Mount,
}

const fn admin(method: &'static str, path: &'static str, need: Need) -> Route {
    Route {
        method,
        path,
        need,
        mount: Mount::Admin,
    }
}

const fn outside(method: &'static str, path: &'static str, need: Need) -> Route {
    Route {
        method,
        path,
        need,
        mount: Mount::Outside,
    }
}

/// Every admin API route. Keep in step with `admin::router()` (a unit test
/// compares them) and the README's route list.
pub const ROUTES: &[Route] = &[
    // operators: sessions, admins, members
    admin("POST", "/login", Need::Public),
    admin("POST", "/logout", Need::Caller),
    admin("POST", "/admins/setup", Need::Public),
    admin("GET", "/admins", Need::Admin),
    admin("POST", "/admins", Need::Admin),
    admin("DELETE", "/admins/{email}", Need::Admin),
    admin("GET", "/apps/{app}/members", Need::Read),
    admin("PUT", "/apps/{app}/members/{email}", Need::Owner),
    admin("DELETE", "/apps/{app}/members/{email}", Need::Owner),
    // keys
    admin("GET", "/whoami", Need::Caller),
    admin("GET", "/keys", Need::Admin),
    admin("POST", "/keys", Need::Admin),
    admin("DELETE", "/keys/{id}", Need::Admin),
    // apps (the list shows only the apps the caller may read)
    admin("GET", "/apps", Need::Caller),
    admin("POST", "/apps", Need::Admin),
    admin("GET", "/apps/{app}", Need::Read),
    admin("DELETE", "/apps/{app}", Need::Owner),
    // deploys
    admin("GET", "/apps/{app}/deploys", Need::Read),
    admin("POST", "/apps/{app}/deploys", Need::Write),
    admin("POST", "/apps/{app}/rollback", Need::Write),
    // kv
    admin("GET", "/apps/{app}/kv", Need::Read),
    admin("GET", "/apps/{app}/kv/{*key}", Need::Read),
    admin("PUT", "/apps/{app}/kv/{*key}", Need::Write),
    admin("DELETE", "/apps/{app}/kv/{*key}", Need::Write),
    // files (a PUT URL needs write: checked by the handler)
    admin("GET", "/apps/{app}/files", Need::Read),
    admin("POST", "/apps/{app}/file-urls", Need::Read),
    outside("GET", "/_/api/v1/apps/{app}/files/{*path}", Need::Read),
    outside("HEAD", "/_/api/v1/apps/{app}/files/{*path}", Need::Read),
    outside("PUT", "/_/api/v1/apps/{app}/files/{*path}", Need::Write),
    outside("DELETE", "/_/api/v1/apps/{app}/files/{*path}", Need::Write),
    // docs
    admin("POST", "/apps/{app}/docs/{coll}", Need::Write),
    admin("POST", "/apps/{app}/docs/{coll}/find", Need::Read),
    admin("POST", "/apps/{app}/docs/{coll}/count", Need::Read),
    admin("GET", "/apps/{app}/docs/{coll}/{id}", Need::Read),
    admin("DELETE", "/apps/{app}/docs/{coll}/{id}", Need::Write),
    admin("GET", "/apps/{app}/indexes", Need::Read),
    // logs
    admin("GET", "/apps/{app}/logs", Need::Read),
    // realtime
    admin("POST", "/apps/{app}/realtime/rotate-key", Need::Admin),
    // triggers
    admin("GET", "/apps/{app}/dead-letters", Need::Read),
    admin("GET", "/apps/{app}/dead-letters/{id}", Need::Read),
    admin("DELETE", "/apps/{app}/dead-letters/{id}", Need::Write),
    admin("POST", "/apps/{app}/dead-letters/{id}/retry", Need::Write),
    // mail captured without a relay
    admin("GET", "/apps/{app}/mail", Need::Read),
    admin("GET", "/apps/{app}/mail/{id}", Need::Read),
    // end users
    admin("GET", "/apps/{app}/users", Need::Read),
    admin("POST", "/apps/{app}/users", Need::Write),
    admin("GET", "/apps/{app}/users/{id}", Need::Read),
    admin("DELETE", "/apps/{app}/users/{id}", Need::Write),
    admin("POST", "/apps/{app}/users/{id}/roles", Need::Write),
    admin("POST", "/apps/{app}/users/invite", Need::Write),
    // secrets (values are cluster-sensitive: admin, as for keys)
    admin("GET", "/apps/{app}/secrets", Need::Admin),
    admin("PUT", "/apps/{app}/secrets/{name}", Need::Admin),
    admin("DELETE", "/apps/{app}/secrets/{name}", Need::Admin),
    admin("POST", "/secrets/rotate-key", Need::Admin),
    // libs
    admin("GET", "/libs", Need::Caller),
    admin("POST", "/libs/{name}", Need::Admin),
    // cluster
    admin("GET", "/cluster/status", Need::Caller),
    admin("GET", "/cluster/token", Need::Admin),
    admin("DELETE", "/cluster/nodes/{id}", Need::Admin),
    // backup
    admin("GET", "/backup", Need::Admin),
    outside("GET", "/_/metrics", Need::Admin),
    // this API, described (OpenAPI 3.1)
    admin("GET", "/openapi.json", Need::Public),
];

/// The row for `method` on the admin router's matched `path`.
pub fn admin_route(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|route| route.mount == Mount::Admin && route.method == method && route.path == path)
}
