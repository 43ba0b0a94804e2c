//! The cluster: status, the join token and removing a node
//! (`/cluster/...`).

use axum::Json;
use axum::extract::{Path, State};
use picloud_actors::host::now_ms;
use picloud_lua_sdk::Code;
use picloud_storage::Command;
use serde_json::{Value, json};

use super::checks::accepted;
use super::triggers::trigger_backlog;
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, Gateway};

/// Every member as this node sees it. Any valid key may look.
#[utoipa::path(
    get,
    path = "/cluster/status",
    tag = "cluster",
    responses((status = 200, description = "The cluster's nodes, roles and indexes.")),
)]
pub(super) async fn cluster_status(
    State(gateway): State<Gateway>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut status = json!(gateway.node.cluster_status().await);
    status["trigger_backlog"] = json!(
        trigger_backlog(&gateway)?
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>()
    );
    status["secrets"] = gateway.secret_keys.status_json();
    Ok(Json(status))
}

/// The join token for new nodes. Admin only: it admits a machine to the cluster.
#[utoipa::path(
    get,
    path = "/cluster/token",
    tag = "cluster",
    responses((status = 200, description = "A join token.")),
)]
pub(super) async fn cluster_token(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "token": join_token(&gateway, &caller)? })))
}

/// The join token (admin only); shared by the admin API and the dashboard.
pub(crate) fn join_token(gateway: &Gateway, caller: &Caller) -> Result<String, ApiError> {
    caller.require_admin()?;
    gateway.node.join_token()?.ok_or_else(|| {
        ApiError::new(
            Code::NotReady,
            "the cluster has no join secret yet; retry in a moment",
        )
    })
}

/// Removes a node for good (`picloud cluster remove ID`): it leaves the
/// membership (so it no longer counts toward quorum) and its id is never
/// given out again. The leader cannot remove itself.
#[utoipa::path(
    delete,
    path = "/cluster/nodes/{id}",
    tag = "cluster",
    params(("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The node is removed.")),
)]
pub(super) async fn remove_node(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = remove(&gateway, &caller, &id).await?;
    Ok(Json(json!({ "removed": id })))
}

/// Removes node `id` (admin only); shared by the admin API and the dashboard.
pub(crate) async fn remove(gateway: &Gateway, caller: &Caller, id: &str) -> Result<u64, ApiError> {
    caller.require_admin()?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::new(Code::InvalidField, format!("id: {id:?} is not a node id")))?;
    let status = gateway.node.status();
    if !status.nodes.contains_key(&id) {
        return Err(ApiError::new(
            Code::NodeNotFound,
            format!("node {id} is not a member of this cluster"),
        ));
    }
    if status.leader == Some(id) {
        return Err(ApiError::new(
            Code::IsLeader,
            format!(
                "node {id} is the leader; stop it first so another node takes over, then remove it"
            ),
        ));
    }
    accepted(
        gateway
            .node
            .write(Command::RemoveNode {
                id,
                now_ms: now_ms(),
            })
            .await?,
    )?;
    Ok(id)
}
