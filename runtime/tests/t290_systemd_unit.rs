//! The systemd unit that docs/install.md installs
//! (`examples/systemd/picloud.service`): `systemd-analyze verify` accepts it
//! without a warning, and its `ExecStart` line with the example settings file
//! (`examples/systemd/settings.toml`) starts a node that stops cleanly on the
//! unit's `KillSignal`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, free_port};

/// Where the unit expects the binary, its data dir and its settings file.
const UNIT_BIN: &str = "/usr/local/bin/picloud";
const UNIT_DATA_DIR: &str = "/var/lib/picloud";
const UNIT_CONFIG: &str = "/etc/picloud/picloud.toml";

/// How long the node may take to answer its first health check.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long the node may take to exit after SIGTERM (the unit's
/// `TimeoutStopSec` is 30 s; a clean stop takes well under it).
const STOP_DEADLINE: Duration = Duration::from_secs(30);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/systemd")
        .join(name)
}

fn unit_text() -> String {
    std::fs::read_to_string(example("picloud.service")).expect("examples/systemd/picloud.service")
}

/// The value of the unit's one `KEY=` line.
fn unit_value(unit: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    let values: Vec<&str> = unit
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .collect();
    assert_eq!(values.len(), 1, "one {key}= line in the unit: {values:?}");
    values[0].to_string()
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        // .ci/run installs systemd; a developer machine may lack it.
        eprintln!("skipped: /usr/bin/systemd-analyze is absent (apt-get install systemd)");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let unit = unit_text().replace(UNIT_BIN, BIN);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("picloud.service");
    std::fs::write(&path, unit).expect("write the unit");
    let output = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    // verify exits 0 on an unknown key or a value it cannot parse (it only
    // warns and ignores the line), so any output at all is a failure.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        output.status
    );
}

#[test]
fn the_units_command_line_starts_a_node_that_stops_on_sigterm() {
    let unit = unit_text();
    assert_eq!(unit_value(&unit, "StateDirectory"), "picloud");
    assert_eq!(unit_value(&unit, "KillSignal"), "SIGTERM");
    let exec_start = unit_value(&unit, "ExecStart");
    let words: Vec<&str> = exec_start.split_whitespace().collect();
    assert_eq!(words.first(), Some(&UNIT_BIN), "{exec_start}");
    // The data dir the node uses is the one systemd creates and owns for it.
    assert!(
        words
            .windows(2)
            .any(|pair| pair == ["--data-dir", UNIT_DATA_DIR]),
        "{exec_start}"
    );

    // The example settings with this test's loopback ports.
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, peer_port) = (free_port(), free_port());
    let settings = std::fs::read_to_string(example("settings.toml")).expect("settings.toml");
    let settings: String = settings
        .lines()
        .map(|line| {
            if line.starts_with("http =") {
                format!("http = \"127.0.0.1:{http_port}\"")
            } else if line.starts_with("peer =") {
                format!("peer = \"127.0.0.1:{peer_port}\"")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(settings.contains(&format!(":{peer_port}")), "peer = line");
    let config = dir.path().join("picloud.toml");
    std::fs::write(&config, settings).expect("write the settings");
    let data_dir = dir.path().join("data");
    let args: Vec<String> = words[1..]
        .iter()
        .map(|word| match *word {
            UNIT_DATA_DIR => data_dir.display().to_string(),
            UNIT_CONFIG => config.display().to_string(),
            other => other.to_string(),
        })
        .collect();

    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(BIN)
        .args(&args)
        .env_remove("PICLOUD_ADMIN_KEY")
        .env_remove("PICLOUD_SECRET_KEY")
        .env_remove("PICLOUD_SECRET_KEY_PREVIOUS")
        .stdout(Stdio::from(log.try_clone().expect("clone log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn the unit's ExecStart");
    let node_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let health = format!("http://127.0.0.1:{http_port}/_/health");
    poll(
        &mut child,
        START_DEADLINE,
        "a health answer",
        &node_log,
        |child| {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("picloud exited early with {status}; log:\n{}", node_log());
            }
            // Up once it knows a leader: itself, on a first start.
            let response = http_get(&health).ok()?;
            let (head, body) = response.split_once("\r\n\r\n")?;
            let up = head.split_whitespace().nth(1) == Some("200")
                && serde_json::from_str::<serde_json::Value>(body)
                    .is_ok_and(|health| health["leader"].is_u64());
            up.then_some(())
        },
    );
    assert!(
        data_dir.join("admin.key").exists(),
        "the first start wrote admin.key into the unit's data dir"
    );

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    let exit = poll(
        &mut child,
        STOP_DEADLINE,
        "an exit after SIGTERM",
        &node_log,
        |child| child.try_wait().expect("try_wait"),
    );
    // Restart=on-failure restarts a non-zero exit: a clean stop must be 0.
    assert!(
        exit.success(),
        "exit after SIGTERM: {exit}; log:\n{}",
        node_log()
    );
}

/// Calls `probe` until it answers, every 20 ms; past `deadline` kills the
/// node and fails with its log.
fn poll<T>(
    child: &mut Child,
    deadline: Duration,
    what: &str,
    node_log: &dyn Fn() -> String,
    mut probe: impl FnMut(&mut Child) -> Option<T>,
) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(answer) = probe(child) {
            return answer;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no {what} within {deadline:?}; log:\n{}", node_log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.0 GET on loopback, its whole response as text.
fn http_get(url: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
