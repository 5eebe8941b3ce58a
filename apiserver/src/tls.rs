//! TLS on the API port: the serving certificate and the CA that client certificates must be
//! signed by, read from the files named by `--tls-cert-file`, `--tls-private-key-file` and
//! `--client-ca-file`, or taken from a PKI the server creates once under `<data-dir>/pki`
//! (`--tls`): a CA, a serving certificate it signs, and an admin client certificate.
//!
//! Client certificates are optional at the TLS layer so that bearer-token users keep
//! working over TLS; one that is presented must chain to the client CA or the handshake
//! fails. Which user a verified certificate stands for is decided in [`crate::auth`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use x509_parser::extensions::GeneralName;

use crate::auth::write_file;

/// How the API port is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP (the default): tokens travel in clear text.
    #[default]
    Off,
    /// TLS with the PKI under `<data-dir>/pki`, created on first start (`--tls`).
    Generated {
        /// More CAs whose client certificates are accepted (`--client-ca-file`), besides
        /// the generated CA.
        client_ca: Option<PathBuf>,
    },
    /// TLS with the operator's files.
    Files {
        /// The serving certificate chain, PEM (`--tls-cert-file`).
        cert: PathBuf,
        /// Its private key, PEM (`--tls-private-key-file`).
        key: PathBuf,
        /// CAs whose client certificates are accepted, PEM (`--client-ca-file`); without
        /// it only bearer tokens authenticate.
        client_ca: Option<PathBuf>,
    },
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{what} {path}: {source}")]
    Read {
        /// The flag or PKI file it is (`--tls-cert-file`, `pki/ca.key`).
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{what} {path}: {reason}")]
    BadPem {
        /// The flag or PKI file it is.
        what: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The CA's certificate and key are not both there.
    #[error(
        "{present} exists but {missing} does not: restore it, or remove {dir} to create a new PKI (clients then need the new CA)"
    )]
    IncompleteCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
        /// The PKI directory.
        dir: PathBuf,
    },
    /// Generating a key or certificate failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the certificate, key or CA (for example a key that does not match
    /// the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The PKI files under `<data-dir>/pki`.
pub mod files {
    /// The CA certificate (clients trust it; it signs the others).
    pub const CA_CERT: &str = "ca.crt";
    /// The CA private key.
    pub const CA_KEY: &str = "ca.key";
    /// The API server's serving certificate.
    pub const SERVING_CERT: &str = "apiserver.crt";
    /// Its private key.
    pub const SERVING_KEY: &str = "apiserver.key";
    /// The admin client certificate (CN=admin, O=system:masters).
    pub const ADMIN_CERT: &str = "admin.crt";
    /// Its private key.
    pub const ADMIN_KEY: &str = "admin.key";
}

/// The CA lives long: replacing it means handing every client a new one.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Leaf certificates are reissued at start when they come close to expiring, so a year is
/// enough and limits what a leaked key is worth.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// A leaf expiring sooner than this is reissued at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// Backdating covers clients whose clocks are a little behind the server's.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The admin user a generated client certificate names.
pub const ADMIN_USER: &str = "admin";
/// The admin user's group.
pub const ADMIN_GROUP: &str = "system:masters";

/// The PKI a `--tls` server created (or found) under its data directory.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The directory.
    pub dir: PathBuf,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The admin client certificate, PEM.
    pub admin_cert_pem: String,
    /// The admin client key, PEM.
    pub admin_key_pem: String,
}

