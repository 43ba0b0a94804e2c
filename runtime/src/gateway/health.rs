//! `/_/health` (liveness) and `/_/ready` (readiness), both without a key.
//!
//! Health answers 200 while the process serves HTTP, whatever the cluster
//! does (a supervisor restarts a node whose health fails; restarting a node
//! that merely lost its quorum would not help). The one exception is a node
//! that learned it was removed from the cluster: it is stopping, and says so
//! with 503 `node_removed`.
//!
//! Ready answers 200 only when the node has a reachable quorum, knows a
//! leader it hears from, and has applied its log within
//! `READY_APPLY_LAG_MAX` entries; otherwise 503 `not_ready` saying which.
//! A load balancer sends traffic only to ready nodes.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use picloud_lua_sdk::Code;
use serde_json::{Value, json};

use super::{ApiError, Gateway};

/// What both endpoints report about the node, on success and failure alike.
fn node_fields(gateway: &Gateway) -> Value {
    let status = gateway.node.status();
    json!({
        "node_id": status.id,
        "role": status.role,
        "leader": status.leader,
        "applied_index": status.applied_index,
    })
}

/// 503 `node_removed` once the node knows it was removed, with the node's fields.
fn removed(gateway: &Gateway) -> Option<Response> {
    let reason = gateway.node.removed().borrow().clone()?;
    Some(failure(gateway, ApiError::new(Code::NodeRemoved, reason)))
}

/// An error body (`{"error":{...}}`) that also carries the node's fields.
fn failure(gateway: &Gateway, error: ApiError) -> Response {
    let mut body = node_fields(gateway);
    body["status"] = json!(error.code.as_str());
    body["error"] = json!({"code": error.code.as_str(), "message": error.message});
    (error.status, axum::Json(body)).into_response()
}

pub(super) async fn health(State(gateway): State<Gateway>) -> Response {
    if let Some(response) = removed(&gateway) {
        return response;
    }
    let mut body = node_fields(&gateway);
    body["status"] = json!("ok");
    axum::Json(body).into_response()
}

pub(super) async fn ready(State(gateway): State<Gateway>) -> Response {
    if let Some(response) = removed(&gateway) {
        return response;
    }
    match gateway.node.readiness() {
        Ok(()) => {
            let mut body = node_fields(&gateway);
            body["status"] = json!("ready");
            axum::Json(body).into_response()
        }
        Err(why) => failure(&gateway, ApiError::new(Code::NotReady, why)),
    }
}
