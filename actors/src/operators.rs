//! Operators, the people who run PiCloud: accounts, setup tokens, logins
//! and app memberships. [`OperatorService`] keeps an operator's account as
//! an end user of the reserved [`OPERATORS_NAMESPACE`] through
//! [`UserService`] (the same argon2id pool, sessions and single-use tokens)
//! and proposes `Command::Operators` for the admin flag and memberships.
//!
//! ```text
//!  add:    users.create(random password) ─▶ Operators::Put ─▶ setup token (Reset kind)
//!  setup:  password policy ─▶ TokenConsume ─▶ users.set_password
//!  login:  users.login ─▶ operator record? ─▶ "pcs_" + session token
//!  verify: "pcs_" stripped ─▶ users.verify ─▶ operator record (admin flag)
//!  remove: Operators::Remove (never the last owner) ─▶ users.delete (sessions end)
//! ```
//!
//! Session tokens carry the `pcs_` prefix so one is told from an API key
//! (`pck_`) at a glance, by people and by the gateway.

use std::collections::BTreeSet;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use picloud_cluster::Node;
use picloud_lua_sdk::{Code, HostError};
use picloud_storage::operators::{
    OPERATORS_NAMESPACE, OperatorRecord, OperatorsCommand, OperatorsResult, Role,
};
use picloud_storage::users::{TokenKind, TokenRecord, UsersCommand, normalize_email};
use picloud_storage::{Command, CommandResult};
use rand::RngCore as _;
use serde_json::{Value, json};

use crate::error::{apply_host_error, cluster_host_error, storage_error, unexpected};
use crate::files::now_ms;
use crate::users::flows::FlowError;
use crate::users::{AuthPolicy, UserService, token_hash};

/// What every operator session token starts with.
pub const SESSION_PREFIX: &str = "pcs_";

/// What every setup token starts with.
pub const SETUP_PREFIX: &str = "pcsetup_";

/// The most operators `list` returns, and the most members of one app it
/// lists: operators are people, so one page holds them all.
pub const OPERATORS_LIST_MAX: usize = 10_000;

/// The bounds of operators, filled from the binary's settings.
#[derive(Debug, Clone, Copy)]
pub struct OperatorsConfig {
    /// How long a setup token printed by `admins add` stays usable.
    pub setup_ttl_ms: u64,
}

impl Default for OperatorsConfig {
    fn default() -> Self {
        OperatorsConfig {
            setup_ttl_ms: 24 * 3_600_000,
        }
    }
}

/// An operator a session token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: String,
    pub email: String,
    pub admin: bool,
}

/// A new operator and the setup token that sets its password.
#[derive(Debug, Clone)]
pub struct Added {
    pub id: String,
    pub setup_token: String,
    pub expires_ms: u64,
}

/// Operators of this cluster, for the admin API. Cheap to clone.
#[derive(Clone)]
pub struct OperatorService {
    node: Node,
    users: UserService,
    config: OperatorsConfig,
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn no_operator(email: &str) -> HostError {
    HostError::new(Code::UserNotFound, format!("no operator has email {email}"))
}

/// The policy operators' passwords and sessions follow: the node's. Built
/// once (its default mail templates are strings); each call clones an `Arc`.
fn policy() -> AuthPolicy {
    static POLICY: std::sync::LazyLock<AuthPolicy> = std::sync::LazyLock::new(AuthPolicy::default);
    POLICY.clone()
}

impl OperatorService {
    pub fn new(node: Node, users: UserService, config: OperatorsConfig) -> OperatorService {
        OperatorService {
            node,
            users,
            config,
        }
    }

    async fn write(&self, command: Command) -> Result<CommandResult, HostError> {
        match self.node.write(command).await.map_err(cluster_host_error)? {
            CommandResult::Rejected(rejection) => Err(apply_host_error(rejection)),
            result => Ok(result),
        }
    }

