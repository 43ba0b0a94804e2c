//! Authentication for the admin API: a bearer API key (`pck_...`) or an
//! operator's session token (`pcs_...`), and what the caller may do. The
//! [`enforce`] layer checks every admin route against the scope matrix
//! (`admin/routes.rs`) before the handler runs; handlers then call the
//! `require_*` methods for checks finer than a route. Also when each key
//! was last used on this node.
//!
//! ```text
//!  Bearer pck_… ─▶ key record ─▶ Scope ─┐
//!  Bearer pcs_… ─▶ operator session ────┴▶ Access in the path's app
//!                  (admin flag, or the membership role on this node's
//!                  applied state) ─▶ allows(access, need) or 403
//! ```

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use picloud_actors::operators::{Operator, SESSION_PREFIX};
use picloud_lua_sdk::Code;
use picloud_storage::operators::Role;

use super::admin::routes::{Access, Need, admin_route, allows};
use super::{ApiError, Gateway};
use crate::keys::{self, Scope};

/// Who is calling.
#[derive(Clone)]
pub enum Principal {
    Key {
        id: String,
        scope: Scope,
    },
    /// An operator and the session token it presented (for logout).
    Operator {
        operator: Operator,
        session: String,
    },
}

/// The authenticated caller of an admin API request.
#[derive(Clone)]
pub struct Caller {
    pub principal: Principal,
    gateway: Gateway,
}

/// A member's role as the access it grants.
pub fn role_access(role: Role) -> Access {
    match role {
        Role::Owner => Access::Owner,
        Role::Developer => Access::Write,
        Role::Viewer => Access::Read,
    }
}

/// A key's scope as the access it grants in `app`.
pub fn scope_access(scope: &Scope, app: &str) -> Access {
    if scope.is_admin() {
        Access::Admin
    } else if scope.can_write(app) {
        Access::Write
    } else if scope.can_read(app) {
        Access::Read
    } else {
        Access::None
    }
}

fn need_text(need: Need, app: &str) -> String {
    match need {
        Need::Public | Need::Caller => "any caller".into(),
        Need::Read => {
            format!("read:{app}, deploy:{app} or admin (or a viewer, developer or owner of {app})")
        }
        Need::Write => format!("deploy:{app} or admin (or a developer or owner of {app})"),
        Need::Owner => format!("admin (or an owner of {app})"),
        Need::Admin => "admin (a key or an admin operator)".into(),
    }
}

impl Caller {
    /// What the caller may do in `app` (`None` for cluster-wide needs).
    pub fn access(&self, app: Option<&str>) -> Result<Access, ApiError> {
        match &self.principal {
            Principal::Key { scope, .. } => Ok(match app {
                Some(app) => scope_access(scope, app),
                None if scope.is_admin() => Access::Admin,
                None => Access::None,
            }),
            Principal::Operator { operator, .. } => {
                if operator.admin {
                    return Ok(Access::Admin);
                }
                let Some(app) = app else {
                    return Ok(Access::None);
                };
                let role = self.gateway.operators.role(app, &operator.id)?;
                Ok(role.map_or(Access::None, role_access))
            }
        }
    }

    /// Who the caller is, for messages.
    pub fn describe(&self) -> String {
        match &self.principal {
            Principal::Key { id, scope } => format!("key {id} has scope {scope}"),
            Principal::Operator { operator, .. } if operator.admin => {
                format!("operator {} is an admin", operator.email)
            }
            Principal::Operator { operator, .. } => format!("operator {}", operator.email),
        }
    }

    /// Succeeds when the caller may do what `need`s in `app`.
    pub fn require(&self, need: Need, app: &str) -> Result<(), ApiError> {
        let scoped = matches!(need, Need::Read | Need::Write | Need::Owner);
        let access = self.access(scoped.then_some(app))?;
        if allows(access, need) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{}; this needs {}",
                self.describe(),
                need_text(need, app)
            )))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require(Need::Admin, "")
    }

    pub fn require_read(&self, app: &str) -> Result<(), ApiError> {
        self.require(Need::Read, app)
    }

    pub fn require_write(&self, app: &str) -> Result<(), ApiError> {
        self.require(Need::Write, app)
    }

    pub fn require_owner(&self, app: &str) -> Result<(), ApiError> {
        self.require(Need::Owner, app)
    }

    /// Whether the caller may read `app` (filters the app list).
    pub fn may_read(&self, app: &str) -> Result<bool, ApiError> {
        Ok(self.access(Some(app))? >= Access::Read)
    }

    /// Whether the caller is a cluster admin (key or operator).
    pub fn is_admin(&self) -> bool {
        match &self.principal {
            Principal::Key { scope, .. } => scope.is_admin(),
            Principal::Operator { operator, .. } => operator.admin,
        }
    }

    /// The operator calling, if an operator is.
    pub fn operator(&self) -> Option<&Operator> {
        match &self.principal {
            Principal::Operator { operator, .. } => Some(operator),
            Principal::Key { .. } => None,
        }
    }

    async fn authenticate(parts: &Parts, gateway: &Gateway) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <key>'"))?;
        Caller::from_credential(token, gateway).await
    }

    /// The caller a credential names: an operator session (`pcs_…`) or an
    /// API key. The one check behind both the admin API's `Bearer` header
    /// and the dashboard's session cookie.
    pub async fn from_credential(token: &str, gateway: &Gateway) -> Result<Caller, ApiError> {
        if token.starts_with(SESSION_PREFIX) {
            let operator = gateway.operators.verify(token).await?.ok_or_else(|| {
                ApiError::new(
                    Code::SessionInvalid,
                    "the operator session is unknown, expired or revoked; log in again",
                )
            })?;
            return Ok(Caller {
                principal: Principal::Operator {
                    operator,
                    session: token.to_string(),
                },
                gateway: gateway.clone(),
            });
        }
        let (id, secret) = keys::lookup_parts(token);
        let record = gateway.node.reader().key(&id)?;
        let record = record
            .filter(|record| keys::secret_matches(&secret, &record.secret_hash))
            .ok_or_else(|| ApiError::unauthorized("invalid or revoked API key"))?;
        let scope = Scope::parse(&record.scope)
            .map_err(|e| ApiError::internal(format!("stored key {id} has a bad scope: {e}")))?;
        gateway.key_uses.record(&id, picloud_actors::host::now_ms());
        Ok(Caller {
            principal: Principal::Key { id, scope },
            gateway: gateway.clone(),
        })
    }
}

