//! Authentication: bearer tokens, with Kubernetes' static token file format
//! (`token,user,uid,"group1,group2"`, one per line), and client certificates verified by
//! the TLS layer (user = the subject's CN, groups = its O values, as in Kubernetes).

use std::collections::HashMap;
use std::path::Path;

use rand::Rng;

use crate::error::ApiError;

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The user's groups.
    pub groups: Vec<String>,
}

/// A token file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}:{line}: expected token,user,uid[,\"groups\"]")]
    Malformed {
        /// The file.
        path: String,
        /// The line number.
        line: usize,
    },
}

/// The accepted tokens.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_token: HashMap<String, User>,
}

impl Tokens {
    /// Loads a token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut by_token = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(4, ',');
            let (Some(token), Some(user), Some(_uid)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(TokenFileError::Malformed {
                    path: path.display().to_string(),
                    line: i + 1,
                });
            };
            let groups = parts
                .next()
                .map(|g| g.trim_matches('"').split(',').map(str::to_string).collect())
                .unwrap_or_default();
            by_token.insert(
                token.to_string(),
                User {
                    name: user.to_string(),
                    groups,
                },
            );
        }
        Ok(Tokens { by_token })
    }

    /// Loads the token file, creating it with a fresh admin token if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<(Self, Option<String>), TokenFileError> {
        if !path.exists() {
            let token = new_token();
            let body =
                format!("# token,user,uid,\"groups\"\n{token},admin,admin,\"system:masters\"\n");
            write_private(path, &body)?;
            return Ok((Self::load(path)?, Some(token)));
        }
        Ok((Self::load(path)?, None))
    }

    /// The first token of `user` (to write the admin kubeconfig).
    pub fn token_of(&self, user: &str) -> Option<&str> {
        let mut tokens: Vec<&String> = self
            .by_token
            .iter()
            .filter(|(_, u)| u.name == user)
            .map(|(t, _)| t)
            .collect();
        tokens.sort();
        tokens.first().map(|t| t.as_str())
    }

    /// Authenticates an `authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<&User, ApiError> {
        let header = header.ok_or_else(|| {
            ApiError::unauthorized(
                "Unauthorized: no bearer token (send `authorization: Bearer <token>`)",
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "Unauthorized: the authorization header is not a bearer token",
                )
            })?;
        // Compare against every token in full, so timing does not reveal a prefix match.
        let mut found = None;
        for (t, user) in &self.by_token {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(user);
            }
        }
        found.ok_or_else(|| ApiError::unauthorized("Unauthorized: the bearer token is not valid"))
    }
}

impl Tokens {
    /// Authenticates a request by its verified client certificate (`client_cert`, the
    /// leaf's DER, present only when the TLS layer checked it against the client CA) or its
    /// `authorization` header. As in kube-apiserver, the certificate is tried first and a
    /// request either one authenticates is let in, so a kubeconfig carrying both keeps
    /// working when one of them is rotated.
    pub fn authenticate_request(
        &self,
        header: Option<&str>,
        client_cert: Option<&[u8]>,
    ) -> Result<User, ApiError> {
        let by_cert = client_cert.map(user_from_certificate);
        match (by_cert, header) {
            (Some(Ok(user)), _) => Ok(user),
            // A certificate that names no user is reported unless a token can stand in.
            (Some(Err(e)), None) => Err(e),
            (_, header) => self.authenticate(header).cloned(),
        }
    }
}

