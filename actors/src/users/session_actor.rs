//! Live sessions as actors: the [`SessionSupervisor`] of this node starts a
//! [`SessionActor`] per live session (`spawn_linked`), bounds them at
//! `sessions_live_max` (evicting the least recently used), counts their
//! failures, and stops the affected ones the moment an applied users
//! command revokes sessions (the `sessions` duty forwards each
//! `AppliedEvent::SessionsRevoked`). Each actor owns its session: a tick
//! every [`TICK_MS`] re-reads the rows when the session was used since
//! the last read, asks the [`RefreshBatcher`] to extend its expiry once per
//! `session_refresh_ms` of use, and stops itself when idle or expired.
//! The batcher writes one `UsersCommand::Refresh` per app per
//! [`REFRESH_FLUSH_MS`] for every session that asked.
//!
//! ```text
//!  verify ─hit─▶ Sessions (published answers; stores the time of use)
//!         └miss─▶ rows ─▶ Sessions::publish ─Start─▶ SessionSupervisor ─spawn_linked─▶ SessionActor
//!  SessionActor tick: plan_tick ─▶ recheck rows / Due ─▶ RefreshBatcher ─▶ write(Refresh) per app
//!                                └ stop (idle, expired, gone)
//!  applied Logout/LogoutAll/SetPassword/Delete/Update ─▶ sessions duty ─Revoked─▶ supervisor ─▶ stop
//!  actor panics ─ActorFailed─▶ supervisor: counted, unpublished (the next verify starts it again)
//! ```
//!
//! A failed session actor is not restarted eagerly: its answer is
//! unpublished and the next verify of that session reads the rows and
//! starts a fresh actor, so a restart costs nothing for sessions nobody
//! uses any more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use picloud_cluster::{ClusterError, Node};
use picloud_storage::users::{SessionRefresh, SessionsRevoked, TokenHash, UsersCommand};
use picloud_storage::{Command, StateReader, StorageError};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::Value;
use tokio::task::JoinHandle;

use super::sessions::{
    RECHECK_MS, Sessions, StopReason, SupervisorMsg, TickPlan, plan_evictions, plan_tick,
};
use super::user_view;
use crate::duties::ActorRestarts;
use crate::files::now_ms;

/// How often a session actor ticks: half the recheck bound, so a session
/// in use is re-read before its published answer goes stale and the hot
/// path keeps hitting.
pub const TICK_MS: u64 = RECHECK_MS / 2;

/// How often the batcher writes the refreshes it collected: one command
/// per app at most this often.
pub const REFRESH_FLUSH_MS: u64 = 1_000;

/// The name failures are counted under (`picloud_actor_restarts_total`).
pub const SESSION_ACTOR: &str = "session";

/// A session and its user as the state holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub user_id: String,
    pub user: Value,
    pub expires_ms: u64,
    pub last_seen_ms: u64,
}

/// Reads session `hash` of `app` and its user from this node's state:
/// `None` when either is gone or the session expired at `now_ms`.
pub fn load_session(
    reader: &StateReader,
    app: &str,
    hash: &TokenHash,
    now_ms: u64,
) -> Result<Option<Loaded>, StorageError> {
    let Some(session) = reader
        .session(app, hash)?
        .filter(|session| session.expires_ms > now_ms)
    else {
        return Ok(None);
    };
    let Some(record) = reader.user(app, &session.user_id)? else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        user: user_view(&session.user_id, &record),
        user_id: session.user_id,
        expires_ms: session.expires_ms,
        last_seen_ms: session.last_seen_ms,
    }))
}

pub enum SessionMsg {
    Tick,
}

pub struct SessionArgs {
    hash: TokenHash,
    app: Arc<str>,
    refreshed_ms: u64,
    ttl_ms: u64,
    sessions: Sessions,
    reader: StateReader,
    batcher: ActorRef<BatcherMsg>,
}

pub struct SessionActor;

