//! Proof 3 of the cluster issue: a linearizability check under faults.
//!
//! Concurrent clients read, write and compare-and-swap a few keys through all
//! three nodes of a real cluster while a nemesis kills (`kill -9`), pauses
//! (SIGSTOP/SIGCONT) and partitions nodes. Partitions put each node in its own
//! network namespace, joined by veth pairs to a bridge, and cut links with
//! iptables inside the namespaces; the clients stay outside and can still reach
//! every node, so a partitioned node keeps receiving requests. Without root,
//! `ip` or `iptables` the partitions are skipped with a message saying why.
//!
//! The recorded history is checked per key (linearizability is compositional)
//! with stateright's `LinearizabilityTester` against a compare-and-swap
//! register. An operation whose outcome the client cannot know (a timeout, an
//! error after the request was sent) stays "in flight" for ever: the checker
//! may place it anywhere after its start, or nowhere. Every acknowledged
//! append-only write must also be readable through every node afterwards.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{all_values, api, eventually, start_three};
use common::{TestNode, install_crypto, manifest, run};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

/// Registers under test at any one time. Every `GENERATION` the clients move
/// on to fresh keys: the checker's search (no memoisation) grows quickly with
/// a key's history, and short histories let it also *reject* a bad one fast.
const KEYS: usize = 4;
const GENERATION: Duration = Duration::from_secs(2);
/// Concurrent clients.
const CLIENTS: u64 = 6;
/// How long a client waits for one answer before calling it indeterminate.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long each fault lasts, and the quiet time before the next one.
const FAULT_HOLD: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_secs(2);
/// Bound on the checker's search per key.
const CHECK_DEADLINE: Duration = Duration::from_secs(120);

// --- the sequential specification ------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Op {
    Read,
    Write(u64),
    Cas { expected: Option<u64>, new: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Ret {
    Read(Option<u64>),
    Written,
    Cas(bool),
}

/// A register with compare-and-swap; an absent key reads as `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct CasRegister(Option<u64>);

impl SequentialSpec for CasRegister {
    type Op = Op;
    type Ret = Ret;

    fn invoke(&mut self, op: &Op) -> Ret {
        match op {
            Op::Read => Ret::Read(self.0),
            Op::Write(value) => {
                self.0 = Some(*value);
                Ret::Written
            }
            Op::Cas { expected, new } => {
                let swapped = self.0 == *expected;
                if swapped {
                    self.0 = Some(*new);
                }
                Ret::Cas(swapped)
            }
        }
    }
}

// --- the history -------------------------------------------------------------

#[derive(Clone, Debug)]
enum Event {
    Invoke {
        id: u64,
        thread: u64,
        key: usize,
        op: Op,
    },
    Return {
        thread: u64,
        key: usize,
        ret: Ret,
    },
    /// The operation certainly had no effect (a read that failed, or a request
    /// that never reached a node): it is left out of the history.
    Forget {
        id: u64,
    },
}

/// Every invocation and return, in real-time order (one lock orders them).
#[derive(Default)]
struct History {
    events: Mutex<Vec<Event>>,
    next_id: AtomicU64,
}

impl History {
    fn invoke(&self, thread: u64, key: usize, op: Op) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.push(Event::Invoke {
            id,
            thread,
            key,
            op,
        });
        id
    }

    fn push(&self, event: Event) {
        self.events.lock().expect("history lock").push(event);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().expect("history lock").clone()
    }
}

/// What one request told the client.
enum Outcome {
    Ok(Ret),
    /// No effect: the request never reached a node (connection refused), or
    /// the node refused it with `no_leader` before proposing it (a node
    /// without a reachable quorum answers that at once).
    NotSent,
    /// Sent, but the answer was an error or never came: the effect is unknown.
    Unknown,
}

/// The kv key (under `r/`) of register `key`.
fn key_name(key: usize) -> String {
    format!("g{}-{}", key / KEYS, key % KEYS)
}

