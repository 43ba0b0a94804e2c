//! Bearer-key authentication for the admin API.

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
        Ok(Caller { key_id: id, scope })
    }
}
