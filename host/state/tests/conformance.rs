//! One storage conformance suite, run against every backend: the file
//! system, memory, and a real S3-protocol server (`moto_server`, started
//! on 127.0.0.1 by `sluice_test_programs::moto`; `scripts/tools.sh`
//! installs it).

use std::path::PathBuf;

use sluice_state::{ErrorKind, S3Options, Storage};

/// Every case, in order, each under its own prefix of a fresh store.
async fn conformance(storage: &Storage) {
    roundtrip(storage).await;
    overwrite_replaces(storage).await;
    missing_objects(storage).await;
    listing(storage).await;
    deleting(storage).await;
    large_and_empty_objects(storage).await;
    concurrent_writes(storage).await;
    invalid_paths(storage).await;
}

async fn roundtrip(s: &Storage) {
    s.put("rt/a/b/c.bin", b"hello".to_vec()).await.expect("put");
    assert_eq!(s.get("rt/a/b/c.bin").await.expect("get"), b"hello");
    assert!(s.exists("rt/a/b/c.bin").await.expect("exists"));
}

async fn overwrite_replaces(s: &Storage) {
    s.put("ow/x", b"first version".to_vec()).await.expect("put");
    s.put("ow/x", b"second".to_vec()).await.expect("put");
    assert_eq!(s.get("ow/x").await.expect("get"), b"second");
}

async fn missing_objects(s: &Storage) {
    let e = s.get("missing/nothing").await.expect_err("missing");
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("missing/nothing"), "{e}");
    assert!(!s.exists("missing/nothing").await.expect("exists"));
    s.delete("missing/nothing")
        .await
        .expect("deleting nothing succeeds");
    s.delete_dir("missing/dir")
        .await
        .expect("deleting nothing succeeds");
    assert!(s.list("missing").await.expect("list").is_empty());
}

async fn listing(s: &Storage) {
    for p in ["ls/x/1", "ls/x/2", "ls/x/sub/3", "ls/y/4", "ls/xx"] {
        s.put(p, p.as_bytes().to_vec()).await.expect("put");
    }
    assert_eq!(
        s.list("ls/x").await.expect("list"),
        ["ls/x/1", "ls/x/2", "ls/x/sub/3"]
    );
    assert_eq!(
        s.list("ls/x/").await.expect("list"),
        ["ls/x/1", "ls/x/2", "ls/x/sub/3"]
    );
    assert_eq!(
        s.list("ls").await.expect("list"),
        ["ls/x/1", "ls/x/2", "ls/x/sub/3", "ls/xx", "ls/y/4"]
    );
    let all = s.list("").await.expect("list");
    assert!(all.iter().any(|p| p == "ls/y/4"), "{all:?}");
}

async fn deleting(s: &Storage) {
    for p in ["del/x/1", "del/x/2", "del/x/sub/3", "del/y/4"] {
        s.put(p, vec![1, 2, 3]).await.expect("put");
    }
    s.delete("del/x/1").await.expect("delete");
    assert!(!s.exists("del/x/1").await.expect("exists"));
    assert_eq!(
        s.list("del/x").await.expect("list"),
        ["del/x/2", "del/x/sub/3"]
    );
    s.delete_dir("del/x").await.expect("delete dir");
    assert!(s.list("del/x").await.expect("list").is_empty());
    assert_eq!(s.list("del").await.expect("list"), ["del/y/4"]);
}

async fn large_and_empty_objects(s: &Storage) {
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    s.put("big/blob", big.clone()).await.expect("put");
    assert!(s.get("big/blob").await.expect("get") == big);
    s.put("big/empty", Vec::new()).await.expect("put");
    assert!(s.get("big/empty").await.expect("get").is_empty());
}

async fn concurrent_writes(s: &Storage) {
    let writes = (0..16).map(|i| {
        let s = s.clone();
        async move {
            s.put(&format!("conc/{i}"), vec![i as u8; 1000 + i])
                .await
                .expect("put")
        }
    });
    futures_util::future::join_all(writes).await;
    for i in 0..16 {
        assert_eq!(
            s.get(&format!("conc/{i}")).await.expect("get"),
            vec![i as u8; 1000 + i]
        );
    }
}

async fn invalid_paths(s: &Storage) {
    for bad in ["../escape", "/absolute", "a//b", "", "a/./b", "a/../../b"] {
        let e = s.put(bad, b"x".to_vec()).await.expect_err(bad);
        assert_eq!(e.kind, ErrorKind::Config, "{bad}: {e}");
        let e = s.get(bad).await.expect_err(bad);
        assert_eq!(e.kind, ErrorKind::Config, "{bad}: {e}");
    }
}

