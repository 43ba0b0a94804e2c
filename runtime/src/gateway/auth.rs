//! Bearer-key authentication for the admin API, and when each key was last
//! used on this node.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, Gateway};
use crate::keys::{self, Scope};

/// The authenticated caller of an admin API request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub scope: Scope,
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.scope.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "key {} has scope {}; this needs admin",
                self.key_id, self.scope
            )))
        }
    }

    pub fn require_read(&self, app: &str) -> Result<(), ApiError> {
        if self.scope.can_read(app) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "key {} has scope {}; reading app {app} needs read:{app}, deploy:{app} or admin",
                self.key_id, self.scope
            )))
        }
    }

    pub fn require_write(&self, app: &str) -> Result<(), ApiError> {
        if self.scope.can_write(app) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "key {} has scope {}; changing app {app} needs deploy:{app} or admin",
                self.key_id, self.scope
            )))
        }
    }
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
        let (id, secret) = keys::lookup_parts(token);
        let record = gateway.node.reader().key(&id)?;
        let record = record
            .filter(|record| keys::secret_matches(&secret, &record.secret_hash))
            .ok_or_else(|| ApiError::unauthorized("invalid or revoked API key"))?;
        let scope = Scope::parse(&record.scope)
            .map_err(|e| ApiError::internal(format!("stored key {id} has a bad scope: {e}")))?;
        gateway.key_uses.record(&id, picloud_actors::host::now_ms());
        Ok(Caller { key_id: id, scope })
    }
}
