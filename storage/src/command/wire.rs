//! How a [`Command`] is encoded in the log: every shape ever written, each
//! at its variant index, and the upcast of the legacy ones (see "The log's
//! one shape" in the `command` module comment).
//!
//! [`Wire`] borrows what it encodes (`Cow::Borrowed`), so encoding a command
//! copies no bundle or value; decoding yields owned values (`Cow::Owned`)
//! that move into the command.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Command, DeployParts, DocOp, KvOp, RunPublish, SecretRekey, VersionDeploy};
use crate::docs::IndexDef;
use crate::email::EmailCommand;
use crate::files::{BlockHash, FileLimits};
use crate::inbound_mail::InboundMail;
use crate::node::{NodeId, NodeInfo};
use crate::operators::OperatorsCommand;
use crate::triggers::TriggerSet;
use crate::users::UsersCommand;

/// Every command shape the log has ever held, in the order they were added.
///
/// Append-only: bincode encodes a variant by its position, and the log on
/// disk holds encoded commands, so new variants go at the end and none is
/// ever reordered or removed. The names are [`Command`]'s of the time.
///
/// Every field is a `Cow` of the command's field (`str` for a `String`, a
/// slice for a `Vec`): borrowed when a command is encoded, owned when one is
/// decoded. serde (de)serializes a `Cow` exactly as what it holds, so the
/// bytes are those of the old enum.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Command")]
enum Wire<'a> {
    Kv {
        app: Cow<'a, str>,
        op: Cow<'a, KvOp>,
        now_ms: Cow<'a, u64>,
    },
    KvAtomic {
        app: Cow<'a, str>,
        ops: Cow<'a, [KvOp]>,
        now_ms: Cow<'a, u64>,
    },
    AppCreate {
        app: Cow<'a, str>,
        now_ms: Cow<'a, u64>,
    },
    /// An app delete that leaves the app's keys alone.
    AppDelete {
        app: Cow<'a, str>,
    },
    /// A deploy with neither triggers nor indexes.
    Deploy {
        app: Cow<'a, str>,
        bundle: Cow<'a, [u8]>,
        now_ms: Cow<'a, u64>,
        versions_keep: Cow<'a, u32>,
    },
    Rollback {
        app: Cow<'a, str>,
        to_version: Cow<'a, Option<u64>>,
        now_ms: Cow<'a, u64>,
    },
    /// A key create that does not check the app its scope names.
    KeyCreate {
        id: Cow<'a, str>,
        name: Cow<'a, str>,
        scope: Cow<'a, str>,
        secret_hash: Cow<'a, [u8]>,
        now_ms: Cow<'a, u64>,
    },
    KeyRevoke {
        id: Cow<'a, str>,
    },
    Batch(Cow<'a, [Command]>),
    AllocateNodeId {
        now_ms: Cow<'a, u64>,
    },
    SetJoinSecret {
        secret: Cow<'a, [u8]>,
        now_ms: Cow<'a, u64>,
    },
    RemoveNode {
        id: Cow<'a, NodeId>,
        now_ms: Cow<'a, u64>,
    },
    SetClusterCa {
        cert_pem: Cow<'a, str>,
        key_pem: Cow<'a, str>,
    },
    RegisterNode {
        id: Cow<'a, NodeId>,
        node: Cow<'a, NodeInfo>,
    },
    /// A deploy with triggers and no indexes.
    DeployApp {
        app: Cow<'a, str>,
        bundle: Cow<'a, [u8]>,
        now_ms: Cow<'a, u64>,
        versions_keep: Cow<'a, u32>,
        triggers: Cow<'a, TriggerSet>,
    },
    FireCron {
        app: Cow<'a, str>,
        trigger: Cow<'a, str>,
        slot_ms: Cow<'a, u64>,
        now_ms: Cow<'a, u64>,
    },
    ClaimRuns {
        app: Cow<'a, str>,
        ids: Cow<'a, [u64]>,
        term: Cow<'a, u64>,
        node: Cow<'a, NodeId>,
        now_ms: Cow<'a, u64>,
        reclaim_after_ms: Cow<'a, u64>,
    },
    /// A completed run that wrote no documents.
    CompleteRun {
        app: Cow<'a, str>,
        id: Cow<'a, u64>,
        term: Cow<'a, u64>,
        claim_ms: Cow<'a, u64>,
        ops: Cow<'a, [KvOp]>,
        now_ms: Cow<'a, u64>,
    },
    FailRun {
        app: Cow<'a, str>,
        id: Cow<'a, u64>,
        term: Cow<'a, u64>,
        claim_ms: Cow<'a, u64>,
        error: Cow<'a, str>,
        now_ms: Cow<'a, u64>,
    },
    RetryDeadLetter {
        app: Cow<'a, str>,
        id: Cow<'a, u64>,
        now_ms: Cow<'a, u64>,
    },
    DeleteDeadLetter {
        app: Cow<'a, str>,
        id: Cow<'a, u64>,
    },
    Docs {
        app: Cow<'a, str>,
        ops: Cow<'a, [DocOp]>,
        now_ms: Cow<'a, u64>,
    },
    /// A deploy with triggers and indexes that may create the app.
    DeployVersion {
        app: Cow<'a, str>,
        bundle: Cow<'a, [u8]>,
        now_ms: Cow<'a, u64>,
        versions_keep: Cow<'a, u32>,
        triggers: Cow<'a, TriggerSet>,
        indexes: Cow<'a, [IndexDef]>,
    },
    SecretSet {
        app: Cow<'a, str>,
        name: Cow<'a, str>,
        sealed: Cow<'a, [u8]>,
        now_ms: Cow<'a, u64>,
    },
    SecretDelete {
        app: Cow<'a, str>,
        name: Cow<'a, str>,
    },
    SecretsRekey {
        secrets: Cow<'a, [SecretRekey]>,
    },
    PublishLib {
        name: Cow<'a, str>,
        files: Cow<'a, [u8]>,
        now_ms: Cow<'a, u64>,
        versions_keep: Cow<'a, u32>,
    },
    /// A completed run that wrote documents.
    CompleteRunWithDocs {
        app: Cow<'a, str>,
        id: Cow<'a, u64>,
        term: Cow<'a, u64>,
        claim_ms: Cow<'a, u64>,
        ops: Cow<'a, [KvOp]>,
        docs: Cow<'a, [DocOp]>,
        now_ms: Cow<'a, u64>,
    },
    /// An app delete that revokes the app's scoped keys.
    AppDeleteWithKeys {
        app: Cow<'a, str>,
    },
    /// A key create rejected when its scope names a missing app.
    KeyCreateForApp {
        id: Cow<'a, str>,
        name: Cow<'a, str>,
        scope: Cow<'a, str>,
        secret_hash: Cow<'a, [u8]>,
        now_ms: Cow<'a, u64>,
    },
    /// A deploy with triggers and indexes that never creates the app.
    DeployExistingVersion(WireVersionDeploy<'a>),
    Publish {
        app: Cow<'a, str>,
        topic: Cow<'a, str>,
        message: Cow<'a, [u8]>,
        retain: Cow<'a, u64>,
        now_ms: Cow<'a, u64>,
    },
    RealtimeKeySet {
        app: Cow<'a, str>,
        sealed: Cow<'a, [u8]>,
        only_if_absent: Cow<'a, bool>,
    },
    /// A completed run that published durable messages.
    CompleteRunWithPublishes {
        app: Cow<'a, str>,
        id: Cow<'a, u64>,
        term: Cow<'a, u64>,
        claim_ms: Cow<'a, u64>,
        ops: Cow<'a, [KvOp]>,
        docs: Cow<'a, [DocOp]>,
        publishes: Cow<'a, [RunPublish]>,
        now_ms: Cow<'a, u64>,
    },
    RealtimeKeyRekey {
        app: Cow<'a, str>,
        old: Cow<'a, [u8]>,
        new: Cow<'a, [u8]>,
    },
    FilePut {
        app: Cow<'a, str>,
        path: Cow<'a, str>,
        size: Cow<'a, u64>,
        content_type: Cow<'a, str>,
        sha256: Cow<'a, [u8; 32]>,
        blocks: Cow<'a, [BlockHash]>,
        inline: Cow<'a, Option<Vec<u8>>>,
        limits: Cow<'a, FileLimits>,
        depth: Cow<'a, u32>,
        now_ms: Cow<'a, u64>,
    },
    FileDelete {
        app: Cow<'a, str>,
        path: Cow<'a, str>,
        depth: Cow<'a, u32>,
        now_ms: Cow<'a, u64>,
    },
    Email(Cow<'a, EmailCommand>),
    InboundMail(Cow<'a, InboundMail>),
    Users(Cow<'a, UsersCommand>),
    Operators(Cow<'a, OperatorsCommand>),
}

/// The fields of [`Wire::DeployExistingVersion`], as they were written.
#[derive(Serialize, Deserialize)]
#[serde(rename = "VersionDeploy")]
struct WireVersionDeploy<'a> {
    app: Cow<'a, str>,
    bundle: Cow<'a, [u8]>,
    now_ms: Cow<'a, u64>,
    versions_keep: Cow<'a, u32>,
    triggers: Cow<'a, TriggerSet>,
    indexes: Cow<'a, [IndexDef]>,
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        to_wire(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Wire::deserialize(deserializer).map(upcast)
    }
}

/// The two conversions, [`to_wire`] (encoding) and [`upcast`] (decoding),
/// as exhaustive matches: the variants whose wire shape is the command's own
/// are listed once by their fields (each borrowed on the way out and owned
/// on the way in); the others are written out as match arms.
macro_rules! conversions {
    (
        same_shape { $($variant:ident { $($field:ident),* }),* $(,)? }
        to_wire { $($to_pattern:pat $(if $guard:expr)? => $to_wire:expr),* $(,)? }
        upcast { $($from_pattern:pat => $upcast:expr),* $(,)? }
    ) => {
        /// The encoding: the wire variant that says exactly what the
        /// command holds (for a legacy meaning, the legacy variant that had
        /// it).
        fn to_wire(command: &Command) -> Wire<'_> {
            match command {
                $(Command::$variant { $($field),* } => Wire::$variant {
                    $($field: Cow::Borrowed($field)),*
                },)*
                $($to_pattern $(if $guard)? => $to_wire,)*
            }
        }

        /// The upcast: every shape ever written becomes the current one,
        /// with the fields that keep what the entry meant when written.
        fn upcast(wire: Wire<'_>) -> Command {
            match wire {
                $(Wire::$variant { $($field),* } => Command::$variant {
                    $($field: $field.into_owned()),*
                },)*
                $($from_pattern => $upcast,)*
            }
        }
    };
}

conversions! {
    same_shape {
        Kv { app, op, now_ms },
        KvAtomic { app, ops, now_ms },
        AppCreate { app, now_ms },
        Rollback { app, to_version, now_ms },
        KeyRevoke { id },
        AllocateNodeId { now_ms },
        SetJoinSecret { secret, now_ms },
        RemoveNode { id, now_ms },
        SetClusterCa { cert_pem, key_pem },
        RegisterNode { id, node },
        FireCron { app, trigger, slot_ms, now_ms },
        ClaimRuns { app, ids, term, node, now_ms, reclaim_after_ms },
        FailRun { app, id, term, claim_ms, error, now_ms },
        RetryDeadLetter { app, id, now_ms },
        DeleteDeadLetter { app, id },
        Docs { app, ops, now_ms },
        SecretSet { app, name, sealed, now_ms },
        SecretDelete { app, name },
        SecretsRekey { secrets },
        PublishLib { name, files, now_ms, versions_keep },
        Publish { app, topic, message, retain, now_ms },
        RealtimeKeySet { app, sealed, only_if_absent },
        RealtimeKeyRekey { app, old, new },
        FilePut { app, path, size, content_type, sha256, blocks, inline, limits, depth, now_ms },
        FileDelete { app, path, depth, now_ms },
    }
    to_wire {
        Command::Batch(commands) => Wire::Batch(Cow::Borrowed(commands)),
        Command::Email(email) => Wire::Email(Cow::Borrowed(email)),
        Command::Users(users) => Wire::Users(Cow::Borrowed(users)),
        Command::Operators(operators) => Wire::Operators(Cow::Borrowed(operators)),
        Command::AppDelete { app, revoke_keys: false } => Wire::AppDelete {
            app: Cow::Borrowed(app),
        },
        Command::AppDelete { app, revoke_keys: true } => Wire::AppDeleteWithKeys {
            app: Cow::Borrowed(app),
        },
        Command::KeyCreate {
            id, name, scope, secret_hash, now_ms, scoped_app_must_exist: false,
        } => Wire::KeyCreate {
            id: Cow::Borrowed(id),
            name: Cow::Borrowed(name),
            scope: Cow::Borrowed(scope),
            secret_hash: Cow::Borrowed(secret_hash),
            now_ms: Cow::Borrowed(now_ms),
        },
        Command::KeyCreate {
            id, name, scope, secret_hash, now_ms, scoped_app_must_exist: true,
        } => Wire::KeyCreateForApp {
            id: Cow::Borrowed(id),
            name: Cow::Borrowed(name),
            scope: Cow::Borrowed(scope),
            secret_hash: Cow::Borrowed(secret_hash),
            now_ms: Cow::Borrowed(now_ms),
        },
        Command::CompleteRun { app, id, term, claim_ms, ops, docs, publishes, now_ms }
            if !publishes.is_empty() =>
        {
            Wire::CompleteRunWithPublishes {
                app: Cow::Borrowed(app),
                id: Cow::Borrowed(id),
                term: Cow::Borrowed(term),
                claim_ms: Cow::Borrowed(claim_ms),
                ops: Cow::Borrowed(ops),
                docs: Cow::Borrowed(docs),
                publishes: Cow::Borrowed(publishes),
                now_ms: Cow::Borrowed(now_ms),
            }
        },
        Command::CompleteRun { app, id, term, claim_ms, ops, docs, publishes: _, now_ms } if docs.is_empty() => {
            Wire::CompleteRun {
                app: Cow::Borrowed(app),
                id: Cow::Borrowed(id),
                term: Cow::Borrowed(term),
                claim_ms: Cow::Borrowed(claim_ms),
                ops: Cow::Borrowed(ops),
                now_ms: Cow::Borrowed(now_ms),
            }
        },
        Command::CompleteRun { app, id, term, claim_ms, ops, docs, publishes: _, now_ms } => {
            Wire::CompleteRunWithDocs {
                app: Cow::Borrowed(app),
                id: Cow::Borrowed(id),
                term: Cow::Borrowed(term),
                claim_ms: Cow::Borrowed(claim_ms),
                ops: Cow::Borrowed(ops),
                docs: Cow::Borrowed(docs),
                now_ms: Cow::Borrowed(now_ms),
            }
        },
        Command::Deploy(deploy) => deploy_wire(deploy),
        Command::InboundMail(mail) => Wire::InboundMail(Cow::Borrowed(&**mail)),
    }
    upcast {
        Wire::Batch(commands) => Command::Batch(commands.into_owned()),
        Wire::Email(email) => Command::Email(email.into_owned()),
        Wire::InboundMail(mail) => Command::InboundMail(Box::new(mail.into_owned())),
        Wire::Users(users) => Command::Users(users.into_owned()),
        Wire::Operators(operators) => Command::Operators(operators.into_owned()),
        Wire::AppDelete { app } => Command::AppDelete {
            app: app.into_owned(),
            revoke_keys: false,
        },
        Wire::AppDeleteWithKeys { app } => Command::AppDelete {
            app: app.into_owned(),
            revoke_keys: true,
        },
        Wire::KeyCreate { id, name, scope, secret_hash, now_ms } => Command::KeyCreate {
            id: id.into_owned(),
            name: name.into_owned(),
            scope: scope.into_owned(),
            secret_hash: secret_hash.into_owned(),
            now_ms: now_ms.into_owned(),
            scoped_app_must_exist: false,
        },
        Wire::KeyCreateForApp { id, name, scope, secret_hash, now_ms } => Command::KeyCreate {
            id: id.into_owned(),
            name: name.into_owned(),
            scope: scope.into_owned(),
            secret_hash: secret_hash.into_owned(),
            now_ms: now_ms.into_owned(),
            scoped_app_must_exist: true,
        },
        Wire::CompleteRun { app, id, term, claim_ms, ops, now_ms } => Command::CompleteRun {
            app: app.into_owned(),
            id: id.into_owned(),
            term: term.into_owned(),
            claim_ms: claim_ms.into_owned(),
            ops: ops.into_owned(),
            docs: Vec::new(),
            publishes: Vec::new(),
            now_ms: now_ms.into_owned(),
        },
        Wire::CompleteRunWithDocs { app, id, term, claim_ms, ops, docs, now_ms } => {
            Command::CompleteRun {
                app: app.into_owned(),
                id: id.into_owned(),
                term: term.into_owned(),
                claim_ms: claim_ms.into_owned(),
                ops: ops.into_owned(),
                docs: docs.into_owned(),
                publishes: Vec::new(),
                now_ms: now_ms.into_owned(),
            }
        },
        Wire::CompleteRunWithPublishes { app, id, term, claim_ms, ops, docs, publishes, now_ms } => {
            Command::CompleteRun {
                app: app.into_owned(),
                id: id.into_owned(),
                term: term.into_owned(),
                claim_ms: claim_ms.into_owned(),
                ops: ops.into_owned(),
                docs: docs.into_owned(),
                publishes: publishes.into_owned(),
                now_ms: now_ms.into_owned(),
            }
        },
        Wire::Deploy { app, bundle, now_ms, versions_keep } => Command::Deploy(VersionDeploy {
            app: app.into_owned(),
            bundle: bundle.into_owned(),
            now_ms: now_ms.into_owned(),
            versions_keep: versions_keep.into_owned(),
            parts: DeployParts::Bundle,
        }),
        Wire::DeployApp { app, bundle, now_ms, versions_keep, triggers } => {
            Command::Deploy(VersionDeploy {
                app: app.into_owned(),
                bundle: bundle.into_owned(),
                now_ms: now_ms.into_owned(),
                versions_keep: versions_keep.into_owned(),
                parts: DeployParts::WithTriggers(triggers.into_owned()),
            })
        },
        Wire::DeployVersion { app, bundle, now_ms, versions_keep, triggers, indexes } => {
            Command::Deploy(VersionDeploy {
                app: app.into_owned(),
                bundle: bundle.into_owned(),
                now_ms: now_ms.into_owned(),
                versions_keep: versions_keep.into_owned(),
                parts: DeployParts::Full {
                    triggers: triggers.into_owned(),
                    indexes: indexes.into_owned(),
                    create_app: true,
                },
            })
        },
        Wire::DeployExistingVersion(deploy) => Command::Deploy(VersionDeploy {
            app: deploy.app.into_owned(),
            bundle: deploy.bundle.into_owned(),
            now_ms: deploy.now_ms.into_owned(),
            versions_keep: deploy.versions_keep.into_owned(),
            parts: DeployParts::Full {
                triggers: deploy.triggers.into_owned(),
                indexes: deploy.indexes.into_owned(),
                create_app: false,
            },
        }),
    }
}

/// The one of the four deploy variants that holds exactly `deploy`'s parts.
fn deploy_wire(deploy: &VersionDeploy) -> Wire<'_> {
    let app: Cow<'_, str> = Cow::Borrowed(&deploy.app);
    let bundle: Cow<'_, [u8]> = Cow::Borrowed(&deploy.bundle);
    let now_ms = Cow::Borrowed(&deploy.now_ms);
    let versions_keep = Cow::Borrowed(&deploy.versions_keep);
    match &deploy.parts {
        DeployParts::Bundle => Wire::Deploy {
            app,
            bundle,
            now_ms,
            versions_keep,
        },
        DeployParts::WithTriggers(triggers) => Wire::DeployApp {
            app,
            bundle,
            now_ms,
            versions_keep,
            triggers: Cow::Borrowed(triggers),
        },
        DeployParts::Full {
            triggers,
            indexes,
            create_app: true,
        } => Wire::DeployVersion {
            app,
            bundle,
            now_ms,
            versions_keep,
            triggers: Cow::Borrowed(triggers),
            indexes: Cow::Borrowed(indexes),
        },
        DeployParts::Full {
            triggers,
            indexes,
            create_app: false,
        } => Wire::DeployExistingVersion(WireVersionDeploy {
            app,
            bundle,
            now_ms,
            versions_keep,
            triggers: Cow::Borrowed(triggers),
            indexes: Cow::Borrowed(indexes),
        }),
    }
}

#[cfg(test)]
mod tests;
