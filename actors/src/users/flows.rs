//! The built-in auth flows behind `/_/auth/<app>/…` and invitations:
//! sign-up (by the app's [`SignupMode`]), login under rate limits, email
//! verification, password reset and accepting an invitation. Decisions are
//! pure ([`plan_signup`], `limits::Rule`, `templates::render`); this file
//! wires them to the [`UserService`].
//!
//! ```text
//!  signup ─▶ mode? ─closed/invite─▶ signup_closed
//!           └ per-IP limit ─▶ verify_email? ─no──▶ create + session ─▶ {token, user}
//!                                          └yes─▶ create (taken: same answer) ─▶ mail queue
//!  login ─▶ account + IP lockout? ─▶ UserService::login ─fail─▶ count both
//!  request-reset ─▶ per-IP limit ─▶ mail queue (full: auth_busy) ─▶ 202 at once
//!  mail queue ─▶ `auth_mail` duty (`flow_mail.rs`): user? ─▶ TokenCreate ─▶ render ─▶ Mailer::queue
//!  verify|reset|accept-invite ─▶ UsersCommand::Redeem (token used once, cluster-wide)
//! ```
//!
//! No answer tells whether an email has an account: `request-reset`
//! answers before looking the address up (the work is done by the
//! `auth_mail` duty), a login with an unknown email spends a dummy hash,
//! and with `verify_email` a sign-up with a taken email answers like a
//! fresh one (no mail goes to the owner).

use std::collections::BTreeSet;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use picloud_lua_sdk::{Code, HostError};
use picloud_storage::users::{Redemption, TokenKind, UsersCommand, UsersResult};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::flow_mail::MailJob;
use super::limits::{Limiter, Rule};
use super::password::check_password;
use super::templates::Templates;
use super::{AuthPolicy, UserService, checked_email, checked_roles, random_bytes, token_hash};
use crate::error::storage_error;
use crate::files::now_ms;

/// `[auth] signup` of a manifest: who may create an account over HTTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignupMode {
    /// Anyone (the default, as in PocketBase and Supabase: an app that
    /// wants no sign-ups says so).
    #[default]
    Open,
    /// Only through an invitation (`accept-invite`).
    Invite,
    /// Nobody: accounts come from scripts, the admin API or the CLI.
    Closed,
}

/// `[auth]`'s mail settings: where links point and the three templates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthMail {
    /// `link_base`: links are `<link_base>/verify?token=…` (and `/reset`,
    /// `/accept-invite`); `None`: this node's `public_url` +
    /// `/_/auth/<app>`.
    pub link_base: Option<String>,
    pub templates: Templates,
}

/// The bounds of the flows, with their defaults; the binary fills them
/// from its `auth_*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// How long a verification link works.
    pub verify_ttl_ms: u64,
    /// How long a password-reset link works.
    pub reset_ttl_ms: u64,
    /// How long an invitation works.
    pub invite_ttl_ms: u64,
    /// Failed logins of one account in a window before its lockout.
    pub login_failures_max: u32,
    /// Failed logins from one client address in a window before its lockout.
    pub ip_failures_max: u32,
    /// Sign-ups and reset requests from one client address in a window.
    pub ip_requests_max: u32,
    /// The window the three counts above are kept over.
    pub limit_window_ms: u64,
    /// How long a lockout lasts.
    pub lockout_ms: u64,
    /// Accounts or addresses each limit tracks at once on this node.
    pub limits_tracked_max: usize,
    /// Mails (reset requests, verifications) waiting for the `auth_mail`
    /// duty; past it `auth_busy`.
    pub mail_queue_max: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        const MINUTE_MS: u64 = 60_000;
        FlowConfig {
            verify_ttl_ms: 24 * 60 * MINUTE_MS,
            reset_ttl_ms: 60 * MINUTE_MS,
            invite_ttl_ms: 7 * 24 * 60 * MINUTE_MS,
            login_failures_max: 5,
            ip_failures_max: 50,
            ip_requests_max: 20,
            limit_window_ms: 15 * MINUTE_MS,
            lockout_ms: 15 * MINUTE_MS,
            limits_tracked_max: 100_000,
            mail_queue_max: 1_024,
        }
    }
}

/// Why a flow refused: a coded error, or a rate limit with its wait.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{}", .0.message)]
    Refused(HostError),
    #[error("too many attempts; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
}

