//! TLS for `https://` servers: the kubeconfig's CA (else the system's root certificates),
//! its client certificate as the identity presented, and `insecure-skip-tls-verify`. Every
//! value is read and checked when the client is made, so a bad one is reported with its
//! kubeconfig field rather than as a failed handshake later.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::TlsConfigError;
use crate::kubeconfig::{PemSource, Resolved};

/// How long a TLS handshake may take before the connection attempt fails.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures `endpoint` for the https server of `resolved`.
pub(crate) fn configure(
    endpoint: Endpoint,
    resolved: &Resolved,
) -> Result<Endpoint, TlsConfigError> {
    let mut cfg = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
    // rustls wants a bare name or address; a URL's IPv6 host comes in brackets.
    if let Some(host) = endpoint.uri().host() {
        cfg = cfg.domain_name(host.trim_start_matches('[').trim_end_matches(']'));
    }
    match (&resolved.client_certificate, &resolved.client_key) {
        (Some(cert), Some(key)) => {
            let cert_pem = read(cert)?;
            check_certs(&cert_pem, cert.field())?;
            let key_pem = read(key)?;
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsConfigError::BadPem {
                field: key.field(),
                reason: pem_reason(e, "private key"),
            })?;
            cfg = cfg.identity(Identity::from_pem(cert_pem, key_pem));
        }
        (Some(cert), None) => {
            return Err(TlsConfigError::Unpaired {
                present: cert.field(),
                missing: "client-key",
            });
        }
        (None, Some(key)) => {
            return Err(TlsConfigError::Unpaired {
                present: key.field(),
                missing: "client-certificate",
            });
        }
        (None, None) => {}
    }
    let setup = |e: tonic::transport::Error| TlsConfigError::Setup(error_chain(&e));
    if resolved.insecure_skip_tls_verify {
        if let Some(ca) = &resolved.certificate_authority {
            return Err(TlsConfigError::InsecureWithCa { field: ca.field() });
        }
        let provider = CryptoProvider::get_default().cloned().unwrap_or_else(|| {
            // The provider tonic's tls-ring falls back to as well; rustls deprecates it
            // only for lacking post-quantum key exchange.
            #[allow(deprecated)]
            Arc::new(rustls::crypto::ring::default_provider())
        });
        return endpoint
            .tls_config_with_verifier(cfg, Arc::new(AcceptAnyServerCertificate(provider)))
            .map_err(setup);
    }
    cfg = match &resolved.certificate_authority {
        Some(ca) => {
            let pem = read(ca)?;
            check_certs(&pem, ca.field())?;
            cfg.ca_certificate(Certificate::from_pem(pem))
        }
        None => cfg.with_native_roots(),
    };
    endpoint.tls_config(cfg).map_err(|e| {
        let msg = error_chain(&e);
        if resolved.certificate_authority.is_none() && msg.contains("no native certs") {
            TlsConfigError::Setup(
                "no certificate-authority is given and no system root certificates were found"
                    .into(),
            )
        } else {
            TlsConfigError::Setup(msg)
        }
    })
}

fn read(src: &PemSource) -> Result<Vec<u8>, TlsConfigError> {
    match src {
        PemSource::File { field, path } => {
            std::fs::read(path).map_err(|e| TlsConfigError::Unreadable {
                field,
                path: path.clone(),
                reason: e.to_string(),
            })
        }
        PemSource::Data { field, base64 } => {
            // kubectl tolerates line breaks in pasted base64.
            let compact: String = base64.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| TlsConfigError::NotBase64 {
                    field,
                    reason: e.to_string(),
                })
        }
    }
}

fn check_certs(pem: &[u8], field: &'static str) -> Result<(), TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::BadPem {
            field,
            reason: pem_reason(e, "certificate"),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::BadPem {
            field,
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        });
    }
    Ok(())
}

