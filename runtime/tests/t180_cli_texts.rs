//! Issue 12, the texts a newcomer meets: the CLI fails over to the next node
//! when one cannot be reached and says so in one line; a missing manifest, a
//! TOML mistake, a data dir in use and a URL without a scheme each get one
//! line saying what to check; `dev` works from a config file and as
//! `PICLOUD_DEV_MODE`; lists say when they are empty; node logs written to a
//! file carry no colour codes. Scenario tables in the t20 style.

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, CliOutput, TestNode, free_port, install_crypto};
use serde_json::Value;

/// Runs the CLI with exactly this environment for the client (no URL or
/// credentials inherited from the test's own environment).
fn cli(credentials: &Path, key: &str, env: &[(&str, &str)], args: &[&str]) -> CliOutput {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("PICLOUD_URL")
        .env("PICLOUD_KEY", key)
        .env("PICLOUD_CREDENTIALS", credentials);
    for (name, value) in env {
        command.env(name, value);
    }
    CliOutput::from(command.output().expect("run picloud CLI"))
}

struct Case {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    args: Vec<String>,
    success: bool,
    stdout_has: Vec<String>,
    stderr_has: Vec<String>,
    /// Lines stderr may hold at most: each failure or skipped node is one line.
    stderr_lines_max: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_fails_over_and_explains_itself() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let key = node.admin_key();
    let live = node.url();
    // A loopback port nothing listens on: connections are refused.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let no_scheme = format!("127.0.0.1:{}", node.http_port);
    let credentials = dir.path().join("credentials.toml");
    node.cli(&["apps", "create", "quiet"]).ok();

    let no_manifest = dir.path().join("not-an-app");
    std::fs::create_dir_all(&no_manifest).expect("mkdir");
    std::fs::write(no_manifest.join("main.lua"), "return 1").expect("write");
    let bad_manifest = dir.path().join("bad-app");
    std::fs::create_dir_all(&bad_manifest).expect("mkdir");
    std::fs::write(
        bad_manifest.join("picloud.toml"),
        "name = \"bad\"\nroutes = = 1\n",
    )
    .expect("write");
    let path = |p: &Path| p.display().to_string();

    let both = format!("{dead},{live}");
    let cases = vec![
        Case {
            name: "--url with a dead first node",
            env: vec![],
            args: vec!["--url".into(), both.clone(), "apps".into(), "list".into()],
            success: true,
            stdout_has: vec!["quiet".into()],
            stderr_has: vec![format!("cannot reach {dead}"), format!("trying {live}")],
            stderr_lines_max: 1,
        },
        Case {
            name: "PICLOUD_URL with a dead first node",
            env: vec![("PICLOUD_URL", both.clone())],
            args: vec!["apps".into(), "list".into()],
            success: true,
            stdout_has: vec!["quiet".into()],
            stderr_has: vec![format!("cannot reach {dead}")],
            stderr_lines_max: 1,
        },
        Case {
            name: "a URL without a scheme",
            env: vec![],
            args: vec![
                "--url".into(),
                no_scheme.clone(),
                "apps".into(),
                "list".into(),
            ],
            success: false,
            stdout_has: vec![],
            stderr_has: vec![format!(
                "{no_scheme} has no scheme: write http://{no_scheme}"
            )],
            stderr_lines_max: 1,
        },
        Case {
            name: "a refused connection",
            env: vec![],
            args: vec!["--url".into(), dead.clone(), "apps".into(), "list".into()],
            success: false,
            stdout_has: vec![],
            stderr_has: vec![
                format!("cannot reach {dead}: connection refused"),
                "is `picloud serve` running there".into(),
            ],
            stderr_lines_max: 1,
        },
        Case {
            name: "every node dead",
            env: vec![],
            args: vec![
                "--url".into(),
                format!("{dead},{dead}/"),
                "apps".into(),
                "list".into(),
            ],
            success: false,
            stdout_has: vec![],
            stderr_has: vec!["no node could be reached".into()],
            stderr_lines_max: 2,
        },
        Case {
            name: "deploy of a folder without picloud.toml",
            env: vec![("PICLOUD_URL", live.clone())],
            args: vec!["deploy".into(), path(&no_manifest)],
            success: false,
            stdout_has: vec![],
            stderr_has: vec![format!(
                "{} is not an app: no picloud.toml (create one:",
                path(&no_manifest)
            )],
            stderr_lines_max: 1,
        },
        Case {
            name: "a TOML syntax error in a manifest",
            env: vec![("PICLOUD_URL", live.clone())],
            args: vec!["deploy".into(), path(&bad_manifest)],
            success: false,
            stdout_has: vec![],
            stderr_has: vec![format!(
                "{}:2:10: ",
                path(&bad_manifest.join("picloud.toml"))
            )],
            stderr_lines_max: 1,
        },
        Case {
            name: "a read key for an app that does not exist",
            env: vec![("PICLOUD_URL", live.clone())],
            args: vec![
                "keys".into(),
                "create".into(),
                "--scope".into(),
                "read:nosuchapp".into(),
            ],
            success: false,
            stdout_has: vec![],
            stderr_has: vec!["app_not_found".into()],
            stderr_lines_max: 1,
        },
        Case {
            name: "keys list has a header, creation times and this node's last use",
            env: vec![("PICLOUD_URL", live.clone())],
            args: vec!["keys".into(), "list".into()],
            success: true,
            stdout_has: vec![
                "ID\tSCOPE\tNAME\tCREATED\tLAST USED (this node)\n".into(),
                "\tadmin\t".into(),
                // The admin key was just used (by this very call): its row
                // ends with a creation time, then a last-use time.
                "Z\t20".into(),
                "Z\n".into(),
            ],
            stderr_has: vec![],
            stderr_lines_max: 0,
        },
        Case {
            name: "an empty dead-letter list",
            env: vec![("PICLOUD_URL", live.clone())],
            args: vec!["dead-letters".into(), "list".into(), "quiet".into()],
            success: true,
            stdout_has: vec!["no dead letters\n".into()],
            stderr_has: vec![],
            stderr_lines_max: 0,
        },
        Case {
            name: "an empty secrets list",
            env: vec![("PICLOUD_URL", live.clone())],
            args: vec!["secrets".into(), "list".into(), "quiet".into()],
            success: true,
            stdout_has: vec!["no secrets in quiet\n".into()],
            stderr_has: vec![],
            stderr_lines_max: 0,
        },
    ];
    for case in &cases {
        let env: Vec<(&str, &str)> = case.env.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let out = cli(&credentials, &key, &env, &args);
        let context = format!(
            "{}:\nstdout: {}\nstderr: {}",
            case.name, out.stdout, out.stderr
        );
        assert_eq!(out.success, case.success, "{context}");
        for text in &case.stdout_has {
            assert!(
                out.stdout.contains(text.as_str()),
                "{text:?} missing; {context}"
            );
        }
        for text in &case.stderr_has {
            assert!(
                out.stderr.contains(text.as_str()),
                "{text:?} missing; {context}"
            );
        }
        assert!(
            out.stderr.lines().count() <= case.stderr_lines_max,
            "stderr too long; {context}"
        );
    }