impl From<HostError> for FlowError {
    fn from(error: HostError) -> Self {
        FlowError::Refused(error)
    }
}

/// What a sign-up does, by the app's mode and `verify_email`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupPlan {
    /// Refused with `signup_closed` (the text says why).
    Refuse(&'static str),
    /// Create the user and answer with a session.
    CreateAndLogin,
    /// Create the user unverified and mail a link; answer the same when
    /// the email is taken.
    CreateAndVerify,
}

/// The pure sign-up decision.
pub fn plan_signup(mode: SignupMode, verify_email: bool) -> SignupPlan {
    match (mode, verify_email) {
        (SignupMode::Closed, _) => SignupPlan::Refuse("sign-ups are closed for this app"),
        (SignupMode::Invite, _) => {
            SignupPlan::Refuse("this app takes new users by invitation only")
        }
        (SignupMode::Open, false) => SignupPlan::CreateAndLogin,
        (SignupMode::Open, true) => SignupPlan::CreateAndVerify,
    }
}

/// What a flow's answer was: a body, and whether a resource was created.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowAnswer {
    pub created: bool,
    pub body: Value,
}

/// The flows' state on this node: the limits and the mail queue.
pub(super) struct FlowState {
    pub(super) config: FlowConfig,
    login_accounts: Limiter,
    login_ips: Limiter,
    request_ips: Limiter,
    pub(super) jobs: mpsc::Sender<MailJob>,
    /// Taken by each run of the `auth_mail` duty (a restart takes it again).
    pub(super) queue: tokio::sync::Mutex<mpsc::Receiver<MailJob>>,
}

impl FlowState {
    pub(super) fn new(config: FlowConfig) -> FlowState {
        let rule = |count_max: u32, lockout_ms: u64| Rule {
            count_max: count_max.max(1),
            window_ms: config.limit_window_ms,
            lockout_ms,
        };
        let (jobs, queue) = mpsc::channel(config.mail_queue_max.max(1));
        FlowState {
            login_accounts: Limiter::new(
                rule(config.login_failures_max, config.lockout_ms),
                config.limits_tracked_max,
            ),
            login_ips: Limiter::new(
                rule(config.ip_failures_max, config.lockout_ms),
                config.limits_tracked_max,
            ),
            // Past the request budget an address waits out the window.
            request_ips: Limiter::new(
                rule(config.ip_requests_max, config.limit_window_ms),
                config.limits_tracked_max,
            ),
            jobs,
            queue: tokio::sync::Mutex::new(queue),
            config,
        }
    }
}

fn limited(retry_after_ms: u64) -> FlowError {
    FlowError::RateLimited { retry_after_ms }
}

fn token_invalid() -> FlowError {
    FlowError::Refused(HostError::new(
        Code::AuthTokenInvalid,
        "the link is unknown, already used or expired",
    ))
}

impl UserService {
    pub(super) fn flows(&self) -> &FlowState {
        &self.flows
    }

    /// `POST /_/auth/<app>/signup`.
    pub async fn signup(
        &self,
        app: &str,
        client: IpAddr,
        email: &str,
        password: String,
        data: &Value,
        policy: &AuthPolicy,
    ) -> Result<FlowAnswer, FlowError> {
        let plan = plan_signup(policy.signup, policy.verify_email);
        if let SignupPlan::Refuse(why) = plan {
            return Err(HostError::new(Code::SignupClosed, why).into());
        }
        self.flows()
            .request_ips
            .admit(&client.to_string(), now_ms())
            .map_err(limited)?;
        if plan == SignupPlan::CreateAndLogin {
            let user = self
                .create(app, email, password, data, &[], policy.clone())
                .await?;
            // The view `create` answered: this node may not have applied
            // the write yet, so its state is not read back.
            let id = user["id"].as_str().unwrap_or_default().to_string();
            let session = self.open_session(app, &id, user, policy).await?;
            return Ok(FlowAnswer {
                created: true,
                body: session,
            });
        }
        let email = checked_email(email)?;
        match self
            .create(app, &email, password, data, &[], policy.clone())
            .await
        {
            Ok(user) => {
                let user_id = user["id"].as_str().unwrap_or_default().to_string();
                self.enqueue(MailJob::Verify {
                    app: app.into(),
                    user_id,
                    email: email.clone(),
                    policy: policy.clone(),
                })?;
            }
            // The same answer as a fresh sign-up: the address's owner is
            // not revealed (and not mailed).
            Err(error) if error.code == Code::EmailTaken => {}
            Err(error) => return Err(error.into()),
        }
        Ok(FlowAnswer {
            created: true,
            body: json!({ "email": email, "verification": "sent" }),
        })
    }

