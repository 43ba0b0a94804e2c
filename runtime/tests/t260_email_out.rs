//! Issue 15, email out: `email.send` from a deployed app reaches a real SMTP
//! relay (aiosmtpd on loopback, `tests/support/smtp_relay.py`) with its
//! content and attachment intact; a relay that answers 451 first gets the
//! message again on retry with the same Message-ID; a 550 dead-letters it at
//! once with the reply visible through the dead-letters CLI; without a relay
//! the mail is captured and shown by `picloud mail list|show`. On three
//! nodes, a leader killed (-9) after its relay received the message but
//! before it answered leaves the send to the next leader: the mail arrives
//! (at least once), every copy with the same Message-ID.
//!
//! The relay needs Python with `aiosmtpd`: `PICLOUD_TEST_PYTHON`, else the
//! venv `.ci/test` makes at `target/smtp-venv`. Missing, the test fails (it
//! never skips): `.ci/test` installs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use base64::Engine;
use common::cluster::{api, eventually, leader_index, start_three};
use common::{Api, TestNode, install_crypto};
use serde_json::{Value, json};

const MANIFEST: &str = r#"name = "mailer"
[[route]]
method = "POST"
path = "/send"
script = "send.lua"
"#;

/// Sends the JSON body as the message; `attachment` is sent as bytes.
const SEND: &str = r#"return function(req)
  local m = req.json
  if m.attachment then
    m.attachments = {{filename = "data.bin", content_type = "application/octet-stream",
      data = base64.decode(m.attachment)}}
    m.attachment = nil
  end
  return {json = {id = email.send(m)}}
end"#;

/// Binary bytes that would break if anything treated them as text.
fn attachment_bytes() -> Vec<u8> {
    (0u16..600).map(|i| (i * 7 % 256) as u8).collect()
}

fn python() -> PathBuf {
    if let Ok(python) = std::env::var("PICLOUD_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/smtp-venv/bin/python");
    let works = Command::new(&venv)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        works,
        "python with aiosmtpd is missing: run .ci/test, or \
         `python3 -m venv target/smtp-venv && target/smtp-venv/bin/pip install aiosmtpd`"
    );
    venv
}

/// The relay process, killed when dropped.
struct Relay {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    async fn start(dir: &Path, mode: &str) -> Relay {
        let dir = dir.join(format!("relay-{mode}"));
        std::fs::create_dir_all(&dir).expect("relay dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_relay.py");
        let child = Command::new(python())
            .arg(script)
            .arg(&dir)
            .arg(mode)
            .spawn()
            .expect("start the relay");
        let port_file = dir.join("port");
        eventually("the relay listens", || {
            let exists = port_file.exists();
            async move { exists }
        })
        .await;
        let port = std::fs::read_to_string(&port_file)
            .expect("port")
            .trim()
            .parse()
            .expect("port number");
        Relay { child, dir, port }
    }

    /// The .eml files whose names start with `kind`, by arrival.
    fn messages(&self, kind: &str) -> Vec<String> {
        let mut names: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.dir)
            .expect("read relay dir")
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let name = path.file_name()?.to_str()?.to_string();
                let number = name
                    .strip_prefix(kind)?
                    .strip_prefix('-')?
                    .strip_suffix(".eml")?;
                Some((number.parse().ok()?, path))
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|(_, path)| std::fs::read_to_string(path).expect("read eml"))
            .collect()
    }
}

