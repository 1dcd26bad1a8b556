//! The cluster CA: one self-signed authority per cluster, created by the
//! JobManager on its first start, and the identities it issues.
//!
//! Every process of a cluster holds a certificate from this CA and trusts
//! only this CA, so a process with any other certificate is refused by
//! every peer. TaskManagers get theirs by joining with a token (see
//! [`JoinToken`]) or from files an administrator copied.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The name every cluster certificate carries and every connection asks
/// for: peers are recognised by their CA, not by host names, so clusters
/// work across addresses, NAT and DNS changes.
pub const CLUSTER_SERVER_NAME: &str = "sluice-cluster";

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const CERT: &str = "cert.pem";
const KEY: &str = "key.pem";
const TOKEN: &str = "join-token";

/// A certificate or key problem.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written. Not retryable without a fix.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// A file holds something that is not a usable certificate or key.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Generating or signing failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(rcgen::Error),
    /// A join token is malformed.
    #[error(
        "malformed join token: {0} (expected `sluice1-<secret>-<ca fingerprint>`, as the JobManager printed it)"
    )]
    Token(&'static str),
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError::Generate(e)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |error| PkiError::Io {
        path: path.to_owned(),
        error,
    }
}

/// SHA-256 of a certificate's DER bytes, as lowercase hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// The parameters of the CA certificate. Issuing rebuilds the issuer from
/// these and the stored key, so they never change.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sluice");
    dn.push(DnType::CommonName, "Sluice cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The cluster's certificate authority.
pub struct ClusterCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl ClusterCa {
    /// Loads the CA from `dir`, creating it (and `dir`) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !cert_path.exists() {
            fs::create_dir_all(dir).map_err(io(dir))?;
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
            tracing::info!(dir = %dir.display(), "created the cluster CA");
        }
        let cert = read_cert(&cert_path)?;
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Invalid {
            path: key_path.clone(),
            what: format!("not a private key: {e}"),
        })?;
        Ok(ClusterCa {
            cert,
            issuer: Issuer::new(ca_params(), key),
        })
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Issues a certificate for one cluster process, usable as both TLS
    /// client and server.
    pub fn issue(&self, name: &str) -> Result<Identity, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Sluice");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(
            CLUSTER_SERVER_NAME
                .try_into()
                .expect("invariant: the cluster name is a valid DNS name"),
        )];
        params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            ca: self.cert.clone(),
            cert: cert.der().clone(),
            key: key.serialize_der(),
        })
    }

    /// The join token in `dir`, created on first use: TaskManagers present
    /// its secret to get a certificate, and check the JobManager against
    /// its CA fingerprint.
    pub fn join_token(&self, dir: &Path) -> Result<JoinToken, PkiError> {
        let path = dir.join(TOKEN);
        if !path.exists() {
            let token = JoinToken {
                secret: rand::random(),
                ca_fingerprint: fingerprint(&self.cert),
            };
            write_private(&path, token.to_string().as_bytes())?;
        }
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let token: JoinToken = text.trim().parse()?;
        if token.ca_fingerprint != fingerprint(&self.cert) {
            return Err(PkiError::Invalid {
                path,
                what: "the join token was made for another CA; delete it to make a new one".into(),
            });
        }
        Ok(token)
    }
}

/// A process's certificate and key, with the CA it trusts.
#[derive(Clone)]
pub struct Identity {
    /// The cluster CA certificate.
    pub ca: CertificateDer<'static>,
    /// This process's certificate, signed by the CA.
    pub cert: CertificateDer<'static>,
    /// Its private key, PKCS#8 DER.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("ca", &hex::encode(fingerprint(&self.ca)))
            .field("cert", &hex::encode(fingerprint(&self.cert)))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Whether `dir` holds a saved identity.
    pub fn exists(dir: &Path) -> bool {
        dir.join(CERT).exists()
    }

