//! `FileService` rules (pure) and the service against a real one-node
//! cluster: what a script, the gateway and the CLI rely on.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use picloud_cluster::{ClusterConfig, NodeInfo};
use picloud_storage::StorageOptions;
use picloud_storage::files::BLOCK_BYTES;
use picloud_storage::secret_box::{Keyring, MasterKey};
use sha2::{Digest, Sha256};

use super::*;
use crate::ActorRestarts;
use crate::config::RealtimeLimits;

#[test]
fn served_ranges() {
    type Case = (u64, Option<Range<u64>>, Option<Range<u64>>);
    let cases: &[Case] = &[
        (10, None, Some(0..10)),
        (0, None, Some(0..0)),
        (10, Some(0..1), Some(0..1)),
        (10, Some(3..10), Some(3..10)),
        (10, Some(3..u64::MAX), Some(3..10)),
        (10, Some(9..20), Some(9..10)),
        (10, Some(10..11), None),
        (10, Some(11..u64::MAX), None),
        (10, Some(5..5), None),
        (0, Some(0..1), None),
    ];
    for (size, requested, expected) in cases {
        assert_eq!(
            &served_range(*size, requested.clone()),
            expected,
            "{size} {requested:?}"
        );
    }
}

#[test]
fn content_types() {
    let ok = [
        "text/plain",
        "image/png",
        "application/vnd.api+json",
        "text/plain; charset=utf-8",
        "multipart/form-data; boundary=\"x y\"",
    ];
    for ct in ok {
        assert_eq!(content_type_or_default(Some(ct.into())), Ok(ct.to_string()));
    }
    assert_eq!(
        content_type_or_default(None),
        Ok(DEFAULT_CONTENT_TYPE.to_string())
    );
    let long = format!("a/{}", "b".repeat(CONTENT_TYPE_BYTES_MAX));
    for ct in [
        "",
        "text",
        "text/",
        "/plain",
        "te xt/plain",
        "text/pl@in",
        "text/plain\r\nX-Evil: 1",
        "téxt/plain",
        &long,
    ] {
        let error = content_type_or_default(Some(ct.into())).expect_err(ct);
        assert_eq!(error.code, Code::InvalidField, "{ct:?}");
    }
}

#[test]
fn etags_match_the_stored_records() {
    let record = FileRecord {
        size: 1,
        content_type: DEFAULT_CONTENT_TYPE.into(),
        sha256: std::array::from_fn(|i| (i * 37) as u8),
        created_ms: 0,
        updated_ms: 0,
        inline: Some(vec![1]),
        blocks: 0,
    };
    assert_eq!(etag(&record.sha256), record.etag());
}

