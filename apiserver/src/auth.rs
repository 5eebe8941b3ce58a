//! Bearer-token authentication, with Kubernetes' static token file format
//! (`token,user,uid,"group1,group2"`, one per line).

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
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TokenFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
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
}
