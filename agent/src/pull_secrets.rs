//! Registry credentials from a pod's imagePullSecrets, found for an image as Kubernetes'
//! credential keyring finds them: a Secret of type `kubernetes.io/dockerconfigjson` (key
//! `.dockerconfigjson`, `{"auths": {REGISTRY: ENTRY}}`) or `kubernetes.io/dockercfg` (key
//! `.dockercfg`, `{REGISTRY: ENTRY}`); an entry's `auth` (base64 `user:password`) wins
//! over its `username` and `password`. A REGISTRY key is `host[:port][/path]`, with or
//! without a scheme, a host part may hold `*` and `?` globs; it matches an image whose
//! registry has the same number of host parts, each matching, the same port, and whose
//! repository path starts with the key's path. The most specific keys come first.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::image_ref;
use crate::runtime::RegistryAuth;

/// The type of Secrets holding a `~/.docker/config.json`.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The type of Secrets holding a legacy `~/.dockercfg`.
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// A pull secret that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PullSecretError {
    /// The Secret is of another type.
    #[error("secret type {0:?} holds no registry credentials")]
    WrongType(String),
    /// The Secret lacks the key its type promises.
    #[error("secret has no {0:?} key")]
    MissingKey(&'static str),
    /// The key's value is not a docker config.
    #[error("{key} is not a docker config: {reason}")]
    Malformed {
        /// The key read.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// Credentials for one registry key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key as canonicalised: `host[:port][/path]`, no scheme, no `/v1/` or `/v2/`.
    pub key: String,
    /// The user.
    pub username: String,
    /// The password.
    pub password: String,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// The Secret's value under `key`, from `data` or `stringData`.
fn value(secret: &Secret, key: &'static str) -> Result<Vec<u8>, PullSecretError> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(v.0.clone());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.as_bytes().to_vec())
        .ok_or(PullSecretError::MissingKey(key))
}

/// `host[:port][/path]` from a registry key as people write them (`https://index.docker.io/v1/`,
/// `registry.example.com:5000`, `quay.io/team`).
fn canonical_key(raw: &str) -> String {
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .unwrap_or(raw);
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, String::new()),
    };
    let path = match path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix("/v2/"))
    {
        Some(p) => format!("/{p}"),
        None => path,
    };
    let path = path.trim_end_matches('/');
    format!("{host}{path}")
}

fn credential(key: &str, e: Entry, which: &'static str) -> Result<Credential, PullSecretError> {
    let (username, password) = if e.auth.is_empty() {
        (e.username, e.password)
    } else {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(e.auth.trim())
            .map_err(|err| PullSecretError::Malformed {
                key: which,
                reason: format!("auth of {key:?} is not base64: {err}"),
            })?;
        let decoded = String::from_utf8(decoded).map_err(|_| PullSecretError::Malformed {
            key: which,
            reason: format!("auth of {key:?} is not UTF-8"),
        })?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| PullSecretError::Malformed {
                key: which,
                reason: format!("auth of {key:?} is not user:password"),
            })?;
        (u.to_string(), p.to_string())
    };
    Ok(Credential {
        key: canonical_key(key),
        username,
        password,
    })
}

/// The credentials a pull secret holds.
pub fn parse(secret: &Secret) -> Result<Vec<Credential>, PullSecretError> {
    let type_ = secret.type_.clone().unwrap_or_default();
    let (which, entries) = match type_.as_str() {
        DOCKER_CONFIG_JSON => {
            let key = ".dockerconfigjson";
            let cfg: ConfigJson = serde_json::from_slice(&value(secret, key)?).map_err(|e| {
                PullSecretError::Malformed {
                    key,
                    reason: e.to_string(),
                }
            })?;
            (key, cfg.auths)
        }
        DOCKER_CFG => {
            let key = ".dockercfg";
            let entries: BTreeMap<String, Entry> = serde_json::from_slice(&value(secret, key)?)
                .map_err(|e| PullSecretError::Malformed {
                    key,
                    reason: e.to_string(),
                })?;
            (key, entries)
        }
        other => return Err(PullSecretError::WrongType(other.to_string())),
    };
    entries
        .into_iter()
        .map(|(k, e)| credential(&k, e, which))
        .collect()
}