    /// `POST /_/auth/<app>/login`: `{token, user}`, under the account and
    /// client-address limits.
    pub async fn login_flow(
        &self,
        app: &str,
        client: IpAddr,
        email: &str,
        password: String,
        policy: &AuthPolicy,
    ) -> Result<Value, FlowError> {
        let account = format!(
            "{app}\u{0}{}",
            picloud_storage::users::normalize_email(email)
        );
        let address = client.to_string();
        let now = now_ms();
        let flows = self.flows();
        let account_wait = flows.login_accounts.check(&account, now).err();
        let address_wait = flows.login_ips.check(&address, now).err();
        if let Some(wait) = account_wait.max(address_wait) {
            return Err(limited(wait));
        }
        match self
            .login_checked(app, email, password, policy, policy.verify_email)
            .await
        {
            Ok(session) => {
                flows.login_accounts.clear(&account);
                Ok(session)
            }
            Err(error) => {
                if error.code == Code::InvalidCredentials {
                    let now = now_ms();
                    flows.login_accounts.record(&account, now);
                    flows.login_ips.record(&address, now);
                }
                Err(error.into())
            }
        }
    }

    /// `GET /_/auth/<app>/me`: the session's user, or `session_invalid`.
    pub async fn me(
        &self,
        app: &str,
        token: &str,
        policy: &AuthPolicy,
    ) -> Result<Value, FlowError> {
        self.verify(app, token, policy.clone())
            .await?
            .ok_or_else(|| {
                HostError::new(
                    Code::SessionInvalid,
                    "the session is unknown, expired or revoked",
                )
                .into()
            })
    }

    /// `POST /_/auth/<app>/verify` (and the mailed GET link).
    pub async fn verify_email(&self, app: &str, token: &str) -> Result<Value, FlowError> {
        let user_id = self.redeem(app, token, Redemption::Verify).await?;
        // The live sessions of this user carry `verified: false`.
        self.sessions.remove_user(app, &user_id);
        self.get(app, &user_id).await?.ok_or_else(token_invalid)
    }

    /// `POST /_/auth/<app>/request-reset`: answers at once, the same for
    /// every address; the `auth_mail` duty mails a link if it has an account.
    pub async fn request_reset(
        &self,
        app: &str,
        client: IpAddr,
        email: &str,
        policy: &AuthPolicy,
    ) -> Result<Value, FlowError> {
        let email = checked_email(email)?;
        self.flows()
            .request_ips
            .admit(&client.to_string(), now_ms())
            .map_err(limited)?;
        self.enqueue(MailJob::Reset {
            app: app.into(),
            email: email.clone(),
            policy: policy.clone(),
        })?;
        Ok(json!({ "email": email, "reset": "requested" }))
    }

    /// `POST /_/auth/<app>/reset`: a new password through a reset link;
    /// every session of the user ends.
    pub async fn reset_password(
        &self,
        app: &str,
        token: &str,
        password: String,
        policy: &AuthPolicy,
    ) -> Result<Value, FlowError> {
        self.reset_password_of(app, token, password, policy).await?;
        Ok(json!({ "reset": true }))
    }

    /// Uses up a reset-kind token and sets the password of the user it was
    /// minted for, in one entry (a failure leaves the token usable);
    /// answers that user's id.
    pub async fn reset_password_of(
        &self,
        app: &str,
        token: &str,
        password: String,
        policy: &AuthPolicy,
    ) -> Result<String, FlowError> {
        let password_hash = self.hash_for_token(app, token, password, policy).await?;
        let user_id = self
            .redeem(app, token, Redemption::Reset { password_hash })
            .await?;
        self.sessions.remove_user(app, &user_id);
        Ok(user_id)
    }

