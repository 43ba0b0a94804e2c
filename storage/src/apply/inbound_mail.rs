//! Inbound mail: an `InboundMail` queues one run of each of the app's
//! `email` triggers that matches a recipient (a trigger matching several
//! recipients of the message runs once per recipient, each run seeing its
//! own `recipient`). All or nothing: a full outbox rejects the whole
//! command, so the listener answers 451 and the sender's retry cannot
//! queue a run twice.

use super::outbox::enqueue_run;
use super::txn::{Outcome, Txn};
use crate::backend::Backend;
use crate::command::CommandResult;
use crate::error::StorageError;
use crate::inbound_mail::InboundMail;
use crate::triggers::TriggerEvent;

/// Applies an [`InboundMail`]. An app that went (or whose matching
/// triggers went) since the listener accepted the recipient queues
/// nothing: the result says `runs: 0` and the listener refuses the
/// message.
pub(super) fn inbound_mail<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    mail: &InboundMail,
) -> Result<Outcome, StorageError> {
    let Some(set) = txn.active_triggers(&mail.app)? else {
        return Ok(Ok(CommandResult::MailDelivered { runs: 0 }));
    };
    let mut runs: u32 = 0;
    for recipient in &mail.recipients {
        let fired: Vec<String> = set
            .email_triggers_on(&recipient.local)
            .map(str::to_string)
            .collect();
        for trigger in fired {
            let event = TriggerEvent::EmailReceived {
                recipient: recipient.address.clone(),
                message: mail.message.clone(),
            };
            // Depth 1: mail from outside starts a chain of its own.
            if let Err(rejection) =
                enqueue_run(txn, &mail.app, &set, &trigger, event, 1, mail.now_ms)?
            {
                return Ok(Err(rejection));
            }
            runs = runs.saturating_add(1);
        }
    }
    Ok(Ok(CommandResult::MailDelivered { runs }))
}

#[cfg(test)]
mod tests;