/// Does `pattern` (with `*` for any run and `?` for any one character) match `text`?
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Classic two-pointer wildcard match, backtracking to the last '*'.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

fn split_host_port(host: &str) -> (&str, &str) {
    match host.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => (host, ""),
    }
}

/// Hosts that all mean Docker Hub.
fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Does the canonical `key` match the image at `registry` / `path`?
fn key_matches(key: &str, registry: &str, path: &str) -> bool {
    let (key_host, key_path) = match key.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (key, String::new()),
    };
    let target_path = format!("/{path}");
    if !target_path.starts_with(&key_path) {
        return false;
    }
    if is_docker_hub(registry) && is_docker_hub(key_host) {
        return true;
    }
    let (kh, kp) = split_host_port(key_host);
    let (th, tp) = split_host_port(registry);
    if kp != tp {
        return false;
    }
    let kparts: Vec<&str> = kh.split('.').collect();
    let tparts: Vec<&str> = th.split('.').collect();
    kparts.len() == tparts.len() && kparts.iter().zip(&tparts).all(|(k, t)| glob(k, t))
}

/// The credentials to try for `image`, most specific key first; empty when none match
/// (the image is then pulled anonymously).
pub fn for_image(creds: &[Credential], image: &str) -> Vec<RegistryAuth> {
    let Some(r) = image_ref::parse(image) else {
        return Vec::new();
    };
    let mut matching: Vec<&Credential> = creds
        .iter()
        .filter(|c| key_matches(&c.key, &r.registry, &r.path))
        .collect();
    // Reverse lexical order puts `quay.io/team` before `quay.io`, as the kubelet orders.
    matching.sort_by(|a, b| b.key.cmp(&a.key));
    matching
        .into_iter()
        .map(|c| RegistryAuth {
            username: c.username.clone(),
            password: c.password.clone(),
            server_address: r.registry.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use serde_json::json;

    use super::*;

    fn secret(type_: &str, key: &str, value: serde_json::Value) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some([(key.to_string(), ByteString(value.to_string().into_bytes()))].into()),
            ..Default::default()
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn dockerconfigjson_with_auth_or_username_and_password() {
        let s = secret(
            DOCKER_CONFIG_JSON,
            ".dockerconfigjson",
            json!({"auths": {
                "127.0.0.1:5000": {"auth": b64("alice:s3cr:et")},
                "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
                "quay.io/team/": {"username": "u", "password": "p", "auth": b64("carol:x")}
            }}),
        );
        let creds = parse(&s).expect("parses");
        let by_key = |k: &str| {
            creds
                .iter()
                .find(|c| c.key == k)
                .unwrap_or_else(|| panic!("{k} in {creds:?}"))
        };
        assert_eq!(by_key("127.0.0.1:5000").username, "alice");
        assert_eq!(
            by_key("127.0.0.1:5000").password,
            "s3cr:et",
            "only the first ':' splits"
        );
        assert_eq!(by_key("index.docker.io").username, "bob");
        assert_eq!(
            by_key("quay.io/team").username,
            "carol",
            "auth wins over username"
        );
    }

    #[test]
    fn dockercfg_and_string_data() {
        let s = secret(
            DOCKER_CFG,
            ".dockercfg",
            json!({"registry.example.com": {"auth": b64("u:p")}}),
        );
        assert_eq!(parse(&s).expect("parses")[0].key, "registry.example.com");
        let s = Secret {
            type_: Some(DOCKER_CONFIG_JSON.into()),
            string_data: Some(
                [(
                    ".dockerconfigjson".to_string(),
                    json!({"auths": {"r.io": {"username": "a", "password": "b"}}}).to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        };
        assert_eq!(parse(&s).expect("parses")[0].username, "a");
    }

    #[test]
    fn bad_secrets_say_why() {
        let opaque = Secret {
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        assert!(matches!(parse(&opaque), Err(PullSecretError::WrongType(_))));
        let empty = Secret {
            type_: Some(DOCKER_CONFIG_JSON.into()),
            ..Default::default()
        };
        assert!(matches!(
            parse(&empty),
            Err(PullSecretError::MissingKey(".dockerconfigjson"))
        ));
        let s = secret(
            DOCKER_CONFIG_JSON,
            ".dockerconfigjson",
            json!({"auths": {"r.io": {"auth": "%%%"}}}),
        );
        assert!(matches!(parse(&s), Err(PullSecretError::Malformed { .. })));
        let s = secret(
            DOCKER_CONFIG_JSON,
            ".dockerconfigjson",
            json!({"auths": {"r.io": {"auth": b64("nocolon")}}}),
        );
        assert!(matches!(parse(&s), Err(PullSecretError::Malformed { .. })));
    }

    fn cred(key: &str, user: &str) -> Credential {
        Credential {
            key: canonical_key(key),
            username: user.into(),
            password: "pw".into(),
        }
    }

    fn users(creds: &[Credential], image: &str) -> Vec<String> {
        for_image(creds, image)
            .into_iter()
            .map(|a| a.username)
            .collect()
    }

    #[test]
    fn hosts_and_ports_must_match() {
        let creds = [
            cred("127.0.0.1:5000", "local"),
            cred("registry.example.com", "example"),
        ];
        assert_eq!(users(&creds, "127.0.0.1:5000/private/busybox:1"), ["local"]);
        assert!(users(&creds, "127.0.0.1:5001/private/busybox:1").is_empty());
        assert!(
            users(&creds, "registry.example.com:443/app").is_empty(),
            "a port in the image but not the key does not match"
        );
        assert_eq!(users(&creds, "registry.example.com/app:1"), ["example"]);
        assert!(users(&creds, "other.example.com/app").is_empty());
        let auth = &for_image(&creds, "127.0.0.1:5000/x")[0];
        assert_eq!(auth.server_address, "127.0.0.1:5000");
    }

    #[test]
    fn path_prefixes_and_most_specific_first() {
        let creds = [cred("quay.io", "any"), cred("quay.io/team", "team")];
        assert_eq!(users(&creds, "quay.io/team/app:1"), ["team", "any"]);
        assert_eq!(users(&creds, "quay.io/other/app"), ["any"]);
    }

    #[test]
    fn globs_match_one_host_part_each() {
        let creds = [cred("*.example.com", "glob"), cred("r?.io", "one")];
        assert_eq!(users(&creds, "eu.example.com/app"), ["glob"]);
        assert!(users(&creds, "a.b.example.com/app").is_empty());
        assert!(users(&creds, "example.com/app").is_empty());
        assert_eq!(users(&creds, "r1.io/app"), ["one"]);
        assert!(users(&creds, "r12.io/app").is_empty());
    }

    #[test]
    fn docker_hub_by_any_of_its_names() {
        let creds = [cred("https://index.docker.io/v1/", "hub")];
        assert_eq!(users(&creds, "busybox"), ["hub"]);
        assert_eq!(users(&creds, "docker.io/library/busybox:1"), ["hub"]);
        assert!(users(&creds, "127.0.0.1:5000/busybox").is_empty());
        let creds = [cred("docker.io", "hub")];
        assert_eq!(users(&creds, "someone/app"), ["hub"]);
    }

    #[test]
    fn glob_edges() {
        assert!(glob("*", ""));
        assert!(glob("a*c", "abbbc"));
        assert!(!glob("a*c", "abbbd"));
        assert!(glob("*.*", "a.b"));
        assert!(!glob("", "a"));
    }
}