impl Pki {
    /// Creates what is missing of the PKI in `dir`: the CA once (it is kept across
    /// restarts), and a serving certificate for `hosts` and the admin client certificate,
    /// each reissued when missing, unreadable, expiring within 30 days, signed by another
    /// CA or (the serving one) not covering every host.
    pub fn ensure(dir: &Path, hosts: &[String]) -> Result<Pki, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let (ca_cert_path, ca_key_path) = (dir.join(files::CA_CERT), dir.join(files::CA_KEY));
        let (ca_pem, ca_key, ca_created) = match (ca_cert_path.exists(), ca_key_path.exists()) {
            (true, true) => {
                let cert = read_text(&ca_cert_path, "pki/ca.crt")?;
                let key = read_text(&ca_key_path, "pki/ca.key")?;
                let key = KeyPair::from_pem(&key).map_err(|e| TlsError::BadPem {
                    what: "pki/ca.key".into(),
                    path: ca_key_path.clone(),
                    reason: e.to_string(),
                })?;
                (cert, key, false)
            }
            (false, false) => {
                let (cert, key) = new_ca()?;
                write_file(&ca_key_path, &key.serialize_pem(), 0o600).map_err(write_err)?;
                write_file(&ca_cert_path, &cert, 0o644).map_err(write_err)?;
                tracing::info!(dir = %dir.display(), "created the cluster CA");
                (cert, key, true)
            }
            (cert, _) => {
                let (present, missing) = if cert {
                    (ca_cert_path, ca_key_path)
                } else {
                    (ca_key_path, ca_cert_path)
                };
                return Err(TlsError::IncompleteCa {
                    present,
                    missing,
                    dir: dir.to_path_buf(),
                });
            }
        };
        let ca_der = first_cert(ca_pem.as_bytes(), "pki/ca.crt", &ca_cert_path)?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key).map_err(|e| TlsError::BadPem {
            what: "pki/ca.crt".into(),
            path: ca_cert_path.clone(),
            reason: e.to_string(),
        })?;

        let serving = (dir.join(files::SERVING_CERT), dir.join(files::SERVING_KEY));
        if ca_created || !leaf_is_current(&serving.0, &serving.1, &ca_der, hosts) {
            let (cert, key) = new_leaf(&issuer, Leaf::Serving(hosts))?;
            write_file(&serving.1, &key, 0o600).map_err(write_err)?;
            write_file(&serving.0, &cert, 0o644).map_err(write_err)?;
            tracing::info!(?hosts, "issued the API server's serving certificate");
        }
        let admin = (dir.join(files::ADMIN_CERT), dir.join(files::ADMIN_KEY));
        if ca_created || !leaf_is_current(&admin.0, &admin.1, &ca_der, &[]) {
            let (cert, key) = new_leaf(&issuer, Leaf::Client(ADMIN_USER, Some(ADMIN_GROUP)))?;
            write_file(&admin.1, &key, 0o600).map_err(write_err)?;
            write_file(&admin.0, &cert, 0o644).map_err(write_err)?;
            tracing::info!("issued the admin client certificate");
        }
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            admin_cert_pem: read_text(&admin.0, "pki/admin.crt")?,
            admin_key_pem: read_text(&admin.1, "pki/admin.key")?,
        })
    }

    /// The serving certificate and key files.
    pub fn serving(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join(files::SERVING_CERT),
            self.dir.join(files::SERVING_KEY),
        )
    }
}

/// The TLS side of a server, ready to serve.
#[derive(Clone, Debug)]
pub struct ServingTls {
    /// tonic's configuration for the listener.
    pub config: ServerTlsConfig,
    /// The generated PKI (`--tls` without files), which admin.yaml draws on.
    pub pki: Option<Pki>,
    /// Whether client certificates are verified (a client CA is configured).
    pub client_certificates: bool,
}

/// The serving identity and client CA for `mode`, checked now so that a bad file stops the
/// server at start with the flag named, not at the first handshake. `hosts` are the names
/// and addresses a generated serving certificate must cover. `None` when TLS is off.
pub fn load(
    mode: &TlsMode,
    data_dir: &Path,
    hosts: &[String],
) -> Result<Option<ServingTls>, TlsError> {
    let (cert, key, extra_ca, pki) = match mode {
        TlsMode::Off => return Ok(None),
        TlsMode::Generated { client_ca } => {
            let pki = Pki::ensure(&data_dir.join("pki"), hosts)?;
            let (cert, key) = pki.serving();
            (
                (cert, "pki/apiserver.crt"),
                (key, "pki/apiserver.key"),
                client_ca.clone(),
                Some(pki),
            )
        }
        TlsMode::Files {
            cert,
            key,
            client_ca,
        } => (
            (cert.clone(), "--tls-cert-file"),
            (key.clone(), "--tls-private-key-file"),
            client_ca.clone(),
            None,
        ),
    };
    let cert_pem = read_bytes(&cert.0, cert.1)?;
    certs(&cert_pem, cert.1, &cert.0)?;
    let key_pem = read_bytes(&key.0, key.1)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadPem {
        what: key.1.into(),
        path: key.0.clone(),
        reason: pem_reason(e, "private key"),
    })?;

    // One bundle holds every CA whose client certificates are accepted.
    let mut client_ca = pki.as_ref().map(|p| p.ca_pem.clone().into_bytes());
    if let Some(path) = &extra_ca {
        let pem = read_bytes(path, "--client-ca-file")?;
        certs(&pem, "--client-ca-file", path)?;
        let bundle = client_ca.get_or_insert_with(Vec::new);
        if !bundle.is_empty() && !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(&pem);
    }
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        // A client that stalls the handshake must not hold a connection slot for ever.
        .timeout(Duration::from_secs(10));
    let client_certificates = client_ca.is_some();
    if let Some(bundle) = client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(bundle))
            .client_auth_optional(true);
    }
    // Build the acceptor once here: rustls checks that the key matches the certificate.
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|e| TlsError::Config(error_chain(&e)))?;
    Ok(Some(ServingTls {
        config,
        pki,
        client_certificates,
    }))
}