async fn perform(http: &reqwest::Client, base: &str, key: usize, op: &Op) -> Outcome {
    let key = key_name(key);
    let request = match op {
        Op::Read => http.get(format!("{base}/lin/r/{key}")),
        Op::Write(value) => http.post(format!("{base}/lin/w/{key}/{value}")),
        Op::Cas { expected, new } => {
            let expected = expected.map_or("none".to_string(), |v| v.to_string());
            http.post(format!("{base}/lin/cas/{key}/{expected}/{new}"))
        }
    };
    let response = match request.timeout(OP_TIMEOUT).send().await {
        Ok(response) => response,
        Err(error) if error.is_connect() => return Outcome::NotSent,
        Err(_) => return Outcome::Unknown,
    };
    if response.status() != 200 {
        let refused = response.status() == 503
            && matches!(response.json::<serde_json::Value>().await,
                Ok(body) if body["error"]["code"] == "no_leader");
        return if refused {
            Outcome::NotSent
        } else {
            Outcome::Unknown
        };
    }
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return Outcome::Unknown;
    };
    match op {
        Op::Read => Outcome::Ok(Ret::Read(body["v"].as_u64())),
        Op::Write(_) => Outcome::Ok(Ret::Written),
        Op::Cas { .. } => match body["swapped"].as_bool() {
            Some(swapped) => Outcome::Ok(Ret::Cas(swapped)),
            None => Outcome::Unknown,
        },
    }
}

const READ: &str = "return function(req)\n  return {json={v=kv.get('r/' .. req.params.k)}}\nend";
const WRITE: &str = "return function(req)\n  kv.set('r/' .. req.params.k, tonumber(req.params.v))\n  return {json={ok=true}}\nend";
const CAS: &str = "return function(req)\n  local expected = nil\n  if req.params.old ~= 'none' then expected = tonumber(req.params.old) end\n  return {json={swapped=kv.cas('r/' .. req.params.k, expected, tonumber(req.params.new))}}\nend";
const APPEND: &str = "return function(req)\n  kv.set('log/' .. req.params.n, tonumber(req.params.n))\n  return {json={ok=true}}\nend";

/// One client: random operations on random keys through random nodes until
/// `stop`. Returns the append-only writes that were acknowledged.
async fn client(
    index: u64,
    seed: u64,
    urls: Arc<Vec<String>>,
    history: Arc<History>,
    values: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Vec<u64> {
    let http = reqwest::Client::new();
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // A thread of the history ends with an operation of unknown outcome (it
    // stays in flight); the client goes on as a new thread.
    let mut incarnation = 0;
    let mut last_seen: BTreeMap<usize, Option<u64>> = BTreeMap::new();
    let mut appended = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let base = &urls[rng.random_range(0..urls.len())];
        if rng.random_range(0..10) == 0 {
            let n = values.fetch_add(1, Ordering::Relaxed);
            let sent = http
                .post(format!("{base}/lin/log/{n}"))
                .timeout(OP_TIMEOUT)
                .send()
                .await;
            if matches!(sent, Ok(response) if response.status() == 200) {
                appended.push(n);
            }
            continue;
        }
        let generation = (started.elapsed().as_millis() / GENERATION.as_millis()) as usize;
        let key = generation * KEYS + rng.random_range(0..KEYS);
        let op = match rng.random_range(0..10) {
            0..=3 => Op::Read,
            4..=6 => Op::Write(values.fetch_add(1, Ordering::Relaxed)),
            _ => Op::Cas {
                expected: last_seen.get(&key).copied().flatten(),
                new: values.fetch_add(1, Ordering::Relaxed),
            },
        };
        let thread = index * 1_000_000 + incarnation;
        let id = history.invoke(thread, key, op.clone());
        match perform(&http, base, key, &op).await {
            Outcome::Ok(ret) => {
                match (&op, &ret) {
                    (_, Ret::Read(value)) => {
                        last_seen.insert(key, *value);
                    }
                    (Op::Write(value), _) | (Op::Cas { new: value, .. }, Ret::Cas(true)) => {
                        last_seen.insert(key, Some(*value));
                    }
                    _ => {}
                }
                history.push(Event::Return { thread, key, ret });
            }
            Outcome::NotSent => history.push(Event::Forget { id }),
            Outcome::Unknown if op == Op::Read => history.push(Event::Forget { id }),
            Outcome::Unknown => incarnation += 1,
        }
        // Pacing, not synchronisation: keeps the history a size the checker
        // searches in seconds.
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..30))).await;
    }
    appended
}

// --- the network lab -----------------------------------------------------------

/// Three network namespaces on one bridge; the test (outside) reaches every
/// node, and iptables rules inside the namespaces cut node-to-node links.
struct NetLab {
    bridge: String,
    namespaces: Vec<String>,
    subnet: String,
}