/// The admin router's check of every request against its row of
/// `routes::ROUTES`, before the handler and its body extractors run (so a
/// refused request is 403 whatever its body). A route with no row is
/// refused: a new route must say what it needs. The authenticated caller
/// is kept for the handler.
pub async fn enforce(
    State(gateway): State<Gateway>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let matched = parts
        .extensions
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_default();
    let path = matched.strip_prefix("/_/api/v1").unwrap_or(&matched);
    // axum answers HEAD with the GET handler: the GET row decides.
    let method = match parts.method.as_str() {
        "HEAD" => "GET",
        other => other,
    };
    let route = admin_route(method, path).ok_or_else(|| {
        ApiError::internal(format!(
            "admin route {method} {path} has no row in the scope matrix"
        ))
    })?;
    if route.need != Need::Public {
        let params = RawPathParams::from_request_parts(&mut parts, &gateway)
            .await
            .map_err(|error| ApiError::new(Code::NotFound, error.to_string()))?;
        let app = params
            .iter()
            .find(|(name, _)| *name == "app")
            .map(|(_, value)| value.to_string())
            .unwrap_or_default();
        let caller = Caller::authenticate(&parts, &gateway).await?;
        caller.require(route.need, &app)?;
        parts.extensions.insert(caller);
    }
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// When each API key last authenticated on this node, in memory. Kept per
/// node and lost at restart on purpose: recording it in the replicated
/// state would cost a log write per admin request. Bounded by the stored
/// keys (only a key that authenticated is recorded; a revoked one is dropped
/// when the list is read).
#[derive(Debug, Default)]
pub struct KeyUses {
    last_ms: Mutex<HashMap<String, u64>>,
}

impl KeyUses {
    fn record(&self, key_id: &str, now_ms: u64) {
        let mut last = self.last_ms.lock().unwrap_or_else(|e| e.into_inner());
        match last.get_mut(key_id) {
            Some(ms) => *ms = now_ms,
            None => {
                last.insert(key_id.to_string(), now_ms);
            }
        }
    }

    /// The last use of each key in `live` on this node; forgets the others.
    pub fn last_used(&self, live: &[&str]) -> HashMap<String, u64> {
        let mut last = self.last_ms.lock().unwrap_or_else(|e| e.into_inner());
        last.retain(|id, _| live.contains(&id.as_str()));
        last.clone()
    }
}

impl FromRequestParts<Gateway> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        Caller::authenticate(parts, gateway).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule every route is checked with: each role of a member, each
    /// key scope, against each need, in the member's own app and another.
    #[test]
    fn who_may_do_what() {
        use Need::*;
        // (access, [Public, Caller, Read, Write, Owner, Admin])
        let table: &[(Access, [bool; 6])] = &[
            (Access::Admin, [true, true, true, true, true, true]),
            (Access::Owner, [true, true, true, true, true, false]),
            (Access::Write, [true, true, true, true, false, false]),
            (Access::Read, [true, true, true, false, false, false]),
            (Access::None, [true, true, false, false, false, false]),
        ];
        for (access, expected) in table {
            for (need, allowed) in [Public, Caller, Read, Write, Owner, Admin]
                .iter()
                .zip(expected)
            {
                assert_eq!(allows(*access, *need), *allowed, "{access:?} {need:?}");
            }
        }
        assert_eq!(role_access(Role::Owner), Access::Owner);
        assert_eq!(role_access(Role::Developer), Access::Write);
        assert_eq!(role_access(Role::Viewer), Access::Read);
        let deploy = Scope::parse("deploy:shop").expect("scope");
        let read = Scope::parse("read:shop").expect("scope");
        let admin = Scope::parse("admin").expect("scope");
        assert_eq!(scope_access(&deploy, "shop"), Access::Write);
        assert_eq!(scope_access(&deploy, "blog"), Access::None);
        assert_eq!(scope_access(&read, "shop"), Access::Read);
        assert_eq!(scope_access(&read, "blog"), Access::None);
        assert_eq!(scope_access(&admin, "blog"), Access::Admin);
    }
}
