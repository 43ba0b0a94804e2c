//! The README's "Three nodes on one machine" block, run as written: the test
//! takes the fenced `sh` block under that heading out of README.md and runs
//! it with `sh -e` in a temporary folder, changing only the port numbers (to
//! free ones) and putting the `picloud` under test first on `PATH`. Then it
//! reads the secret set through node 1 through nodes 2 and 3.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, examples_dir, free_port, install_crypto};

const HEADING: &str = "### Three nodes on one machine";

/// How long the whole recipe may take (three starts, a join, a deploy).
const RECIPE_DEADLINE: Duration = Duration::from_secs(120);

/// The fenced `sh` block after [`HEADING`].
fn recipe_block(readme: &str) -> String {
    let section = readme
        .split_once(HEADING)
        .map(|(_, rest)| rest)
        .expect("README has the three-node section");
    let start = section.find("```sh\n").expect("a fenced sh block") + "```sh\n".len();
    let end = section[start..].find("```").expect("the block ends") + start;
    section[start..end].to_string()
}

/// The recipe's shell and every node it started (one process group), killed
/// when the test ends however it ends.
struct Recipe {
    child: Child,
}

impl Drop for Recipe {
    fn drop(&mut self) {
        // The shell leads its own process group; the nodes it put in the
        // background are in it.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_cluster_recipe_works_as_written() {
    install_crypto();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let block = recipe_block(&readme);
    assert!(
        !block.contains("PICLOUD_SECRET_KEY") && !block.contains("secret.key"),
        "the recipe must not ask the user to copy a master key:\n{block}"
    );
    let mut script = block.clone();
    let mut http_ports = Vec::new();
    for (readme_port, is_http) in [
        (8081, true),
        (8082, true),
        (8083, true),
        (7071, false),
        (7072, false),
        (7073, false),
    ] {
        let port = free_port();
        let from = format!("127.0.0.1:{readme_port}");
        assert!(block.contains(&from), "the recipe uses {from}");
        script = script.replace(&from, &format!("127.0.0.1:{port}"));
        if is_http {
            http_ports.push(port);
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(examples_dir(), dir.path().join("examples")).expect("symlink");
    std::fs::write(dir.path().join("recipe.sh"), &script).expect("write recipe");
    let bin_dir = Path::new(BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("sh");
    command
        .args(["-e", "recipe.sh"])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("PICLOUD_CREDENTIALS", dir.path().join("credentials.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in [
        "PICLOUD_URL",
        "PICLOUD_KEY",
        "PICLOUD_SECRET_KEY",
        "PICLOUD_ADMIN_KEY",
        "PICLOUD_DATA_DIR",
        "PICLOUD_CONFIG",
    ] {
        command.env_remove(name);
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut recipe = Recipe {
        child: command.spawn().expect("run sh"),
    };

    let deadline = Instant::now() + RECIPE_DEADLINE;
    let status = loop {
        if let Some(status) = recipe.child.try_wait().expect("try_wait") {
            break status;
        }
        let logs = || {
            ["node1.log", "node2.log", "node3.log"]
                .iter()
                .map(|log| std::fs::read_to_string(dir.path().join(log)).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n---\n")
        };
        assert!(
            Instant::now() < deadline,
            "the recipe did not finish; node logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut out) = recipe.child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = recipe.child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        status.success(),
        "the recipe failed: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("deployed vault version 1"), "{stdout}");

    // `picloud cluster status` at the end lists all three members.
    for port in &http_ports {
        assert!(
            stdout.contains(&format!("127.0.0.1:{port} ")),
            "node on {port} in the status: {stdout}"
        );
    }

    // The secret set through node 1, read by the app on nodes 2 and 3.
    // This is the part that needs joiners to receive the master key at
    // join (issue 12 item 1, helper D's part): without it the script on
    // nodes 2 and 3 fails with `secret_key_mismatch`.
    let http = reqwest::Client::new();
    for port in &http_ports[1..] {
        let response = http
            .get(format!("http://127.0.0.1:{port}/vault/private"))
            .header("authorization", "Bearer s3cret-token")
            .header("x-request-id", "t190")
            .send()
            .await
            .expect("call");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        let log = node_log_of_app(*port, dir.path());
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"ok":true}"#),
            "MASTER KEY AT JOIN: node on port {port}; its vault log:\n{log}\nrecipe output:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.matches(r#"{"ok":true}"#).count(),
        2,
        "the recipe's own two reads: {stdout}"
    );
}

/// The app's log on the node at `port` (logs are node-local), for a failure message.
fn node_log_of_app(port: u16, dir: &Path) -> String {
    let output = Command::new(BIN)
        .args([
            "logs",
            "vault",
            "--limit",
            "20",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .env("PICLOUD_CREDENTIALS", dir.join("credentials.toml"))
        .env_remove("PICLOUD_URL")
        .env_remove("PICLOUD_KEY")
        .output();
    match output {
        Ok(output) => format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => error.to_string(),
    }
}