impl NetLab {
    fn create(nodes: usize) -> Result<NetLab, String> {
        if !is_root() {
            return Err("not running as root".into());
        }
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("`{tool}` is not installed"));
            }
        }
        let pid = std::process::id();
        let lab = NetLab {
            bridge: format!("pclin{}", pid % 100_000),
            namespaces: (1..=nodes).map(|i| format!("pclin{pid}n{i}")).collect(),
            subnet: format!("10.213.{}", pid % 250),
        };
        run("ip", &["link", "add", &lab.bridge, "type", "bridge"])?;
        let gateway = format!("{}.254/24", lab.subnet);
        run("ip", &["addr", "add", &gateway, "dev", &lab.bridge])?;
        run("ip", &["link", "set", &lab.bridge, "up"])?;
        // Bridged frames may pass the host's FORWARD chain (br_netfilter):
        // let this bridge's traffic through whatever the host's policy is.
        run(
            "iptables",
            &["-I", "FORWARD", "-i", &lab.bridge, "-j", "ACCEPT"],
        )?;
        for (i, ns) in lab.namespaces.iter().enumerate() {
            let veth = format!("{}v{}", lab.bridge, i + 1);
            run("ip", &["netns", "add", ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &lab.bridge])?;
            run("ip", &["link", "set", &veth, "up"])?;
            let address = format!("{}/24", lab.host(i));
            run("ip", &["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run("ip", &["netns", "exec", ns, "iptables", "-L", "-n"])?;
        }
        Ok(lab)
    }

    fn host(&self, node: usize) -> String {
        format!("{}.{}", self.subnet, node + 1)
    }

    /// Cuts `node` off from every other node (both directions); clients still
    /// reach it.
    fn isolate(&self, node: usize) {
        for other in 0..self.namespaces.len() {
            if other == node {
                continue;
            }
            let other_host = self.host(other);
            for rule in [["INPUT", "-s"], ["OUTPUT", "-d"]] {
                run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &self.namespaces[node],
                        "iptables",
                        "-A",
                        rule[0],
                        rule[1],
                        &other_host,
                        "-j",
                        "DROP",
                    ],
                )
                .expect("iptables rule");
            }
        }
    }

    fn heal(&self) {
        for ns in &self.namespaces {
            run("ip", &["netns", "exec", ns, "iptables", "-F"]).expect("iptables -F");
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        let _ = run(
            "iptables",
            &["-D", "FORWARD", "-i", &self.bridge, "-j", "ACCEPT"],
        );
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

// --- the nemesis ---------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Pause,
    Partition,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Leader,
    Follower,
}

/// The index of the node the cluster reports as leader, asked through any
/// node that answers.
async fn leader_index(nodes: &[TestNode], key: &str) -> Option<usize> {
    let http = reqwest::Client::new();
    for node in nodes {
        let Ok(response) = http
            .get(format!("{}/_/api/v1/cluster/status", node.url()))
            .bearer_auth(key)
            .timeout(Duration::from_secs(1))
            .send()
            .await
        else {
            continue;
        };
        let Ok(status) = response.json::<serde_json::Value>().await else {
            continue;
        };
        let Some(leader) = status["leader"].as_u64() else {
            continue;
        };
        let peer = status["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == leader)?["peer"]
            .as_str()?
            .to_string();
        return nodes.iter().position(|node| node.peer_addr() == peer);
    }
    None
}

async fn nemesis(
    nodes: &mut [TestNode],
    key: &str,
    lab: Option<&NetLab>,
    seed: u64,
) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut timeline = Vec::new();
    let schedule = [
        (Fault::Kill, Target::Leader),
        (Fault::Pause, Target::Leader),
        (Fault::Partition, Target::Leader),
        (Fault::Kill, Target::Follower),
        (Fault::Partition, Target::Follower),
        (Fault::Pause, Target::Follower),
    ];
    for (fault, target) in schedule {
        tokio::time::sleep(QUIET).await;
        if matches!(fault, Fault::Partition) && lab.is_none() {
            continue;
        }
        let leader = leader_index(nodes, key).await;
        let victim = match (target, leader) {
            (Target::Leader, Some(leader)) => leader,
            (Target::Follower, Some(leader)) => (leader + rng.random_range(1..3)) % 3,
            (_, None) => rng.random_range(0..3),
        };
        timeline.push(format!(
            "{:>6.1}s {fault:?} node {} ({target:?}; leader was {:?})",
            started.elapsed().as_secs_f64(),
            victim + 1,
            leader.map(|i| i + 1)
        ));
        match fault {
            Fault::Kill => {
                nodes[victim].kill();
                tokio::time::sleep(FAULT_HOLD).await;
                nodes[victim].extra_args.clear();
                nodes[victim].start().await;
            }
            Fault::Pause => {
                nodes[victim].signal("STOP");
                tokio::time::sleep(FAULT_HOLD).await;
                nodes[victim].signal("CONT");
            }
            Fault::Partition => {
                let lab = lab.expect("partitions need the lab");
                lab.isolate(victim);
                tokio::time::sleep(FAULT_HOLD).await;
                lab.heal();
            }
        }
        timeline.push(format!(
            "{:>6.1}s healed node {}; leader now {:?}",
            started.elapsed().as_secs_f64(),
            victim + 1,
            leader_index(nodes, key).await.map(|i| i + 1)
        ));
    }
    tokio::time::sleep(QUIET).await;
    timeline
}

// --- the check -------------------------------------------------------------------

/// Feeds the events of `key` to a `LinearizabilityTester` and searches for a
/// linearization (on a thread with a deep stack: the search recurses once per
/// operation), bounded by `CHECK_DEADLINE`.
fn check_key(key: usize, events: &[Event]) -> Result<usize, String> {
    let forgotten: BTreeSet<u64> = events
        .iter()
        .filter_map(|event| match event {
            Event::Forget { id } => Some(*id),
            _ => None,
        })
        .collect();
    let mut tester = LinearizabilityTester::new(CasRegister::default());
    let mut ops = 0;
    for event in events {
        match event {
            Event::Invoke {
                id,
                thread,
                key: k,
                op,
            } if *k == key && !forgotten.contains(id) => {
                tester.on_invoke(*thread, op.clone())?;
                ops += 1;
            }
            Event::Return {
                thread,
                key: k,
                ret,
            } if *k == key => {
                tester.on_return(*thread, ret.clone())?;
            }
            _ => {}
        }
    }
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            let _ = sender.send(tester.serialized_history().is_some());
        })
        .expect("checker thread");
    match receiver.recv_timeout(CHECK_DEADLINE) {
        Ok(true) => Ok(ops),
        Ok(false) => Err(format!(
            "key {}: the history is NOT linearizable",
            key_name(key)
        )),
        Err(_) => Err(format!(
            "key {}: the checker found no linearization within {CHECK_DEADLINE:?}",
            key_name(key)
        )),
    }
}

