//! Issue 15: realtime topics with `auth = "session"` on a real `picloud`
//! process. Without a session (or with a bad one) a subscriber gets 401
//! `session_invalid`; with one it streams (token as a Bearer header or as
//! `?token=`, what a browser's EventSource can send); a topic with `role`
//! answers 403 `forbidden` to a user without the role; a logout, and a
//! removed role, end the live stream with `event: revoked` within the
//! recheck bound (polled with a deadline of two seconds).

mod common;

use std::time::Duration;

use common::{Api, TestNode, install_crypto};
use futures::StreamExt;
use serde_json::{Value, json};

const MANIFEST: &str = r#"name = "rs"
[[topic]]
name = "room/*"
auth = "session"
[[topic]]
name = "staff/*"
auth = "session"
role = "staff"
[[route]]
method = "POST"
path = "/op"
script = "op.lua"
"#;

const OP: &str = r#"return function(req)
  local a = req.json
  if a.op == "create" then
    return {json = users.create{email = a.email, password = "correct horse", roles = a.roles}}
  elseif a.op == "login" then
    return {json = users.login(a.email, "correct horse")}
  elseif a.op == "logout" then
    return {json = {found = users.logout(a.token)}}
  elseif a.op == "remove_role" then
    return {json = {removed = users.remove_role(a.id, a.role)}}
  end
  error("unknown op " .. tostring(a.op))
end"#;

async fn op(api: &Api, args: Value) -> Value {
    let (status, body) = api
        .call(
            "POST",
            "/rs/op",
            Some(serde_json::to_vec(&args).expect("json")),
        )
        .await;
    assert_eq!(status, 200, "{args}: {body}");
    body
}

/// A live stream's body, read into a buffer by a task.
struct Stream {
    text: tokio::sync::watch::Receiver<(String, bool)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to `url`: `Ok` with the stream, or the refusal's status and
/// error code.
async fn subscribe(url: &str, bearer: Option<&str>) -> Result<Stream, (u16, String)> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("realtime request");
    let status = response.status().as_u16();
    if status != 200 {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("").to_string();
        return Err((status, code));
    }
    let (tx, text) = tokio::sync::watch::channel((String::new(), false));
    let task = tokio::spawn(async move {
        let mut body = response.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            tx.send_modify(|(text, _)| text.push_str(&String::from_utf8_lossy(&chunk)));
        }
        tx.send_modify(|(_, ended)| *ended = true);
    });
    Ok(Stream { text, task })
}

impl Stream {
    /// Waits (at most `within`) until the stream has ended; its whole text.
    async fn ended_within(&mut self, within: Duration) -> String {
        tokio::time::timeout(within, self.text.wait_for(|(_, ended)| *ended))
            .await
            .expect("the stream ends in time")
            .expect("reader alive")
            .0
            .clone()
    }

    fn ended(&self) -> bool {
        self.text.borrow().1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_auth_topics() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client().with_key(Some(&node.admin_key()));
    let (status, body) = admin
        .deploy("rs", &[("picloud.toml", MANIFEST), ("op.lua", OP)])
        .await;
    assert_eq!(status, 200, "{body}");
    let public = admin.with_key(None);
    op(&public, json!({"op": "create", "email": "ann@example.org"})).await;
    let bob = op(
        &public,
        json!({"op": "create", "email": "bob@example.org", "roles": ["staff"]}),
    )
    .await;
    let ann_token = op(&public, json!({"op": "login", "email": "ann@example.org"})).await["token"]
        .as_str()
        .expect("ann's token")
        .to_string();
    let bob_token = op(&public, json!({"op": "login", "email": "bob@example.org"})).await["token"]
        .as_str()
        .expect("bob's token")
        .to_string();
    let base = node.url();
    let room = format!("{base}/_/realtime/rs/room/1");
    let staff = format!("{base}/_/realtime/rs/staff/1");

    // Refusals: no session, a made-up one, a user without the role.
    for (url, bearer, expected) in [
        (&room, None, (401, "session_invalid")),
        (&room, Some("not-a-session"), (401, "session_invalid")),
        (&staff, Some(ann_token.as_str()), (403, "forbidden")),
    ] {
        match subscribe(url, bearer).await {
            Err((status, code)) => assert_eq!((status, code.as_str()), expected, "{url}"),
            Ok(_) => panic!("{url} with {bearer:?} was let in"),
        }
    }

    // Admitted: a Bearer header, and `?token=` for EventSource.
    let mut ann_room = subscribe(&room, Some(&ann_token))
        .await
        .expect("ann in room");
    let mut bob_staff = subscribe(&format!("{staff}?token={bob_token}"), None)
        .await
        .expect("bob in staff");
    let bob_room = subscribe(&room, Some(&bob_token))
        .await
        .expect("bob in room");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        !ann_room.ended() && !bob_staff.ended() && !bob_room.ended(),
        "live sessions keep their streams past a recheck"
    );

    // A logout ends ann's stream: the recheck finds no session.
    op(&public, json!({"op": "logout", "token": ann_token})).await;
    let text = ann_room.ended_within(Duration::from_secs(2)).await;
    assert!(text.contains("event: revoked"), "{text}");
    assert!(matches!(
        subscribe(&room, Some(&ann_token)).await,
        Err((401, code)) if code == "session_invalid"
    ));

    // Losing the role ends bob's staff stream, not his room stream.
    op(
        &public,
        json!({"op": "remove_role", "id": bob["id"], "role": "staff"}),
    )
    .await;
    let text = bob_staff.ended_within(Duration::from_secs(2)).await;
    assert!(text.contains("event: revoked"), "{text}");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(!bob_room.ended(), "the session itself still lives");
}