    /// The hash of a new password for a single-use token: the policy is
    /// checked and the token looked up first, so neither a weak password
    /// nor a made-up token costs a hash.
    async fn hash_for_token(
        &self,
        app: &str,
        token: &str,
        password: String,
        policy: &AuthPolicy,
    ) -> Result<String, FlowError> {
        check_password(&password, self.password_min(policy)).map_err(HostError::from)?;
        self.token_known(app, token).await?;
        Ok(self.pool.hash(password).await?)
    }

    /// `POST /_/auth/<app>/accept-invite`: creates the invited user
    /// (verified, with the invitation's roles) and answers `{token, user}`.
    pub async fn accept_invite(
        &self,
        app: &str,
        token: &str,
        password: String,
        policy: &AuthPolicy,
    ) -> Result<Value, FlowError> {
        let password_hash = self.hash_for_token(app, token, password, policy).await?;
        let id = URL_SAFE_NO_PAD.encode(random_bytes::<16>());
        let session = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let expires_ms = now_ms().saturating_add(self.session_ttl_ms(policy));
        let user_id = self
            .redeem(
                app,
                token,
                Redemption::Invite {
                    id,
                    password_hash,
                    session: token_hash(&session),
                    expires_ms,
                    limits: self.config.limits(),
                },
            )
            .await?;
        let user = self.get(app, &user_id).await?.ok_or_else(token_invalid)?;
        Ok(json!({ "token": session, "user": user }))
    }

    /// Invites `email` with `roles`: stores an invitation and mails it. The
    /// answer names the invitation (and its link, for the caller to share
    /// another way if it likes).
    pub async fn invite(
        &self,
        app: &str,
        email: &str,
        roles: &[String],
        policy: &AuthPolicy,
    ) -> Result<Value, HostError> {
        let email = checked_email(email)?;
        let roles: BTreeSet<String> = checked_roles(roles)?;
        if self.find(app, &email).await?.is_some() {
            return Err(HostError::new(
                Code::EmailTaken,
                format!("{email} already has an account"),
            ));
        }
        let expires_ms = now_ms().saturating_add(self.flows().config.invite_ttl_ms);
        let token = self
            .mint_token(
                app,
                TokenKind::Invite,
                email.clone(),
                roles.clone(),
                expires_ms,
            )
            .await?;
        let link = self
            .send_flow_mail(
                app,
                policy,
                &policy.mail.templates.invite,
                "accept-invite",
                &email,
                &token,
            )
            .await?;
        Ok(json!({
            "email": email,
            "roles": roles,
            "expires_ms": expires_ms,
            "link": link,
        }))
    }

    /// Fails with `auth_token_invalid` unless the token is stored (after a
    /// read barrier when this node has not seen it), so a made-up token
    /// costs no password hash.
    async fn token_known(&self, app: &str, token: &str) -> Result<(), FlowError> {
        let hash = token_hash(token);
        let reader = self.node.reader();
        if reader
            .user_token(app, &hash)
            .map_err(storage_error)?
            .is_some()
        {
            return Ok(());
        }
        self.node
            .read_barrier()
            .await
            .map_err(crate::error::cluster_host_error)?;
        match reader.user_token(app, &hash).map_err(storage_error)? {
            Some(_) => Ok(()),
            None => Err(token_invalid()),
        }
    }

    /// Redeems a token through the log; the result is its user's id.
    async fn redeem(
        &self,
        app: &str,
        token: &str,
        redemption: Redemption,
    ) -> Result<String, FlowError> {
        let result = self
            .write(UsersCommand::Redeem {
                app: app.into(),
                token: token_hash(token),
                redemption,
                now_ms: now_ms(),
            })
            .await?;
        match result {
            UsersResult::Redeemed {
                user_id: Some(user_id),
            } => Ok(user_id),
            _ => Err(token_invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signup_by_mode_and_verification() {
        let table = [
            (SignupMode::Open, false, SignupPlan::CreateAndLogin),
            (SignupMode::Open, true, SignupPlan::CreateAndVerify),
        ];
        for (mode, verify, plan) in table {
            assert_eq!(plan_signup(mode, verify), plan, "{mode:?} {verify}");
        }
        for mode in [SignupMode::Invite, SignupMode::Closed] {
            for verify in [false, true] {
                assert!(matches!(plan_signup(mode, verify), SignupPlan::Refuse(_)));
            }
        }
    }
}
