//! The JobManager's side of registration and joining, spoken to directly
//! over QUIC: what a TaskManager of another release or with a wrong token
//! is told.

use std::time::Duration;

use sluice_cluster::protocol::{
    Hello, JoinRequest, JoinResponse, PROTOCOL_VERSION, ToTaskManager, Welcome,
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
        restart: RestartStrategy::None,
        base_dir: None,
        checkpoint_storage: "memory://".into(),
        checkpoint_interval: None,
        checkpoint_defaults: sluice_coord::CheckpointConfig::default(),
        jobstore_max_capacity: 1000,
        jobstore_expiration: Duration::from_secs(3600),
        join_token_ttl: None,
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
    let mut endpoint =
        sluice_transport::bind("127.0.0.1:0".parse().expect("addr"), None).expect("bind");
    endpoint.set_default_client_config(sluice_transport::client_config(&id).expect("config"));
    let conn = endpoint
        .connect(endpoints.rpc, sluice_transport::server_name())
        .expect("connect")
        .await
        .expect("handshake");
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
    let conn = endpoint
        .connect(endpoints.rpc, sluice_transport::server_name())
        .expect("connect")
        .await
        .expect("handshake");
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
    let endpoint =
        sluice_transport::bind("127.0.0.1:0".parse().expect("addr"), None).expect("bind");
    let join = |endpoint: &quinn::Endpoint| {
        endpoint
            .connect_with(
                sluice_transport::join_client_config(token.ca_fingerprint).expect("config"),
                endpoints.rpc,
                sluice_transport::server_name(),
            )
            .expect("connect")
    };
    let conn = join(&endpoint).await.expect("handshake");
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
    let conn = join(&endpoint).await.expect("handshake");
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
    let conn = join(&endpoint).await.expect("handshake");
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
