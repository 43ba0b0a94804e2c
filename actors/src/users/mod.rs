//! End users for scripts, the admin API and the CLI: [`UserService`]
//! checks and normalises input, hashes passwords on the bounded pool,
//! mints ids and tokens (so `apply` stays deterministic), proposes
//! `Command::Users`, and answers `users.verify` from this node's live
//! sessions.
//!
//! ```text
//!  create/set_password: check ─▶ HashPool::hash ─▶ Node::write(Users::..)
//!  login: read_barrier ─▶ email index ─▶ HashPool::verify (dummy when no
//!         user) ─▶ 256-bit token, SHA-256 ─▶ write(Login) ─▶ Sessions
//!  verify: Sessions::check ─hit─▶ user (the time of use stored, no wait)
//!                          └load─▶ session + user rows (local state; a read
//!                                  barrier when absent) ─▶ Sessions::publish
//!                                  ─▶ SessionSupervisor ─▶ SessionActor
//! ```
//!
//! # Layout
//!
//! - `mod.rs`: [`UserService`], [`UsersConfig`], the user view scripts see.
//! - `password`: the password policy and [`password::HashPool`].
//! - `sessions`: [`sessions::Sessions`], the published answers of this
//!   node's live sessions, and the pure decisions about them.
//! - `session_actor`: `SessionSupervisor`, `SessionActor` (one per live
//!   session) and `RefreshBatcher`, run by the `sessions` duty.
//! - `flows`: the built-in HTTP auth flows (sign-up, login under limits,
//!   verify, reset, invitations).
//! - `flow_mail`: the flows' mail queue, the `auth_mail` duty, tokens and
//!   rendered mails.
//! - `limits`: the pure rate-limit rules and their bounded per-node maps.
//! - `templates`: the flow mails' templates, checked and rendered.

mod flow_mail;
pub mod flows;
pub mod limits;
pub mod password;
pub mod session_actor;
pub mod sessions;
pub mod templates;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::BTreeSet;
use std::sync::Arc;

use picloud_cluster::Node;
use picloud_cluster::duty::Duty;
use picloud_lua_sdk::{Code, HostError, UserPatchArgs, UsersCall};
use picloud_storage::AppliedEvent;
use picloud_storage::users::{
    TokenHash, UserPatch, UserRecord, UsersCommand, UsersLimits, UsersResult, normalize_email,
    valid_role, validate_email,
};
use picloud_storage::{Command, CommandResult};
use rand::RngCore as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::email::Mailer;
use crate::error::{apply_host_error, cluster_host_error, storage_error, unexpected};
// The clock `host::now_ms` reads, from below `host` (which imports this module).
use crate::duties::ActorRestarts;
use crate::files::now_ms;
use flows::{AuthMail, FlowConfig, FlowState, SignupMode};
use password::{HashPool, HashPoolError, HashPriority, check_password};
use session_actor::{SessionSupervisor, SupervisorArgs, load_session};
use sessions::{Check, Published, SessionLimits, Sessions, SupervisorMsg};
use tokio::sync::broadcast::error::RecvError;

/// Every bound of end users, with its default. The binary fills it from
/// its `auth_*` settings.
#[derive(Debug, Clone, Copy)]
pub struct UsersConfig {
    /// Password hashes running at once on this node (default: the cores).
    pub hash_concurrency: usize,
    /// Hashes that may wait behind them before `auth_busy`.
    pub hash_queue_max: usize,
    /// The nice value of the hash threads (0: the default priority).
    pub hash_nice: i32,
    /// Whether the hash threads run under `SCHED_IDLE` (only when nothing
    /// else wants a core; then `hash_nice` does not matter).
    pub hash_idle: bool,
    pub users_per_app_max: u64,
    /// Past it, a login evicts the user's oldest session.
    pub sessions_per_user_max: u32,
    /// The largest `data` of a user (JSON text), in bytes.
    pub user_data_bytes_max: u32,
    /// A session's sliding lifetime.
    pub session_ttl_ms: u64,
    /// How often a used session's expiry is extended in the log.
    pub session_refresh_ms: u64,
    /// A live session unused this long is stopped on this node.
    pub session_idle_ms: u64,
    /// Live sessions (session actors) on this node.
    pub sessions_live_max: usize,
    /// The shortest password (never below `password::PASSWORD_CHARS_MIN`).
    pub password_chars_min: usize,
    /// The most users one `list` page returns.
    pub list_limit_max: usize,
    /// The HTTP flows' token lifetimes, rate limits and mail queue.
    pub flows: FlowConfig,
}

