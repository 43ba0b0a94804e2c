//! `TopicActor`: one per `(app, topic)` with subscribers on this node. It
//! owns its subscribers' buffers, delivers each message to all of them
//! without waiting for any (a full buffer gets `Overflow` and is dropped),
//! keeps the topic's durable head so no durable message is delivered twice
//! or skipped (a gap in the feed is filled from the state), and stops when
//! its last subscriber leaves. `TopicSupervisor` is the parent of them all:
//! a failed actor is forgotten (its subscribers' streams end and resume by
//! id on a new one) and counted as a `topic` restart.

use std::sync::Arc;

use picloud_storage::topics::{Position, PublishedEvent, TOPIC_PAGE_MAX};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::mpsc;

use super::{Frame, Realtime};
use crate::duties::ActorRestarts;

pub(super) struct Join {
    pub(super) id: u64,
    pub(super) tx: mpsc::Sender<Frame>,
}

pub(super) enum TopicMsg {
    /// A new subscriber; the reply is the durable head at the join (the
    /// subscriber reads history up to it, and gets what follows live).
    Join(Join, RpcReplyPort<Option<Position>>),
    Leave(u64),
    Durable(PublishedEvent),
    Ephemeral(Arc<[u8]>),
    /// The feed lagged: read what was missed from the state.
    Resync,
}

pub(super) struct TopicArgs {
    pub(super) app: String,
    pub(super) topic: String,
    pub(super) realtime: Realtime,
}

pub(super) struct TopicActor;

pub(super) struct TopicState {
    args: TopicArgs,
    head: Option<Position>,
    subscribers: Vec<(u64, mpsc::Sender<Frame>)>,
}

impl TopicState {
    /// Sends `frame` to every subscriber that has room; one whose buffer is
    /// full gets `Overflow` in the slot kept for it and is dropped.
    fn deliver(&mut self, frame: Frame) {
        self.subscribers.retain(|(_, tx)| {
            if tx.capacity() <= 1 {
                let _ = tx.try_send(Frame::Overflow);
                return false;
            }
            tx.try_send(frame.clone()).is_ok()
        });
    }

    /// Delivers the retained messages after the head, up to `until` (all
    /// of them when `None`).
    fn catch_up(&mut self, until: Option<u64>) {
        let reader = self.args.realtime.reader().clone();
        loop {
            let after = self.head.map(|head| head.seq).unwrap_or(0);
            if until.is_some_and(|until| after >= until) {
                return;
            }
            let page =
                match reader.topic_read(&self.args.app, &self.args.topic, after, TOPIC_PAGE_MAX) {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(%error, "topic actor: reading missed messages failed");
                        return;
                    }
                };
            let Some(record) = page.record else { return };
            if page.messages.is_empty() {
                return;
            }
            for (seq, data) in page.messages {
                if until.is_some_and(|until| seq > until) {
                    return;
                }
                let id = Position {
                    epoch: record.epoch,
                    seq,
                };
                self.head = Some(id);
                self.deliver(Frame::Message {
                    id: Some(id),
                    data: data.into(),
                });
            }
        }
    }
}

impl Actor for TopicActor {
    type Msg = TopicMsg;
    type State = TopicState;
    type Arguments = TopicArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<TopicMsg>,
        args: TopicArgs,
    ) -> Result<TopicState, ActorProcessingErr> {
        let record = args
            .realtime
            .reader()
            .topic_read(&args.app, &args.topic, u64::MAX, 0)?
            .record;
        Ok(TopicState {
            head: record.map(|record| Position {
                epoch: record.epoch,
                seq: record.last_seq,
            }),
            args,
            subscribers: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TopicMsg>,
        message: TopicMsg,
        state: &mut TopicState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TopicMsg::Join(join, reply) => {
                state.subscribers.push((join.id, join.tx));
                let _ = reply.send(state.head);
            }
            TopicMsg::Leave(id) => {
                state.subscribers.retain(|(other, _)| *other != id);
                if state.subscribers.is_empty() {
                    let realtime = state.args.realtime.clone();
                    realtime
                        .forget(&state.args.app, &state.args.topic, &myself)
                        .await;
                    myself.stop(None);
                }
            }
            TopicMsg::Durable(event) => {
                let id = event.position;
                match state.head {
                    Some(head) if head.epoch == id.epoch && id.seq <= head.seq => {}
                    Some(head) if head.epoch == id.epoch && id.seq > head.seq + 1 => {
                        // A gap (the feed lagged): the missed ones first,
                        // from the state, which holds this one too.
                        state.catch_up(Some(id.seq));
                    }
                    _ => {
                        state.head = Some(id);
                        state.deliver(Frame::Message {
                            id: Some(id),
                            data: event.message,
                        });
                    }
                }
            }
            TopicMsg::Ephemeral(data) => {
                // The test-only fault switch: a topic actor that fails.
                picloud_cluster::fault_point("topic_actor");
                state.deliver(Frame::Message { id: None, data });
            }
            TopicMsg::Resync => state.catch_up(None),
        }
        Ok(())
    }
}

/// The parent of every topic actor of the node.
pub(super) struct TopicSupervisor;

impl Actor for TopicSupervisor {
    type Msg = ();
    type State = Arc<ActorRestarts>;
    type Arguments = Arc<ActorRestarts>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        restarts: Arc<ActorRestarts>,
    ) -> Result<Arc<ActorRestarts>, ActorProcessingErr> {
        Ok(restarts)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        restarts: &mut Arc<ActorRestarts>,
    ) -> Result<(), ActorProcessingErr> {
        // A failed topic actor's subscribers lose their buffers' sender
        // and end; they resume by id, which starts a fresh actor. The
        // registry entry of the failed one is dropped when the next join
        // to it fails.
        if let SupervisionEvent::ActorFailed(actor, error) = event {
            tracing::warn!(actor = %actor.get_id(), %error, "topic actor failed");
            restarts.record("topic");
        }
        Ok(())
    }
}