/// The user a verified client certificate stands for: its subject's CommonName, in the
/// groups its Organization values name.
pub fn user_from_certificate(der: &[u8]) -> Result<User, ApiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        ApiError::unauthorized(format!(
            "Unauthorized: the client certificate cannot be parsed: {e}"
        ))
    })?;
    let subject = cert.subject();
    let text = |v: &x509_parser::x509::AttributeTypeAndValue<'_>, what: &str| {
        v.as_str().map(str::to_string).map_err(|_| {
            ApiError::unauthorized(format!(
                "Unauthorized: the client certificate's {what} is not a string"
            ))
        })
    };
    let name = match subject.iter_common_name().next() {
        Some(cn) => text(cn, "CN")?,
        None => String::new(),
    };
    if name.is_empty() {
        return Err(ApiError::unauthorized(format!(
            "Unauthorized: the client certificate ({subject}) has no CN to name its user"
        )));
    }
    let groups = subject
        .iter_organization()
        .map(|o| text(o, "O"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(User { name, groups })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random 256-bit token, hex encoded.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file readable only by its owner (it holds credentials).
pub fn write_private(path: &Path, body: &str) -> Result<(), TokenFileError> {
    write_file(path, body, 0o600)
}

/// Writes a file with permission bits `mode`, atomically (a temporary file renamed over
/// it, so a crash leaves the old or the new content, never half of one).
pub fn write_file(path: &Path, body: &str, mode: u32) -> Result<(), TokenFileError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| TokenFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    // `mode` at creation is filtered by the umask, and a stale temporary keeps its bits.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(body.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_bearer_token_authenticates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.csv");
        let (tokens, created) = Tokens::load_or_create(&path).expect("created");
        let token = created.expect("a fresh admin token");
        assert_eq!(tokens.token_of("admin"), Some(token.as_str()));
        let user = tokens
            .authenticate(Some(&format!("Bearer {token}")))
            .expect("valid");
        assert_eq!(user.groups, vec!["system:masters".to_string()]);
        assert!(tokens.authenticate(Some("Bearer nope")).is_err());
        assert!(tokens.authenticate(None).is_err());
        assert!(tokens.authenticate(Some(&token)).is_err());
        let (again, created) = Tokens::load_or_create(&path).expect("loaded");
        assert!(created.is_none());
        assert_eq!(again.token_of("admin"), Some(token.as_str()));
    }

    /// `openssl req -x509 … -subj "/O=dev/O=ops/CN=jane"`: two O values, which rcgen
    /// cannot write (it keeps one value per attribute type).
    const JANE_DEV_OPS: &str = "-----BEGIN CERTIFICATE-----\nMIIBrjCCAVOgAwIBAgIUFaxtV1mVNi1o/n/Is9choUKjLxkwCgYIKoZIzj0EAwIw\nKzEMMAoGA1UECgwDZGV2MQwwCgYDVQQKDANvcHMxDTALBgNVBAMMBGphbmUwIBcN\nMjYxMjA3MDM1ODIwWhgPMjEyNjExMTMwMzU4MjBaMCsxDDAKBgNVBAoMA2RldjEM\nMAoGA1UECgwDb3BzMQ0wCwYDVQQDDARqYW5lMFkwEwYHKoZIzj0CAQYIKoZIzj0D\nAQcDQgAEKK1NmND1iuwQTx7tx+giql4Mx2IkjXNO60fOgCwV8PZ2N6CFgzTt+R/z\n3UzhJixvMcKViFruj0nOsW7dU2yYTaNTMFEwHQYDVR0OBBYEFAPbcf+0MPWqQQE5\nOErj6w5ghT90MB8GA1UdIwQYMBaAFAPbcf+0MPWqQQE5OErj6w5ghT90MA8GA1Ud\nEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAPO6SjifJOLIl9Z3o89YnZ4n\njs+NCCHJAINSeyyoPxxgAiEAv3FtWVnPnUKVww7lLZNApLe6R3j9XOtqG1tSNIXI\nOhI=\n-----END CERTIFICATE-----\n";

    fn client_cert(cn: &str, orgs: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if !cn.is_empty() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn a_certificate_is_its_cn_in_its_o_groups() {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(JANE_DEV_OPS.as_bytes())
            .expect("PEM");
        let user = user_from_certificate(&der).expect("user");
        assert_eq!(
            user,
            User {
                name: "jane".into(),
                groups: vec!["dev".into(), "ops".into()],
            }
        );
        let loner = user_from_certificate(&client_cert("bot", &[])).expect("user");
        assert!(loner.groups.is_empty());
        let one = user_from_certificate(&client_cert("bot", &["ci"])).expect("user");
        assert_eq!(one.groups, vec!["ci".to_string()]);
        let e = user_from_certificate(&client_cert("", &["dev"])).expect_err("no CN");
        assert_eq!(e.reason, crate::error::Reason::Unauthorized);
        assert!(e.message.contains("no CN"), "{}", e.message);
        assert!(user_from_certificate(b"junk").is_err());
    }

    #[test]
    fn either_a_certificate_or_a_token_lets_a_request_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tokens, token) = Tokens::load_or_create(&dir.path().join("tokens.csv")).expect("ok");
        let bearer = format!("Bearer {}", token.expect("fresh"));
        let jane = client_cert("jane", &["dev"]);
        let nameless = client_cert("", &[]);
        let auth = |h: Option<&str>, c: Option<&[u8]>| tokens.authenticate_request(h, c);
        assert_eq!(auth(None, Some(&jane)).expect("cert").name, "jane");
        assert_eq!(
            auth(Some("Bearer nope"), Some(&jane)).expect("cert").name,
            "jane"
        );
        assert_eq!(auth(Some(&bearer), None).expect("token").name, "admin");
        assert_eq!(
            auth(Some(&bearer), Some(&nameless)).expect("token").name,
            "admin"
        );
        assert!(auth(None, Some(&nameless)).is_err());
        assert!(auth(Some("Bearer nope"), None).is_err());
        assert!(auth(None, None).is_err());
    }
}
