//! The mails of the auth flows: the bounded queue of verification and
//! reset mails and the `auth_mail` duty that drains it (so `request-reset`
//! answers before the address is even looked up), minting single-use tokens,
//! and rendering a template into a mail queued like `email.send`.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use picloud_cluster::duty::Duty;
use picloud_lua_sdk::{Code, HostError, OutgoingEmail};
use picloud_storage::users::{TokenKind, TokenRecord, UsersCommand};

use super::templates::{Template, Values, render};
use super::{AuthPolicy, UserService, random_bytes, token_hash};
use crate::files::now_ms;

/// The link a mail carries: `<base>/<action>?token=<token>`.
pub fn flow_link(base: &str, action: &str, token: &str) -> String {
    format!("{}/{action}?token={token}", base.trim_end_matches('/'))
}

/// A mail the `auth_mail` duty sends.
#[derive(Debug)]
pub(super) enum MailJob {
    /// A reset link to `email`, if it has an account.
    Reset {
        app: String,
        email: String,
        policy: AuthPolicy,
    },
    /// A verification link to a new user.
    Verify {
        app: String,
        user_id: String,
        email: String,
        policy: AuthPolicy,
    },
}

impl UserService {
    /// The `auth_mail` duty of every node: sends the queued flow mails,
    /// one at a time (a failure is logged; the user can ask again).
    pub fn mail_duty(&self) -> Duty {
        let service = self.clone();
        Duty::new("auth_mail", move || {
            let service = service.clone();
            async move {
                let mut queue = service.flows.queue.lock().await;
                while let Some(job) = queue.recv().await {
                    if let Err(error) = service.send_job(job).await {
                        tracing::warn!(code = error.code.as_str(), error = %error.message, "auth mail not sent");
                    }
                }
            }
        })
    }

    pub(super) fn enqueue(&self, job: MailJob) -> Result<(), HostError> {
        self.flows().jobs.try_send(job).map_err(|_| {
            HostError::new(
                Code::AuthBusy,
                "too many auth mails are queued on this node (auth_mail_queue_max); retry shortly",
            )
        })
    }

    async fn send_job(&self, job: MailJob) -> Result<(), HostError> {
        match job {
            MailJob::Reset { app, email, policy } => {
                let Some(user) = self.find(&app, &email).await? else {
                    return Ok(());
                };
                let user_id = user["id"].as_str().unwrap_or_default().to_string();
                let expires_ms = now_ms().saturating_add(self.flows().config.reset_ttl_ms);
                let token = self
                    .mint_token(&app, TokenKind::Reset, user_id, BTreeSet::new(), expires_ms)
                    .await?;
                let template = &policy.mail.templates.reset;
                self.send_flow_mail(&app, &policy, template, "reset", &email, &token)
                    .await?;
            }
            MailJob::Verify {
                app,
                user_id,
                email,
                policy,
            } => {
                let expires_ms = now_ms().saturating_add(self.flows().config.verify_ttl_ms);
                let token = self
                    .mint_token(
                        &app,
                        TokenKind::Verify,
                        user_id,
                        BTreeSet::new(),
                        expires_ms,
                    )
                    .await?;
                let template = &policy.mail.templates.verify;
                self.send_flow_mail(&app, &policy, template, "verify", &email, &token)
                    .await?;
            }
        }
        Ok(())
    }

    /// Stores a new single-use token; the result is its text.
    pub(super) async fn mint_token(
        &self,
        app: &str,
        kind: TokenKind,
        subject: String,
        roles: BTreeSet<String>,
        expires_ms: u64,
    ) -> Result<String, HostError> {
        let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        self.write(UsersCommand::TokenCreate {
            app: app.into(),
            token: token_hash(&token),
            record: TokenRecord {
                kind,
                subject,
                roles,
                expires_ms,
            },
        })
        .await?;
        Ok(token)
    }

    /// Renders `template` for `email` with a link to `action` and queues
    /// the mail; the result is the link.
    pub(super) async fn send_flow_mail(
        &self,
        app: &str,
        policy: &AuthPolicy,
        template: &Template,
        action: &str,
        email: &str,
        token: &str,
    ) -> Result<String, HostError> {
        let Some((mailer, public_url)) = &self.mail else {
            return Err(HostError::new(
                Code::Unsupported,
                "email is not available on this node",
            ));
        };
        let base = match &policy.mail.link_base {
            Some(base) => base.clone(),
            None => format!("{}/_/auth/{app}", public_url.trim_end_matches('/')),
        };
        let link = flow_link(&base, action, token);
        let rendered = render(
            template,
            &Values {
                link: &link,
                app,
                email,
                token,
            },
        );
        let mail = OutgoingEmail {
            from: None,
            to: vec![email.to_string()],
            cc: Vec::new(),
            bcc: Vec::new(),
            reply_to: None,
            subject: rendered.subject,
            text: Some(rendered.text),
            html: rendered.html,
            attachments: Vec::new(),
        };
        mailer.queue(&self.node, app, mail).await?;
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_join_the_base_the_action_and_the_token() {
        assert_eq!(
            flow_link("http://127.0.0.1:8080/_/auth/shop/", "verify", "abc"),
            "http://127.0.0.1:8080/_/auth/shop/verify?token=abc"
        );
        assert_eq!(
            flow_link("https://shop.example/auth", "reset", "t"),
            "https://shop.example/auth/reset?token=t"
        );
    }
}