pub struct SessionState {
    args: SessionArgs,
    ticks: JoinHandle<()>,
}

impl SessionState {
    /// One tick: see the module comment. `Err` only for a storage failure,
    /// which leaves the answer to go stale (the hot path then reads the
    /// rows itself).
    fn tick(&mut self, now: u64) -> Result<Option<StopReason>, StorageError> {
        let args = &mut self.args;
        // Unpublished (revoked here, evicted): nothing left to own.
        let Some(entry) = args.sessions.get(&args.hash) else {
            return Ok(Some(StopReason::Expired));
        };
        let limits = args.sessions.limits();
        let seen = entry.seen_ms();
        let plan = plan_tick(
            limits,
            seen,
            entry.checked_ms(),
            args.refreshed_ms,
            entry.expires_ms(),
            now,
        );
        let (recheck, refresh) = match plan {
            TickPlan::Stop(reason) => return Ok(Some(reason)),
            TickPlan::Keep { recheck, refresh } => (recheck, refresh),
        };
        if refresh {
            let expires_ms = seen.saturating_add(args.ttl_ms);
            let due = BatcherMsg::Due {
                app: args.app.clone(),
                refresh: SessionRefresh {
                    session: args.hash,
                    last_seen_ms: seen,
                    expires_ms,
                },
            };
            if args.batcher.cast(due).is_ok() {
                args.refreshed_ms = seen;
                entry.extend(expires_ms);
            }
        }
        if recheck {
            match load_session(&args.reader, &args.app, &args.hash, now)? {
                Some(loaded) => args.sessions.insert(
                    args.hash,
                    Arc::new(entry.rechecked(loaded.user, loaded.expires_ms, now)),
                ),
                None => return Ok(Some(StopReason::Expired)),
            }
        }
        Ok(None)
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        // Its own timer: no sweep over every session.
        let ticks = myself.send_interval(Duration::from_millis(TICK_MS), || SessionMsg::Tick);
        Ok(SessionState { args, ticks })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Tick => match state.tick(now_ms()) {
                Ok(None) => {}
                Ok(Some(_)) => myself.stop(None),
                Err(error) => {
                    tracing::warn!(app = %state.args.app, %error, "session recheck failed");
                }
            },
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticks.abort();
        Ok(())
    }
}

pub enum BatcherMsg {
    /// A session asks for its expiry to be extended.
    Due {
        app: Arc<str>,
        refresh: SessionRefresh,
    },
    Flush,
}

/// The refreshes collected since the last flush, one per session.
type Pending = HashMap<Arc<str>, HashMap<TokenHash, SessionRefresh>>;

/// The commands one flush writes: one `Refresh` per app.
pub fn plan_flush(pending: Pending, now_ms: u64) -> Vec<UsersCommand> {
    let mut commands: Vec<UsersCommand> = pending
        .into_iter()
        .filter(|(_, sessions)| !sessions.is_empty())
        .map(|(app, sessions)| {
            let mut sessions: Vec<SessionRefresh> = sessions.into_values().collect();
            sessions.sort_by_key(|refresh| refresh.session);
            UsersCommand::Refresh {
                app: app.to_string(),
                sessions,
                now_ms,
            }
        })
        .collect();
    commands.sort_by(|a, b| a.app().cmp(b.app()));
    commands
}

/// Where the batcher's commands go: the node's log (a recorder in tests).
pub trait RefreshSink: Send + Sync + 'static {
    fn write(&self, command: UsersCommand) -> BoxFuture<'_, Result<(), ClusterError>>;
}

impl RefreshSink for Node {
    fn write(&self, command: UsersCommand) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move { Node::write(self, Command::Users(command)).await.map(|_| ()) })
    }
}

/// Collects sessions' refreshes and writes them per app (see the module
/// comment). Its pending set is bounded by the live sessions: one entry
/// per session.
pub struct RefreshBatcher;

pub struct BatcherState {
    sink: Arc<dyn RefreshSink>,
    pending: Pending,
    ticks: JoinHandle<()>,
}

