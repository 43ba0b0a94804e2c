//! Realtime on this node: the topics with subscribers here (one supervised
//! [`TopicActor`](topic_actor) per `(app, topic)`), the feed that brings
//! each durable message applied here to them, and the apps' signing keys
//! for realtime tokens.
//!
//! ```text
//!   SSE request ──Realtime::subscribe──▶ registry ──spawn on first──▶ TopicActor (owns subscribers)
//!   apply ──PublishedEvent──▶ topic_feed duty ──Durable──▶ TopicActor ──try_send──▶ subscriber buffers
//!   pubsub.publish ──Realtime::publish──▶ TopicActor ──try_send──▶ subscriber buffers
//!                        └──PubSubLinks (one hop, to peers with interest)──▶ their pubsub_in ──▶ their TopicActors
//!   TopicActor started / stopped ──Interest──▶ every peer (full set on each new stream)
//! ```
//!
//! A subscriber is a bounded channel (`buffer_max` frames) and no task of
//! its own: the HTTP connection's task reads it. A subscriber whose buffer
//! is full when a message arrives gets `Overflow` and is dropped, alone.
//!
//! # Layout
//! - `mod.rs` (this file): [`Realtime`], the registry, subscriptions, the
//!   durable feed and the pub/sub links' inbound side (`pubsub_in`), signing keys.
//! - `topic_actor.rs`: `TopicActor` and its supervisor.
//! - `resume.rs`: [`plan_resume`], the pure rule for where a resumed stream starts.
//! - `token.rs`: the token format, HMAC-SHA256 and verification.

mod resume;
pub mod token;
mod topic_actor;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use picloud_cluster::transport::PubSubFrame;
use picloud_cluster::{Duty, Node};
use picloud_lua_sdk::{Code, HostError};
use picloud_storage::NodeId;
use picloud_storage::secret_box::{Keyring, SecretBoxError, sealed_key_id};
use picloud_storage::topics::Position;
use picloud_storage::{Command, CommandResult, StateReader};
use ractor::{Actor, ActorRef};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

pub use crate::config::RealtimeLimits;
use crate::duties::ActorRestarts;
use crate::error::{apply_host_error, cluster_host_error, storage_error};
pub use resume::{Resume, plan_resume};
use topic_actor::{Join, TopicActor, TopicArgs, TopicMsg, TopicSupervisor};

/// What a subscriber's buffer holds.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A message: durable ones carry their position.
    Message {
        id: Option<Position>,
        data: Arc<[u8]>,
    },
    /// The subscriber's buffer was full: it is closed after this.
    Overflow,
}

/// What a subscription yields, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The asked position is older than the oldest kept (or of another
    /// history): the stream continues from the oldest kept message.
    Reset,
    Message {
        id: Option<Position>,
        data: Arc<[u8]>,
    },
    /// The subscriber fell behind by a whole buffer and is closed.
    Overflow,
}

/// The secret_box name the signing key is sealed under (never a valid
/// secret name, so it cannot be confused with one).
const SIGNING_KEY_NAME: &str = "\u{0}realtime-signing-key";
const SIGNING_KEY_BYTES: usize = 32;
/// Retained messages a resuming subscriber reads from the state at a time:
/// small, so a subscriber never holds a large copy of the history.
const CATCH_UP_PAGE_MESSAGES: usize = 64;
/// How often the `pubsub_in` duty makes sure every member has a stream
/// from this node (and drops those of departed members).
const PEER_LINKS_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

type TopicKey = (String, String);

/// An app's signing key as stored (sealed) and opened.
type OpenedKey = (Vec<u8>, Arc<[u8]>);

#[derive(Default)]
struct Registry {
    actors: HashMap<TopicKey, ActorRef<TopicMsg>>,
}