/// The names a generated serving certificate covers: loopback (what in-process clients
/// use), the listen address unless it is a wildcard, and the host of the advertised URL.
pub fn serving_hosts(listen: IpAddr, advertise_host: Option<&str>) -> Vec<String> {
    let mut hosts: Vec<String> = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
    let mut add = |h: String| {
        if !h.is_empty() && !hosts.contains(&h) {
            hosts.push(h);
        }
    };
    if !listen.is_unspecified() {
        add(listen.to_string());
    }
    if let Some(h) = advertise_host {
        add(h.trim_start_matches('[').trim_end_matches(']').to_string());
    }
    hosts
}

enum Leaf<'a> {
    Serving(&'a [String]),
    Client(&'a str, Option<&'a str>),
}

fn new_ca() -> Result<(String, KeyPair), TlsError> {
    let generate = |source| TlsError::Generate {
        what: "the cluster CA",
        source,
    };
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // A name of its own, so that two clusters' CAs are told apart in a bundle and in
    // handshake errors (UnknownIssuer rather than BadSignature).
    let suffix: u32 = rand::random();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("flotilla-ca-{suffix:08x}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok((cert.pem(), key))
}

fn new_leaf(issuer: &Issuer<'_, &KeyPair>, leaf: Leaf<'_>) -> Result<(String, String), TlsError> {
    let what = match leaf {
        Leaf::Serving(_) => "the serving certificate",
        Leaf::Client(..) => "a client certificate",
    };
    let generate = |source| TlsError::Generate { what, source };
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    match leaf {
        Leaf::Serving(hosts) => {
            params
                .distinguished_name
                .push(DnType::CommonName, "flotilla-apiserver");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            for h in hosts {
                params.subject_alt_names.push(match h.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(h.clone().try_into().map_err(generate)?),
                });
            }
        }
        Leaf::Client(user, group) => {
            if !user.is_empty() {
                params.distinguished_name.push(DnType::CommonName, user);
            }
            if let Some(g) = group {
                params.distinguished_name.push(DnType::OrganizationName, g);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    validity(&mut params, LEAF_VALIDITY)?;
    let cert = params.signed_by(&key, issuer).map_err(generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a client certificate for `user` in `group` (an empty `user` leaves the CN out),
/// signed by the CA in `ca_cert_pem` and `ca_key_pem`: (certificate, key), PEM. For tests
/// and tools; rcgen writes one value per subject attribute, so one group at most: operators
/// use openssl as README shows, with as many O values as groups.
pub fn issue_client_certificate(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    user: &str,
    group: Option<&str>,
) -> Result<(String, String), TlsError> {
    let bad = |what: &str, e: String| TlsError::BadPem {
        what: what.into(),
        path: PathBuf::new(),
        reason: e,
    };
    let key = KeyPair::from_pem(ca_key_pem).map_err(|e| bad("CA key", e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, &key)
        .map_err(|e| bad("CA certificate", e.to_string()))?;
    new_leaf(&issuer, Leaf::Client(user, group))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) -> Result<(), TlsError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let at = |secs: i64| {
        x509_parser::time::ASN1Time::from_timestamp(secs)
            .map(|t| t.to_datetime())
            .map_err(|e| TlsError::Config(format!("certificate validity: {e}")))
    };
    params.not_before = at(now - BACKDATE.as_secs() as i64)?;
    params.not_after = at(now + lifetime.as_secs() as i64)?;
    Ok(())
}

/// Whether the leaf at `cert`/`key` can be kept: both readable, signed by `ca`, valid for
/// at least [`RENEW_BEFORE`], and naming every one of `hosts`.
fn leaf_is_current(cert: &Path, key: &Path, ca: &CertificateDer<'_>, hosts: &[String]) -> bool {
    let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read(cert), std::fs::read(key)) else {
        return false;
    };
    if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
        return false;
    }
    let Ok(der) = CertificateDer::from_pem_slice(&cert_pem) else {
        return false;
    };
    let (Ok((_, leaf)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(&der),
        x509_parser::parse_x509_certificate(ca),
    ) else {
        return false;
    };
    if leaf.verify_signature(Some(ca.public_key())).is_err() {
        return false;
    }
    let renew_at = x509_parser::time::ASN1Time::now().timestamp() + RENEW_BEFORE.as_secs() as i64;
    if leaf.validity().not_after.timestamp() < renew_at {
        return false;
    }
    let names: Vec<String> = match leaf.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                GeneralName::IPAddress(b) => ip_from_bytes(b).map(|ip| ip.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    hosts.iter().all(|h| {
        let h = h
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|_| h.clone());
        names.contains(&h)
    })
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what: what.into(),
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path, what: &str) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        what: what.into(),
        path: path.to_path_buf(),
        source,
    })
}

fn write_err(e: crate::auth::TokenFileError) -> TlsError {
    match e {
        crate::auth::TokenFileError::Io { path, source } => TlsError::Write {
            path: path.into(),
            source,
        },
        other => TlsError::Config(other.to_string()),
    }
}

/// Every certificate of a PEM bundle, each checked to be X.509.
fn certs(pem: &[u8], what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::BadPem {
        what: what.into(),
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_reason(e, "certificate")))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| bad(format!("certificate {} is not valid X.509: {e}", i + 1)))?;
    }
    Ok(certs)
}