impl Default for UsersConfig {
    fn default() -> Self {
        UsersConfig {
            hash_concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            hash_queue_max: 64,
            // Below the script threads' 5: a login storm yields to scripts
            // too, and both yield to the HTTP, Raft and storage threads.
            hash_nice: 10,
            hash_idle: true,
            users_per_app_max: 1_000_000,
            sessions_per_user_max: 16,
            user_data_bytes_max: 16 * 1024,
            session_ttl_ms: 7 * 24 * 3_600_000,
            session_refresh_ms: 60_000,
            session_idle_ms: 15 * 60_000,
            // An idle live session (its actor, its timer task and its
            // published answer) measured ~10 KiB resident
            // (`session_actor::tests::session_memory`): 10,000 are ~100 MiB,
            // a tenth of a 1 GB Pi. Past it the least recently used stop
            // (and read their rows again on their next use).
            sessions_live_max: 10_000,
            password_chars_min: password::PASSWORD_CHARS_MIN,
            list_limit_max: 1_000,
            flows: FlowConfig::default(),
        }
    }
}

impl UsersConfig {
    fn limits(&self) -> UsersLimits {
        UsersLimits {
            users_per_app_max: self.users_per_app_max,
            sessions_per_user_max: self.sessions_per_user_max,
            data_bytes_max: self.user_data_bytes_max,
        }
    }
}

/// `[auth]` of an app's manifest: what an app chooses for its own users
/// (`None`: the node's setting). Cheap to clone (the mail part is shared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthPolicy {
    /// `session_ttl` (seconds in the manifest): the sliding session lifetime.
    pub session_ttl_ms: Option<u64>,
    /// `password_min`: the shortest password, never below the node's.
    pub password_chars_min: Option<usize>,
    /// `signup`: who may sign up over HTTP.
    pub signup: SignupMode,
    /// `verify_email`: a sign-up gets a verification mail, and a login
    /// before following it is refused with `email_unverified`.
    pub verify_email: bool,
    /// `link_base` and `[auth.templates.*]`.
    pub mail: Arc<AuthMail>,
}

/// A page of users for the default `list` limit.
pub const LIST_LIMIT_DEFAULT: usize = 100;

/// Users, passwords and sessions of every app on this node. Cheap to clone.
#[derive(Clone)]
pub struct UserService {
    node: Node,
    config: UsersConfig,
    pool: HashPool,
    sessions: Sessions,
    /// The flows' limits and mail queue on this node.
    flows: Arc<FlowState>,
    /// The mailer and this node's public URL, for the flows' mails
    /// (`None`: they answer `unsupported`).
    mail: Option<(Arc<Mailer>, Arc<str>)>,
}

/// The user as scripts, the admin API and the CLI see it: never the hash.
pub fn user_view(id: &str, record: &UserRecord) -> Value {
    let data: Value = serde_json::from_str(&record.data_json).unwrap_or_else(|_| json!({}));
    json!({
        "id": id,
        "email": record.email,
        "verified": record.verified,
        "roles": record.roles,
        "data": data,
        "created_ms": record.created_ms,
        "last_login_ms": record.last_login_ms,
    })
}

/// The SHA-256 of a token's text: what the log stores.
pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn bad_email(email: &str, error: impl std::fmt::Display) -> HostError {
    HostError::new(
        Code::EmailInvalid,
        format!("invalid email address {email:?}: {error}"),
    )
}

/// `email` normalised and checked.
pub fn checked_email(email: &str) -> Result<String, HostError> {
    let email = normalize_email(email);
    validate_email(&email).map_err(|error| bad_email(&email, error))?;
    Ok(email)
}

fn checked_roles(roles: &[String]) -> Result<BTreeSet<String>, HostError> {
    if let Some(role) = roles.iter().find(|role| !valid_role(role)) {
        return Err(HostError::new(
            Code::InvalidRole,
            format!("invalid role {role:?}: 1 to 64 characters of a-z, 0-9, '_' and '-'"),
        ));
    }
    Ok(roles.iter().cloned().collect())
}

