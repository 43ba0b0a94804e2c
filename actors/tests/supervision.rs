//! A crashed `AppActor` is restarted by the supervisor (with backoff) and the
//! next request is served; a crash in one app never touches another.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use picloud_actors::app::{AppName, Bundle};
use picloud_actors::app_actor::AppMsg;
use picloud_actors::{ActorLimits, ActorRestarts, AppRequest, Apps, LogBook, NodeHost};
use picloud_cluster::{ClusterConfig, Node, NodeInfo};
use picloud_storage::{Command, CommandResult, DeployParts, StorageOptions, VersionDeploy};

async fn node_with_apps(
    dir: &std::path::Path,
    apps: &[&str],
    restarts: &Arc<ActorRestarts>,
) -> (Node, Apps) {
    let (node, duties) = Node::start(
        dir,
        NodeInfo {
            http: "127.0.0.1:0".into(),
            peer: "127.0.0.1:0".into(),
        },
        ClusterConfig::default(),
        &StorageOptions::default(),
    )
    .await
    .expect("node starts");
    for duty in duties {
        duty.detach();
    }
    for app in apps {
        let mut files = BTreeMap::new();
        files.insert(
            "picloud.toml".to_string(),
            format!("name = \"{app}\"\n[[route]]\nmethod = \"GET\"\npath = \"/hi\"\nscript = \"hi.lua\"\n"),
        );
        files.insert(
            "hi.lua".to_string(),
            format!("return function(req) return 'hi from {app}' end"),
        );
        let result = node
            .write(Command::Deploy(VersionDeploy {
                app: app.to_string(),
                bundle: Bundle {
                    files,
                    ..Bundle::default()
                }
                .encode(),
                now_ms: 1,
                versions_keep: 5,
                parts: DeployParts::Bundle,
            }))
            .await
            .expect("deploy");
        assert!(
            matches!(result, CommandResult::Deployed { version: 1 }),
            "{result:?}"
        );
    }
    let limits = Arc::new(ActorLimits {
        restart_backoff_initial_ms: 20,
        ..ActorLimits::default()
    });
    let logs = LogBook::new(limits.logs);
    let host = Arc::new(NodeHost::new(node.clone(), logs, limits.clone()));
    let apps = Apps::start(
        node.reader().clone(),
        host,
        limits,
        tokio::runtime::Handle::current(),
        Arc::new(picloud_actors::CpuShares::new(4)),
        restarts.clone(),
    )
    .await
    .expect("supervisor starts");
    (node, apps)
}

/// Crashes `app`'s actor through the test-only fault switch: the next
/// message it handles panics.
fn crash(actor: &ractor::ActorRef<AppMsg>, app: &str) {
    assert!(picloud_cluster::arm_fault(&format!("app/{app}")));
    actor.cast(AppMsg::Trim).expect("send");
}

