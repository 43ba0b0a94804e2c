//! Issue 16: backup and restore. A real 3-node cluster holds an app with
//! routes, a secret its script reads, documents and files (one of several
//! blocks, one inline). A bounded background writer puts kv keys through
//! all three nodes and records when each was acknowledged. `picloud backup`
//! runs through a follower during that load; `picloud restore` writes it
//! into a fresh data dir, which starts as a one-node cluster on new ports:
//! every write acknowledged before the backup began is there and no key
//! that was never written, the secret reads back through the script (the
//! node runs with the old cluster's master key), the route serves, the
//! documents and files are there. A second node joins the restored node.
//! A `--no-files` backup restores everything but the files' content; a
//! truncated or damaged backup and a non-empty target dir are refused, and
//! a backup whose stream is cut part-way (no member holds a block any
//! more) fails and leaves no file.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{all_values, api, eventually, leader_index, start_three};
use common::files::{put_file, random_bytes, sha256_hex, sha256_of_download};
use common::{Api, BIN, CliOutput, TestNode, install_crypto, manifest};
use serde_json::{Value, json};

const APP: &str = "shop";
const HELLO: &str = "return function(req)\n  return {json={hello='world'}}\nend";
const SECRET: &str = "return function(req)\n  return {json={value=secrets.get('TOKEN')}}\nend";
const PUT: &str = "return function(req)\n  kv.set('k/' .. req.params.n, tonumber(req.params.n))\n  return {status=201, json={ok=true}}\nend";
const SECRET_VALUE: &str = "sk_live_restored";
/// The background writer's bound: it stops after this many writes.
const WRITES_MAX: u64 = 4_000;
/// A file of several 1 MiB blocks, and one stored inline.
const BIG_FILE_BYTES: usize = 3 * 1024 * 1024 + 123;

/// One write the background writer sent: its key, and when it was
/// acknowledged (None: failed or not answered).
struct Sent {
    n: u64,
    acked_at: Option<Instant>,
}

/// A node prepared in its own folder under `root`.
fn node_in(root: &Path, name: &str) -> TestNode {
    let folder = root.join(name);
    std::fs::create_dir_all(&folder).expect("node folder");
    TestNode::new(&folder)
}

/// Runs the CLI with `args` against `url` as `key` (no saved credentials).
fn cli_at(url: &str, key: &str, args: &[&str], credentials: &Path) -> CliOutput {
    let output = Command::new(BIN)
        .args(args)
        .env("PICLOUD_URL", url)
        .env("PICLOUD_KEY", key)
        .env("PICLOUD_CREDENTIALS", credentials)
        .output()
        .expect("run picloud CLI");
    CliOutput::from(output)
}

/// `picloud restore FILE --data-dir DIR` (offline).
fn restore(file: &Path, dir: &Path) -> CliOutput {
    let output = Command::new(BIN)
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run picloud restore");
    CliOutput::from(output)
}

/// Writes `k/<n>` through the three nodes in turn until `stop` or
/// [`WRITES_MAX`], each write's acknowledgement time recorded.
fn start_writer(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut sent = Vec::new();
        for n in 0..WRITES_MAX {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let url = format!("{}/{APP}/put/{n}", urls[n as usize % urls.len()]);
            let answer = http.post(&url).send().await;
            let ok = matches!(&answer, Ok(response) if response.status().as_u16() == 201);
            if ok {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            sent.push(Sent {
                n,
                acked_at: ok.then(Instant::now),
            });
        }
        sent
    })
}