/// The text of a user's `data`: a JSON object.
fn data_json(data: &Value) -> Result<String, HostError> {
    match data {
        Value::Object(_) => Ok(data.to_string()),
        Value::Null => Ok("{}".into()),
        _ => Err(HostError::new(
            Code::InvalidJson,
            "a user's data must be a JSON object",
        )),
    }
}

fn not_found(id: &str) -> HostError {
    HostError::new(Code::UserNotFound, format!("user {id} not found"))
}

/// Stops the session supervisor when the `sessions` duty's run ends.
struct RunningSupervisor {
    sessions: Sessions,
    supervisor: ractor::ActorRef<SupervisorMsg>,
}

impl Drop for RunningSupervisor {
    fn drop(&mut self) {
        self.sessions.set_supervisor(None);
        // Their actors are gone: the next verifies read the rows and the
        // next supervisor starts actors for them again.
        self.sessions.clear();
        self.supervisor.stop(None);
    }
}

impl UserService {
    /// The service of this node; its password hash threads start here.
    pub fn new(node: Node, config: UsersConfig) -> Result<UserService, HashPoolError> {
        Ok(UserService {
            node,
            pool: HashPool::new(
                config.hash_concurrency,
                config.hash_queue_max,
                HashPriority {
                    nice: config.hash_nice,
                    idle: config.hash_idle,
                },
            )?,
            sessions: Sessions::new(SessionLimits {
                live_max: config.sessions_live_max,
                idle_ms: config.session_idle_ms,
                refresh_ms: config.session_refresh_ms,
            }),
            flows: Arc::new(FlowState::new(config.flows)),
            mail: None,
            config,
        })
    }

    /// This service with the node's mailer and the URL clients reach this
    /// node at (`public_url`), for the flows' mails and their links.
    pub fn with_mail(mut self, mailer: Arc<Mailer>, public_url: &str) -> UserService {
        self.mail = Some((mailer, Arc::from(public_url)));
        self
    }

    /// Live sessions on this node (a metric).
    pub fn sessions_live(&self) -> usize {
        self.sessions.len()
    }

    /// The `sessions` duty of every node: runs the `SessionSupervisor`
    /// (and with it every session actor and the refresh batcher) and
    /// forwards each applied revocation to it, so a logout, logout_all,
    /// password change or delete on any node stops this node's affected
    /// sessions as soon as it is applied here. While the duty is down
    /// nothing is cached: verifies read the rows.
    pub fn sessions_duty(&self, restarts: Arc<ActorRestarts>) -> Duty {
        let service = self.clone();
        Duty::new("sessions", move || {
            let (service, restarts) = (service.clone(), restarts.clone());
            async move {
                let mut events = service.node.reader().subscribe();
                let args = SupervisorArgs {
                    reader: service.node.reader().clone(),
                    sink: Arc::new(service.node.clone()),
                    sessions: service.sessions.clone(),
                    restarts,
                };
                // A duty run that returns ends the duty for good, so a
                // supervisor that cannot start or stops (its batcher
                // failed) panics this run: the DutySupervisor counts it and
                // starts it again after its backoff.
                let (supervisor, mut stopped) =
                    match ractor::Actor::spawn(None, SessionSupervisor, args).await {
                        Ok(started) => started,
                        Err(error) => panic!("cannot start the session supervisor: {error}"),
                    };
                // Whether this future ends or is dropped, the supervisor
                // (and every session actor linked to it) stops with it.
                let _running = RunningSupervisor {
                    sessions: service.sessions.clone(),
                    supervisor: supervisor.clone(),
                };
                service.sessions.set_supervisor(Some(supervisor.clone()));
                loop {
                    let message = tokio::select! {
                        _ = &mut stopped => panic!("the session supervisor stopped"),
                        event = events.recv() => match event {
                            Ok(AppliedEvent::SessionsRevoked(revoked)) => SupervisorMsg::Revoked(revoked),
                            Ok(_) => continue,
                            Err(RecvError::Lagged(_)) => SupervisorMsg::StopAll,
                            Err(RecvError::Closed) => return,
                        },
                    };
                    if supervisor.cast(message).is_err() {
                        panic!("the session supervisor stopped");
                    }
                }
            }
        })
    }

