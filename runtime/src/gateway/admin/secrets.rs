//! App secrets in the admin API (admin key only). Values go in request
//! bodies, never in URLs, and never come back out: a list shows names and
//! update times, and only scripts (`secrets.get`) read values.
//!
//! ```text
//!  PUT    /apps/{app}/secrets/{name}   body = the value's bytes ─▶ seal here ─▶ SecretSet
//!  DELETE /apps/{app}/secrets/{name}                             ─▶ SecretDelete
//!  GET    /apps/{app}/secrets          names + updated_ms
//!  POST   /secrets/rotate-key          re-seal every secret under this node's current key
//! ```
//!
//! The receiving node seals with its current master key and a fresh random
//! nonce, so only ciphertext reaches the log, the snapshots and other nodes.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use picloud_actors::error::secret_code;
use picloud_actors::host::now_ms;
use picloud_lua_sdk::Code;
use picloud_storage::command::SecretRekey;
use picloud_storage::secret_box::{NONCE_BYTES, sealed_key_id};
use picloud_storage::secrets::{SECRET_VALUE_BYTES_MAX, validate_secret_name};
use picloud_storage::{Command, CommandResult};
use serde_json::{Value, json};

use super::checks::{accepted, require_app};
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, Gateway, read_body};

/// Re-sealed secrets proposed in one log entry by `rotate-key` (at most
/// ~6.4 MiB of sealed values with the largest secrets).
const REKEY_SECRETS_PER_ENTRY_MAX: usize = 100;

pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    validate_secret_name(name).map_err(|message| ApiError::new(Code::InvalidSecretName, message))
}

fn fresh_nonce() -> [u8; NONCE_BYTES] {
    rand::random()
}

/// Refuses to seal on a node whose keys cannot open the app's existing
/// secrets: what it sealed, the rest of the cluster could not open either.
fn check_key_matches(gateway: &Gateway, app: &str) -> Result<(), ApiError> {
    for (name, record) in gateway.node.reader().secrets(app)? {
        if let Some(sealed_with) = gateway.secret_keys.foreign_key_id(&record.sealed) {
            return Err(ApiError::new(
                Code::SecretKeyMismatch,
                format!(
                    "secret {name} of app {app} is sealed with master key {sealed_with}, this node has {}: start it with the cluster's PICLOUD_SECRET_KEY",
                    gateway.secret_keys.keyring.describe()
                ),
            ));
        }
    }
    Ok(())
}

/// Seals `value` under this node's current key and proposes it (the caller
/// is an admin, the name is checked and the value not empty); the time it
/// was set. The admin API and the dashboard's secrets page share it.
pub(crate) async fn seal_and_set(
    gateway: &Gateway,
    app: &str,
    name: &str,
    value: &[u8],
) -> Result<u64, ApiError> {
    gateway.node.read_barrier().await?;
    check_key_matches(gateway, app)?;
    let sealed = gateway
        .secret_keys
        .keyring
        .current()
        .seal(app, name, value, fresh_nonce());
    let now = now_ms();
    accepted(
        gateway
            .node
            .write(Command::SecretSet {
                app: app.to_string(),
                name: name.to_string(),
                sealed,
                now_ms: now,
            })
            .await?,
    )?;
    Ok(now)
}

/// Deletes secret `name` of `app` (the caller is an admin).
pub(crate) async fn remove(gateway: &Gateway, app: &str, name: &str) -> Result<(), ApiError> {
    check_name(name)?;
    accepted(
        gateway
            .node
            .write(Command::SecretDelete {
                app: app.to_string(),
                name: name.to_string(),
            })
            .await?,
    )?;
    Ok(())
}

#[utoipa::path(
    put,
    path = "/apps/{app}/secrets/{name}",
    tag = "secrets",
    params(("app" = String, Path, description = "The app's name."), ("name" = String, Path, description = "The item's name.")),
    request_body(content = Vec<u8>, description = "The secret's value, raw bytes.", content_type = "application/octet-stream"),
    responses((status = 200, description = "The secret is set.")),
)]
pub(super) async fn set(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, name)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    check_name(&name)?;
    require_app(&gateway, &app)?;
    let value = read_body(body, SECRET_VALUE_BYTES_MAX)
        .await
        .map_err(|error| match error.code {
            Code::BodyTooLarge => ApiError::new(
                Code::SecretTooLarge,
                format!("secret values are at most {SECRET_VALUE_BYTES_MAX} bytes"),
            ),
            _ => error,
        })?;
    if value.is_empty() {
        return Err(ApiError::new(
            Code::EmptySecret,
            "the secret value is empty (nothing on stdin?)",
        ));
    }
    let now = seal_and_set(&gateway, &app, &name, &value).await?;
    Ok(Json(json!({"app": app, "name": name, "updated_ms": now})))
}