impl Actor for RefreshBatcher {
    type Msg = BatcherMsg;
    type State = BatcherState;
    type Arguments = Arc<dyn RefreshSink>;

    async fn pre_start(
        &self,
        myself: ActorRef<BatcherMsg>,
        sink: Arc<dyn RefreshSink>,
    ) -> Result<BatcherState, ActorProcessingErr> {
        let ticks = myself.send_interval(Duration::from_millis(REFRESH_FLUSH_MS), || {
            BatcherMsg::Flush
        });
        Ok(BatcherState {
            sink,
            pending: Pending::new(),
            ticks,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<BatcherMsg>,
        message: BatcherMsg,
        state: &mut BatcherState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BatcherMsg::Due { app, refresh } => {
                state
                    .pending
                    .entry(app)
                    .or_default()
                    .insert(refresh.session, refresh);
            }
            BatcherMsg::Flush => {
                let pending = std::mem::take(&mut state.pending);
                for command in plan_flush(pending, now_ms()) {
                    // A refresh not written is asked again at the session's
                    // next interval; it stays valid until its stored expiry.
                    if let Err(error) = state.sink.write(command).await {
                        tracing::debug!(%error, "session refreshes not written");
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BatcherMsg>,
        state: &mut BatcherState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticks.abort();
        Ok(())
    }
}

pub struct SupervisorArgs {
    /// Where the session actors re-read their rows.
    pub reader: StateReader,
    pub sink: Arc<dyn RefreshSink>,
    pub sessions: Sessions,
    pub restarts: Arc<ActorRestarts>,
}

pub struct SessionSupervisor;

struct Child {
    actor: ActorRef<SessionMsg>,
    app: Arc<str>,
    user_id: String,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    batcher: ActorRef<BatcherMsg>,
    children: HashMap<TokenHash, Child>,
    by_actor: HashMap<ActorId, TokenHash>,
}

impl SupervisorState {
    /// Stops one session's actor and unpublishes its answer.
    fn stop(&mut self, hash: &TokenHash) {
        self.args.sessions.unpublish(hash);
        if let Some(child) = self.children.remove(hash) {
            self.by_actor.remove(&child.actor.get_id());
            child.actor.stop(None);
        }
    }

    fn stop_where(&mut self, matches: impl Fn(&Child) -> bool) {
        let hashes: Vec<TokenHash> = self
            .children
            .iter()
            .filter(|(_, child)| matches(child))
            .map(|(hash, _)| *hash)
            .collect();
        for hash in hashes {
            self.stop(&hash);
        }
    }

    /// Forgets a child that stopped or failed, if it is still the one
    /// registered for its session.
    fn forget(&mut self, id: ActorId) {
        if let Some(hash) = self.by_actor.remove(&id) {
            self.children.remove(&hash);
            self.args.sessions.unpublish(&hash);
        }
    }
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let (batcher, _) =
            Actor::spawn_linked(None, RefreshBatcher, args.sink.clone(), myself.get_cell()).await?;
        Ok(SupervisorState {
            args,
            batcher,
            children: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start {
                hash,
                entry,
                refreshed_ms,
                ttl_ms,
            } => {
                let (app, user_id) = (entry.app.clone(), entry.user_id.clone());
                if state.children.contains_key(&hash) {
                    state.args.sessions.insert(hash, entry);
                    return Ok(());
                }
                let live_max = state.args.sessions.limits().live_max;
                for evicted in plan_evictions(state.args.sessions.seen(), live_max) {
                    state.stop(&evicted);
                }
                state.args.sessions.insert(hash, entry);
                let args = SessionArgs {
                    hash,
                    app: app.clone(),
                    refreshed_ms,
                    ttl_ms,
                    sessions: state.args.sessions.clone(),
                    reader: state.args.reader.clone(),
                    batcher: state.batcher.clone(),
                };
                match Actor::spawn_linked(None, SessionActor, args, myself.get_cell()).await {
                    Ok((actor, _)) => {
                        state.by_actor.insert(actor.get_id(), hash);
                        state.children.insert(
                            hash,
                            Child {
                                actor,
                                app,
                                user_id,
                            },
                        );
                    }
                    Err(error) => {
                        state.args.sessions.unpublish(&hash);
                        tracing::warn!(%error, "cannot start a session actor");
                    }
                }
            }
            SupervisorMsg::Stop { hash }
            | SupervisorMsg::Revoked(SessionsRevoked::Session { session: hash, .. }) => {
                state.stop(&hash);
            }
            SupervisorMsg::StopUser { app, id }
            | SupervisorMsg::Revoked(SessionsRevoked::User { app, id }) => {
                state.stop_where(|child| *child.app == *app && child.user_id == id);
            }
            SupervisorMsg::StopAll => state.stop_where(|_| true),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if cell.get_id() == state.batcher.get_id() {
                    // Without a batcher no refresh is written: fail so the
                    // `sessions` duty starts everything again.
                    state.args.restarts.record("session_refresh");
                    myself.stop(Some(format!("refresh batcher failed: {error}")));
                    return Ok(());
                }
                state.args.restarts.record(SESSION_ACTOR);
                tracing::error!(actor = SESSION_ACTOR, %error, "session actor crashed");
                state.forget(cell.get_id());
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => state.forget(cell.get_id()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::sessions::Published;
    use super::*;

    fn refresh(n: u8, expires_ms: u64) -> SessionRefresh {
        SessionRefresh {
            session: [n; 32],
            last_seen_ms: expires_ms - 100,
            expires_ms,
        }
    }

    /// Many sessions' refreshes become one command per app, one entry per
    /// session (its latest ask).
    #[test]
    fn a_flush_writes_one_refresh_per_app() {
        let mut pending = Pending::new();
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        for (app, n, expires) in [(&a, 1, 1_000), (&a, 2, 1_000), (&a, 1, 2_000), (&b, 3, 500)] {
            pending
                .entry(app.clone())
                .or_default()
                .insert([n; 32], refresh(n, expires));
        }
        pending.entry("c".into()).or_default();
        let commands = plan_flush(pending, 7);
        assert_eq!(
            commands,
            vec![
                UsersCommand::Refresh {
                    app: "a".into(),
                    sessions: vec![refresh(1, 2_000), refresh(2, 1_000)],
                    now_ms: 7,
                },
                UsersCommand::Refresh {
                    app: "b".into(),
                    sessions: vec![refresh(3, 500)],
                    now_ms: 7,
                },
            ]
        );
    }

    /// This process's resident memory, from `/proc/self/statm`.
    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|field| field.parse().ok())
            .expect("resident pages");
        pages * 4096
    }

    /// Stands in for the batcher: takes its messages and drops them.
    struct Sink;

    impl Actor for Sink {
        type Msg = BatcherMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<BatcherMsg>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    /// The memory of an idle live session (its actor, its timer task and
    /// its published answer with a typical user view), over 10,000 of
    /// them: what `sessions_live_max`'s default is set from (see
    /// `docs/architecture.md`). A measurement, run on demand:
    /// `cargo test -p picloud-actors --lib session_memory -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement; run on demand"]
    async fn session_memory() {
        const SESSIONS: usize = 10_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = picloud_storage::open(dir.path(), &Default::default()).expect("storage");
        let (batcher, _) = Actor::spawn(None, Sink, ()).await.expect("sink");
        let sessions = Sessions::new(super::super::sessions::SessionLimits {
            live_max: SESSIONS,
            idle_ms: 3_600_000,
            refresh_ms: 3_600_000,
        });
        let before = rss_bytes();
        let mut actors = Vec::with_capacity(SESSIONS);
        for n in 0..SESSIONS {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(n as u64).to_be_bytes());
            let user = serde_json::json!({
                "id": format!("user{n:016}"),
                "email": format!("user{n}@example.org"),
                "verified": true,
                "roles": ["member"],
                "data": {"plan": "pro"},
                "created_ms": 1_700_000_000_000u64,
                "last_login_ms": 1_700_000_000_000u64,
            });
            let entry = Published::new(
                "app".into(),
                format!("user{n:016}"),
                user,
                u64::MAX,
                now_ms(),
            );
            sessions.insert(hash, Arc::new(entry));
            let args = SessionArgs {
                hash,
                app: "app".into(),
                refreshed_ms: now_ms(),
                ttl_ms: 3_600_000,
                sessions: sessions.clone(),
                reader: storage.reader.clone(),
                batcher: batcher.clone(),
            };
            let (actor, _) = Actor::spawn(None, SessionActor, args).await.expect("spawn");
            actors.push(actor);
        }
        // Let every actor take a tick or two (idle: no recheck, no refresh).
        tokio::time::sleep(Duration::from_millis(2 * RECHECK_MS)).await;
        let after = rss_bytes();
        let per_session = after.saturating_sub(before) / SESSIONS as u64;
        println!(
            "{SESSIONS} idle live sessions: {} KiB resident, {per_session} bytes each",
            after.saturating_sub(before) / 1024
        );
        assert_eq!(
            sessions.len(),
            SESSIONS,
            "idle sessions stay live until idle_ms"
        );
        for actor in actors {
            actor.stop(None);
        }
    }

    /// Records what the batcher writes.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<UsersCommand>>);

    impl RefreshSink for Recorder {
        fn write(&self, command: UsersCommand) -> BoxFuture<'_, Result<(), ClusterError>> {
            self.0.lock().expect("recorder").push(command);
            Box::pin(async { Ok(()) })
        }
    }

    struct Running {
        sessions: Sessions,
        supervisor: ActorRef<SupervisorMsg>,
        recorder: Arc<Recorder>,
        _storage: picloud_storage::Storage,
        _dir: tempfile::TempDir,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.supervisor.stop(None);
        }
    }

    async fn start(live_max: usize, idle_ms: u64) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = picloud_storage::open(dir.path(), &Default::default()).expect("storage");
        let sessions = Sessions::new(super::super::sessions::SessionLimits {
            live_max,
            idle_ms,
            refresh_ms: 1_000,
        });
        let recorder = Arc::new(Recorder::default());
        let args = SupervisorArgs {
            reader: storage.reader.clone(),
            sink: recorder.clone(),
            sessions: sessions.clone(),
            restarts: Arc::new(ActorRestarts::default()),
        };
        let (supervisor, _) = Actor::spawn(None, SessionSupervisor, args)
            .await
            .expect("supervisor");
        sessions.set_supervisor(Some(supervisor.clone()));
        Running {
            sessions,
            supervisor,
            recorder,
            _storage: storage,
            _dir: dir,
        }
    }

    /// Publishes session `n` of `user` in `app`, last used at `seen_ms`
    /// (expiring a minute later), its expiry last extended at
    /// `refreshed_ms`; the app's session TTL is an hour.
    fn publish(running: &Running, n: u8, app: &str, user: &str, seen_ms: u64, refreshed_ms: u64) {
        let entry = Published::new(
            app.into(),
            user.into(),
            serde_json::json!({ "id": user }),
            seen_ms + 60_000,
            seen_ms,
        );
        running
            .sessions
            .publish([n; 32], entry, refreshed_ms, 3_600_000);
    }

    /// Polls `done` every 10 ms for at most `within`.
    async fn eventually(within: Duration, what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn live(sessions: &Sessions) -> Vec<u8> {
        let mut live: Vec<u8> = sessions
            .seen()
            .into_iter()
            .map(|(hash, _)| hash[0])
            .collect();
        live.sort();
        live
    }

    /// What the `sessions` duty does with an applied revocation.
    fn revoke(running: &Running, revoked: SessionsRevoked) {
        running
            .supervisor
            .cast(SupervisorMsg::Revoked(revoked))
            .expect("cast");
    }

    /// A revocation stops every actor of the user at once, and at the bound
    /// the least recently used session makes room.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocations_stop_sessions_and_the_bound_evicts_the_least_recently_used() {
        let running = start(3, 60_000).await;
        let base = now_ms();
        publish(&running, 1, "a", "u1", base, base);
        publish(&running, 2, "a", "u1", base + 1, base);
        publish(&running, 3, "a", "u2", base + 2, base);
        eventually(Duration::from_secs(2), "three live", || {
            live(&running.sessions) == [1, 2, 3]
        })
        .await;
        revoke(
            &running,
            SessionsRevoked::User {
                app: "a".into(),
                id: "u1".into(),
            },
        );
        eventually(Duration::from_secs(1), "u1's sessions stopped", || {
            live(&running.sessions) == [3]
        })
        .await;
        // Session 3 is the least recently used when 7 arrives.
        publish(&running, 5, "a", "u3", base + 5, base);
        publish(&running, 6, "a", "u3", base + 6, base);
        eventually(Duration::from_secs(1), "three live again", || {
            live(&running.sessions) == [3, 5, 6]
        })
        .await;
        publish(&running, 7, "a", "u3", base + 7, base);
        eventually(Duration::from_secs(1), "3 evicted for 7", || {
            live(&running.sessions) == [5, 6, 7]
        })
        .await;
        revoke(
            &running,
            SessionsRevoked::Session {
                app: "a".into(),
                session: [6; 32],
            },
        );
        eventually(Duration::from_secs(1), "session 6 stopped", || {
            live(&running.sessions) == [5, 7]
        })
        .await;
    }

    /// An actor stops itself when its session sits idle, with its own timer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_session_stops_itself() {
        let running = start(10, 1_500).await;
        let base = now_ms();
        publish(&running, 1, "a", "u1", base, base);
        eventually(Duration::from_secs(1), "live", || {
            live(&running.sessions) == [1]
        })
        .await;
        eventually(Duration::from_secs(4), "stopped when idle", || {
            running.sessions.is_empty()
        })
        .await;
    }

    /// Sessions due for a refresh are written by the batcher, one command
    /// per app per flush, each session once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refreshes_reach_the_log_batched_per_app() {
        let running = start(10, 60_000).await;
        let base = now_ms();
        // Used since their last extension a refresh interval ago.
        publish(&running, 1, "a", "u1", base, base - 5_000);
        publish(&running, 2, "a", "u2", base, base - 5_000);
        publish(&running, 3, "b", "u3", base, base - 5_000);
        let written = || {
            let commands = running.recorder.0.lock().expect("recorder").clone();
            let mut sessions: Vec<(String, u8)> = commands
                .iter()
                .flat_map(|command| match command {
                    UsersCommand::Refresh { app, sessions, .. } => sessions
                        .iter()
                        .map(|refresh| (app.clone(), refresh.session[0]))
                        .collect::<Vec<_>>(),
                    _ => Vec::new(),
                })
                .collect();
            sessions.sort();
            (commands.len(), sessions)
        };
        eventually(Duration::from_secs(4), "all three refreshed", || {
            written().1.len() >= 3
        })
        .await;
        // Unused since, none asks again.
        tokio::time::sleep(Duration::from_millis(2 * REFRESH_FLUSH_MS)).await;
        let (commands, sessions) = written();
        assert_eq!(
            sessions,
            vec![
                ("a".to_string(), 1),
                ("a".to_string(), 2),
                ("b".to_string(), 3)
            ]
        );
        assert!(
            commands <= 3,
            "{commands} commands for 3 sessions of 2 apps"
        );
        let extended = running.sessions.get(&[1; 32]).expect("live").expires_ms();
        assert_eq!(
            extended,
            base + 3_600_000,
            "the answer this node gives is extended with the log"
        );
    }
}