fn dump(events: &[Event], key: usize) -> String {
    events
        .iter()
        .filter(|event| match event {
            Event::Invoke { key: k, .. } | Event::Return { key: k, .. } => *k == key,
            Event::Forget { .. } => false,
        })
        .map(|event| format!("{event:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_kills_pauses_and_partitions_are_linearizable() {
    install_crypto();
    let lab = match NetLab::create(3) {
        Ok(lab) => Some(lab),
        Err(reason) => {
            eprintln!(
                "SKIPPING network partitions (kills and pauses still run): {reason}. \
                 Partitions need root, iproute2 and iptables."
            );
            None
        }
    };
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    if let Some(lab) = &lab {
        for (i, node) in nodes.iter_mut().enumerate() {
            node.host = lab.host(i);
            node.netns = Some(lab.namespaces[i].clone());
        }
    }
    let (key, _token) = start_three(&mut nodes).await;
    let (status, body) = api(&nodes[0], &key)
        .deploy(
            "lin",
            &[
                (
                    "picloud.toml",
                    &manifest(
                        "lin",
                        &[
                            ("GET", "/r/:k", "read.lua"),
                            ("POST", "/w/:k/:v", "write.lua"),
                            ("POST", "/cas/:k/:old/:new", "cas.lua"),
                            ("POST", "/log/:n", "append.lua"),
                        ],
                    ),
                ),
                ("read.lua", READ),
                ("write.lua", WRITE),
                ("cas.lua", CAS),
                ("append.lua", APPEND),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let seed: u64 = std::env::var("PICLOUD_LIN_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("linearizability: seed {seed} (PICLOUD_LIN_SEED to replay the choices)");
    let urls = Arc::new(nodes.iter().map(TestNode::url).collect::<Vec<_>>());
    let history = Arc::new(History::default());
    let values = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            tokio::spawn(client(
                index,
                seed,
                urls.clone(),
                history.clone(),
                values.clone(),
                stop.clone(),
                started,
            ))
        })
        .collect();

    let timeline = nemesis(&mut nodes, &key, lab.as_ref(), seed).await;
    stop.store(true, Ordering::Relaxed);
    let mut appended = Vec::new();
    for client in clients {
        appended.extend(client.await.expect("client"));
    }
    eprintln!("nemesis timeline:\n{}", timeline.join("\n"));

    // Healed: all three are voters again with one leader.
    let first = api(&nodes[0], &key);
    eventually("the healed cluster has a leader and two followers", || {
        let first = first.clone();
        async move {
            let (status, body) = first.get("/_/api/v1/cluster/status").await;
            let roles: Vec<&str> = body["nodes"]
                .as_array()
                .map(|nodes| nodes.iter().filter_map(|n| n["role"].as_str()).collect())
                .unwrap_or_default();
            status == 200
                && roles.iter().filter(|r| **r == "leader").count() == 1
                && roles.iter().filter(|r| **r == "follower").count() == 2
        }
    })
    .await;

    // Final reads of every key through every node join the history.
    let keys: BTreeSet<usize> = history
        .events()
        .iter()
        .filter_map(|event| match event {
            Event::Invoke { key, .. } => Some(*key),
            _ => None,
        })
        .collect();
    let http = reqwest::Client::new();
    for (n, url) in urls.iter().enumerate() {
        let thread = 100_000_000 + n as u64;
        for &key in &keys {
            history.invoke(thread, key, Op::Read);
            match perform(&http, url, key, &Op::Read).await {
                Outcome::Ok(ret) => history.push(Event::Return { thread, key, ret }),
                _ => panic!(
                    "final read of {} through node {} failed",
                    key_name(key),
                    n + 1
                ),
            }
        }
    }

    // Zero lost acknowledged writes: every acknowledged append is readable
    // through every node.
    for node in &nodes {
        let present = all_values(&api(node, &key), "lin", "log/").await;
        let lost: Vec<_> = appended.iter().filter(|n| !present.contains(n)).collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged writes lost (read through {}): {lost:?}",
            lost.len(),
            node.url()
        );
    }

    let events = history.events();
    let mut failures = Vec::new();
    let checked_at = Instant::now();
    let mut longest = 0;
    for &key in &keys {
        match check_key(key, &events) {
            Ok(ops) => longest = longest.max(ops),
            Err(error) => {
                eprintln!("{error}; history of the key:\n{}", dump(&events, key));
                failures.push(error);
            }
        }
    }
    eprintln!(
        "{} keys checked in {:?} (longest history {longest} operations)",
        keys.len(),
        checked_at.elapsed()
    );
    let unknown = events
        .iter()
        .filter(|event| matches!(event, Event::Invoke { .. }))
        .count()
        - events
            .iter()
            .filter(|event| matches!(event, Event::Return { .. } | Event::Forget { .. }))
            .count();
    eprintln!(
        "{} acknowledged appends all present; {unknown} operations of unknown outcome",
        appended.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
}

/// The check can fail: stateright rejects a read that misses a completed
/// write, and accepts a write of unknown outcome taking effect late.
#[test]
fn the_checker_rejects_a_stale_read_and_accepts_late_unknown_writes() {
    let invoke = |id, thread, op| Event::Invoke {
        id,
        thread,
        key: 0,
        op,
    };
    let ret = |thread, ret| Event::Return {
        thread,
        key: 0,
        ret,
    };
    let stale = [
        invoke(0, 1, Op::Write(1)),
        ret(1, Ret::Written),
        invoke(1, 2, Op::Read),
        ret(2, Ret::Read(None)),
    ];
    assert!(check_key(0, &stale).is_err());

    let late = [
        invoke(0, 1, Op::Write(1)),
        ret(1, Ret::Written),
        // Thread 3's write never answered (it stays in flight) ...
        invoke(1, 3, Op::Write(7)),
        invoke(2, 2, Op::Read),
        ret(2, Ret::Read(Some(1))),
        // ... and took effect after that read.
        invoke(
            3,
            2,
            Op::Cas {
                expected: Some(7),
                new: 8,
            },
        ),
        ret(2, Ret::Cas(true)),
        invoke(4, 2, Op::Read),
        ret(2, Ret::Read(Some(8))),
    ];
    assert_eq!(check_key(0, &late), Ok(5));

    // A failed cas must not have written.
    let phantom = [
        invoke(
            0,
            1,
            Op::Cas {
                expected: Some(3),
                new: 4,
            },
        ),
        ret(1, Ret::Cas(false)),
        invoke(1, 2, Op::Read),
        ret(2, Ret::Read(Some(4))),
    ];
    assert!(check_key(0, &phantom).is_err());
}
