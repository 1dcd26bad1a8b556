//! Keep-alives and the peer timeout, through a UDP relay the test can cut
//! (a dead host or a cut network looks like this: no close, only silence).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quinn::{Connection, ConnectionError, Endpoint};
use sluice_transport::{ClusterCa, Identity};
use tokio::net::UdpSocket;

/// Forwards datagrams between one client and `server` until cut.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

async fn relay(server: SocketAddr) -> Relay {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let addr = front.local_addr().expect("addr");
    let cut = Arc::new(AtomicBool::new(false));
    let (client_tx, mut client_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
    {
        let (front, back, cut) = (front.clone(), back.clone(), cut.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                let _ = client_tx.send(Some(from));
                if !cut.load(Ordering::SeqCst) {
                    let _ = back.send_to(&buf[..n], server).await;
                }
            }
        });
    }
    {
        let cut = cut.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = back.recv_from(&mut buf).await {
                let client = *client_rx.borrow_and_update();
                if let Some(client) = client
                    && !cut.load(Ordering::SeqCst)
                {
                    let _ = front.send_to(&buf[..n], client).await;
                }
            }
        });
    }
    Relay { addr, cut }
}

fn identities() -> (tempfile::TempDir, Identity, Identity) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::load_or_create(dir.path()).expect("ca");
    let (a, b) = (
        ca.issue("server").expect("id"),
        ca.issue("client").expect("id"),
    );
    (dir, a, b)
}

/// Both endpoints (kept open), the server's side of the connection, the
/// client's side, and the relay between them.
type Connected = ((Endpoint, Endpoint), Connection, Connection, Relay);

/// A server with `server_timeout` and a client with `client_timeout`,
/// connected through a relay.
async fn connected(server_timeout: Duration, client_timeout: Duration) -> Connected {
    let (_dir, server_id, client_id) = identities();
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server = sluice_transport::bind(
        loopback,
        Some(sluice_transport::server_config(&server_id, false, server_timeout).expect("config")),
    )
    .expect("bind");
    let relay = relay(server.local_addr().expect("addr")).await;
    let mut client = sluice_transport::bind(loopback, None).expect("bind");
    client.set_default_client_config(
        sluice_transport::client_config(&client_id, client_timeout).expect("config"),
    );
    let connecting = client
        .connect(relay.addr, sluice_transport::server_name())
        .expect("connect");
    // The server must accept while the client's handshake is under way.
    let accepting = async { server.accept().await.expect("an incoming connection").await };
    let (client_side, server_side) = tokio::join!(connecting, accepting);
    let client_side = client_side.expect("the client's handshake");
    let server_side = server_side.expect("the server's handshake");
    ((server, client), server_side, client_side, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_between_live_peers_outlives_many_timeouts() {
    let timeout = Duration::from_millis(500);
    let (_endpoints, server_side, client_side, _relay) = connected(timeout, timeout).await;
    // Nothing but keep-alives crosses for six timeouts: the idle time is
    // what is under test here, not a wait for something to happen.
    tokio::time::sleep(timeout * 6).await;
    assert!(
        server_side.close_reason().is_none(),
        "{:?}",
        server_side.close_reason()
    );
    assert!(
        client_side.close_reason().is_none(),
        "{:?}",
        client_side.close_reason()
    );
    // And it still carries data.
    let mut send = client_side.open_uni().await.expect("stream");
    send.write_all(b"still here").await.expect("write");
    send.finish().expect("finish");
    let mut recv = server_side.accept_uni().await.expect("stream");
    let got = recv.read_to_end(64).await.expect("read");
    assert_eq!(got, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_lost_by_timeout_at_the_shorter_of_both_ends() {
    // The server alone would wait ten minutes; the client's 300 ms governs
    // the connection for both sides.
    let (_endpoints, server_side, client_side, relay) = connected(
        sluice_transport::MAX_PEER_TIMEOUT,
        Duration::from_millis(300),
    )
    .await;
    relay.cut.store(true, Ordering::SeqCst);
    // A guard far below the server's own ten minutes, far above 300 ms.
    let guard = Duration::from_secs(60);
    for (side, conn) in [("server", &server_side), ("client", &client_side)] {
        let reason = tokio::time::timeout(guard, conn.closed())
            .await
            .unwrap_or_else(|_| panic!("the {side} still holds a silent peer after {guard:?}"));
        assert!(
            matches!(reason, ConnectionError::TimedOut),
            "the {side}'s connection ended otherwise: {reason}"
        );
    }
}

#[test]
fn out_of_range_timeouts_are_clamped_not_refused() {
    // Library callers may pass any duration; the CLI refuses out-of-range
    // ones with a message (tested with the CLI).
    let (_dir, id, _) = identities();
    for t in [Duration::ZERO, Duration::from_secs(u64::MAX / 2)] {
        sluice_transport::server_config(&id, false, t).expect("clamped");
        sluice_transport::client_config(&id, t).expect("clamped");
    }
}