struct Inner {
    node: Node,
    keyring: Option<Arc<Keyring>>,
    limits: RealtimeLimits,
    registry: tokio::sync::Mutex<Registry>,
    /// Subscribers of each app on this node. A plain lock (never held
    /// across an await), so a departing subscriber's guard releases its
    /// count in `drop` itself.
    subscribers_per_app: Mutex<HashMap<String, usize>>,
    subscribers: AtomicUsize,
    next_subscriber: AtomicU64,
    /// Opened signing keys by app, with the sealed bytes they came from: a
    /// rotation changes the sealed bytes, which drops the cached key.
    keys: Mutex<HashMap<String, OpenedKey>>,
    supervisor: ActorRef<()>,
    /// The topics with subscribers on this node (the registry's keys), for
    /// the greeting every pub/sub stream to a peer starts with.
    local_topics: Arc<Mutex<BTreeSet<TopicKey>>>,
    /// Which peers have subscribers of each topic (what they told us).
    remote_interest: Mutex<HashMap<TopicKey, BTreeSet<NodeId>>>,
    /// Set by [`Realtime::shutdown`]: new subscriptions are refused.
    closed: std::sync::atomic::AtomicBool,
}

/// The node's realtime: cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    inner: Arc<Inner>,
}

impl Realtime {
    /// Starts the topic actors' supervisor (restarts counted as `topic`).
    pub async fn start(
        node: Node,
        keyring: Option<Arc<Keyring>>,
        limits: RealtimeLimits,
        restarts: Arc<ActorRestarts>,
    ) -> Result<Realtime, HostError> {
        let (supervisor, _) = Actor::spawn(None, TopicSupervisor, restarts)
            .await
            .map_err(|e| HostError::new(Code::Internal, e.to_string()))?;
        let local_topics: Arc<Mutex<BTreeSet<TopicKey>>> = Arc::default();
        let greeting_topics = local_topics.clone();
        node.pubsub()
            .set_greeting(Arc::new(move || PubSubFrame::Interest {
                full: true,
                add: greeting_topics
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect(),
                remove: Vec::new(),
            }));
        Ok(Realtime {
            inner: Arc::new(Inner {
                node,
                keyring,
                limits,
                registry: tokio::sync::Mutex::default(),
                subscribers_per_app: Mutex::default(),
                subscribers: AtomicUsize::new(0),
                next_subscriber: AtomicU64::new(1),
                keys: Mutex::default(),
                supervisor,
                local_topics,
                remote_interest: Mutex::default(),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub fn limits(&self) -> &RealtimeLimits {
        &self.inner.limits
    }

    fn reader(&self) -> &StateReader {
        self.inner.node.reader()
    }

    /// Subscribers on this node now.
    pub fn subscriber_count(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    /// Subscribes to `topic` of `app` on this node. `after` is the client's
    /// last durable position (`Last-Event-ID`): the subscription yields the
    /// retained messages after it first, then live ones, with neither a gap
    /// nor a repeat at the seam. `realtime_full` / `topics_full` past the
    /// limits.
    pub async fn subscribe(
        &self,
        app: &str,
        topic: &str,
        after: Option<Position>,
    ) -> Result<Subscription, HostError> {
        let limits = &self.inner.limits;
        let count = self.inner.subscribers.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = SubscriberGuard {
            realtime: self.clone(),
            app: app.to_string(),
            topic: topic.to_string(),
            id: self.inner.next_subscriber.fetch_add(1, Ordering::Relaxed),
            actor: None,
            counted_in_app: false,
        };
        if count > limits.subscribers_per_node_max {
            return Err(HostError::new(
                Code::RealtimeFull,
                format!(
                    "this node holds {} realtime subscribers, its realtime_subscribers_per_node_max",
                    limits.subscribers_per_node_max
                ),
            ));
        }
        let mut guard = guard;
        let (tx, rx) = mpsc::channel(limits.buffer_max.saturating_add(1));
        // A topic actor stops when its last subscriber leaves; a join that
        // raced with that stop finds the actor gone and starts a new one.
        for _ in 0..3 {
            let actor = self.topic_actor(app, topic, &mut guard).await?;
            let join = Join {
                id: guard.id,
                tx: tx.clone(),
            };
            let joined = actor
                .call(|reply| TopicMsg::Join(join, reply), None)
                .await
                .ok()
                .and_then(|result| result.success_or(()).ok());
            if let Some(head) = joined {
                guard.actor = Some(actor);
                let record = self
                    .reader()
                    .topic_read(app, topic, u64::MAX, 0)
                    .map_err(storage_error)?
                    .record;
                let resume = plan_resume(after, record, head);
                return Ok(Subscription {
                    rx,
                    guard,
                    resume,
                    pending: VecDeque::new(),
                    last: None,
                });
            }
            // Stopped (idle) or failed: forget it, so the next try starts one.
            self.forget(app, topic, &actor).await;
        }
        Err(HostError::new(
            Code::Unavailable,
            format!("the topic {topic} of {app} could not be joined on this node"),
        ))
    }

    /// The actor of `(app, topic)`, started if needed (counting the
    /// subscriber in the app's total once).
    async fn topic_actor(
        &self,
        app: &str,
        topic: &str,
        guard: &mut SubscriberGuard,
    ) -> Result<ActorRef<TopicMsg>, HostError> {
        let limits = &self.inner.limits;
        let mut registry = self.inner.registry.lock().await;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(HostError::new(
                Code::Unavailable,
                "this node is shutting down",
            ));
        }
        if !guard.counted_in_app {
            let mut per_app = self
                .inner
                .subscribers_per_app
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let app_count = per_app.entry(app.to_string()).or_default();
            if *app_count >= limits.subscribers_per_app_max {
                return Err(HostError::new(
                    Code::RealtimeFull,
                    format!(
                        "app {app} has {} realtime subscribers on this node, its realtime_subscribers_per_app_max",
                        limits.subscribers_per_app_max
                    ),
                ));
            }
            *app_count += 1;
            guard.counted_in_app = true;
        }
        let key = (app.to_string(), topic.to_string());
        if let Some(actor) = registry.actors.get(&key) {
            return Ok(actor.clone());
        }
        let topics = registry.actors.keys().filter(|(a, _)| a == app).count();
        if topics >= limits.topics_per_app_max {
            return Err(HostError::new(
                Code::TopicsFull,
                format!(
                    "app {app} has {topics} live topics on this node, its realtime_topics_per_app_max"
                ),
            ));
        }
        // Spawned under the registry lock, which the feed takes too: the
        // actor reads the topic's head in `pre_start`, and every durable
        // message applied after that read is routed to it.
        let args = TopicArgs {
            app: app.to_string(),
            topic: topic.to_string(),
            realtime: self.clone(),
        };
        let (actor, _) =
            Actor::spawn_linked(None, TopicActor, args, self.inner.supervisor.get_cell())
                .await
                .map_err(|e| HostError::new(Code::Internal, e.to_string()))?;
        registry.actors.insert(key.clone(), actor.clone());
        self.interest_changed(Some(key), None);
        Ok(actor)
    }

    /// Removes `actor` from the registry if it is still the one of its
    /// topic (a stopping or failed actor).
    async fn forget(&self, app: &str, topic: &str, actor: &ActorRef<TopicMsg>) {
        let mut registry = self.inner.registry.lock().await;
        let key = (app.to_string(), topic.to_string());
        if registry
            .actors
            .get(&key)
            .is_some_and(|current| current.get_id() == actor.get_id())
        {
            registry.actors.remove(&key);
            self.interest_changed(None, Some(key));
        }
    }

    /// Records a topic gained or lost here and tells every peer.
    fn interest_changed(&self, add: Option<TopicKey>, remove: Option<TopicKey>) {
        {
            let mut local = self
                .inner
                .local_topics
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(key) = &add {
                local.insert(key.clone());
            }
            if let Some(key) = &remove {
                local.remove(key);
            }
        }
        let frame = Arc::new(PubSubFrame::Interest {
            full: false,
            add: add.into_iter().collect(),
            remove: remove.into_iter().collect(),
        });
        let links = self.inner.node.pubsub();
        for (id, peer) in self.inner.node.peer_addresses() {
            links.send(id, &peer, frame.clone());
        }
    }

    /// Ephemeral publish on this node: local subscribers, and ONE frame to
    /// each other node that has subscribers of the topic (they deliver it
    /// locally and never forward it). Never waits for a peer.
    pub async fn publish(&self, app: &str, topic: &str, data: Arc<[u8]>) {
        let key = (app.to_string(), topic.to_string());
        let targets: Vec<NodeId> = self
            .inner
            .remote_interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(|nodes| nodes.iter().copied().collect())
            .unwrap_or_default();
        if !targets.is_empty() {
            let frame = Arc::new(PubSubFrame::Publish {
                app: app.to_string(),
                topic: topic.to_string(),
                message: data.to_vec(),
            });
            let links = self.inner.node.pubsub();
            for (id, peer) in self.inner.node.peer_addresses() {
                if targets.contains(&id) {
                    links.send(id, &peer, frame.clone());
                }
            }
        }
        self.publish_local(app, topic, data).await;
    }

    /// What peers send (their publishes and interest), into this node, as
    /// a duty (`pubsub_in`). Also keeps a stream to every member, so each
    /// one learns this node's interest even before it changes.
    pub fn pubsub_in(&self) -> Duty {
        let realtime = self.clone();
        Duty::new("pubsub_in", move || {
            let realtime = realtime.clone();
            async move {
                let node = realtime.inner.node.clone();
                let mut inbox = node.pubsub().inbox().lock().await;
                let mut links_tick = tokio::time::interval(PEER_LINKS_CHECK);
                loop {
                    tokio::select! {
                        frame = inbox.recv() => {
                            let Some((from, frame)) = frame else { return };
                            realtime.received(from, frame).await;
                        }
                        _ = links_tick.tick() => {
                            let peers = node.peer_addresses();
                            let links = node.pubsub();
                            links.retain(&peers.iter().map(|(id, _)| *id).collect::<Vec<_>>());
                            for (id, peer) in &peers {
                                links.ensure(*id, peer);
                            }
                        }
                    }
                }
            }
        })
    }

    async fn received(&self, from: NodeId, frame: PubSubFrame) {
        match frame {
            PubSubFrame::Publish {
                app,
                topic,
                message,
            } => self.publish_local(&app, &topic, message.into()).await,
            PubSubFrame::Interest { full, add, remove } => {
                let mut interest = self
                    .inner
                    .remote_interest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let forget = |interest: &mut HashMap<TopicKey, BTreeSet<NodeId>>,
                              key: &TopicKey| {
                    if let Some(nodes) = interest.get_mut(key) {
                        nodes.remove(&from);
                        if nodes.is_empty() {
                            interest.remove(key);
                        }
                    }
                };
                if full {
                    let keys: Vec<TopicKey> = interest.keys().cloned().collect();
                    for key in &keys {
                        forget(&mut interest, key);
                    }
                }
                for key in &remove {
                    forget(&mut interest, key);
                }
                for key in add {
                    interest.entry(key).or_default().insert(from);
                }
            }
        }
    }

    /// Ends every subscription of this node (node shutdown): the topic
    /// actors stop, their subscribers' streams end, and no new one starts.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let mut registry = self.inner.registry.lock().await;
        for (key, actor) in registry.actors.drain() {
            actor.stop(None);
            self.interest_changed(None, Some(key));
        }
    }

    /// Delivers an ephemeral message to this node's subscribers of `topic`.
    pub async fn publish_local(&self, app: &str, topic: &str, data: Arc<[u8]>) {
        let actor = {
            let registry = self.inner.registry.lock().await;
            registry
                .actors
                .get(&(app.to_string(), topic.to_string()))
                .cloned()
        };
        if let Some(actor) = actor {
            let _ = actor.cast(TopicMsg::Ephemeral(data));
        }
    }

    /// The feed of durable messages applied here into the topic actors,
    /// as a duty (`topic_feed`). A lagging feed, and each restarted run,
    /// tells every actor to read what it missed from the state.
    pub fn feed(&self) -> Duty {
        let realtime = self.clone();
        Duty::new("topic_feed", move || {
            let realtime = realtime.clone();
            let mut events = realtime.reader().subscribe_published();
            async move {
                // A restarted run may have missed messages applied while no
                // run listened: every actor reads what it missed first.
                {
                    let registry = realtime.inner.registry.lock().await;
                    for actor in registry.actors.values() {
                        let _ = actor.cast(TopicMsg::Resync);
                    }
                }
                loop {
                    match events.recv().await {
                        Ok(event) => {
                            // The test-only fault switch: the event is lost
                            // with the run, and the next run resyncs.
                            picloud_cluster::fault_point("topic_feed");
                            let registry = realtime.inner.registry.lock().await;
                            let key = (event.app.clone(), event.topic.clone());
                            if let Some(actor) = registry.actors.get(&key) {
                                let _ = actor.cast(TopicMsg::Durable(event));
                            }
                        }
                        Err(RecvError::Lagged(_)) => {
                            let registry = realtime.inner.registry.lock().await;
                            for actor in registry.actors.values() {
                                let _ = actor.cast(TopicMsg::Resync);
                            }
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            }
        })
    }

    /// The opened signing key of `app`: created (random, sealed, through
    /// the log) when `create` and the app has none yet.
    pub async fn signing_key(&self, app: &str, create: bool) -> Result<Arc<[u8]>, HostError> {
        let sealed = match self.reader().realtime_key(app).map_err(storage_error)? {
            Some(sealed) => sealed,
            None if create => {
                self.write_key(app, true).await?;
                self.reader()
                    .realtime_key(app)
                    .map_err(storage_error)?
                    .ok_or_else(|| {
                        HostError::new(Code::Internal, "the signing key was not stored")
                    })?
            }
            None => {
                return Err(HostError::new(
                    Code::TokenInvalid,
                    format!("app {app} has issued no realtime tokens"),
                ));
            }
        };
        let mut keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_sealed, key)) = keys.get(app)
            && *cached_sealed == sealed
        {
            return Ok(key.clone());
        }
        let keyring = self.keyring()?;
        let key: Arc<[u8]> = keyring
            .open(app, SIGNING_KEY_NAME, &sealed)
            .map_err(|e| {
                HostError::new(
                    Code::SecretKeyMismatch,
                    format!("the realtime signing key of {app} does not open here: {e}"),
                )
            })?
            .into();
        keys.insert(app.to_string(), (sealed, key.clone()));
        Ok(key)
    }

    /// Replaces `app`'s signing key (`picloud realtime rotate-key`): every
    /// token signed before is refused from then on.
    pub async fn rotate_key(&self, app: &str) -> Result<(), HostError> {
        self.write_key(app, false).await
    }

    /// Re-seals every app's signing key that is not under this node's
    /// current master key (`picloud secrets rotate-key`, after the secrets):
    /// the same key under the new master key, so tokens signed before stay
    /// valid, and the old master key can then be dropped. Each swap is
    /// guarded (`Command::RealtimeKeyRekey`): a rotation applied meanwhile
    /// wins. A key no held master key opens is reported, not touched.
    pub async fn rekey_signing_keys(&self) -> Result<SigningKeysRekeyed, HostError> {
        let keyring = self.keyring()?;
        let current_id = keyring.current().id_hex();
        let reader = self.reader();
        let mut outcome = SigningKeysRekeyed::default();
        for app in reader.apps().map_err(storage_error)? {
            let app = app.name;
            let Some(sealed) = reader.realtime_key(&app).map_err(storage_error)? else {
                continue;
            };
            if sealed_key_id(&sealed).as_deref() == Some(current_id.as_str()) {
                outcome.already_current += 1;
                continue;
            }
            let key = match keyring.open(&app, SIGNING_KEY_NAME, &sealed) {
                Ok(key) => key,
                Err(error) => {
                    outcome.unreadable.push((app, error));
                    continue;
                }
            };
            let new = keyring
                .current()
                .seal(&app, SIGNING_KEY_NAME, &key, rand::random());
            let result = self
                .inner
                .node
                .write(Command::RealtimeKeyRekey {
                    app,
                    old: sealed,
                    new,
                })
                .await
                .map_err(cluster_host_error)?;
            match result {
                CommandResult::SecretsRekeyed { rekeyed, changed } => {
                    outcome.rekeyed += rekeyed;
                    outcome.changed_meanwhile += changed;
                }
                CommandResult::Rejected(error) => return Err(apply_host_error(error)),
                other => {
                    return Err(HostError::new(
                        Code::Internal,
                        format!("unexpected apply result {other:?}"),
                    ));
                }
            }
        }
        Ok(outcome)
    }

    fn keyring(&self) -> Result<&Keyring, HostError> {
        self.inner.keyring.as_deref().ok_or_else(|| {
            HostError::new(Code::Unavailable, "this node was started without secrets")
        })
    }

    async fn write_key(&self, app: &str, only_if_absent: bool) -> Result<(), HostError> {
        let keyring = self.keyring()?;
        let key: [u8; SIGNING_KEY_BYTES] = rand::random();
        let sealed = keyring
            .current()
            .seal(app, SIGNING_KEY_NAME, &key, rand::random());
        let result = self
            .inner
            .node
            .write(Command::RealtimeKeySet {
                app: app.to_string(),
                sealed,
                only_if_absent,
            })
            .await
            .map_err(cluster_host_error)?;
        match result {
            CommandResult::Done => Ok(()),
            CommandResult::Rejected(error) => Err(apply_host_error(error)),
            other => Err(HostError::new(
                Code::Internal,
                format!("unexpected apply result {other:?}"),
            )),
        }
    }
}

/// What [`Realtime::rekey_signing_keys`] did.
#[derive(Debug, Default)]
pub struct SigningKeysRekeyed {
    pub rekeyed: u64,
    pub already_current: u64,
    /// Keys replaced (rotated, or their app deleted) while the rekey ran.
    pub changed_meanwhile: u64,
    /// Apps whose key no master key of this node opens, with why.
    pub unreadable: Vec<(String, SecretBoxError)>,
}

/// Counts a subscriber while it lives; dropping it leaves the topic.
struct SubscriberGuard {
    realtime: Realtime,
    app: String,
    topic: String,
    id: u64,
    actor: Option<ActorRef<TopicMsg>>,
    counted_in_app: bool,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        let inner = &self.realtime.inner;
        inner.subscribers.fetch_sub(1, Ordering::AcqRel);
        if let Some(actor) = &self.actor {
            let _ = actor.cast(TopicMsg::Leave(self.id));
        }
        if self.counted_in_app {
            let mut per_app = inner
                .subscribers_per_app
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_app.get_mut(&self.app) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_app.remove(&self.app);
                }
            }
        }
    }
}

/// One subscriber: retained messages first (per [`plan_resume`]), then
/// what its topic actor delivers.
pub struct Subscription {
    rx: mpsc::Receiver<Frame>,
    guard: SubscriberGuard,
    resume: Resume,
    /// A page of retained messages read and not yielded yet.
    pending: VecDeque<Event>,
    /// The last durable position yielded: live frames at or before it
    /// (already read from the state) are skipped.
    last: Option<Position>,
}

impl Subscription {
    /// The next event; `None` when the subscription ended (after
    /// `Overflow`, or when its topic actor stopped).
    pub async fn next(&mut self) -> Option<Event> {
        if std::mem::take(&mut self.resume.reset) {
            return Some(Event::Reset);
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.resume.after_seq < self.resume.until_seq {
                if let Err(error) = self.read_page() {
                    tracing::warn!(%error, "realtime: reading a topic's history failed");
                    return None;
                }
                continue;
            }
            match self.rx.recv().await? {
                Frame::Overflow => return Some(Event::Overflow),
                Frame::Message { id: Some(id), data } => {
                    if self
                        .last
                        .is_some_and(|last| last.epoch == id.epoch && id.seq <= last.seq)
                    {
                        continue;
                    }
                    self.last = Some(id);
                    return Some(Event::Message { id: Some(id), data });
                }
                Frame::Message { id: None, data } => {
                    return Some(Event::Message { id: None, data });
                }
            }
        }
    }

    fn read_page(&mut self) -> Result<(), HostError> {
        let guard = &self.guard;
        let page = guard
            .realtime
            .reader()
            .topic_read(
                &guard.app,
                &guard.topic,
                self.resume.after_seq,
                CATCH_UP_PAGE_MESSAGES,
            )
            .map_err(storage_error)?;
        let epoch = page.record.map(|record| record.epoch).unwrap_or(0);
        if page.messages.is_empty() {
            // Trimmed or gone meanwhile: nothing more to catch up on.
            self.resume.after_seq = self.resume.until_seq;
        }
        for (seq, data) in page.messages {
            if seq > self.resume.until_seq {
                self.resume.after_seq = self.resume.until_seq;
                break;
            }
            self.resume.after_seq = seq;
            let id = Position { epoch, seq };
            self.last = Some(id);
            self.pending.push_back(Event::Message {
                id: Some(id),
                data: data.into(),
            });
        }
        Ok(())
    }
}