    /// Saves the identity as PEM files (`ca.pem`, `cert.pem`, `key.pem`).
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let pem = |label: &str, der: &[u8]| pem::encode(&pem::Pem::new(label, der.to_vec()));
        let ca = dir.join(CA_CERT);
        fs::write(&ca, pem("CERTIFICATE", &self.ca)).map_err(io(&ca))?;
        let cert = dir.join(CERT);
        fs::write(&cert, pem("CERTIFICATE", &self.cert)).map_err(io(&cert))?;
        write_private(&dir.join(KEY), pem("PRIVATE KEY", &self.key).as_bytes())
    }

    /// Loads an identity saved by [`Identity::save`] (or written by an
    /// administrator in the same layout).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let key_path = dir.join(KEY);
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| PkiError::Invalid {
            path: key_path.clone(),
            what: format!("not a PEM private key: {e}"),
        })?;
        Ok(Identity {
            ca: read_cert(&dir.join(CA_CERT))?,
            cert: read_cert(&dir.join(CERT))?,
            key: key.secret_der().to_vec(),
        })
    }

    /// The private key in rustls form.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone().into())
    }
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(error) => PkiError::Io {
            path: path.to_owned(),
            error,
        },
        e => PkiError::Invalid {
            path: path.to_owned(),
            what: format!("not a PEM certificate: {e}"),
        },
    })
}

/// Writes a secret (a key, a token) readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))
}

/// What a TaskManager needs to join: a shared secret, and the fingerprint
/// of the CA it must find at the JobManager before it sends the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct JoinToken {
    /// Proves to the JobManager that the joiner was given the token.
    pub secret: [u8; 16],
    /// SHA-256 of the CA certificate.
    pub ca_fingerprint: [u8; 32],
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_fingerprint", &hex::encode(self.ca_fingerprint))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sluice1-{}-{}",
            hex::encode(self.secret),
            hex::encode(self.ca_fingerprint)
        )
    }
}

impl std::str::FromStr for JoinToken {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("sluice1-")
            .ok_or(PkiError::Token("it does not start with `sluice1-`"))?;
        let (secret, fp) = rest
            .split_once('-')
            .ok_or(PkiError::Token("it has no CA fingerprint"))?;
        let mut token = JoinToken {
            secret: [0; 16],
            ca_fingerprint: [0; 32],
        };
        hex::decode_to_slice(secret, &mut token.secret)
            .map_err(|_| PkiError::Token("the secret is not 32 hex digits"))?;
        hex::decode_to_slice(fp, &mut token.ca_fingerprint)
            .map_err(|_| PkiError::Token("the CA fingerprint is not 64 hex digits"))?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_survives_a_restart_and_keeps_its_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::load_or_create(dir.path()).expect("create");
        let token = ca.join_token(dir.path()).expect("token");
        let again = ClusterCa::load_or_create(dir.path()).expect("load");
        assert_eq!(ca.certificate(), again.certificate());
        assert_eq!(again.join_token(dir.path()).expect("token"), token);
        assert_eq!(token.ca_fingerprint, fingerprint(again.certificate()));
    }

    #[test]
    fn identities_round_trip_through_pem_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::load_or_create(&dir.path().join("ca")).expect("create");
        let id = ca.issue("tm-1").expect("issue");
        id.save(&dir.path().join("tm")).expect("save");
        let loaded = Identity::load(&dir.path().join("tm")).expect("load");
        assert_eq!(loaded.cert, id.cert);
        assert_eq!(loaded.ca, id.ca);
        assert_eq!(loaded.key, id.key);
        // Two issues never share a certificate.
        assert_ne!(ca.issue("tm-1").expect("issue").cert, id.cert);
    }

    #[test]
    fn tokens_parse_and_reject_garbage() {
        let t = JoinToken {
            secret: [7; 16],
            ca_fingerprint: [9; 32],
        };
        assert_eq!(t.to_string().parse::<JoinToken>().expect("parse"), t);
        for bad in [
            "",
            "sluice1-",
            "sluice1-zz-00",
            "sluice2-00-00",
            "sluice1-0707-0909",
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn corrupt_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        ClusterCa::load_or_create(dir.path()).expect("create");
        fs::write(dir.path().join(CA_KEY), "not a key").expect("write");
        let err = ClusterCa::load_or_create(dir.path())
            .err()
            .expect("a corrupt key is refused");
        assert!(err.to_string().contains(CA_KEY), "{err}");
    }
}
