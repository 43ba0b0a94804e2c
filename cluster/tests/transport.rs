//! The QUIC transport over real UDP on 127.0.0.1: mutual TLS, typed streams,
//! refusals of foreign certificates, the join handshake and bad frames.
//!
//! Every test binds port 0, so tests never collide; every wait is on an
//! event (a channel, a watch, a closed connection), never a sleep, and each
//! test is bounded by `bounded`.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use picloud_cluster::NodeInfo;
use picloud_cluster::transport::{
    ClusterCa, Incoming, JoinAsk, JoinError, JoinOutcome, JoinRefusal, JoinToken, NodeCertificate,
    PeerEndpoint, StreamKind, TransportError, answer_join, join,
};
use tokio::sync::mpsc;

use common::addr;

const LOCALHOST: &str = "127.0.0.1:0";

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the test finished within 30 s")
}

fn localhost() -> SocketAddr {
    LOCALHOST.parse().expect("address")
}

fn member(ca: &ClusterCa, node_id: u64) -> Arc<PeerEndpoint> {
    let cert = ca
        .issue_node_cert(node_id, &["127.0.0.1".into()])
        .expect("issue");
    Arc::new(PeerEndpoint::bind(localhost(), ca, &cert).expect("bind"))
}

/// What the echo server saw: a member that connected, or a stream that failed.
#[derive(Debug)]
enum Event {
    Connected { peer: u64 },
    StreamFailed { peer: u64, error: String },
}

/// Accepts members and echoes every frame back on the stream it came on,
/// prefixed with the stream kind's byte. Join connections are dropped.
fn serve_echo(endpoint: Arc<PeerEndpoint>) -> mpsc::UnboundedReceiver<Event> {
    let (events, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Incoming::Peer(connection) = incoming else {
                continue;
            };
            let _ = events.send(Event::Connected {
                peer: connection.peer_node_id(),
            });
            let events = events.clone();
            tokio::spawn(async move {
                while let Ok(mut stream) = connection.accept_stream().await {
                    let events = events.clone();
                    tokio::spawn(async move {
                        loop {
                            match stream.recv_frame().await {
                                Ok(Some(frame)) => {
                                    let mut reply = vec![stream.kind() as u8];
                                    reply.extend_from_slice(&frame);
                                    if stream.send_frame(&reply).await.is_err() {
                                        break;
                                    }
                                }
                                Ok(None) => {
                                    let _ = stream.finish();
                                    break;
                                }
                                Err(error) => {
                                    let _ = events.send(Event::StreamFailed {
                                        peer: stream.peer_node_id(),
                                        error: error.to_string(),
                                    });
                                    break;
                                }
                            }
                        }
                    });
                }
            });
        }
    });
    receiver
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    events.recv().await.expect("the echo server is running")
}