fn header<'a>(eml: &'a str, name: &str) -> Option<&'a str> {
    let head = eml.split("\r\n\r\n").next().unwrap_or(eml);
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The decoded body of the base64 part whose headers name `filename`.
fn attachment_of(eml: &str, filename: &str) -> Vec<u8> {
    let at = eml
        .find(&format!("filename=\"{filename}\""))
        .expect("attachment part");
    let part = &eml[at..];
    let body_start = part.find("\r\n\r\n").expect("part body") + 4;
    let body = &part[body_start..];
    let end = body.find("\r\n--").expect("part end");
    let encoded: String = body[..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64 attachment")
}

async fn start_node(dir: &Path, extra: &[&str]) -> (TestNode, Api) {
    let mut node = TestNode::new(dir);
    node.extra_args = extra.iter().map(|arg| arg.to_string()).collect();
    node.start().await;
    let admin = node.client();
    let (status, body) = admin
        .deploy("mailer", &[("picloud.toml", MANIFEST), ("send.lua", SEND)])
        .await;
    assert_eq!(status, 200, "{body}");
    (node, admin)
}

fn relay_args(relay: &Relay) -> Vec<String> {
    vec![
        "--smtp-relay".into(),
        format!("127.0.0.1:{}", relay.port),
        "--smtp-tls".into(),
        "none".into(),
        "--mail-from".into(),
        "Mailer <noreply@example.org>".into(),
        "--email-backoff-ms".into(),
        "200".into(),
        "--email-attempts-max".into(),
        "3".into(),
    ]
}

async fn send(api: &Api, message: Value) -> (u16, Value) {
    api.post_json("/mailer/send", &message).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_the_relay_intact_and_a_451_is_retried_with_the_same_message_id() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = Relay::start(dir.path(), "451-once").await;
    let args = relay_args(&relay);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (node, admin) = start_node(dir.path(), &args).await;
    let api = admin.with_key(None);

    // Checked before anything is queued.
    let (status, body) = send(&api, json!({"to": "not an address", "text": "x"})).await;
    assert_eq!(body["error"]["code"], "email_invalid", "{status} {body}");
    let (_, body) = send(
        &api,
        json!({"to": "a@x.org", "subject": "a\r\nBcc: all@x.org", "text": "x"}),
    )
    .await;
    assert_eq!(body["error"]["code"], "email_invalid", "{body}");

    let bytes = attachment_bytes();
    let (status, body) = send(
        &api,
        json!({
            "to": ["Ann <ann@example.com>", "bob@example.com"],
            "bcc": "hidden@example.com",
            "subject": "Your report",
            "text": "plain body",
            "html": "<p>html body</p>",
            "attachment": base64::engine::general_purpose::STANDARD.encode(&bytes),
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().expect("delivery id").to_string();
    assert!(id.starts_with("mailer/"), "{id}");

    eventually("the retry is accepted", || {
        let count = relay.messages("accepted").len();
        async move { count == 1 }
    })
    .await;
    let refused = relay.messages("refused");
    let accepted = relay.messages("accepted");
    assert_eq!(refused.len(), 1, "the first attempt got 451");
    let eml = &accepted[0];
    let message_id = header(eml, "Message-ID").expect("Message-ID");
    assert_eq!(
        header(&refused[0], "Message-ID"),
        Some(message_id),
        "a retry carries the same Message-ID"
    );
    assert!(message_id.ends_with("@example.org>"), "{message_id}");
    assert_eq!(header(eml, "Subject"), Some("Your report"));
    assert_eq!(header(eml, "From"), Some("Mailer <noreply@example.org>"));
    assert!(header(eml, "To").expect("To").contains("ann@example.com"));
    assert!(!eml.contains("hidden@example.com"), "bcc is never a header");
    assert!(eml.contains("multipart/mixed") && eml.contains("multipart/alternative"));
    assert!(eml.contains("plain body") && eml.contains("<p>html body</p>"));
    assert_eq!(
        attachment_of(eml, "data.bin"),
        bytes,
        "the attachment arrives intact"
    );

    // Delivered: the outbox is empty and nothing was dead-lettered.
    let (_, letters) = admin.get("/_/api/v1/apps/mailer/dead-letters").await;
    assert_eq!(letters["items"], json!([]), "{letters}");
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_a_550_is_dead_lettered_at_once_with_the_reply() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = Relay::start(dir.path(), "550").await;
    let args = relay_args(&relay);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (node, admin) = start_node(dir.path(), &args).await;
    let (status, body) = send(
        &admin.with_key(None),
        json!({"to": "nobody@example.com", "subject": "s", "text": "t"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually("the mail is dead-lettered", || {
        let admin = admin.clone();
        async move {
            let (_, body) = admin.get("/_/api/v1/apps/mailer/dead-letters").await;
            body["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        }
    })
    .await;
    let (_, letters) = admin.get("/_/api/v1/apps/mailer/dead-letters").await;
    let letter = &letters["items"][0];
    assert_eq!(letter["code"], "bounced", "{letter}");
    assert!(
        letter["error"].as_str().unwrap_or("").contains("550"),
        "{letter}"
    );
    assert_eq!(letter["event"]["kind"], "email", "{letter}");
    assert_eq!(relay.messages("refused").len(), 1, "no retry after a 5xx");
    let listed = node.cli(&["dead-letters", "list", "mailer"]).ok();
    assert!(listed.contains("550"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_without_a_relay_is_captured_and_shown_by_the_cli() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, admin) = start_node(dir.path(), &["--mail-captured-max", "2"]).await;
    assert!(
        node.log().contains("CAPTURED, NOT SENT"),
        "the boot line says so"
    );
    let api = admin.with_key(None);
    for subject in ["first", "second", "third"] {
        let (status, body) = send(
            &api,
            json!({"to": "ann@example.com", "subject": subject, "text": "body of " ,
                   "attachment": base64::engine::general_purpose::STANDARD.encode(attachment_bytes())}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let listed = node.cli(&["mail", "list", "mailer"]).ok();
    assert!(
        listed.contains("third") && listed.contains("second"),
        "{listed}"
    );
    assert!(
        !listed.contains("first"),
        "the oldest beyond mail_captured_max went: {listed}"
    );
    let shown = node.cli(&["mail", "show", "mailer", "3"]).ok();
    assert!(shown.contains("Subject: third"), "{shown}");
    assert!(shown.contains("To: ann@example.com"), "{shown}");
    assert!(
        shown.contains("data.bin (application/octet-stream, 600 bytes)"),
        "{shown}"
    );
    let (status, body) = admin.get("/_/api/v1/apps/mailer/mail/1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("email_not_found"))
    );
    let missing = node.cli(&["mail", "show", "mailer", "1"]);
    assert!(
        !missing.success && missing.stderr.contains("email_not_found"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_survives_a_leader_killed_between_commit_and_the_relays_answer() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let relay = Relay::start(dirs[0].path(), "hang-first").await;
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    for node in &mut nodes {
        // Env, not flags: `start_three` sets the joiners' flags.
        node.extra_env = vec![
            (
                "PICLOUD_SMTP_RELAY".into(),
                format!("127.0.0.1:{}", relay.port),
            ),
            ("PICLOUD_SMTP_TLS".into(), "none".into()),
            ("PICLOUD_MAIL_FROM".into(), "noreply@example.org".into()),
            ("PICLOUD_EMAIL_BACKOFF_MS".into(), "200".into()),
            ("PICLOUD_SMTP_TIMEOUT_MS".into(), "600000".into()),
        ];
    }
    let (key, _token) = start_three(&mut nodes).await;
    let all: Vec<Api> = nodes.iter().map(|node| api(node, &key)).collect();
    let victim = leader_index(&nodes, &all[0]).await;
    let survivor = (victim + 1) % 3;
    let (status, body) = all[survivor]
        .deploy("mailer", &[("picloud.toml", MANIFEST), ("send.lua", SEND)])
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        &all[survivor].with_key(None),
        json!({"to": "ann@example.com", "subject": "once or twice", "text": "t"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The leader's relay has the message but has not answered: kill it now.
    eventually("the relay received the first copy", || {
        let count = relay.messages("received").len();
        async move { count == 1 }
    })
    .await;
    nodes[victim].kill();
    eventually("the next leader sends it again", || {
        let count = relay.messages("accepted").len();
        async move { count >= 1 }
    })
    .await;
    let first = relay.messages("received");
    let again = relay.messages("accepted");
    let id = header(&first[0], "Message-ID")
        .expect("Message-ID")
        .to_string();
    for copy in &again {
        assert_eq!(
            header(copy, "Message-ID"),
            Some(id.as_str()),
            "every copy has one Message-ID"
        );
        assert_eq!(header(copy, "Subject"), Some("once or twice"));
    }
}