#[test]
fn block_failures_have_their_codes() {
    let cases = [
        (
            FilesError::Body(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Code::UploadIncomplete,
        ),
        (
            FilesError::Body(io::Error::from(io::ErrorKind::TimedOut)),
            Code::BodyTimeout,
        ),
        (
            FilesError::Body(io::Error::from(io::ErrorKind::ConnectionReset)),
            Code::BadBody,
        ),
        (
            FilesError::ReplicasUnavailable {
                hash: [0; 32],
                acked: 1,
                needed: 2,
            },
            Code::ReplicasUnavailable,
        ),
        (
            FilesError::BlockUnavailable { hash: [0; 32] },
            Code::FileUnavailable,
        ),
        (FilesError::TooLarge { max: 1 }, Code::FileTooLarge),
        (FilesError::Timeout, Code::Timeout),
        (
            FilesError::DiskFull {
                node: 2,
                full: picloud_cluster::disk::DiskFull {
                    available_bytes: 0,
                    reserve_bytes: 1,
                },
            },
            Code::DiskFull,
        ),
        (FilesError::Io(io::Error::other("x")), Code::Storage),
    ];
    for (error, code) in cases {
        assert_eq!(files_host_error(error).code, code);
    }
    assert_eq!(Code::DiskFull.status(), 507);
}

#[test]
fn url_ttls() {
    assert_eq!(url_ttl_ms(None), Ok(3_600_000));
    assert_eq!(url_ttl_ms(Some(1.5)), Ok(1_500));
    assert_eq!(
        url_ttl_ms(Some(url::URL_TTL_SECS_MAX as f64)),
        Ok(url::URL_TTL_SECS_MAX * 1000)
    );
    for ttl in [
        0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        url::URL_TTL_SECS_MAX as f64 + 1.0,
    ] {
        assert_eq!(
            url_ttl_ms(Some(ttl)).map_err(|e| e.code),
            Err(Code::InvalidTtl)
        );
    }
}

#[test]
fn cursors_round_trip_and_garbage_is_refused() {
    let path = "a b/ü?#%.txt";
    let cursor = URL_SAFE_NO_PAD.encode(path);
    assert_eq!(decode_cursor(&cursor).as_deref(), Ok(path));
    assert_eq!(
        decode_cursor("!!!").map_err(|e| e.code),
        Err(Code::InvalidCursor)
    );
}

// ---- against a real one-node cluster ----

const APP: &str = "shop";

/// A one-node cluster with app [`APP`] and its file service.
struct OneNode {
    _dir: tempfile::TempDir,
    service: FileService,
}

async fn one_node(files: FilesConfig) -> OneNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Arc::new(Keyring::new(MasterKey::from_bytes([5; 32]), vec![]));
    let (node, duties) = Node::start(
        dir.path(),
        NodeInfo {
            http: "127.0.0.1:0".into(),
            peer: "127.0.0.1:0".into(),
        },
        ClusterConfig {
            secret_keys: Some(keys.clone()),
            files: files.clone(),
            ..ClusterConfig::default()
        },
        &StorageOptions::default(),
    )
    .await
    .expect("node starts");
    for duty in duties {
        duty.detach();
    }
    let created = node
        .write(Command::AppCreate {
            app: APP.into(),
            now_ms: 1,
        })
        .await
        .expect("app created");
    assert!(
        !matches!(created, CommandResult::Rejected(_)),
        "{created:?}"
    );
    let realtime = Realtime::start(
        node.clone(),
        Some(keys),
        RealtimeLimits::default(),
        Arc::new(ActorRestarts::default()),
    )
    .await
    .expect("realtime starts");
    OneNode {
        _dir: dir,
        service: FileService::new(node, realtime, files),
    }
}

/// `bytes` as an upload body in chunks of `chunk` bytes.
fn body(bytes: &[u8], chunk: usize) -> impl Stream<Item = io::Result<Bytes>> + Send + Unpin {
    let chunks: Vec<io::Result<Bytes>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

/// Deterministic, non-repeating content (so blocks differ).
fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut counter = 0u64;
    while out.len() < len {
        let digest = Sha256::digest([&[seed][..], &counter.to_be_bytes()].concat());
        out.extend_from_slice(&digest);
        counter += 1;
    }
    out.truncate(len);
    out
}

async fn read_all(download: FileDownload) -> Vec<u8> {
    let chunks: Vec<Bytes> = download.body.try_collect().await.expect("body");
    chunks.concat()
}