    async fn operators_write(
        &self,
        command: OperatorsCommand,
    ) -> Result<OperatorsResult, HostError> {
        match self.write(Command::Operators(command)).await? {
            CommandResult::Operators(result) => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    /// The id of the operator whose email is `email` (after a read barrier).
    pub async fn id_of(&self, email: &str) -> Result<String, HostError> {
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        let email = normalize_email(email);
        let reader = self.node.reader();
        let id = reader
            .user_id_by_email(OPERATORS_NAMESPACE, &email)
            .map_err(storage_error)?
            .ok_or_else(|| no_operator(&email))?;
        if reader.operator(&id).map_err(storage_error)?.is_none() {
            return Err(no_operator(&email));
        }
        Ok(id)
    }

    /// Creates the operator `email` (a cluster admin when `admin`) with a
    /// password nobody knows, and a single-use setup token that sets one.
    pub async fn add(&self, email: &str, admin: bool) -> Result<Added, HostError> {
        // 256 random bits: passes any policy, and nobody can log in with it.
        let unusable = random_token("");
        let user = self
            .users
            .create(
                OPERATORS_NAMESPACE,
                email,
                unusable,
                &json!({}),
                &[],
                policy(),
            )
            .await?;
        let id = user["id"].as_str().unwrap_or_default().to_string();
        let put = OperatorsCommand::Put {
            id: id.clone(),
            admin,
        };
        if let Err(error) = self.operators_write(put).await {
            // An account without its operator row would hold the email
            // (a second `add` would be `email_taken`): take it back.
            if let Err(cleanup) = self.users.delete(OPERATORS_NAMESPACE, &id).await {
                tracing::warn!(%cleanup, id, "an unfinished operator account was left");
            }
            return Err(error);
        }
        let setup_token = random_token(SETUP_PREFIX);
        let expires_ms = now_ms().saturating_add(self.config.setup_ttl_ms);
        self.write(Command::Users(UsersCommand::TokenCreate {
            app: OPERATORS_NAMESPACE.into(),
            token: token_hash(&setup_token),
            record: TokenRecord {
                kind: TokenKind::Reset,
                subject: id.clone(),
                roles: BTreeSet::new(),
                expires_ms,
            },
        }))
        .await?;
        Ok(Added {
            id,
            setup_token,
            expires_ms,
        })
    }

    /// Sets the password of the operator a setup token was minted for, and
    /// uses the token up in the same entry (a refused password or a busy
    /// hash pool leaves the token usable). `auth_token_invalid` when it is
    /// unknown, used or expired.
    pub async fn setup(&self, token: &str, password: String) -> Result<String, FlowError> {
        self.users
            .reset_password_of(OPERATORS_NAMESPACE, token, password, &policy())
            .await
    }

    /// A session for an operator's email and password: `{token, operator}`.
    /// `invalid_credentials` for a wrong pair or a removed operator.
    pub async fn login(
        &self,
        client: IpAddr,
        email: &str,
        password: String,
    ) -> Result<Value, FlowError> {
        // The end users' login limits (per account, per client address).
        let login = self
            .users
            .login_flow(OPERATORS_NAMESPACE, client, email, password, &policy())
            .await?;
        let token = login["token"].as_str().unwrap_or_default();
        let id = login["user"]["id"].as_str().unwrap_or_default();
        let record = self
            .node
            .reader()
            .operator(id)
            .map_err(|error| FlowError::Refused(storage_error(error)))?;
        let Some(record) = record else {
            self.users.logout(OPERATORS_NAMESPACE, token).await?;
            return Err(FlowError::Refused(HostError::new(
                Code::InvalidCredentials,
                "wrong email or password",
            )));
        };
        Ok(json!({
            "token": format!("{SESSION_PREFIX}{token}"),
            "operator": {
                "id": id,
                "email": login["user"]["email"],
                "admin": record.admin,
            },
        }))
    }

    /// The operator of session `token` (with its prefix), or `None` when the
    /// session is unknown, expired or revoked, or its operator was removed.
    pub async fn verify(&self, token: &str) -> Result<Option<Operator>, HostError> {
        let Some(session) = token.strip_prefix(SESSION_PREFIX) else {
            return Ok(None);
        };
        let Some(user) = self
            .users
            .verify(OPERATORS_NAMESPACE, session, policy())
            .await?
        else {
            return Ok(None);
        };
        let id = user["id"].as_str().unwrap_or_default().to_string();
        let record = self.node.reader().operator(&id).map_err(storage_error)?;
        Ok(record.map(|record| Operator {
            email: user["email"].as_str().unwrap_or_default().to_string(),
            id,
            admin: record.admin,
        }))
    }

    /// Ends session `token` (with its prefix).
    pub async fn logout(&self, token: &str) -> Result<bool, HostError> {
        let session = token.strip_prefix(SESSION_PREFIX).unwrap_or(token);
        self.users.logout(OPERATORS_NAMESPACE, session).await
    }

    /// Removes operator `email`: its memberships, then its account and
    /// every session. `last_owner` when it is the only owner of an app.
    pub async fn remove(&self, email: &str) -> Result<(), HostError> {
        let id = self.id_of(email).await?;
        self.operators_write(OperatorsCommand::Remove { id: id.clone() })
            .await?;
        self.users.delete(OPERATORS_NAMESPACE, &id).await?;
        Ok(())
    }

    /// Every operator: `{operators: [{id, email, admin, apps, ...}]}`.
    pub async fn list(&self) -> Result<Value, HostError> {
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        let reader = self.node.reader();
        let mut operators = Vec::new();
        for (id, record) in reader
            .operators(OPERATORS_LIST_MAX)
            .map_err(storage_error)?
        {
            let Some(user) = reader
                .user(OPERATORS_NAMESPACE, &id)
                .map_err(storage_error)?
            else {
                continue;
            };
            operators.push(self.view(&id, &user.email, &record, user.last_login_ms)?);
        }
        Ok(json!({ "operators": operators }))
    }

    fn view(
        &self,
        id: &str,
        email: &str,
        record: &OperatorRecord,
        last_login_ms: u64,
    ) -> Result<Value, HostError> {
        let reader = self.node.reader();
        let mut apps = serde_json::Map::new();
        for app in &record.apps {
            if let Some(role) = reader.member_role(app, id).map_err(storage_error)? {
                apps.insert(app.clone(), Value::String(role.to_string()));
            }
        }
        Ok(json!({
            "id": id,
            "email": email,
            "admin": record.admin,
            "apps": apps,
            "last_login_ms": last_login_ms,
        }))
    }

    /// Operator `id`'s role in `app` on this node's applied state (no read
    /// barrier: the check of every admin request).
    pub fn role(&self, app: &str, id: &str) -> Result<Option<Role>, HostError> {
        self.node
            .reader()
            .member_role(app, id)
            .map_err(storage_error)
    }

    /// Makes operator `email` a member of `app` with `role`.
    pub async fn member_set(&self, app: &str, email: &str, role: Role) -> Result<(), HostError> {
        let id = self.id_of(email).await?;
        self.operators_write(OperatorsCommand::MemberSet {
            app: app.into(),
            id,
            role,
        })
        .await?;
        Ok(())
    }

    /// Makes operator `id` (known, e.g. the caller) a member of `app`.
    pub async fn member_set_id(&self, app: &str, id: &str, role: Role) -> Result<(), HostError> {
        self.operators_write(OperatorsCommand::MemberSet {
            app: app.into(),
            id: id.into(),
            role,
        })
        .await?;
        Ok(())
    }

    /// Removes operator `email` from `app`; whether it was a member.
    pub async fn member_remove(&self, app: &str, email: &str) -> Result<bool, HostError> {
        let id = self.id_of(email).await?;
        let result = self
            .operators_write(OperatorsCommand::MemberRemove {
                app: app.into(),
                id,
            })
            .await?;
        Ok(matches!(
            result,
            OperatorsResult::MemberRemoved { existed: true }
        ))
    }

    /// The members of `app`: `{members: [{id, email, role}]}`.
    pub async fn members(&self, app: &str) -> Result<Value, HostError> {
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        let reader = self.node.reader();
        let mut members = Vec::new();
        for (id, role) in reader
            .members(app, OPERATORS_LIST_MAX)
            .map_err(storage_error)?
        {
            let email = reader
                .user(OPERATORS_NAMESPACE, &id)
                .map_err(storage_error)?
                .map(|user| user.email)
                .unwrap_or_default();
            members.push(json!({"id": id, "email": email, "role": role.to_string()}));
        }
        Ok(json!({ "members": members }))
    }
}