/// Polls until the supervisor has replaced the crashed actor `old`.
async fn wait_for_restart(apps: &Apps, app: &str, old: ractor::ActorId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let current = apps.actor(&name(app)).await.expect("actor");
        if current.get_id() != old && apps.running().contains(&app.to_string()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{app} was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn name(text: &str) -> AppName {
    AppName::parse(text).expect("a valid app name")
}

fn get(path: &str) -> AppRequest {
    AppRequest {
        method: "GET".to_string(),
        path: path.to_string(),
        ..AppRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_app_actor_is_restarted_and_serves_the_next_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let restarts = Arc::new(ActorRestarts::default());
    let (node, apps) = node_with_apps(dir.path(), &["one", "two"], &restarts).await;

    let body =
        |response: picloud_lua_sdk::Response| String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(
        body(apps.invoke(&name("one"), get("/hi")).await.expect("serves")),
        "hi from one"
    );
    assert_eq!(
        body(apps.invoke(&name("two"), get("/hi")).await.expect("serves")),
        "hi from two"
    );

    for round in 0..3 {
        let before = apps.actor(&name("one")).await.expect("running");
        crash(&before, "one");
        // The other app is untouched by the crash.
        assert_eq!(
            body(apps.invoke(&name("two"), get("/hi")).await.expect("serves")),
            "hi from two"
        );
        // The next request to the crashed app is served (by a restarted actor).
        let response = apps
            .invoke(&name("one"), get("/hi"))
            .await
            .expect("served after crash");
        assert_eq!(body(response), "hi from one", "round {round}");
        wait_for_restart(&apps, "one", before.get_id()).await;
    }
    // The backoff restart also happens with no request asking for it.
    let before = apps.actor(&name("one")).await.expect("running");
    crash(&before, "one");
    wait_for_restart(&apps, "one", before.get_id()).await;
    // Every crash was counted for /_/metrics.
    assert_eq!(restarts.count("app"), 4);
    apps.stop();
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_apps_stop_and_answer_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let restarts = Arc::new(ActorRestarts::default());
    let (node, apps) = node_with_apps(dir.path(), &["gone"], &restarts).await;
    assert!(apps.invoke(&name("gone"), get("/hi")).await.is_ok());
    let result = node
        .write(Command::AppDelete {
            app: "gone".to_string(),
            revoke_keys: false,
        })
        .await
        .expect("delete");
    assert_eq!(result, CommandResult::Done);
    assert_eq!(apps.reload(&name("gone")).await.expect("reload"), None);
    let error = apps
        .invoke(&name("gone"), get("/hi"))
        .await
        .expect_err("deleted");
    assert!(
        matches!(error, picloud_actors::AppError::AppNotFound { .. }),
        "{error:?}"
    );
    apps.stop();
    node.shutdown().await.expect("shutdown");
}

/// A busy app keeps its VMs (no VM per request); once quiet, the trim gives
/// memory back down to `vm_idle_max`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_keeps_vms_while_busy_and_trims_when_quiet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, duties) = Node::start(
        dir.path(),
        NodeInfo {
            http: "127.0.0.1:0".into(),
            peer: "127.0.0.1:0".into(),
        },
        ClusterConfig::default(),
        &StorageOptions::default(),
    )
    .await
    .expect("node starts");
    for duty in duties {
        duty.detach();
    }
    let limits = Arc::new(ActorLimits {
        vm_idle_max: 1,
        vm_idle_ttl_ms: 1_000,
        ..ActorLimits::default()
    });
    let host = Arc::new(NodeHost::new(
        node.clone(),
        LogBook::new(limits.logs),
        limits.clone(),
    ));
    let mut files = BTreeMap::new();
    files.insert(
        "picloud.toml".to_string(),
        "name = \"p\"\n[[route]]\nmethod = \"GET\"\npath = \"/spin\"\nscript = \"spin.lua\"\n"
            .to_string(),
    );
    // Each invocation holds its VM until `go` is set, so all four run at once.
    files.insert(
        "spin.lua".to_string(),
        "return function(req) while kv.get('go', {consistency='stale'}) == nil do end return 'ok' end".to_string(),
    );
    node.write(Command::AppCreate {
        app: "p".into(),
        now_ms: 1,
    })
    .await
    .expect("create");
    let checked = Bundle {
        files,
        ..Bundle::default()
    }
    .check()
    .expect("valid bundle");
    let runtime = Arc::new(picloud_actors::AppRuntime::new(
        "p".into(),
        1,
        checked.routes,
        checked.scripts,
        checked.modules,
        host,
        limits,
    ));
    // Scripts run on their own runtime, as in the node: a spinning script must
    // not sit on the threads Raft needs to apply `go`.
    let scripts = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("script runtime");
    let mut calls = Vec::new();
    for _ in 0..4 {
        let runtime = runtime.clone();
        calls.push(scripts.spawn(async move { runtime.serve(get("/spin")).await }));
    }
    // All four must hold a VM at once before they are let go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runtime.invocations_running() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the four calls never ran together"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let result = node
        .write(Command::Kv {
            app: "p".into(),
            op: picloud_storage::KvOp::Set {
                key: "go".into(),
                value: b"true".to_vec(),
                expires_at_ms: None,
            },
            now_ms: 2,
        })
        .await
        .expect("set go");
    assert!(matches!(result, CommandResult::Kv(_)), "{result:?}");
    for call in calls {
        assert!(call.await.expect("join").is_ok());
    }
    assert_eq!(
        runtime.idle_vms(),
        4,
        "every VM made under load is kept for the next request"
    );
    let now = tokio::time::Instant::now();
    assert_eq!(runtime.trim(now), 0, "fresh VMs are not trimmed");
    assert_eq!(runtime.trim(now + Duration::from_secs(2)), 3);
    assert_eq!(runtime.idle_vms(), 1, "vm_idle_max stay");
    scripts.shutdown_background();
    node.shutdown().await.expect("shutdown");
}
