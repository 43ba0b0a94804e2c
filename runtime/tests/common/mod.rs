//! Test harness: real `picloud` processes on their own ports, and the CLI.
#![allow(dead_code)]

pub mod cluster;
pub mod data_dir;
pub mod files;
pub mod tmpfs;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_picloud");

/// How long a node may take to answer its first health check.
const START_DEADLINE: Duration = Duration::from_secs(30);

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A port free for TCP and UDP on loopback, below Linux's ephemeral range
/// (32768-60999): a port the OS picked from that range could be handed out
/// again for an outgoing connection or a QUIC client socket before the node
/// binds it. Each test process walks its own stretch of ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + offset) % SPAN).expect("below 32768");
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range")
}

/// A `picloud serve` process with its own data dir and ports.
pub struct TestNode {
    pub data_dir: PathBuf,
    pub http_port: u16,
    pub peer_port: u16,
    pub child: Option<Child>,
    pub extra_env: Vec<(String, String)>,
    pub extra_args: Vec<String>,
    /// The address both listeners bind (loopback unless the node runs in its
    /// own network namespace).
    pub host: String,
    /// A network namespace to run the process in (`ip netns exec`).
    pub netns: Option<String>,
    /// The process's address-space limit (`ulimit -v`, through `prlimit`), so
    /// a test sees an allocation failure where a small machine would.
    pub address_space_bytes_max: Option<u64>,
    log_path: PathBuf,
}

impl TestNode {
    /// Prepares (does not start) a node in `dir`.
    pub fn new(dir: &Path) -> TestNode {
        TestNode {
            data_dir: dir.join("data"),
            http_port: free_port(),
            peer_port: free_port(),
            child: None,
            extra_env: Vec::new(),
            extra_args: Vec::new(),
            host: "127.0.0.1".to_string(),
            netns: None,
            address_space_bytes_max: None,
            log_path: dir.join("node.log"),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.http_port)
    }

    /// The peer (QUIC) address other nodes reach this one at.
    pub fn peer_addr(&self) -> String {
        format!("{}:{}", self.host, self.peer_port)
    }