    // `login` saves every URL; later commands fail over with no --url.
    let login = cli(&credentials, &key, &[], &["login", "--url", &both]);
    assert!(login.success, "{}", login.stderr);
    let saved = std::fs::read_to_string(&credentials).expect("credentials saved");
    assert!(saved.contains(&dead) && saved.contains(&live), "{saved}");
    let mut command = Command::new(BIN);
    command
        .args(["apps", "list"])
        .env_remove("PICLOUD_URL")
        .env_remove("PICLOUD_KEY")
        .env("PICLOUD_CREDENTIALS", &credentials);
    let out = CliOutput::from(command.output().expect("run picloud CLI"));
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("quiet"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!("cannot reach {dead}")),
        "{}",
        out.stderr
    );

    // The node's log went to a file: no colour codes in it.
    let log = node.log();
    assert!(log.contains("picloud serving"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_explains_a_busy_data_dir_and_bad_config() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = TestNode::new(&dir.path().join("first"));
    std::fs::create_dir_all(dir.path().join("first")).expect("mkdir");
    first.start().await;
    let pid = first.child.as_ref().expect("running").id();

    // A second serve on the same data dir: one line naming the dir and the pid.
    std::fs::create_dir_all(dir.path().join("second")).expect("mkdir");
    let mut second = TestNode::new(&dir.path().join("second"));
    second.data_dir = first.data_dir.clone();
    assert!(!second.start_expecting_exit(), "a second serve must fail");
    let log = second.log();
    let expected = format!(
        "error: data dir {} is in use by another `picloud serve` (pid {pid})",
        first.data_dir.display()
    );
    assert!(log.contains(&expected), "{log}");
    assert_eq!(log.trim().lines().count(), 1, "one line:\n{log}");
    // The first node is untouched.
    let (status, _) = first.client().get("/_/health").await;
    assert_eq!(status, 200);

    // A TOML syntax error in --config names the file, line and column.
    std::fs::create_dir_all(dir.path().join("third")).expect("mkdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "http_threads = 2\ndata_dir = = \"x\"\n").expect("write");
    let mut third = TestNode::new(&dir.path().join("third"));
    third.extra_args = vec!["--config".into(), config.display().to_string()];
    assert!(!third.start_expecting_exit(), "a bad config must fail");
    let log = third.log();
    assert!(
        log.contains(&format!("error: {}:2:12: ", config.display())),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_from_a_config_file_or_the_old_env_name() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("dev.toml");
    std::fs::write(&config, "dev = true\n").expect("write");
    /// How a case turns dev mode on: its name, serve flags, environment.
    type How = (&'static str, Vec<String>, Vec<(String, String)>);
    let how: [How; 2] = [
        (
            "config",
            vec!["--config".into(), config.display().to_string()],
            vec![],
        ),
        (
            "env",
            vec![],
            vec![("PICLOUD_DEV_MODE".into(), "true".into())],
        ),
    ];
    for (name, args, env) in how {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).expect("mkdir");
        let mut node = TestNode::new(&home);
        node.extra_args = args;
        node.extra_env = env;
        // The harness's shared key would clash with --dev's fixed one.
        node.extra_env
            .push(("PICLOUD_SECRET_KEY".into(), String::new()));
        node.start().await;
        let (status, body) = node.client().get("/_/api/v1/cluster/status").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["secrets"]["source"],
            Value::from("dev"),
            "{name}: {body}"
        );
    }
}