#[tokio::test]
async fn the_file_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = format!("file://{}", dir.path().join("store").display());
    let storage = Storage::open(&uri, &S3Options::default()).expect("open");
    conformance(&storage).await;
    // Nothing escaped the root, and no temporary files were left behind.
    let mut outside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("read")
        .map(|e| e.expect("entry").path())
        .collect();
    outside.sort();
    assert_eq!(outside, [dir.path().join("store")]);
    let tmp = dir.path().join("store/.sluice-tmp");
    let leftovers = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn a_failed_file_write_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let storage =
        Storage::open(&format!("file://{}", root.display()), &S3Options::default()).expect("open");
    // A non-empty directory where the object should go: the data reaches the
    // temporary file, and the rename that publishes it fails. (A checkpoint
    // directory deleted under a late snapshot's write fails the same step.)
    std::fs::create_dir_all(root.join("chk-1/task-0-0/inner")).expect("mkdir");
    let e = storage
        .put("chk-1/task-0-0", vec![7; 4096])
        .await
        .expect_err("rename over a directory");
    assert!(e.to_string().contains("chk-1/task-0-0"), "{e}");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(root.join(".sluice-tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The store still works.
    storage.put("chk-1/ok", b"x".to_vec()).await.expect("put");
    assert_eq!(storage.get("chk-1/ok").await.expect("get"), b"x");
}

#[tokio::test]
async fn the_memory_backend_conforms() {
    let storage = Storage::open("memory://", &S3Options::default()).expect("open");
    conformance(&storage).await;
}

fn s3_options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
    }
}

#[tokio::test]
async fn the_s3_backend_conforms_against_a_real_s3_protocol_server() {
    let Some(bin) = sluice_test_programs::moto::find() else {
        return;
    };
    let moto = tokio::task::spawn_blocking(move || {
        sluice_test_programs::moto::Moto::start(bin, "sluice-test")
    })
    .await
    .expect("moto");
    let opts = s3_options(&moto.endpoint());
    let storage = Storage::open("s3://sluice-test/checkpoints/cluster-a", &opts).expect("open");
    conformance(&storage).await;
    // The prefix isolates: a store on another prefix of the bucket sees nothing.
    let other = Storage::open("s3://sluice-test/checkpoints/cluster-b", &opts).expect("open");
    assert!(other.list("").await.expect("list").is_empty());
    // A bucket that does not exist is a permanent error naming the store.
    let none = Storage::open("s3://no-such-bucket", &opts).expect("open");
    let e = none.put("x", b"x".to_vec()).await.expect_err("no bucket");
    assert!(!e.is_temporary(), "{e}");
    assert!(e.to_string().contains("s3://no-such-bucket"), "{e}");
}

#[tokio::test]
async fn an_unreachable_store_fails_with_a_temporary_error_after_retries() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let storage = Storage::open(
        "s3://bucket/prefix",
        &s3_options(&format!("http://127.0.0.1:{port}")),
    )
    .expect("open");
    let e = storage
        .put("chk-1/_metadata", b"x".to_vec())
        .await
        .expect_err("nothing listens");
    assert!(e.is_temporary(), "{e}");
    assert!(e.to_string().contains("chk-1/_metadata"), "{e}");
}

#[test]
fn locations_are_parsed_from_uris_and_bad_ones_are_explained() {
    use sluice_state::Location;
    assert_eq!(
        "file:///var/lib/x".parse::<Location>().expect("file"),
        Location::File("/var/lib/x".into())
    );
    assert_eq!(
        "s3://b/p/q/".parse::<Location>().expect("s3"),
        Location::S3 {
            bucket: "b".into(),
            prefix: "p/q".into()
        }
    );
    assert_eq!(
        "memory://".parse::<Location>().expect("memory"),
        Location::Memory
    );
    // A plain path is a directory, as users type it; printed as a URI.
    let plain = "/tmp/x/../y".parse::<Location>().expect("plain");
    assert_eq!(plain, Location::File("/tmp/y".into()));
    assert_eq!(plain.to_string(), "file:///tmp/y");
    for (bad, why) in [
        ("file://relative/path", "absolute path"),
        ("s3://", "names a bucket"),
        ("hdfs://x", "unknown storage location"),
        ("relative/path", "absolute path"),
    ] {
        let e = bad.parse::<Location>().expect_err(bad);
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.to_string().contains(why), "{bad}: {e}");
        let quoted = format!("`{bad}`");
        assert_eq!(e.to_string().matches(&quoted).count(), 1, "said once: {e}");
    }
}

#[test]
fn an_s3_store_without_credentials_is_refused_naming_what_is_missing() {
    let e = Storage::open(
        "s3://bucket/prefix",
        &S3Options {
            access_key_id: Some("id".into()),
            ..S3Options::default()
        },
    )
    .expect_err("no secret");
    assert_eq!(e.kind, ErrorKind::Config);
    let msg = e.to_string();
    assert!(msg.contains("AWS_SECRET_ACCESS_KEY"), "{msg}");
    assert!(!msg.contains("AWS_ACCESS_KEY_ID"), "{msg}");
}
