//! QUIC endpoints with mutual TLS against the cluster CA.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ClientConfig, Endpoint, EndpointConfig, ServerConfig, TransportConfig, VarInt};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::pki::{CLUSTER_SERVER_NAME, Identity, fingerprint};

/// ALPN of cluster members (mutual TLS).
pub const ALPN_CLUSTER: &[u8] = b"sluice/1";
/// ALPN of a TaskManager joining with a token (server-authenticated only).
pub const ALPN_JOIN: &[u8] = b"sluice-join/1";

/// How long a silent peer is kept by default: a killed or cut-off process
/// is noticed within this time, because keep-alives (every fifth of it)
/// make silence mean death. A connection uses the smaller of its two ends'
/// timeouts; QUIC never lets it fall below three probe timeouts, so a
/// congested path stretches it instead of losing the peer.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest peer timeout accepted: below it, a busy machine's
/// scheduling delays would pass for deaths.
pub const MIN_PEER_TIMEOUT: Duration = Duration::from_millis(250);
/// The longest (QUIC's limit is far above; a peer silent for longer is
/// not coming back in time for its tasks).
pub const MAX_PEER_TIMEOUT: Duration = Duration::from_secs(600);
/// Socket buffers: the default ~200 KiB lost datagrams under load here.
const SOCKET_BUFFER: usize = 4 << 20;

/// A transport setup problem.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The TLS configuration was refused (a bad certificate or key).
    #[error("TLS setup failed: {0}")]
    Tls(rustls::Error),
    /// The CA certificate cannot be used as a trust anchor.
    #[error("the cluster CA certificate is unusable: {0}")]
    Ca(String),
    /// The UDP socket could not be opened.
    #[error("cannot open UDP {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        error: std::io::Error,
    },
}

impl From<rustls::Error> for EndpointError {
    fn from(e: rustls::Error) -> Self {
        EndpointError::Tls(e)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(peer_timeout: Duration) -> Arc<TransportConfig> {
    let peer_timeout = peer_timeout.clamp(MIN_PEER_TIMEOUT, MAX_PEER_TIMEOUT);
    let mut t = TransportConfig::default();
    // One stream per data channel: a job at parallelism 64 with a hash
    // edge has 4096 channels, most of them between two TaskManagers.
    t.max_concurrent_uni_streams(VarInt::from_u32(16_384));
    t.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    t.keep_alive_interval(Some(peer_timeout / 5));
    t.max_idle_timeout(Some(
        peer_timeout
            .try_into()
            .expect("invariant: MAX_PEER_TIMEOUT fits QUIC's range"),
    ));
    Arc::new(t)
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, EndpointError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| EndpointError::Ca(e.to_string()))?;
    Ok(Arc::new(roots))
}

/// The server side; a client silent for `peer_timeout` is lost. With `allow_join`, clients without a certificate may
/// connect with [`ALPN_JOIN`] (the caller must then only let them join);
/// a client that presents a certificate from another CA is refused either way.
pub fn server_config(
    id: &Identity,
    allow_join: bool,
    peer_timeout: Duration,
) -> Result<ServerConfig, EndpointError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&id.ca)?, provider.clone());
    let verifier = if allow_join {
        verifier.allow_unauthenticated()
    } else {
        verifier
    }
    .build()
    .map_err(|e| EndpointError::Ca(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        // The CA goes with the leaf so that a joiner can pin it.
        .with_single_cert(vec![id.cert.clone(), id.ca.clone()], id.private_key())?;
    tls.alpn_protocols = vec![ALPN_CLUSTER.to_vec()];
    if allow_join {
        tls.alpn_protocols.push(ALPN_JOIN.to_vec());
    }
    let quic = QuicServerConfig::try_from(tls).map_err(|e| EndpointError::Ca(e.to_string()))?;
    let mut config = ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport(peer_timeout));
    Ok(config)
}

/// The client side of a cluster member; a server silent for
/// `peer_timeout` is lost.
pub fn client_config(id: &Identity, peer_timeout: Duration) -> Result<ClientConfig, EndpointError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&id.ca)?)
        .with_client_auth_cert(vec![id.cert.clone()], id.private_key())?;
    tls.alpn_protocols = vec![ALPN_CLUSTER.to_vec()];
    finish_client(tls, peer_timeout)
}

/// The client side of a joiner: no certificate of its own, and it trusts a
/// server only if the server's chain ends in the CA whose fingerprint the
/// join token carries.
pub fn join_client_config(
    ca_fingerprint: [u8; 32],
    peer_timeout: Duration,
) -> Result<ClientConfig, EndpointError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint: ca_fingerprint,
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    finish_client(tls, peer_timeout)
}

fn finish_client(
    tls: rustls::ClientConfig,
    peer_timeout: Duration,
) -> Result<ClientConfig, EndpointError> {
    let quic = QuicClientConfig::try_from(tls).map_err(|e| EndpointError::Ca(e.to_string()))?;
    let mut config = ClientConfig::new(Arc::new(quic));
    config.transport_config(transport(peer_timeout));
    Ok(config)
}

/// Opens a QUIC endpoint on `addr` (server if `server` is given) with
/// large socket buffers.
pub fn bind(addr: SocketAddr, server: Option<ServerConfig>) -> Result<Endpoint, EndpointError> {
    let bind_err = |error| EndpointError::Bind { addr, error };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_err)?;
    // Best effort: the kernel caps these at its own limits.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into()).map_err(bind_err)?;
    let socket: UdpSocket = socket.into();
    let runtime = quinn::default_runtime().ok_or_else(|| {
        bind_err(std::io::Error::other(
            "no async runtime: endpoints must be opened inside tokio",
        ))
    })?;
    Endpoint::new(EndpointConfig::default(), server, socket, runtime).map_err(bind_err)
}

/// SHA-256 of the certificate the other side of a connection presented
/// in its TLS handshake (every cluster connection but a join has one).
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(fingerprint)
}

/// The server name every cluster connection uses (see [`CLUSTER_SERVER_NAME`]).
pub fn server_name() -> &'static str {
    CLUSTER_SERVER_NAME
}

/// Verifies a server against a CA known only by its fingerprint: the
/// server sends the CA as the last certificate of its chain.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
