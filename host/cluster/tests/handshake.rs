//! The JobManager's side of registration and joining, spoken to directly
//! over QUIC: what a TaskManager of another release or with a wrong token
//! is told; and what the TaskManagers do with a certificate an admin
//! removed.

use std::time::Duration;

use sluice_cluster::protocol::{
    Hello, JoinRequest, JoinResponse, PROTOCOL_VERSION, PeerAnswer, PeerHello, ToTaskManager,
    Welcome,
};
use sluice_cluster::{Endpoints, JobManagerConfig};
use sluice_coord::RestartStrategy;
use sluice_transport::{ClusterCa, JoinToken, frame};

async fn start_jobmanager(dir: &std::path::Path) -> Endpoints {
    let config = JobManagerConfig {
        rest_addr: "127.0.0.1:0".parse().expect("addr"),
        rpc_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_owned(),
        tenancy: sluice_cluster::TenancyConfig {
            auth: sluice_cluster::AuthMode::Token,
            tenants_dir: dir.join("tenants"),
            policies_dir: dir.join("policies"),
        },
        slot_timeout: Duration::from_secs(60),
        heartbeat_timeout: Duration::from_secs(10),
        peer_timeout: sluice_transport::DEFAULT_PEER_TIMEOUT,
        restart: RestartStrategy::None,
        base_dir: None,
        checkpoint_storage: "memory://".into(),
        checkpoint_interval: None,
        checkpoint_defaults: sluice_coord::CheckpointConfig::default(),
        jobstore_max_capacity: 1000,
        jobstore_expiration: Duration::from_secs(3600),
        join_token_ttl: None,
        compiler: sluice_wasm::Compiler::InProcess,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let result = sluice_cluster::server::run(config, move |e| {
            let _ = tx.send(e.clone());
        })
        .await;
        if let Err(e) = result {
            panic!("the JobManager stopped: {e:#}");
        }
    });
    rx.await.expect("the JobManager started")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taskmanager_of_another_protocol_version_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = start_jobmanager(dir.path()).await;
    // A member certificate from the same CA, as a joined TaskManager has.
    let ca = ClusterCa::load_or_create(&dir.path().join("tls")).expect("ca");
    let id = ca.issue("old taskmanager").expect("issue");
    let conn = connect_as(&id, endpoints.rpc).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let hello = Hello {
        protocol: PROTOCOL_VERSION + 1,
        version: "9.9.9".into(),
        slots: 1,
        data_port: 1,
        name: "old".into(),
    };
    frame::write(&mut send, &hello).await.expect("hello");
    match frame::read::<Welcome>(&mut recv).await.expect("answer") {
        Some(Welcome::Refused(reason)) => {
            assert!(reason.contains("protocol version mismatch"), "{reason}");
            assert!(reason.contains("9.9.9"), "{reason}");
            assert!(
                reason.contains(&format!("speaks {}", PROTOCOL_VERSION + 1)),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The same certificate with the right version registers.
    let conn = connect_as(&id, endpoints.rpc).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    frame::write(
        &mut send,
        &Hello {
            protocol: PROTOCOL_VERSION,
            ..hello
        },
    )
    .await
    .expect("hello");
    let welcome = frame::read::<Welcome>(&mut recv).await.expect("answer");
    assert!(
        matches!(welcome, Some(Welcome::Accepted { .. })),
        "{welcome:?}"
    );
    // Nothing to deploy yet: the stream stays open and quiet.
    let quiet = tokio::time::timeout(
        Duration::from_millis(200),
        frame::read::<ToTaskManager>(&mut recv),
    )
    .await;
    assert!(quiet.is_err(), "unexpected message {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_the_wrong_secret_is_refused_and_an_oversized_request_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = start_jobmanager(dir.path()).await;
    let token: JoinToken = endpoints.token.parse().expect("token");
    let join = || join_connection(&endpoints, &token);
    let conn = join().await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let request = JoinRequest {
        protocol: PROTOCOL_VERSION,
        secret: [0; 16],
        name: "intruder".into(),
    };
    frame::write(&mut send, &request).await.expect("request");
    match frame::read::<JoinResponse>(&mut recv)
        .await
        .expect("answer")
    {
        Some(JoinResponse::Refused(reason)) => {
            assert!(reason.contains("not this cluster's"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A joiner cannot make the JobManager buffer a large request.
    let conn = join().await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let huge = JoinRequest {
        name: "x".repeat(1 << 20),
        ..request.clone()
    };
    let _ = frame::write(&mut send, &huge).await;
    let answer = frame::read::<JoinResponse>(&mut recv).await;
    assert!(
        !matches!(answer, Ok(Some(_))),
        "an oversized join request got an answer: {answer:?}"
    );
    // The right secret gets a certificate from this cluster's CA.
    let conn = join().await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let good = JoinRequest {
        protocol: PROTOCOL_VERSION,
        secret: token.secret,
        name: "tm".into(),
    };
    frame::write(&mut send, &good).await.expect("request");
    match frame::read::<JoinResponse>(&mut recv)
        .await
        .expect("answer")
    {
        Some(JoinResponse::Issued { ca, .. }) => {
            let ours = ClusterCa::load_or_create(&dir.path().join("tls")).expect("ca");
            assert_eq!(ca, ours.certificate().to_vec());
        }
        other => panic!("expected a certificate, got {other:?}"),
    }
}

/// A connection to the JobManager's join service, trusting its CA by the
/// token's fingerprint.
async fn join_connection(endpoints: &Endpoints, token: &JoinToken) -> quinn::Connection {
    let endpoint =
        sluice_transport::bind("127.0.0.1:0".parse().expect("addr"), None).expect("bind");
    endpoint
        .connect_with(
            sluice_transport::join_client_config(
                token.ca_fingerprint,
                sluice_transport::DEFAULT_PEER_TIMEOUT,
            )
            .expect("config"),
            endpoints.rpc,
            sluice_transport::server_name(),
        )
        .expect("connect")
        .await
        .expect("handshake")
}

/// A cluster connection to `to` presenting `id`'s certificate.
async fn connect_as(
    id: &sluice_transport::Identity,
    to: std::net::SocketAddr,
) -> quinn::Connection {
    let mut endpoint =
        sluice_transport::bind("127.0.0.1:0".parse().expect("addr"), None).expect("bind");
    endpoint.set_default_client_config(
        sluice_transport::client_config(id, sluice_transport::DEFAULT_PEER_TIMEOUT)
            .expect("config"),
    );
    endpoint
        .connect(to, sluice_transport::server_name())
        .expect("connect")
        .await
        .expect("handshake")
}

/// Says hello to a TaskManager's data endpoint as a peer presenting `id`'s
/// certificate; the TaskManager's answer and the connection.
async fn peer_hello(
    id: &sluice_transport::Identity,
    to: std::net::SocketAddr,
) -> (Option<PeerAnswer>, quinn::Connection) {
    let conn = connect_as(id, to).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    frame::write(
        &mut send,
        &PeerHello {
            protocol: PROTOCOL_VERSION,
            id: "intruder".into(),
        },
    )
    .await
    .expect("hello");
    let _ = send.finish();
    (frame::read(&mut recv).await.expect("answer"), conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_certificate_is_dropped_and_refused_by_the_other_taskmanagers_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jm = dir.path().join("jm");
    let endpoints = start_jobmanager(&jm).await;
    // A real TaskManager, joined with the JobManager's token.
    let token: JoinToken = endpoints.token.parse().expect("token");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = sluice_cluster::TaskManagerConfig {
        jobmanager: endpoints.rpc.to_string(),
        slots: 1,
        rpc_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("tm"),
        token: Some(token),
        base_dir: None,
        metrics_addrs: Vec::new(),
        cores: None,
        compiler: sluice_wasm::Compiler::InProcess,
        peer_timeout: sluice_transport::DEFAULT_PEER_TIMEOUT,
    };
    tokio::spawn(sluice_cluster::taskmanager::run(config, move |e| {
        let _ = tx.send(e.rpc);
    }));
    let tm = rx.await.expect("the TaskManager started");
    // Another member certificate, as a second TaskManager would hold;
    // registered, so the JobManager records it.
    let ca = ClusterCa::load_or_create(&jm.join("tls")).expect("ca");
    let intruder = ca.issue("intruder").expect("issue");
    let control = connect_as(&intruder, endpoints.rpc).await;
    let (mut send, mut recv) = control.open_bi().await.expect("stream");
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
        slots: 1,
        data_port: 1,
        name: "intruder".into(),
    };
    frame::write(&mut send, &hello).await.expect("hello");
    let welcome = frame::read::<Welcome>(&mut recv).await.expect("answer");
    assert!(
        matches!(&welcome, Some(Welcome::Accepted { revoked, .. }) if revoked.is_empty()),
        "{welcome:?}"
    );
    // While it is a member, the TaskManager takes it as a data-plane peer.
    let (answer, peer) = peer_hello(&intruder, tm).await;
    assert_eq!(answer, Some(PeerAnswer::Accepted));

    // An admin removes its certificate.
    let fingerprint = hex::encode(sluice_transport::pki::fingerprint(&intruder.cert));
    let credentials = std::fs::read_to_string(jm.join("credentials")).expect("credentials");
    let admin = credentials
        .lines()
        .find_map(|l| l.strip_prefix("token = \"")?.strip_suffix('"'))
        .expect("the admin token");
    let http = reqwest::Client::new();
    let removed = http
        .delete(format!(
            "http://{}/v1/certificates/{}",
            endpoints.rest,
            &fingerprint[..16]
        ))
        .bearer_auth(admin)
        .send()
        .await
        .expect("remove");
    assert_eq!(removed.status(), 200);
    // The JobManager and the TaskManager both close their connections...
    for (what, conn) in [("JobManager", &control), ("TaskManager", &peer)] {
        match tokio::time::timeout(Duration::from_secs(60), conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
                assert!(
                    String::from_utf8_lossy(&close.reason).contains("certificate removed"),
                    "{what}: {close:?}"
                );
            }
            other => panic!("the {what} did not close the connection: {other:?}"),
        }
    }
    // ...and the TaskManager refuses it as a peer from now on.
    let (answer, _) = peer_hello(&intruder, tm).await;
    match answer {
        Some(PeerAnswer::Refused(why)) => {
            assert!(why.contains("certificate was removed"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_that_says_nothing_is_disconnected_and_others_still_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = start_jobmanager(dir.path()).await;
    let token: JoinToken = endpoints.token.parse().expect("token");
    let join = || join_connection(&endpoints, &token);
    // Many silent joiners: each handshakes and then sends no request.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(join().await);
    }
    // An honest joiner meanwhile gets its certificate.
    let conn = join().await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let good = JoinRequest {
        protocol: PROTOCOL_VERSION,
        secret: token.secret,
        name: "tm".into(),
    };
    frame::write(&mut send, &good).await.expect("request");
    let answer = frame::read::<JoinResponse>(&mut recv)
        .await
        .expect("answer");
    assert!(
        matches!(answer, Some(JoinResponse::Issued { .. })),
        "{answer:?}"
    );
    // The silent ones are closed by the JobManager, saying why.
    for conn in silent {
        match tokio::time::timeout(Duration::from_secs(120), conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(close)) => assert!(
                String::from_utf8_lossy(&close.reason).contains("did not finish in time"),
                "{close:?}"
            ),
            other => panic!("a silent joiner was not disconnected: {other:?}"),
        }
    }
}