    fn password_min(&self, policy: &AuthPolicy) -> usize {
        policy
            .password_chars_min
            .unwrap_or(0)
            .max(self.config.password_chars_min)
    }

    fn session_ttl_ms(&self, policy: &AuthPolicy) -> u64 {
        policy.session_ttl_ms.unwrap_or(self.config.session_ttl_ms)
    }

    /// Runs one script call (see [`UsersCall`]) of an app whose `[auth]`
    /// is `policy`.
    pub async fn call(
        &self,
        app: &str,
        call: UsersCall,
        policy: AuthPolicy,
    ) -> Result<Value, HostError> {
        match call {
            UsersCall::Create {
                email,
                password,
                data,
                roles,
            } => {
                self.create(app, &email, password, &data, &roles, policy)
                    .await
            }
            UsersCall::Get { id } => Ok(self.get(app, &id).await?.unwrap_or(Value::Null)),
            UsersCall::Find { email } => Ok(self.find(app, &email).await?.unwrap_or(Value::Null)),
            UsersCall::Update { id, patch } => self.update(app, &id, patch).await,
            UsersCall::Delete { id } => self.delete(app, &id).await.map(Value::Bool),
            UsersCall::List { cursor, limit } => self.list(app, cursor, limit).await,
            UsersCall::SetPassword { id, password } => {
                self.set_password(app, &id, password, policy).await?;
                Ok(Value::Bool(true))
            }
            UsersCall::Login { email, password } => self.login(app, &email, password, policy).await,
            UsersCall::Verify { token } => Ok(self
                .verify(app, &token, policy)
                .await?
                .unwrap_or(Value::Null)),
            UsersCall::Logout { token } => self.logout(app, &token).await.map(Value::Bool),
            UsersCall::LogoutAll { id } => self.logout_all(app, &id).await.map(Value::from),
            UsersCall::AddRole { id, role } => self.change_role(app, &id, &role, true).await,
            UsersCall::RemoveRole { id, role } => self.change_role(app, &id, &role, false).await,
            UsersCall::Invite { email, roles } => self.invite(app, &email, &roles, &policy).await,
            UsersCall::HasRole { id, role } => {
                self.node.read_barrier().await.map_err(cluster_host_error)?;
                let record = self.record(app, &id)?;
                Ok(Value::Bool(
                    record.is_some_and(|record| record.roles.contains(&role)),
                ))
            }
        }
    }

    async fn write(&self, command: UsersCommand) -> Result<UsersResult, HostError> {
        match self
            .node
            .write(Command::Users(command))
            .await
            .map_err(cluster_host_error)?
        {
            CommandResult::Users(result) => Ok(result),
            CommandResult::Rejected(rejection) => Err(apply_host_error(rejection)),
            other => Err(unexpected(&other)),
        }
    }

    fn record(&self, app: &str, id: &str) -> Result<Option<UserRecord>, HostError> {
        self.node.reader().user(app, id).map_err(storage_error)
    }

    /// Creates a user; the result is its view.
    pub async fn create(
        &self,
        app: &str,
        email: &str,
        password: String,
        data: &Value,
        roles: &[String],
        policy: AuthPolicy,
    ) -> Result<Value, HostError> {
        let email = checked_email(email)?;
        check_password(&password, self.password_min(&policy))?;
        let roles = checked_roles(roles)?;
        let data_json = data_json(data)?;
        let password_hash = self.pool.hash(password).await?;
        let id = URL_SAFE_NO_PAD.encode(random_bytes::<16>());
        let now = now_ms();
        let record = UserRecord {
            email: email.clone(),
            password_hash: password_hash.clone(),
            verified: false,
            roles: roles.clone(),
            data_json: data_json.clone(),
            created_ms: now,
            last_login_ms: 0,
            sessions: Vec::new(),
        };
        self.write(UsersCommand::Create {
            app: app.into(),
            id: id.clone(),
            email,
            password_hash,
            verified: false,
            roles,
            data_json,
            limits: self.config.limits(),
            now_ms: now,
        })
        .await?;
        Ok(user_view(&id, &record))
    }

    /// The user `id`, after a read barrier.
    pub async fn get(&self, app: &str, id: &str) -> Result<Option<Value>, HostError> {
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        Ok(self.record(app, id)?.map(|record| user_view(id, &record)))
    }