fn code<T: std::fmt::Debug>(result: Result<T, HostError>) -> Code {
    result.expect_err("an error").code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_through_put_stat_open_list_and_delete() {
    let cluster = one_node(FilesConfig::default()).await;
    let files = &cluster.service;
    let small = b"hello".to_vec();
    let large = content(2 * BLOCK_BYTES as usize + 12_345, 1);

    let put = files
        .put_stream(
            APP,
            "docs/a.txt",
            Some("text/plain".into()),
            body(&small, 2),
            None,
        )
        .await
        .expect("small put");
    assert_eq!(put.size, 5);
    assert_eq!(put.content_type, "text/plain");
    assert_eq!(put.etag, etag(&Sha256::digest(&small).into()));
    let big = files
        .put_stream(APP, "docs/b c.bin", None, body(&large, 64 * 1024 + 7), None)
        .await
        .expect("large put");
    assert_eq!(big.size, large.len() as u64);
    assert_eq!(big.content_type, DEFAULT_CONTENT_TYPE);
    assert_eq!(big.etag, etag(&Sha256::digest(&large).into()));

    assert_eq!(files.stat(APP, "docs/a.txt").await, Ok(Some(put.clone())));
    assert_eq!(files.stat(APP, "docs/b c.bin").await, Ok(Some(big.clone())));
    assert_eq!(files.stat(APP, "docs/none").await, Ok(None));

    // Whole, and ranges: inside the inline file, across a block edge, open
    // ended, and past the end.
    let whole = files.open(APP, "docs/b c.bin", None).await.expect("open");
    let whole = whole.expect("found");
    assert_eq!(whole.range, 0..large.len() as u64);
    assert_eq!(read_all(whole).await, large);
    let edge = BLOCK_BYTES - 3..BLOCK_BYTES + 5;
    let part = files
        .open(APP, "docs/b c.bin", Some(edge.clone()))
        .await
        .expect("range")
        .expect("found");
    assert_eq!(part.range, edge);
    assert_eq!(
        read_all(part).await,
        large[edge.start as usize..edge.end as usize]
    );
    let tail = files
        .open(APP, "docs/b c.bin", Some(large.len() as u64 - 10..u64::MAX))
        .await
        .expect("tail")
        .expect("found");
    assert_eq!(read_all(tail).await, large[large.len() - 10..]);
    let inner = files
        .open(APP, "docs/a.txt", Some(1..3))
        .await
        .expect("inline range")
        .expect("found");
    assert_eq!(read_all(inner).await, b"el");
    assert_eq!(
        code(
            files
                .open(APP, "docs/a.txt", Some(5..6))
                .await
                .map(|d| d.is_some())
        ),
        Code::RangeNotSatisfiable
    );
    assert!(matches!(files.open(APP, "nope", None).await, Ok(None)));

    // files.get reads whole files up to its limit, refusing larger ones.
    let got = files
        .get_whole(APP, "docs/b c.bin", large.len() as u64)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got.data, large);
    assert_eq!(got.stat, big);
    assert_eq!(
        code(
            files
                .get_whole(APP, "docs/b c.bin", large.len() as u64 - 1)
                .await
        ),
        Code::FileTooLarge
    );

    // Listing pages in path order, the last page without a cursor.
    files
        .put_stream(APP, "docs/c", None, body(b"c", 1), None)
        .await
        .expect("put c");
    files
        .put_stream(APP, "other", None, body(b"o", 1), None)
        .await
        .expect("put other");
    let first = files.list(APP, "docs/", 2, None).await.expect("page 1");
    assert_eq!(
        first
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["docs/a.txt", "docs/b c.bin"]
    );
    assert_eq!(first.files[1], big);
    let second = files
        .list(APP, "docs/", 2, first.cursor.clone())
        .await
        .expect("page 2");
    assert_eq!(
        second
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["docs/c"]
    );
    assert_eq!(second.cursor, None);
    assert_eq!(
        files.list(APP, "", 1000, None).await.map(|p| p.files.len()),
        Ok(4)
    );
    for limit in [0, FILES_LIST_LIMIT_MAX + 1] {
        assert_eq!(
            code(files.list(APP, "", limit, None).await),
            Code::InvalidLimit
        );
    }
    assert_eq!(
        code(files.list(APP, "", 10, Some("***".into())).await),
        Code::InvalidCursor
    );

    // Overwrite, then delete.
    let replaced = files
        .put_stream(APP, "docs/a.txt", None, body(b"bye", 3), None)
        .await
        .expect("overwrite");
    assert_eq!(files.stat(APP, "docs/a.txt").await, Ok(Some(replaced)));
    assert_eq!(files.delete(APP, "docs/a.txt").await, Ok(true));
    assert_eq!(files.delete(APP, "docs/a.txt").await, Ok(false));
    assert_eq!(files.stat(APP, "docs/a.txt").await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_store_nothing_and_say_why() {
    let cluster = one_node(FilesConfig {
        file_bytes_max: 3 * BLOCK_BYTES,
        files_bytes_per_app_max: 4 * BLOCK_BYTES,
        files_per_app_max: 3,
        ..FilesConfig::default()
    })
    .await;
    let files = &cluster.service;
    let data = content(2 * BLOCK_BYTES as usize, 2);

    // A body cut short (the gateway saw fewer bytes than Content-Length).
    let mut chunks: Vec<io::Result<Bytes>> = vec![Ok(Bytes::copy_from_slice(&data[..1 << 20]))];
    chunks.push(Err(io::Error::from(io::ErrorKind::UnexpectedEof)));
    assert_eq!(
        code(
            files
                .put_stream(APP, "cut", None, futures::stream::iter(chunks), None)
                .await
        ),
        Code::UploadIncomplete
    );
    assert_eq!(files.stat(APP, "cut").await, Ok(None));

    // Names, types and apps.
    for path in ["", "/abs", "a//b", "../x", "a\nb"] {
        assert_eq!(
            code(files.put_stream(APP, path, None, body(b"x", 1), None).await),
            Code::InvalidPath,
            "{path:?}"
        );
        assert_eq!(code(files.stat(APP, path).await), Code::InvalidPath);
    }
    assert_eq!(
        code(
            files
                .put_stream(APP, "x", Some("nope".into()), body(b"x", 1), None)
                .await
        ),
        Code::InvalidField
    );
    assert_eq!(
        code(
            files
                .put_stream("ghost", "x", None, body(b"x", 1), None)
                .await
        ),
        Code::AppNotFound
    );

    // Size limits: the file's, a signed URL's, the app's bytes and files.
    let too_big = content(3 * BLOCK_BYTES as usize + 1, 3);
    assert_eq!(
        code(
            files
                .put_stream(APP, "big", None, body(&too_big, 1 << 16), None)
                .await
        ),
        Code::FileTooLarge
    );
    assert_eq!(
        code(
            files
                .put_stream(APP, "capped", None, body(b"12345", 5), Some(4))
                .await
        ),
        Code::FileTooLarge
    );
    files
        .put_stream(APP, "one", None, body(&data, 1 << 16), None)
        .await
        .expect("2 MiB fits");
    let more = content(2 * BLOCK_BYTES as usize + 1, 4);
    assert_eq!(
        code(
            files
                .put_stream(APP, "two", None, body(&more, 1 << 16), None)
                .await
        ),
        Code::QuotaExceeded
    );
    // Replacing a file frees its bytes first.
    files
        .put_stream(APP, "one", None, body(&too_big[..3 << 20], 1 << 16), None)
        .await
        .expect("an overwrite counts the new size only");
    files
        .put_stream(APP, "f2", None, body(b"2", 1), None)
        .await
        .expect("second file");
    files
        .put_stream(APP, "f3", None, body(b"3", 1), None)
        .await
        .expect("third file");
    assert_eq!(
        code(files.put_stream(APP, "f4", None, body(b"4", 1), None).await),
        Code::QuotaExceeded
    );
    files
        .put_stream(APP, "f3", None, body(b"33", 2), None)
        .await
        .expect("an overwrite adds no file");
    assert_eq!(files.stat(APP, "two").await, Ok(None));
    assert_eq!(files.stat(APP, "big").await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_are_checked_by_the_service() {
    let cluster = one_node(FilesConfig::default()).await;
    let files = &cluster.service;
    let query = |url: &str| {
        url.split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default()
    };

    // An app that never signed has no key: nothing it could have signed.
    assert_eq!(
        code(
            files
                .check_url(APP, "a.txt", "m=GET&exp=1&sig=AA", "GET")
                .await
        ),
        Code::UrlInvalid
    );
    let get = files
        .sign_url(APP, "dir/a b.txt", FileUrlOptions::default())
        .await
        .expect("sign");
    assert!(
        get.starts_with("/_/files/shop/dir/a%20b.txt?m=GET&exp="),
        "{get}"
    );
    let grant = files
        .check_url(APP, "dir/a b.txt", &query(&get), "HEAD")
        .await
        .expect("valid");
    assert_eq!(grant.method, UrlMethod::Get);
    assert_eq!(
        code(
            files
                .check_url(APP, "dir/a b.txt", &query(&get), "PUT")
                .await
        ),
        Code::UrlInvalid
    );
    assert_eq!(
        code(files.check_url(APP, "dir/a.txt", &query(&get), "GET").await),
        Code::UrlInvalid
    );
    let put = files
        .sign_url(
            APP,
            "up.png",
            FileUrlOptions {
                ttl_secs: Some(60.0),
                method: UrlMethod::Put,
                content_type: Some("image/png".into()),
                max_bytes: Some(10),
            },
        )
        .await
        .expect("sign put");
    assert_eq!(
        files.check_url(APP, "up.png", &query(&put), "PUT").await,
        Ok(UrlGrant {
            method: UrlMethod::Put,
            max_bytes: Some(10),
            content_type: Some("image/png".into()),
        })
    );
    let expired = files
        .sign_url(
            APP,
            "old",
            FileUrlOptions {
                ttl_secs: Some(0.001),
                ..FileUrlOptions::default()
            },
        )
        .await
        .expect("sign");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        code(files.check_url(APP, "old", &query(&expired), "GET").await),
        Code::UrlExpired
    );
    let over = FileUrlOptions {
        ttl_secs: Some(8.0 * 86_400.0),
        ..FileUrlOptions::default()
    };
    assert_eq!(code(files.sign_url(APP, "a", over).await), Code::InvalidTtl);
    let get_with_limit = FileUrlOptions {
        max_bytes: Some(1),
        ..FileUrlOptions::default()
    };
    assert_eq!(
        code(files.sign_url(APP, "a", get_with_limit).await),
        Code::InvalidField
    );
    assert_eq!(
        code(files.sign_url(APP, "../a", FileUrlOptions::default()).await),
        Code::InvalidPath
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_orphan_blocks_and_keeps_referenced_ones() {
    let cluster = one_node(FilesConfig {
        files_gc_interval_ms: 100,
        files_gc_grace_ms: 200,
        ..FilesConfig::default()
    })
    .await;
    let files = &cluster.service;
    let kept = content(BLOCK_BYTES as usize + 1, 5);
    files
        .put_stream(APP, "kept", None, body(&kept, 1 << 16), None)
        .await
        .expect("put");
    // An upload that never committed: its blocks are orphans.
    let orphan = files
        .node
        .files()
        .upload(
            body(&content(BLOCK_BYTES as usize + 1, 6), 1 << 16),
            u64::MAX,
        )
        .await
        .expect("orphan blocks stored");
    assert_eq!(orphan.blocks.len(), 2);
    let stored = |hash: &BlockHash| {
        let shard = files
            .node
            .files()
            .local_blocks_shard(hash[0])
            .expect("list");
        shard.iter().any(|(h, _)| h == hash)
    };
    assert!(orphan.blocks.iter().all(stored));
    let gc = gc_duty(files.clone()).detach();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while orphan.blocks.iter().any(stored) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphans still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gc.abort();
    assert!(files.gc_removed_total() >= 2);
    let back = files
        .open(APP, "kept", None)
        .await
        .expect("open")
        .expect("found");
    assert_eq!(read_all(back).await, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_read_and_write_files_up_to_the_inline_limit() {
    use picloud_lua_sdk::Host as _;

    use crate::run_host::RunHost;
    use crate::{ActorLimits, LogBook, NodeHost};

    let cluster = one_node(FilesConfig {
        file_inline_read_max: 2 * BLOCK_BYTES,
        ..FilesConfig::default()
    })
    .await;
    let files = &cluster.service;
    let limits = Arc::new(ActorLimits::default());
    let bare = NodeHost::new(
        files.node.clone(),
        LogBook::new(limits.logs),
        limits.clone(),
    );
    assert_eq!(
        code(bare.files_stat(APP, "a").await),
        Code::Unsupported,
        "a host without the service says so"
    );
    let host = Arc::new(bare.with_files(files.clone()));
    // A trigger run's host passes files through, writes included.
    let run = RunHost::new(host.clone(), Arc::from([]));
    run.begin_run(1);

    let fits = content(2 * BLOCK_BYTES as usize, 7);
    let stat = run
        .files_put(APP, "fits", fits.clone(), Some("image/png".into()))
        .await
        .expect("put through the run host");
    assert_eq!(stat.content_type, "image/png");
    let got = host
        .files_get(APP, "fits")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got.data, fits);
    assert_eq!(got.stat, stat);
    assert_eq!(run.files_stat(APP, "fits").await, Ok(Some(stat.clone())));
    assert_eq!(
        run.files_list(APP, "", 10, None)
            .await
            .map(|page| page.files),
        Ok(vec![stat])
    );
    let url = run
        .files_url(APP, "fits", FileUrlOptions::default())
        .await
        .expect("url");
    assert!(url.starts_with("/_/files/shop/fits?m=GET&"), "{url}");

    // Over the limit: put refuses the string, get refuses before reading
    // (a larger file stored through the streaming path).
    let over = content(2 * BLOCK_BYTES as usize + 1, 8);
    assert_eq!(
        code(host.files_put(APP, "over", over.clone(), None).await),
        Code::FileTooLarge
    );
    files
        .put_stream(APP, "over", None, body(&over, 1 << 16), None)
        .await
        .expect("streamed put");
    assert_eq!(code(run.files_get(APP, "over").await), Code::FileTooLarge);
    assert_eq!(run.files_get(APP, "none").await, Ok(None));

    assert_eq!(run.files_delete(APP, "fits").await, Ok(true));
    assert!(run.end_run().kv.is_empty(), "nothing was buffered");
    assert_eq!(host.files_stat(APP, "fits").await, Ok(None));
}
