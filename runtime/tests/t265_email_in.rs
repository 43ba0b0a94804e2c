//! Issue 15: inbound mail on a 3-node cluster, through a real SMTP client
//! (`swaks`) and every node's listener. A plain message and a multipart
//! one with an attachment reach the app's `email` trigger, which writes
//! what it got into kv (read back here); an unknown recipient is refused
//! at RCPT with 550 and an oversize message at DATA with 552; 50
//! concurrent senders are all delivered, each message's trigger running
//! exactly once (counted with `kv.incr` keyed by its Message-ID). A
//! message sent after STARTTLS is delivered too.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::cluster::{api, eventually, start_three};
use common::{Api, TestNode, free_port, install_crypto};
use serde_json::Value;

const DOMAIN: &str = "mail.test";
/// Room for a 1.5 MiB attachment (base64 makes it ~2 MiB), small enough
/// that the oversize case stays quick.
const MAIL_BYTES_MAX: usize = 3 * 1024 * 1024;
const CONCURRENT: usize = 50;

const MANIFEST: &str = r#"name = "inbox"
[mail]
aliases = ["support@help.test"]
[[route]]
method = "GET"
path = "/got/:id"
script = "got.lua"
[[trigger]]
kind = "email"
script = "on_mail.lua"
"#;

/// Keys by the Message-ID's letters and digits (kv keys stay plain).
const ON_MAIL: &str = r#"return function(event, ctx)
  assert(event.kind == "email", "kind " .. tostring(event.kind))
  local id = event.message_id:gsub("[^%w]", "_")
  kv.incr("runs/" .. id)
  local attachments = {}
  for i, a in ipairs(event.attachments) do
    attachments[i] = {filename = a.filename, content_type = a.content_type,
      size = a.size, data = a.data and base64.decode(a.data), path = a.path,
      stored_size = a.path and files.stat(a.path).size}
  end
  kv.set("mail/" .. id, {from = event.from, to = event.to, recipient = event.recipient,
    subject = event.subject, text = event.text, attachments = attachments})
end"#;

const GOT: &str = r#"return function(req)
  return {json = {mail = kv.get("mail/" .. req.params.id), runs = kv.get("runs/" .. req.params.id)}}
end"#;

/// Runs swaks against `port` with `args`; bounded by its own timeout.
fn swaks(port: u16, args: &[&str]) -> Output {
    Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--timeout", "30", "--from", "sender@outside.test"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run swaks (apt-get install swaks)")
}