fn first_cert(pem: &[u8], what: &str, path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    certs(pem, what, path).map(|mut c| c.swap_remove(0))
}

fn pem_reason(e: rustls::pki_types::pem::Error, what: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!("no PEM {what} found"),
        other => format!("not valid PEM: {other}"),
    }
}

/// An error and its causes on one line (tonic's own message is only the outermost).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cur = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn hosts() -> Vec<String> {
        serving_hosts("127.0.0.1".parse().expect("ip"), Some("flotilla.example"))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn the_pki_is_created_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        let first = Pki::ensure(&pki_dir, &hosts()).expect("created");
        for f in [files::CA_KEY, files::SERVING_KEY, files::ADMIN_KEY] {
            assert_eq!(mode(&pki_dir.join(f)), 0o600, "{f}");
        }
        let serving = std::fs::read(pki_dir.join(files::SERVING_CERT)).expect("serving");
        let again = Pki::ensure(&pki_dir, &hosts()).expect("loaded");
        assert_eq!(first.ca_pem, again.ca_pem, "the CA is kept");
        assert_eq!(
            first.admin_cert_pem, again.admin_cert_pem,
            "the admin cert is kept"
        );
        assert_eq!(
            serving,
            std::fs::read(pki_dir.join(files::SERVING_CERT)).expect("serving"),
            "the serving cert is kept while it covers the hosts"
        );

        // A new advertised host: same CA, a new serving certificate naming it.
        let more = serving_hosts("127.0.0.1".parse().expect("ip"), Some("10.1.2.3"));
        let third = Pki::ensure(&pki_dir, &more).expect("reissued");
        assert_eq!(first.ca_pem, third.ca_pem);
        let pem = std::fs::read(pki_dir.join(files::SERVING_CERT)).expect("serving");
        assert_ne!(serving, pem);
        let der = CertificateDer::from_pem_slice(&pem).expect("pem");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let san = cert
            .subject_alternative_name()
            .expect("parses")
            .expect("has SANs");
        let ips: Vec<IpAddr> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::IPAddress(b) => ip_from_bytes(b),
                _ => None,
            })
            .collect();
        for ip in ["127.0.0.1", "::1", "10.1.2.3"] {
            assert!(ips.contains(&ip.parse().expect("ip")), "{ip} in {ips:?}");
        }
    }

    #[test]
    fn the_admin_certificate_names_admin_in_system_masters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::ensure(dir.path(), &hosts()).expect("created");
        let der = CertificateDer::from_pem_slice(pki.admin_cert_pem.as_bytes()).expect("pem");
        let user = crate::auth::user_from_certificate(&der).expect("a user");
        assert_eq!(user.name, "admin");
        assert_eq!(user.groups, vec!["system:masters".to_string()]);
    }

    #[test]
    fn a_ca_without_its_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        Pki::ensure(dir.path(), &hosts()).expect("created");
        std::fs::remove_file(dir.path().join(files::CA_KEY)).expect("rm");
        let e = Pki::ensure(dir.path(), &hosts()).expect_err("incomplete CA");
        assert!(matches!(e, TlsError::IncompleteCa { .. }), "{e}");
        assert!(e.to_string().contains("ca.key"), "{e}");
    }

    #[test]
    fn bad_files_are_named_by_their_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::ensure(&dir.path().join("pki"), &hosts()).expect("created");
        let (cert, key) = pki.serving();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let files = |cert: &Path, key: &Path| TlsMode::Files {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        };
        let e = load(&files(&junk, &key), dir.path(), &[]).expect_err("no cert");
        assert!(e.to_string().starts_with("--tls-cert-file"), "{e}");
        let e = load(&files(&cert, &junk), dir.path(), &[]).expect_err("no key");
        assert!(e.to_string().starts_with("--tls-private-key-file"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = load(&files(&missing, &key), dir.path(), &[]).expect_err("no file");
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        // The admin key does not match the serving certificate.
        let admin_key = dir.path().join("pki").join(files::ADMIN_KEY);
        let e = load(&files(&cert, &admin_key), dir.path(), &[]).expect_err("mismatch");
        assert!(matches!(e, TlsError::Config(_)), "{e}");
        let good = load(
            &TlsMode::Files {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: Some(dir.path().join("pki").join(files::CA_CERT)),
            },
            dir.path(),
            &[],
        )
        .expect("valid")
        .expect("TLS on");
        assert!(good.client_certificates && good.pki.is_none());
    }
}