    /// `picloud serve` for this node, its output appended to `log`.
    fn serve_command(&self, log: std::fs::File) -> Command {
        // `ip netns exec` and `prlimit` exec the binary, so the child's pid is picloud's.
        let mut command = match (&self.netns, self.address_space_bytes_max) {
            (Some(netns), _) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, BIN]);
                command
            }
            (None, Some(bytes)) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--as={bytes}")).arg("--").arg(BIN);
                command
            }
            (None, None) => Command::new(BIN),
        };
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http")
            .arg(format!("{}:{}", self.host, self.http_port))
            .arg("--peer")
            .arg(self.peer_addr())
            .args(&self.extra_args)
            .env_remove("PICLOUD_ADMIN_KEY")
            // A key in the developer's environment would hide the join's.
            .env_remove("PICLOUD_SECRET_KEY")
            .env_remove("PICLOUD_SECRET_KEY_PREVIOUS")
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log));
        command
    }

    /// Starts the process and waits until `/_/health` answers.
    pub async fn start(&mut self) {
        self.spawn();
        self.wait_healthy().await;
    }

    /// Starts the process without waiting for it to become healthy.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("node log file");
        let mut command = self.serve_command(log);
        // No master key unless a test sets one: a first node generates its
        // key file and joiners receive the cluster's key at join, as the
        // README's cluster recipe does.
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        self.child = Some(command.spawn().expect("spawn picloud serve"));
    }

    /// Starts the process and waits (bounded) for it to exit on its own, for
    /// starts that must fail. Returns whether it exited successfully.
    pub fn start_expecting_exit(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("node log file");
        let mut child = self
            .serve_command(log)
            .spawn()
            .expect("spawn picloud serve");
        match wait_exit(&mut child, Duration::from_secs(60)) {
            Some(success) => success,
            None => panic!("picloud did not exit; log:\n{}", self.log()),
        }
    }

    pub async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("picloud exited early with {status}; log:\n{}", self.log());
            }
            let health = client
                .get(format!("{}/_/health", self.url()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(response) = health
                && response.status().is_success()
            {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                // Ready once it knows a leader: itself on a first start, the
                // cluster's leader once a joined node has been added.
                if body["leader"].is_u64() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node did not become healthy in {START_DEADLINE:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.key"))
            .expect("admin.key")
            .trim()
            .to_string()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, then wait for the exit; returns whether it exited with success.
    pub fn terminate(&mut self) -> bool {
        if self.child.is_none() {
            return false;
        }
        self.signal("TERM");
        let mut child = self.child.take().expect("a running child");
        wait_exit(&mut child, Duration::from_secs(30)).unwrap_or(false)
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, ...) to the running process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running node");
        // The shell's builtin `kill`, so no procps package is needed.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{signal} {}", child.id()))
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Runs the CLI against this node with its admin key.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_with_key(&self.admin_key(), args)
    }

    pub fn cli_with_key(&self, key: &str, args: &[&str]) -> CliOutput {
        let output = Command::new(BIN)
            .args(args)
            .env("PICLOUD_URL", self.url())
            .env("PICLOUD_KEY", key)
            .env(
                "PICLOUD_CREDENTIALS",
                self.data_dir.with_extension("credentials.toml"),
            )
            .output()
            .expect("run picloud CLI");
        CliOutput::from(output)
    }

    /// Runs the CLI against this node as `key` with `stdin` piped in (a
    /// secret value, a password).
    pub fn cli_with_key_stdin(&self, key: &str, args: &[&str], stdin: &[u8]) -> CliOutput {
        let credentials = self.data_dir.with_extension("credentials.toml");
        self.cli_stdin(Some(key), &credentials, args, stdin)
    }

    /// Runs the CLI against this node with `stdin` piped in, as `key` or,
    /// without one, as whatever `credentials` holds (a saved login).
    pub fn cli_stdin(
        &self,
        key: Option<&str>,
        credentials: &Path,
        args: &[&str],
        stdin: &[u8],
    ) -> CliOutput {
        use std::io::Write as _;
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("PICLOUD_URL", self.url())
            .env("PICLOUD_CREDENTIALS", credentials);
        match key {
            Some(key) => command.env("PICLOUD_KEY", key),
            None => command.env_remove("PICLOUD_KEY"),
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run picloud CLI");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        CliOutput::from(child.wait_with_output().expect("CLI output"))
    }

    pub fn client(&self) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: self.url(),
            key: Some(self.admin_key()),
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (bounded) for `child` to exit: `Some(success)`, or `None` after
/// killing it when it did not exit in time.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CliOutput {
    fn from(output: Output) -> Self {
        CliOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl CliOutput {
    pub fn ok(self) -> String {
        assert!(self.success, "CLI failed: {}\n{}", self.stderr, self.stdout);
        self.stdout
    }
}

/// A tiny HTTP helper returning (status, JSON body).
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: Option<String>,
}

impl Api {
    pub fn with_key(&self, key: Option<&str>) -> Api {
        Api {
            key: key.map(str::to_string),
            ..self.clone()
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(serde_json::to_vec(body).expect("json")))
            .await
    }

    /// Deploys a folder of files given inline.
    pub async fn deploy(&self, app: &str, files: &[(&str, &str)]) -> (u16, Value) {
        let files: serde_json::Map<String, Value> = files
            .iter()
            .map(|(path, text)| (path.to_string(), Value::String(text.to_string())))
            .collect();
        self.post_json(
            &format!("/_/api/v1/apps/{app}/deploys"),
            &serde_json::json!({ "files": files }),
        )
        .await
    }
}

/// The repository's `examples/` folder.
/// Deploys `app` with one `GET /<name>` route per `(name, script)`, the
/// script stored as `<name>.lua`; panics unless the deploy succeeds.
pub async fn deploy_routes(api: &Api, app: &str, routes: &[(String, String)]) {
    let paths: Vec<(String, String)> = routes
        .iter()
        .map(|(name, _)| (format!("/{name}"), format!("{name}.lua")))
        .collect();
    let route_refs: Vec<(&str, &str, &str)> = paths
        .iter()
        .map(|(path, script)| ("GET", path.as_str(), script.as_str()))
        .collect();
    let manifest_text = manifest(app, &route_refs);
    let mut files: Vec<(&str, &str)> = vec![("picloud.toml", &manifest_text)];
    files.extend(
        paths
            .iter()
            .zip(routes)
            .map(|((_, script), (_, source))| (script.as_str(), source.as_str())),
    );
    let (status, body) = api.deploy(app, &files).await;
    assert_eq!(status, 200, "deploying {app}: {body}");
}

pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A one-route manifest for tests.
pub fn manifest(app: &str, routes: &[(&str, &str, &str)]) -> String {
    let mut text = format!("name = \"{app}\"\n");
    for (method, path, script) in routes {
        text.push_str(&format!(
            "[[route]]\nmethod = \"{method}\"\npath = \"{path}\"\nscript = \"{script}\"\n"
        ));
    }
    text
}

/// Runs a system tool (`ip`, `iptables`, ...); its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