fn pem_reason(e: rustls::pki_types::pem::Error, what: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!("no PEM {what} found"),
        other => format!("not valid PEM: {other}"),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
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

/// What a failed connection's message says about TLS, with what to check; `None` when
/// it is not a TLS failure. tonic hands connection errors over as text only (the rustls
/// error itself is dropped), so rustls' messages are matched.
pub(crate) fn explain_handshake_failure(message: &str) -> Option<String> {
    let hint = if message.contains("invalid peer certificate") {
        if message.contains("UnknownIssuer") || message.contains("BadSignature") {
            "the server's certificate is not signed by a CA this client trusts: check the cluster's certificate-authority(-data) in the kubeconfig"
        } else if message.contains("not valid for name") || message.contains("NotValidForName") {
            "the server's certificate does not name the host in the server URL"
        } else if message.contains("expired") || message.contains("Expired") {
            "the server's certificate has expired"
        } else {
            "the server's certificate was refused"
        }
    } else if message.contains("received fatal alert") {
        "the server refused the handshake: is the client certificate signed by a CA the server trusts?"
    } else if message.contains("received corrupt message") || message.contains("InvalidContentType")
    {
        "the server does not speak TLS here: is its URL http://?"
    } else if message.contains("HTTP/2 was not negotiated") {
        "the server did not offer HTTP/2 over TLS: is it a Flotilla API server?"
    } else if message.contains("peer is incompatible")
        || message.contains("peer misbehaved")
        || message.contains("TLS handshake timeout")
    {
        "the TLS handshake did not complete"
    } else {
        return None;
    };
    Some(format!("{message} ({hint})"))
}

/// The verifier behind `insecure-skip-tls-verify`: any server certificate is accepted,
/// but the handshake's signatures are still checked so the session keys are the server's.
#[derive(Debug)]
struct AcceptAnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(f: impl FnOnce(&mut Resolved)) -> Resolved {
        let mut r = Resolved {
            server: "https://127.0.0.1:6443".into(),
            source: "test.yaml".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    }

    fn endpoint() -> Endpoint {
        Endpoint::from_static("https://127.0.0.1:6443")
    }

    fn data(field: &'static str, text: &str) -> Option<PemSource> {
        Some(PemSource::Data {
            field,
            base64: base64::engine::general_purpose::STANDARD.encode(text),
        })
    }

    #[test]
    fn unusable_values_name_their_field() {
        let e = configure(
            endpoint(),
            &resolved(|r| r.certificate_authority = data("certificate-authority-data", "junk")),
        )
        .expect_err("no PEM");
        assert_eq!(
            e,
            TlsConfigError::BadPem {
                field: "certificate-authority-data",
                reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
            }
        );
        let e = configure(
            endpoint(),
            &resolved(|r| {
                r.certificate_authority = Some(PemSource::Data {
                    field: "certificate-authority-data",
                    base64: "!!!".into(),
                })
            }),
        )
        .expect_err("not base64");
        assert!(
            matches!(
                e,
                TlsConfigError::NotBase64 {
                    field: "certificate-authority-data",
                    ..
                }
            ),
            "{e}"
        );
        let e = configure(
            endpoint(),
            &resolved(|r| {
                r.certificate_authority = Some(PemSource::File {
                    field: "certificate-authority",
                    path: "/nonexistent/ca.crt".into(),
                })
            }),
        )
        .expect_err("no file");
        assert!(
            e.to_string()
                .starts_with("certificate-authority /nonexistent/ca.crt:"),
            "{e}"
        );
        let e = configure(
            endpoint(),
            &resolved(|r| r.client_certificate = data("client-certificate-data", "x")),
        )
        .expect_err("no key");
        assert_eq!(
            e,
            TlsConfigError::Unpaired {
                present: "client-certificate-data",
                missing: "client-key",
            }
        );
        let e = configure(
            endpoint(),
            &resolved(|r| {
                r.insecure_skip_tls_verify = true;
                r.certificate_authority = data("certificate-authority-data", "x");
            }),
        )
        .expect_err("both");
        assert!(matches!(e, TlsConfigError::InsecureWithCa { .. }), "{e}");
    }

    #[test]
    fn insecure_skip_tls_verify_is_accepted() {
        configure(endpoint(), &resolved(|r| r.insecure_skip_tls_verify = true))
            .expect("configured");
    }

    #[test]
    fn handshake_failures_are_explained() {
        let m = explain_handshake_failure("invalid peer certificate: UnknownIssuer")
            .expect("a TLS failure");
        assert!(m.contains("certificate-authority"), "{m}");
        assert!(explain_handshake_failure("connection refused").is_none());
    }
}