    /// The user whose email is `email` (normalised first).
    pub async fn find(&self, app: &str, email: &str) -> Result<Option<Value>, HostError> {
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        let email = normalize_email(email);
        let reader = self.node.reader();
        let Some(id) = reader
            .user_id_by_email(app, &email)
            .map_err(storage_error)?
        else {
            return Ok(None);
        };
        Ok(self.record(app, &id)?.map(|record| user_view(&id, &record)))
    }

    pub async fn update(
        &self,
        app: &str,
        id: &str,
        patch: UserPatchArgs,
    ) -> Result<Value, HostError> {
        let patch = UserPatch {
            email: patch.email.as_deref().map(checked_email).transpose()?,
            verified: patch.verified,
            roles: patch.roles.as_deref().map(checked_roles).transpose()?,
            data_json: patch.data.as_ref().map(data_json).transpose()?,
        };
        self.write(UsersCommand::Update {
            app: app.into(),
            id: id.into(),
            patch,
            limits: self.config.limits(),
        })
        .await?;
        self.get(app, id).await?.ok_or_else(|| not_found(id))
    }

    /// Deletes the user and every session it had.
    pub async fn delete(&self, app: &str, id: &str) -> Result<bool, HostError> {
        let result = self
            .write(UsersCommand::Delete {
                app: app.into(),
                id: id.into(),
            })
            .await?;
        self.sessions.remove_user(app, id);
        Ok(matches!(result, UsersResult::Deleted { existed: true }))
    }

    pub async fn list(
        &self,
        app: &str,
        cursor: Option<String>,
        limit: Option<usize>,
    ) -> Result<Value, HostError> {
        let limit = limit.unwrap_or(LIST_LIMIT_DEFAULT);
        if limit == 0 || limit > self.config.list_limit_max {
            return Err(HostError::new(
                Code::InvalidLimit,
                format!("limit must be 1 to {}", self.config.list_limit_max),
            ));
        }
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        let page = self
            .node
            .reader()
            .users_list(app, cursor.as_deref(), limit + 1)
            .map_err(storage_error)?;
        let more = page.len() > limit;
        let users: Vec<Value> = page
            .iter()
            .take(limit)
            .map(|(id, record)| user_view(id, record))
            .collect();
        let mut result = json!({ "users": users });
        if more && let Some((id, _)) = page.get(limit - 1) {
            result["cursor"] = Value::String(id.clone());
        }
        Ok(result)
    }

    /// Replaces the password and revokes every session of the user.
    pub async fn set_password(
        &self,
        app: &str,
        id: &str,
        password: String,
        policy: AuthPolicy,
    ) -> Result<(), HostError> {
        check_password(&password, self.password_min(&policy))?;
        let password_hash = self.pool.hash(password).await?;
        self.write(UsersCommand::SetPassword {
            app: app.into(),
            id: id.into(),
            password_hash,
        })
        .await?;
        self.sessions.remove_user(app, id);
        Ok(())
    }

    /// `{token, user}`, or `invalid_credentials` whether the email is
    /// unknown or the password wrong (one hash is spent either way).
    pub async fn login(
        &self,
        app: &str,
        email: &str,
        password: String,
        policy: AuthPolicy,
    ) -> Result<Value, HostError> {
        self.login_checked(app, email, password, &policy, false)
            .await
    }

    /// [`Self::login`], refusing with `email_unverified` (only once the
    /// password is right, so it reveals nothing) when `require_verified`.
    async fn login_checked(
        &self,
        app: &str,
        email: &str,
        password: String,
        policy: &AuthPolicy,
        require_verified: bool,
    ) -> Result<Value, HostError> {
        let invalid = || HostError::new(Code::InvalidCredentials, "wrong email or password");
        if password.len() > password::PASSWORD_BYTES_MAX {
            return Err(invalid());
        }
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        let email = normalize_email(email);
        let reader = self.node.reader();
        let found = match reader
            .user_id_by_email(app, &email)
            .map_err(storage_error)?
        {
            Some(id) => self.record(app, &id)?.map(|record| (id, record)),
            None => None,
        };
        let Some((id, record)) = found else {
            self.pool.verify_dummy(password).await?;
            return Err(invalid());
        };
        if !self
            .pool
            .verify(password, record.password_hash.clone())
            .await?
        {
            return Err(invalid());
        }
        if require_verified && !record.verified {
            return Err(HostError::new(
                Code::EmailUnverified,
                "follow the link mailed at sign-up to verify this email first",
            ));
        }
        self.open_session(app, &id, user_view(&id, &record), policy)
            .await
    }