fn transcript(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The kv key the trigger used for `<id@t265>`.
fn key_of(id: &str) -> String {
    format!("_{id}_t265_")
}

/// What the trigger stored for message `id`, once it has (bounded).
async fn got(api: &Api, id: &str) -> Value {
    let path = format!("/inbox/got/{}", key_of(id));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = api.get(&path).await;
        if status == 200 && !body["mail"].is_null() {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the trigger never ran for {id}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_reaches_email_triggers_through_every_node() {
    install_crypto();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    let smtp_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert = dirs[0].path().join("smtp-cert.pem");
    let key_file = dirs[0].path().join("smtp-key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write key");
    for (node, port) in nodes.iter_mut().zip(&smtp_ports) {
        node.extra_env.extend([
            ("PICLOUD_SMTP_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("PICLOUD_MAIL_DOMAIN".into(), DOMAIN.into()),
            ("PICLOUD_MAIL_BYTES_MAX".into(), MAIL_BYTES_MAX.to_string()),
            ("PICLOUD_SMTP_TLS_CERT".into(), cert.display().to_string()),
            (
                "PICLOUD_SMTP_TLS_KEY".into(),
                key_file.display().to_string(),
            ),
        ]);
    }
    let (key, _token) = start_three(&mut nodes).await;
    let first = api(&nodes[0], &key);
    let (status, body) = first
        .deploy(
            "inbox",
            &[
                ("picloud.toml", MANIFEST),
                ("on_mail.lua", ON_MAIL),
                ("got.lua", GOT),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let to = format!("orders@inbox.{DOMAIN}");

    // Plain text, through each node in turn (the app is on every node's
    // state once the deploy has been applied there: retry until it is).
    for (index, port) in smtp_ports.iter().enumerate() {
        let id = format!("plain{index}");
        let message_id = format!("Message-Id: <{id}@t265>");
        let subject = format!("Subject: plain {index}");
        eventually(&format!("node {index} accepts mail for the app"), || {
            let output = swaks(
                *port,
                &[
                    "--to",
                    &to,
                    "--header",
                    &message_id,
                    "--header",
                    &subject,
                    "--body",
                    "hello from swaks",
                ],
            );
            async move { output.status.success() }
        })
        .await;
        let stored = got(&first, &id).await;
        let mail = &stored["mail"];
        assert_eq!(mail["from"], "sender@outside.test", "{stored}");
        assert_eq!(mail["recipient"], to.as_str());
        assert_eq!(mail["subject"], format!("plain {index}"));
        assert_eq!(
            mail["text"].as_str().map(str::trim_end),
            Some("hello from swaks")
        );
        assert_eq!(stored["runs"], 1);
    }

    // Multipart with an attachment, to the alias.
    let attachment = dirs[0].path().join("note.txt");
    std::fs::write(&attachment, "attached bytes\n").expect("write attachment");
    let attach = format!("@{}", attachment.display());
    let output = swaks(
        smtp_ports[1],
        &[
            "--to",
            "support@help.test",
            "--header",
            "Message-Id: <multi@t265>",
            "--header",
            "Subject: with file",
            "--body",
            "see attached",
            "--attach-type",
            "text/plain",
            "--attach",
            &attach,
        ],
    );
    assert!(output.status.success(), "{}", transcript(&output));
    let mail = got(&first, "multi").await["mail"].clone();
    assert_eq!(mail["recipient"], "support@help.test");
    assert_eq!(
        mail["text"].as_str().map(str::trim_end),
        Some("see attached")
    );
    let attachments = mail["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1, "{mail}");
    assert_eq!(attachments[0]["filename"], "note.txt");
    assert_eq!(attachments[0]["content_type"], "text/plain");
    assert_eq!(attachments[0]["data"], "attached bytes\n");

    // An attachment over 1 MiB is stored as a file of the app first and
    // referenced by its path.
    let large = dirs[0].path().join("large.bin");
    std::fs::write(&large, vec![b'z'; 1_500_000]).expect("write large");
    let attach = format!("@{}", large.display());
    let output = swaks(
        smtp_ports[0],
        &[
            "--to",
            &to,
            "--header",
            "Message-Id: <large@t265>",
            "--body",
            "big one",
            "--attach-type",
            "application/octet-stream",
            "--attach",
            &attach,
        ],
    );
    assert!(output.status.success(), "{}", transcript(&output));
    let mail = got(&first, "large").await["mail"].clone();
    let attachment = &mail["attachments"][0];
    assert_eq!(attachment["size"], 1_500_000, "{mail}");
    assert_eq!(attachment["stored_size"], 1_500_000, "{mail}");
    assert!(attachment["data"].is_null(), "not inline: {mail}");
    let path = attachment["path"].as_str().expect("path");
    assert!(
        path.starts_with("mail/") && path.ends_with("-large.bin"),
        "{path}"
    );

    // An alias reaches one app: another app cannot claim it.
    let other = MANIFEST.replace("name = \"inbox\"", "name = \"other\"");
    let (status, body) = first
        .deploy(
            "other",
            &[
                ("picloud.toml", &other),
                ("on_mail.lua", ON_MAIL),
                ("got.lua", GOT),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_deploy")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("already belongs to app \"inbox\"")),
        "{body}"
    );

    // STARTTLS: the same delivery over an encrypted session.
    let output = swaks(
        smtp_ports[2],
        &[
            "--tls",
            "--to",
            &to,
            "--header",
            "Message-Id: <tls@t265>",
            "--body",
            "encrypted",
        ],
    );
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("<~  250"),
        "the rest of the session went over TLS: {text}"
    );
    let mail = got(&first, "tls").await["mail"].clone();
    assert_eq!(mail["text"].as_str().map(str::trim_end), Some("encrypted"));

    // An unknown recipient (no such app) is refused at RCPT.
    let output = swaks(smtp_ports[2], &["--to", &format!("x@nope.{DOMAIN}")]);
    let text = transcript(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("<** 550 5.1.1"), "{text}");

    // Oversize is refused at DATA, with nothing delivered.
    let big = dirs[0].path().join("big.txt");
    // One line longer than the whole bound: read past, never kept.
    std::fs::write(
        &big,
        "x".repeat(MAIL_BYTES_MAX + MAIL_BYTES_MAX / 10) + "\n",
    )
    .expect("write");
    let body = format!("@{}", big.display());
    let output = swaks(
        smtp_ports[0],
        &[
            "--to",
            &to,
            "--header",
            "Message-Id: <big@t265>",
            "--body",
            &body,
        ],
    );
    let text = transcript(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("<** 552 5.3.4"), "{text}");

    // 50 concurrent senders over the three nodes: every one delivered,
    // each trigger run exactly once.
    let senders: Vec<(String, std::process::Child)> = (0..CONCURRENT)
        .map(|n| {
            let id = format!("c{n}");
            let child = Command::new("swaks")
                .args([
                    "--server",
                    "127.0.0.1",
                    "--port",
                    &smtp_ports[n % 3].to_string(),
                ])
                .args([
                    "--timeout",
                    "60",
                    "--from",
                    "sender@outside.test",
                    "--to",
                    &to,
                ])
                .args([
                    "--header",
                    &format!("Message-Id: <{id}@t265>"),
                    "--body",
                    &format!("message {n}"),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn swaks");
            (id, child)
        })
        .collect();
    let mut ids = Vec::new();
    for (id, child) in senders {
        let output = child.wait_with_output().expect("swaks output");
        assert!(output.status.success(), "{id}: {}", transcript(&output));
        ids.push(id);
    }
    for id in &ids {
        got(&first, id).await;
    }
    // Every message's run is done; give a duplicate run (if there were
    // one) the time a retry would take, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        let stored = got(&first, id).await;
        assert_eq!(stored["runs"], 1, "{id}: {stored}");
    }
}