async fn deploy_shop(api: &Api) {
    let manifest_text = manifest(
        APP,
        &[
            ("GET", "/hello", "hello.lua"),
            ("GET", "/secret", "secret.lua"),
            ("POST", "/put/:n", "put.lua"),
        ],
    );
    let (status, body) = api
        .deploy(
            APP,
            &[
                ("picloud.toml", &manifest_text),
                ("hello.lua", HELLO),
                ("secret.lua", SECRET),
                ("put.lua", PUT),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Inserts three documents; returns `(id, document)` of each.
async fn insert_docs(api: &Api) -> Vec<(String, Value)> {
    let docs = vec![
        json!({"item": "tea", "qty": 1}),
        json!({"item": "cake", "qty": 2}),
        json!({"item": "jam", "qty": 3}),
    ];
    let (status, body) = api
        .post_json(
            &format!("/_/api/v1/apps/{APP}/docs/orders"),
            &json!({ "docs": docs }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_string())
        .collect();
    ids.into_iter().zip(docs).collect()
}

/// What the restored node must serve, checked through `api` (and its URL).
async fn check_restored_app(node: &TestNode, api: &Api, docs: &[(String, Value)]) {
    let hello = reqwest::get(format!("{}/{APP}/hello", node.url()))
        .await
        .expect("GET hello");
    assert_eq!(hello.status().as_u16(), 200);
    let body: Value = hello.json().await.expect("json");
    assert_eq!(body["hello"], "world");

    let secret = reqwest::get(format!("{}/{APP}/secret", node.url()))
        .await
        .expect("GET secret");
    let status = secret.status().as_u16();
    let body: Value = secret.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "the secret through the script: {body}");
    assert_eq!(body["value"], SECRET_VALUE);

    for (id, doc) in docs {
        let (status, body) = api
            .get(&format!("/_/api/v1/apps/{APP}/docs/orders/{id}"))
            .await;
        assert_eq!(status, 200, "document {id}: {body}");
        assert_eq!(body["item"], doc["item"], "document {id}: {body}");
        assert_eq!(body["qty"], doc["qty"], "document {id}: {body}");
    }
}

/// A copy of `file` changed by `change`, at `to`.
fn damaged(file: &Path, to: &Path, change: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(file).expect("read backup");
    change(&mut bytes);
    std::fs::write(to, bytes).expect("write damaged copy");
    to.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_into_a_new_cluster() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<TestNode> = (1..=3)
        .map(|i| node_in(dir.path(), &format!("n{i}")))
        .collect();
    let (key, _) = start_three(&mut nodes).await;
    let first = api(&nodes[0], &key);
    deploy_shop(&first).await;
    let secret = nodes[0].cli_with_key_stdin(
        &key,
        &["secrets", "set", APP, "TOKEN"],
        SECRET_VALUE.as_bytes(),
    );
    assert!(secret.success, "{}", secret.stderr);
    let docs = insert_docs(&first).await;
    let big = random_bytes(BIG_FILE_BYTES, 310);
    let small = b"inline file content".to_vec();
    for (path, body) in [("media/big.bin", big.clone()), ("notes.txt", small.clone())] {
        let (status, answer) = put_file(&first, APP, path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }

    // The writer runs through all three nodes while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = start_writer(
        nodes.iter().map(TestNode::url).collect(),
        stop.clone(),
        acked.clone(),
    );
    eventually("the writer has 100 acknowledged writes", || {
        let acked = acked.clone();
        async move { acked.load(Ordering::Relaxed) >= 100 }
    })
    .await;
    let leader = leader_index(&nodes, &first).await;
    let follower = (leader + 1) % 3;
    let backup_file = dir.path().join("cluster.picbak");
    let backup_started = Instant::now();
    let acked_when_started = acked.load(Ordering::Relaxed);
    let backup = {
        let (url, key, file) = (nodes[follower].url(), key.clone(), backup_file.clone());
        let credentials = dir.path().join("credentials.toml");
        tokio::task::spawn_blocking(move || {
            cli_at(
                &url,
                &key,
                &["backup", "--out", file.to_str().expect("path")],
                &credentials,
            )
        })
        .await
        .expect("backup task")
    };
    let backup_ended = Instant::now();
    // The writer goes on a little after the backup, then stops.
    let acked_at_backup_end = acked.load(Ordering::Relaxed);
    eventually("writes after the backup", || {
        let acked = acked.clone();
        async move { acked.load(Ordering::Relaxed) >= acked_at_backup_end + 20 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let sent = writer.await.expect("writer");
    let out = backup.ok();
    assert!(out.contains("at log index"), "{out}");
    assert!(!dir.path().join("cluster.picbak.partial").exists());
    let during = sent
        .iter()
        .filter(|s| {
            s.acked_at
                .is_some_and(|at| at > backup_started && at < backup_ended)
        })
        .count();
    eprintln!(
        "backup: {out}; {acked_when_started} writes acknowledged before it, {during} during it, {} in all",
        sent.iter().filter(|s| s.acked_at.is_some()).count()
    );

    // A damaged or cut backup, or a target that is not empty, is refused.
    let truncated = damaged(&backup_file, &dir.path().join("cut.picbak"), |bytes| {
        bytes.truncate(bytes.len() / 2)
    });
    let refused = restore(&truncated, &dir.path().join("r-cut"));
    assert!(!refused.success, "a truncated backup restored");
    assert!(
        refused.stderr.contains("not a complete PiCloud backup"),
        "{}",
        refused.stderr
    );
    assert!(
        !dir.path().join("r-cut").exists(),
        "a refused restore wrote"
    );
    let flipped = damaged(&backup_file, &dir.path().join("flip.picbak"), |bytes| {
        let at = bytes.len() / 3;
        bytes[at] ^= 0x40;
    });
    let refused = restore(&flipped, &dir.path().join("r-flip"));
    assert!(!refused.success, "a damaged backup restored");
    assert!(
        refused.stderr.contains("not a complete PiCloud backup"),
        "{}",
        refused.stderr
    );
    let busy_dir = dir.path().join("r-busy");
    std::fs::create_dir_all(&busy_dir).expect("mkdir");
    std::fs::write(busy_dir.join("something"), b"x").expect("write");
    let refused = restore(&backup_file, &busy_dir);
    assert!(!refused.success, "restored into a non-empty dir");
    assert!(
        refused.stderr.contains("is not empty"),
        "{}",
        refused.stderr
    );

    // A dir a restore was interrupted in (its `restoring` marker is still
    // there) is refused by `serve`, not started as a half-restored node.
    let interrupted = dir.path().join("r-interrupted");
    std::fs::create_dir_all(interrupted.join("raft")).expect("mkdir");
    std::fs::write(interrupted.join("restoring"), b"").expect("marker");
    let mut serve = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(&interrupted)
        .args(["--http", "127.0.0.1:0", "--peer", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run picloud serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    while serve.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = serve.kill();
            panic!("serve started on a dir with an unfinished restore");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = CliOutput::from(serve.wait_with_output().expect("output"));
    assert!(!refused.success, "serve started on an interrupted restore");
    assert!(
        refused.stderr.contains("did not finish"),
        "{}",
        refused.stderr
    );

    // Restore into a fresh node on new ports, with the old master key.
    let mut restored = node_in(dir.path(), "restored");
    let out = restore(&backup_file, &restored.data_dir).ok();
    assert!(out.contains("new one-node cluster"), "{out}");
    std::fs::copy(
        nodes[0].data_dir.join("secret.key"),
        restored.data_dir.join("secret.key"),
    )
    .expect("copy the master key");
    restored.start().await;
    let restored_api = api(&restored, &key);
    check_restored_app(&restored, &restored_api, &docs).await;

    let present = all_values(&restored_api, APP, "k/").await;
    let attempted: BTreeSet<u64> = sent.iter().map(|s| s.n).collect();
    let before: BTreeSet<u64> = sent
        .iter()
        .filter(|s| s.acked_at.is_some_and(|at| at < backup_started))
        .map(|s| s.n)
        .collect();
    let missing: Vec<&u64> = before.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "writes acknowledged before the backup are missing: {missing:?}"
    );
    let invented: Vec<&u64> = present.difference(&attempted).collect();
    assert!(invented.is_empty(), "keys never written: {invented:?}");
    assert!(before.len() as u64 >= 100);

    let (status, _, sha, length) = sha256_of_download(
        &restored_api,
        &format!("{}/_/api/v1/apps/{APP}/files/media/big.bin", restored.url()),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!((sha, length), (sha256_hex(&big), big.len() as u64));
    let (status, _, sha, _) = sha256_of_download(
        &restored_api,
        &format!("{}/_/api/v1/apps/{APP}/files/notes.txt", restored.url()),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sha, sha256_hex(&small));

    // A second node joins the restored one-node cluster and serves its state.
    let token = restored.cli_with_key(&key, &["cluster", "token"]).ok();
    let mut joiner = node_in(dir.path(), "joiner");
    joiner.extra_args = vec![
        "--join".into(),
        restored.peer_addr(),
        "--join-token".into(),
        token.trim().to_string(),
    ];
    joiner.start().await;
    let joiner_api = api(&joiner, &key);
    eventually("the joiner reads the restored keys", || {
        let (joiner_api, present) = (joiner_api.clone(), present.clone());
        async move {
            let (status, _) = joiner_api.get("/_/api/v1/apps").await;
            status == 200 && all_values(&joiner_api, APP, "k/").await == present
        }
    })
    .await;

    // Without files: everything but the files' content restores.
    let no_files = dir.path().join("no-files.picbak");
    cli_at(
        &nodes[leader].url(),
        &key,
        &[
            "backup",
            "--out",
            no_files.to_str().expect("path"),
            "--no-files",
        ],
        &dir.path().join("credentials.toml"),
    )
    .ok();
    let mut bare = node_in(dir.path(), "bare");
    restore(&no_files, &bare.data_dir).ok();
    std::fs::copy(
        nodes[0].data_dir.join("secret.key"),
        bare.data_dir.join("secret.key"),
    )
    .expect("copy the master key");
    bare.start().await;
    let bare_api = api(&bare, &key);
    check_restored_app(&bare, &bare_api, &docs).await;
    let acked_all: BTreeSet<u64> = sent
        .iter()
        .filter(|s| s.acked_at.is_some())
        .map(|s| s.n)
        .collect();
    let bare_keys = all_values(&bare_api, APP, "k/").await;
    assert!(
        acked_all.is_subset(&bare_keys),
        "a later backup lost writes"
    );
    let (status, _, _, _) = sha256_of_download(
        &bare_api,
        &format!("{}/_/api/v1/apps/{APP}/files/media/big.bin", bare.url()),
        &[],
    )
    .await;
    assert_ne!(
        status, 200,
        "a file's blocks came back from a --no-files backup"
    );
    assert!(
        common::files::blocks_in(&bare).is_empty(),
        "blocks restored from a --no-files backup"
    );

    // A backup that cannot finish (no member holds a block any more: its
    // stream is cut after the snapshot) fails and leaves no file.
    for node in &nodes {
        for block in common::files::blocks_in(node) {
            let path = node.data_dir.join("blocks").join(&block[..2]).join(&block);
            std::fs::remove_file(path).expect("remove block");
        }
    }
    let cut = dir.path().join("cut-off.picbak");
    let failed = cli_at(
        &nodes[follower].url(),
        &key,
        &["backup", "--out", cut.to_str().expect("path")],
        &dir.path().join("credentials.toml"),
    );
    assert!(!failed.success, "a backup without its blocks succeeded");
    assert!(failed.stderr.contains("backup failed"), "{}", failed.stderr);
    assert!(!cut.exists(), "a failed backup left its file");
    assert!(!dir.path().join("cut-off.picbak.partial").exists());
}