#[utoipa::path(
    delete,
    path = "/apps/{app}/secrets/{name}",
    tag = "secrets",
    params(("app" = String, Path, description = "The app's name."), ("name" = String, Path, description = "The item's name.")),
    responses((status = 200, description = "The secret is deleted.")),
)]
pub(super) async fn delete(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    remove(&gateway, &app, &name).await?;
    Ok(Json(json!({"app": app, "deleted": name})))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/secrets",
    tag = "secrets",
    params(("app" = String, Path, description = "The app's name.")),
    responses((status = 200, description = "The secrets' names and times (never values).")),
)]
pub(super) async fn list(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    require_app(&gateway, &app)?;
    gateway.node.read_barrier().await?;
    let secrets: Vec<Value> = gateway
        .node
        .reader()
        .secrets(&app)?
        .iter()
        .map(|(name, record)| json!({"name": name, "updated_ms": record.updated_ms}))
        .collect();
    Ok(Json(json!({"app": app, "secrets": secrets})))
}

/// Re-seals every secret of every app that is not under this node's current
/// key (opening it with a previous key), and proposes the results guarded
/// per value (`Command::SecretsRekey`); then the apps' realtime signing keys
/// the same way (`Realtime::rekey_signing_keys`). Values no held key opens
/// are reported, not touched.
#[utoipa::path(
    post,
    path = "/secrets/rotate-key",
    tag = "secrets",
    responses((status = 200, description = "Every secret is sealed under the new master key.")),
)]
pub(super) async fn rotate_key(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    gateway.node.read_barrier().await?;
    let keyring = &gateway.secret_keys.keyring;
    let current_id = keyring.current().id_hex();
    let reader = gateway.node.reader();
    let mut rekeys = Vec::new();
    let mut unreadable = Vec::new();
    let mut already_current = 0u64;
    for app in reader.apps()? {
        for (name, record) in reader.secrets(&app.name)? {
            if sealed_key_id(&record.sealed).as_deref() == Some(current_id.as_str()) {
                already_current += 1;
                continue;
            }
            match keyring.open(&app.name, &name, &record.sealed) {
                Ok(plaintext) => {
                    let new = keyring
                        .current()
                        .seal(&app.name, &name, &plaintext, fresh_nonce());
                    rekeys.push(SecretRekey {
                        app: app.name.clone(),
                        name,
                        old: record.sealed,
                        new,
                    });
                }
                Err(error) => unreadable.push(json!({
                    "app": app.name,
                    "name": name,
                    "code": secret_code(&error).as_str(),
                    "message": error.to_string(),
                })),
            }
        }
    }
    let (mut rekeyed, mut changed) = (0u64, 0u64);
    while !rekeys.is_empty() {
        let rest = rekeys.split_off(rekeys.len().min(REKEY_SECRETS_PER_ENTRY_MAX));
        let chunk = std::mem::replace(&mut rekeys, rest);
        match accepted(
            gateway
                .node
                .write(Command::SecretsRekey { secrets: chunk })
                .await?,
        )? {
            CommandResult::SecretsRekeyed {
                rekeyed: swapped,
                changed: skipped,
            } => {
                rekeyed += swapped;
                changed += skipped;
            }
            other => {
                return Err(ApiError::internal(format!(
                    "unexpected rekey result {other:?}"
                )));
            }
        }
    }
    // The apps' realtime signing keys are sealed the same way: re-sealed
    // too, so dropping the previous master key later breaks no token.
    let realtime = gateway.realtime.rekey_signing_keys().await?;
    unreadable.extend(realtime.unreadable.iter().map(|(app, error)| {
        json!({
            "app": app,
            "name": "(realtime signing key)",
            "code": secret_code(error).as_str(),
            "message": error.to_string(),
        })
    }));
    Ok(Json(json!({
        "key_id": current_id,
        "realtime_keys_rekeyed": realtime.rekeyed,
        "realtime_keys_already_current": realtime.already_current,
        "realtime_keys_changed_meanwhile": realtime.changed_meanwhile,
        "rekeyed": rekeyed,
        "already_current": already_current,
        "changed_meanwhile": changed,
        "unreadable": unreadable,
    })))
}
