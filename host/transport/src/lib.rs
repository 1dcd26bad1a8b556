//! How cluster processes reach each other: the cluster CA and the
//! certificates it issues ([`pki`]), QUIC endpoints with mutual TLS
//! ([`endpoint`]) and length-prefixed postcard frames on QUIC streams
//! ([`frame`]).
//!
//! This crate knows nothing of jobs or tasks; the wire messages live with
//! the drivers that speak them (`sluice-cluster`).

#![warn(missing_docs)]

pub mod endpoint;
pub mod frame;
pub mod pki;

pub use endpoint::{
    ALPN_CLUSTER, ALPN_JOIN, DEFAULT_PEER_TIMEOUT, EndpointError, MAX_PEER_TIMEOUT,
    MIN_PEER_TIMEOUT, bind, client_config, join_client_config, peer_fingerprint, server_config,
    server_name,
};
pub use frame::FrameError;
pub use pki::{ClusterCa, Identity, JoinToken, PkiError, write_private};