    /// Starts a session of user `id` whose view is `user`: `{token, user}`.
    async fn open_session(
        &self,
        app: &str,
        id: &str,
        mut user: Value,
        policy: &AuthPolicy,
    ) -> Result<Value, HostError> {
        let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let hash = token_hash(&token);
        let now = now_ms();
        let expires_ms = now.saturating_add(self.session_ttl_ms(policy));
        self.write(UsersCommand::Login {
            app: app.into(),
            id: id.into(),
            session: hash,
            expires_ms,
            limits: self.config.limits(),
            now_ms: now,
        })
        .await?;
        user["last_login_ms"] = Value::from(now);
        self.sessions.publish(
            hash,
            Published::new(app.into(), id.into(), user.clone(), expires_ms, now),
            now,
            self.session_ttl_ms(policy),
        );
        Ok(json!({ "token": token, "user": user }))
    }

    /// The user of session `token`, or `None` (unknown, expired, revoked).
    pub async fn verify(
        &self,
        app: &str,
        token: &str,
        policy: AuthPolicy,
    ) -> Result<Option<Value>, HostError> {
        let hash = token_hash(token);
        let now = now_ms();
        match self.sessions.check(app, &hash, now) {
            Check::Hit(user) => Ok(Some(user)),
            Check::Expired => Ok(None),
            Check::Load => self.load(app, hash, now, policy).await,
        }
    }

    /// Reads a session and its user from this node's state (after a read
    /// barrier when the session is not there yet: a login through another
    /// node may not have reached this one) and publishes it.
    async fn load(
        &self,
        app: &str,
        hash: TokenHash,
        now: u64,
        policy: AuthPolicy,
    ) -> Result<Option<Value>, HostError> {
        let reader = self.node.reader();
        if reader.session(app, &hash).map_err(storage_error)?.is_none() {
            self.node.read_barrier().await.map_err(cluster_host_error)?;
        }
        let Some(loaded) = load_session(reader, app, &hash, now).map_err(storage_error)? else {
            self.sessions.remove(&hash);
            return Ok(None);
        };
        self.sessions.publish(
            hash,
            Published::new(
                app.into(),
                loaded.user_id,
                loaded.user.clone(),
                loaded.expires_ms,
                now,
            ),
            loaded.last_seen_ms,
            self.session_ttl_ms(&policy),
        );
        Ok(Some(loaded.user))
    }

    pub async fn logout(&self, app: &str, token: &str) -> Result<bool, HostError> {
        let hash = token_hash(token);
        self.sessions.remove(&hash);
        let result = self
            .write(UsersCommand::Logout {
                app: app.into(),
                session: hash,
            })
            .await?;
        Ok(matches!(result, UsersResult::LoggedOut { existed: true }))
    }

    pub async fn logout_all(&self, app: &str, id: &str) -> Result<u32, HostError> {
        let result = self
            .write(UsersCommand::LogoutAll {
                app: app.into(),
                id: id.into(),
            })
            .await?;
        self.sessions.remove_user(app, id);
        match result {
            UsersResult::LoggedOutAll { sessions_revoked } => Ok(sessions_revoked),
            _ => Ok(0),
        }
    }

    /// Adds or removes one role; the result is whether the set changed.
    pub async fn change_role(
        &self,
        app: &str,
        id: &str,
        role: &str,
        add: bool,
    ) -> Result<Value, HostError> {
        checked_roles(&[role.to_string()])?;
        // One entry that changes the role against the roles as they are
        // when it applies: two concurrent changes never undo each other.
        match self
            .write(UsersCommand::SetRole {
                app: app.into(),
                id: id.into(),
                role: role.into(),
                held: add,
            })
            .await?
        {
            UsersResult::RoleSet { changed } => Ok(Value::Bool(changed)),
            _ => Ok(Value::Bool(false)),
        }
    }
}