/// One round trip on a fresh stream of `kind`.
async fn echo(
    connection: &picloud_cluster::transport::PeerConnection,
    kind: StreamKind,
    payload: &[u8],
) -> Vec<u8> {
    let mut stream = connection.open(kind).await.expect("open");
    stream.send_frame(payload).await.expect("send");
    stream.finish().expect("finish");
    let reply = stream.recv_frame().await.expect("recv").expect("a reply");
    assert_eq!(stream.recv_frame().await.expect("end"), None);
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_exchange_frames_on_every_stream_kind_concurrently() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let server = member(&ca, 2);
        let client = member(&ca, 1);
        let mut events = serve_echo(server.clone());

        let connection = client.connect(addr(&server)).await.expect("connect");
        assert_eq!(
            connection.peer_node_id(),
            2,
            "the client reads the server's id from its cert"
        );
        assert!(matches!(
            next_event(&mut events).await,
            Event::Connected { peer: 1 }
        ));

        // Every kind at once, several frames each; the snapshot stream carries
        // a big frame while the vote stream's small frames go back and forth.
        let mut tasks = tokio::task::JoinSet::new();
        for kind in StreamKind::ALL {
            let connection = connection.clone();
            tasks.spawn(async move {
                let mut stream = connection.open(kind).await.expect("open");
                let size = if kind == StreamKind::Snapshot {
                    4 << 20
                } else {
                    100
                };
                for round in 0..5u8 {
                    let payload = vec![round; size];
                    stream.send_frame(&payload).await.expect("send");
                    let reply = stream.recv_frame().await.expect("recv").expect("reply");
                    assert_eq!(
                        reply[0], kind as u8,
                        "the reply came back on the {kind:?} stream"
                    );
                    assert_eq!(&reply[1..], &payload[..]);
                }
                stream.finish().expect("finish");
                assert_eq!(stream.recv_frame().await.expect("end"), None);
                kind
            });
        }
        let mut done = Vec::new();
        while let Some(kind) = tasks.join_next().await {
            done.push(kind.expect("stream task"));
        }
        assert_eq!(done.len(), StreamKind::ALL.len());

        // Typed messages go through the project's codec.
        let mut stream = connection.open(StreamKind::Forward).await.expect("open");
        stream.send(&("kv.set", 42u64)).await.expect("send");
        stream.finish().expect("finish");
        let reply = stream.recv_frame().await.expect("recv").expect("reply");
        let decoded: (String, u64) =
            picloud_storage::codec::decode(&reply[1..], 1024).expect("decode");
        assert_eq!(decoded, ("kv.set".to_string(), 42));

        // Dialling a node by a stale address is caught by the certificate's id.
        let err = client
            .connect_to(addr(&server), 3)
            .await
            .expect_err("wrong node");
        assert!(
            matches!(
                err,
                TransportError::UnexpectedPeer {
                    expected: 3,
                    actual: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(server.refusals().borrow().total, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_in_both_directions() {
    bounded(async {
        let ours = ClusterCa::create().expect("ca");
        let theirs = ClusterCa::create().expect("other ca");
        let server = member(&ours, 1);
        let mut events = serve_echo(server.clone());
        let mut refusals = server.refusals();

        // The client refuses a server whose certificate is from another CA.
        let stranger = member(&theirs, 9);
        let err = stranger
            .connect(addr(&server))
            .await
            .expect_err("the client must refuse the server");
        assert!(matches!(err, TransportError::Handshake { .. }), "{err}");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");

        // The server refuses a client whose certificate is from another CA,
        // even when the client trusts the server's CA.
        let foreign_cert = theirs.issue_node_cert(8, &[]).expect("issue");
        let impostor =
            PeerEndpoint::bind(localhost(), &ours, &foreign_cert).expect("bind impostor");
        let err = impostor
            .connect(addr(&server))
            .await
            .expect_err("the server must refuse the client");
        assert!(matches!(err, TransportError::Refused { .. }), "{err}");
        assert!(err.to_string().to_lowercase().contains("unknown"), "{err}");

        let seen = refusals
            .wait_for(|r| r.total >= 2)
            .await
            .expect("refusals")
            .clone();
        let reason = seen.last_reason.unwrap_or_default();
        assert!(reason.contains("handshake failed"), "{reason}");

        // A client on the member ALPN with no certificate at all is closed right
        // after the handshake (the TLS layer lets it through for the join ALPN).
        let err = connect_without_certificate(&ours, addr(&server)).await;
        assert!(err.contains("client certificate required"), "{err}");
        let seen = refusals
            .wait_for(|r| r.total >= 3)
            .await
            .expect("refusals")
            .clone();
        assert_eq!(
            seen.last_reason.as_deref(),
            Some("client certificate required")
        );

        // None of them reached the application, and a member still gets in.
        let friend = member(&ours, 2);
        let connection = friend.connect(addr(&server)).await.expect("connect");
        assert!(matches!(
            next_event(&mut events).await,
            Event::Connected { peer: 2 }
        ));
        assert_eq!(
            echo(&connection, StreamKind::RaftVote, b"hi").await,
            b"\x02hi"
        );
    })
    .await;
}

/// A member that answers joins with `secret`, allocating ids from 2 up, and
/// reports each outcome. Member connections are kept open and otherwise ignored.
fn serve_joins(
    ca: Arc<ClusterCa>,
    endpoint: Arc<PeerEndpoint>,
    secret: [u8; 32],
    allocations: Arc<AtomicU64>,
) -> mpsc::UnboundedReceiver<Result<JoinOutcome, String>> {
    let (outcomes, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let connection = match incoming {
                Incoming::Join(connection) => connection,
                Incoming::Peer(member) => {
                    // Dropping the last handle closes a connection; keep it open.
                    tokio::spawn(async move { member.closed().await });
                    continue;
                }
            };
            let ca = ca.clone();
            let outcomes = outcomes.clone();
            let allocations = allocations.clone();
            tokio::spawn(async move {
                let outcome = answer_join(
                    connection,
                    &ca,
                    &secret,
                    None,
                    5_000,
                    |_request| async move { Ok(2 + allocations.fetch_add(1, Ordering::SeqCst)) },
                )
                .await;
                let _ = outcomes.send(outcome.map_err(|e| e.to_string()));
            });
        }
    });
    receiver
}

/// A join request from a joiner that brings its own master key (these
/// members hold none, so they admit it).
fn ask(names: Vec<String>) -> JoinAsk {
    JoinAsk {
        node: joiner_info(),
        names,
        key_id: Some("0123456789abcdef".into()),
    }
}

fn joiner_info() -> NodeInfo {
    NodeInfo {
        http: "127.0.0.1:8080".into(),
        peer: "127.0.0.1:7070".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_handshake_admits_a_node_with_the_right_token_only() {
    bounded(async {
        let ca = Arc::new(ClusterCa::create().expect("ca"));
        let server = member(&ca, 1);
        let token = JoinToken::generate(&ca.ca_hash());
        let allocations = Arc::new(AtomicU64::new(0));
        let mut outcomes = serve_joins(
            ca.clone(),
            server.clone(),
            token.secret,
            allocations.clone(),
        );
        let token = JoinToken::parse(&token.encode()).expect("the token survives copy and paste");

        // A wrong secret is refused, and no id is allocated for it.
        let mut wrong = token.clone();
        wrong.secret[0] ^= 1;
        let err = join(addr(&server), &wrong, ask(vec![]), 5_000, 10_000)
            .await
            .expect_err("wrong secret");
        assert!(
            matches!(
                err,
                JoinError::Refused {
                    refusal: JoinRefusal::WrongSecret,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            outcomes.recv().await.expect("outcome"),
            Ok(JoinOutcome::Refused {
                refusal: JoinRefusal::WrongSecret,
                ..
            })
        ));
        assert_eq!(allocations.load(Ordering::SeqCst), 0);

        // The right token gets a certificate for a freshly allocated id ...
        let joined = join(
            addr(&server),
            &token,
            ask(vec!["127.0.0.1".into(), "pi2.lan".into()]),
            5_000,
            10_000,
        )
        .await
        .expect("join");
        assert_eq!(joined.node_id, 2);
        assert_eq!(joined.ca.ca_hash(), ca.ca_hash());
        match outcomes.recv().await.expect("outcome") {
            Ok(JoinOutcome::Granted { node_id: 2, node }) => assert_eq!(node, joiner_info()),
            other => panic!("expected a grant, got {other:?}"),
        }

        // ... that works as a member certificate, in both directions, with the
        // CA the joiner received (stored and loaded like a restart would).
        let dir = tempfile::tempdir().expect("tempdir");
        joined.ca.store(dir.path()).expect("store ca");
        joined.node_cert.store(dir.path()).expect("store cert");
        let ca_again = ClusterCa::load(dir.path()).expect("load ca");
        let cert_again = NodeCertificate::load(dir.path()).expect("load cert");
        let newcomer =
            Arc::new(PeerEndpoint::bind(localhost(), &ca_again, &cert_again).expect("bind"));
        let connection = newcomer
            .connect(addr(&server))
            .await
            .expect("member connect");
        assert_eq!(connection.peer_node_id(), 1);
        let mut newcomer_events = serve_echo(newcomer.clone());
        let back = server.connect(addr(&newcomer)).await.expect("connect back");
        assert_eq!(back.peer_node_id(), 2);
        assert!(matches!(
            next_event(&mut newcomer_events).await,
            Event::Connected { peer: 1 }
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_refuses_a_server_of_another_cluster_before_sending_the_secret() {
    bounded(async {
        let ca = Arc::new(ClusterCa::create().expect("ca"));
        let other = ClusterCa::create().expect("other ca");
        let server = member(&ca, 1);
        let secret: [u8; 32] = rand::random();
        let allocations = Arc::new(AtomicU64::new(0));
        let mut outcomes = serve_joins(ca.clone(), server.clone(), secret, allocations.clone());
        let mut refusals = server.refusals();

        // The token names another cluster's CA but carries this cluster's secret:
        // if the joiner sent it, this server would grant the join.
        let misdirected = JoinToken {
            ca_hash: other.ca_hash(),
            secret,
        };
        let err = join(addr(&server), &misdirected, ask(vec![]), 5_000, 10_000)
            .await
            .expect_err("the CA does not match");
        assert!(matches!(err, JoinError::CaMismatch { .. }), "{err}");
        assert!(err.to_string().contains("the secret was not sent"), "{err}");
        refusals
            .wait_for(|r| r.total >= 1)
            .await
            .expect("the server saw the aborted handshake");

        // The server never read a request: the first outcome it reports is the
        // next, correct join.
        let token = JoinToken {
            ca_hash: ca.ca_hash(),
            secret,
        };
        let joined = join(addr(&server), &token, ask(vec![]), 5_000, 10_000)
            .await
            .expect("join");
        assert_eq!(joined.node_id, 2);
        assert!(matches!(
            outcomes.recv().await.expect("outcome"),
            Ok(JoinOutcome::Granted { node_id: 2, .. })
        ));
        assert_eq!(allocations.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_disconnect_the_sender_and_the_endpoint_keeps_serving() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let server = member(&ca, 1);
        let mut events = serve_echo(server.clone());

        // An oversized length prefix: refused from the header alone.
        let liar = member(&ca, 2);
        let connection = liar.connect(addr(&server)).await.expect("connect");
        assert!(matches!(
            next_event(&mut events).await,
            Event::Connected { peer: 2 }
        ));
        let stream = connection.open(StreamKind::RaftAppend).await.expect("open");
        let (mut send, _recv) = stream.into_parts();
        send.write_all(&u32::MAX.to_be_bytes())
            .await
            .expect("write");
        match next_event(&mut events).await {
            Event::StreamFailed { peer: 2, error } => {
                assert!(error.contains("over the limit"), "{error}")
            }
            other => panic!("expected a failed stream, got {other:?}"),
        }
        let reason = connection.closed().await;
        assert!(
            reason.contains("over the limit"),
            "the liar learns why: {reason}"
        );

        // A frame cut short by the end of the stream.
        let truncator = member(&ca, 3);
        let connection = truncator.connect(addr(&server)).await.expect("connect");
        assert!(matches!(
            next_event(&mut events).await,
            Event::Connected { peer: 3 }
        ));
        let stream = connection.open(StreamKind::Snapshot).await.expect("open");
        let (mut send, _recv) = stream.into_parts();
        send.write_all(&1_000_000u32.to_be_bytes())
            .await
            .expect("write");
        send.write_all(&[0u8; 10]).await.expect("write");
        send.finish().expect("finish");
        match next_event(&mut events).await {
            Event::StreamFailed { peer: 3, error } => {
                assert!(error.contains("ended after 10 of 1000000"), "{error}")
            }
            other => panic!("expected a failed stream, got {other:?}"),
        }
        connection.closed().await;

        // The server still serves a well-behaved member.
        let good = member(&ca, 5);
        let connection = good.connect(addr(&server)).await.expect("connect");
        assert!(matches!(
            next_event(&mut events).await,
            Event::Connected { peer: 5 }
        ));
        assert_eq!(
            echo(&connection, StreamKind::PubSub, b"ok").await,
            b"\x05ok"
        );
    })
    .await;
}

/// Connects on the member ALPN trusting `ca` but presenting no certificate,
/// and returns why the server closed the connection.
async fn connect_without_certificate(ca: &ClusterCa, server: SocketAddr) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![picloud_cluster::transport::tls::PEER_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).expect("quic");
    let endpoint = quinn::Endpoint::client(localhost()).expect("client endpoint");
    let connection = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            server,
            picloud_cluster::transport::ca::CLUSTER_SERVER_NAME,
        )
        .expect("connect")
        .await
        .expect("the TLS handshake itself succeeds");
    let reason = connection.closed().await.to_string();
    endpoint.wait_idle().await;
    reason
}
