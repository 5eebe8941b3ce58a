//! kubeconfig files, as kubectl reads them: `--kubeconfig`, else `$KUBECONFIG` (a
//! colon-separated list merged in order, the first file to define a name winning), else
//! `~/.flotilla/config`. Clusters (server, CA, insecure-skip-tls-verify), users (bearer
//! token, token file, client certificate), contexts and the current context. File paths in
//! a kubeconfig are relative to the file that holds them, as kubectl reads them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What went wrong finding or reading a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// No file was given and none was found.
    #[error("no kubeconfig found (looked at {searched}); pass --kubeconfig or set KUBECONFIG")]
    NotFound {
        /// Where it looked.
        searched: String,
    },
    /// A file could not be read.
    #[error("reading kubeconfig {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid kubeconfig.
    #[error("kubeconfig {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column when known.
        message: String,
    },
    /// No context was chosen and the file sets no current-context.
    #[error("kubeconfig {path} sets no current-context; pass --context")]
    NoCurrentContext {
        /// The file(s).
        path: String,
    },
    /// A name that is not defined.
    #[error("kubeconfig {path}: {what} {name:?} is not defined")]
    Undefined {
        /// The file(s).
        path: String,
        /// "context", "cluster" or "user".
        what: &'static str,
        /// The name.
        name: String,
    },
}

/// A named cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamedCluster {
    /// Its name.
    pub name: String,
    /// Where it is.
    pub cluster: Cluster,
    /// The file it was read from (relative paths in it are relative to that file).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// A cluster's address.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// The API server's URL.
    pub server: String,
    /// CA bundle file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// CA bundle, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// Skip TLS verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
}

/// A named user.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// Its credentials.
    pub user: User,
    /// The file it was read from (relative paths in it are relative to that file).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// A user's credentials.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    /// A bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Client certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Client key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Client certificate, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// Client key, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
}

/// A named context.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamedContext {
    /// Its name.
    pub name: String,
    /// What it combines.
    pub context: Context,
}

/// A cluster, a user and a default namespace.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Context {
    /// The cluster's name.
    pub cluster: String,
    /// The user's name.
    #[serde(default)]
    pub user: String,
    /// The default namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A kubeconfig (one file, or several merged).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// "v1".
    #[serde(default, rename = "apiVersion")]
    pub api_version: String,
    /// "Config".
    #[serde(default)]
    pub kind: String,
    /// Clusters.
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    /// Users.
    #[serde(default)]
    pub users: Vec<NamedUser>,
    /// Contexts.
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    /// The context used when none is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// The files this was read from (not part of the format).
    #[serde(skip)]
    pub sources: Vec<PathBuf>,
}

/// A PEM value a kubeconfig gives: a file it names, or inline base64 (the `-data` field).
/// Each remembers its field, so that an unusable value is reported by name.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file (`certificate-authority`, `client-certificate`, `client-key`).
    File {
        /// The kubeconfig field.
        field: &'static str,
        /// The file, relative paths already resolved against the kubeconfig's directory.
        path: PathBuf,
    },
    /// Inline data (`certificate-authority-data`, `client-certificate-data`,
    /// `client-key-data`).
    Data {
        /// The kubeconfig field.
        field: &'static str,
        /// The base64 text as written.
        base64: String,
    },
}

impl PemSource {
    /// The kubeconfig field it came from.
    pub fn field(&self) -> &'static str {
        match self {
            PemSource::File { field, .. } | PemSource::Data { field, .. } => field,
        }
    }

    /// The `-data` field wins over the file field, as in kubectl.
    fn pick(
        data: (&'static str, &Option<String>),
        file: (&'static str, &Option<String>),
        origin: Option<&Path>,
    ) -> Option<PemSource> {
        if let Some(d) = data.1.as_ref().filter(|d| !d.is_empty()) {
            return Some(PemSource::Data {
                field: data.0,
                base64: d.clone(),
            });
        }
        file.1
            .as_ref()
            .filter(|f| !f.is_empty())
            .map(|f| PemSource::File {
                field: file.0,
                path: relative_to(origin, f),
            })
    }
}

// Inline key material stays out of logs and panics.
impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::File { field, path } => write!(f, "{field}: {}", path.display()),
            PemSource::Data { field, base64 } => write!(f, "{field}: <{} bytes>", base64.len()),
        }
    }
}

/// `path` as kubectl reads it: relative to the directory of the kubeconfig `origin`.
fn relative_to(origin: Option<&Path>, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    match origin.and_then(Path::parent) {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

/// What a client needs from a kubeconfig, resolved for one context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The context's name.
    pub context: String,
    /// The server URL.
    pub server: String,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// The default namespace ("default" when the context names none).
    pub namespace: String,
    /// Where this came from, for error messages.
    pub source: String,
    /// The CA bundle an https server's certificate must chain to; `None`: the system's
    /// root certificates.
    pub certificate_authority: Option<PemSource>,
    /// Accept any server certificate (`insecure-skip-tls-verify`): for tests only.
    pub insecure_skip_tls_verify: bool,
    /// The client certificate presented to an https server (with `client_key`).
    pub client_certificate: Option<PemSource>,
    /// The client certificate's private key.
    pub client_key: Option<PemSource>,
}

impl Kubeconfig {
    /// Parses one file's text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KubeconfigError> {
        let mut cfg: Kubeconfig =
            serde_norway::from_str(text).map_err(|e| KubeconfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        cfg.sources = vec![path.to_path_buf()];
        for c in &mut cfg.clusters {
            c.origin = Some(path.to_path_buf());
        }
        for u in &mut cfg.users {
            u.origin = Some(path.to_path_buf());
        }
        Ok(cfg)
    }

    /// Reads one file.
    pub fn read(path: &Path) -> Result<Self, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Finds and reads the kubeconfig as kubectl does: `explicit`, else `$KUBECONFIG`,
    /// else `~/.flotilla/config`.
    pub fn load(explicit: Option<&Path>) -> Result<Self, KubeconfigError> {
        if let Some(p) = explicit {
            return Self::read(p);
        }
        if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            let mut merged: Option<Kubeconfig> = None;
            for p in std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()) {
                // kubectl skips files in the list that do not exist.
                if !p.exists() {
                    continue;
                }
                let next = Self::read(&p)?;
                merged = Some(match merged {
                    None => next,
                    Some(m) => m.merge(next),
                });
            }
            return merged.ok_or_else(|| KubeconfigError::NotFound {
                searched: format!("$KUBECONFIG={}", list.to_string_lossy()),
            });
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let default = home.join(".flotilla").join("config");
        if default.exists() {
            return Self::read(&default);
        }
        Err(KubeconfigError::NotFound {
            searched: default.display().to_string(),
        })
    }

    /// Merges `later` into `self`: names already defined keep their first definition.
    pub fn merge(mut self, later: Kubeconfig) -> Kubeconfig {
        for c in later.clusters {
            if !self.clusters.iter().any(|x| x.name == c.name) {
                self.clusters.push(c);
            }
        }
        for u in later.users {
            if !self.users.iter().any(|x| x.name == u.name) {
                self.users.push(u);
            }
        }
        for c in later.contexts {
            if !self.contexts.iter().any(|x| x.name == c.name) {
                self.contexts.push(c);
            }
        }
        if self.current_context.as_deref().is_none_or(str::is_empty) {
            self.current_context = later.current_context;
        }
        self.sources.extend(later.sources);
        self
    }

    /// The files, for messages.
    pub fn source(&self) -> String {
        self.sources
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Resolves a context (`None`: the current one) to a server, credentials and namespace.
    pub fn resolve(&self, context: Option<&str>) -> Result<Resolved, KubeconfigError> {
        let source = self.source();
        let name = match context
            .or(self.current_context.as_deref())
            .filter(|c| !c.is_empty())
        {
            Some(n) => n.to_string(),
            None => return Err(KubeconfigError::NoCurrentContext { path: source }),
        };
        let undefined = |what, name: &str| KubeconfigError::Undefined {
            path: source.clone(),
            what,
            name: name.to_string(),
        };
        let ctx = &self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| undefined("context", &name))?
            .context;
        let named_cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .ok_or_else(|| undefined("cluster", &ctx.cluster))?;
        let (cluster, cluster_origin) = (&named_cluster.cluster, named_cluster.origin.as_deref());
        let (user, user_origin) = if ctx.user.is_empty() {
            (User::default(), None)
        } else {
            let u = self
                .users
                .iter()
                .find(|u| u.name == ctx.user)
                .ok_or_else(|| undefined("user", &ctx.user))?;
            (u.user.clone(), u.origin.clone())
        };
        let user_origin = user_origin.as_deref();
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => {
                let path = relative_to(user_origin, f);
                Some(
                    std::fs::read_to_string(&path)
                        .map_err(|source| KubeconfigError::Read { path, source })?
                        .trim()
                        .to_string(),
                )
            }
            (None, None) => None,
        };
        Ok(Resolved {
            context: name,
            server: cluster.server.clone(),
            token,
            namespace: ctx.namespace.clone().unwrap_or_else(|| "default".into()),
            source,
            certificate_authority: PemSource::pick(
                (
                    "certificate-authority-data",
                    &cluster.certificate_authority_data,
                ),
                ("certificate-authority", &cluster.certificate_authority),
                cluster_origin,
            ),
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
            client_certificate: PemSource::pick(
                ("client-certificate-data", &user.client_certificate_data),
                ("client-certificate", &user.client_certificate),
                user_origin,
            ),
            client_key: PemSource::pick(
                ("client-key-data", &user.client_key_data),
                ("client-key", &user.client_key),
                user_origin,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: flotilla\n  cluster:\n    server: http://127.0.0.1:6443\nusers:\n- name: admin\n  user:\n    token: abc\ncontexts:\n- name: flotilla\n  context:\n    cluster: flotilla\n    user: admin\n    namespace: team-a\ncurrent-context: flotilla\n";

    #[test]
    fn the_admin_kubeconfig_resolves_to_server_token_and_namespace() {
        let cfg = Kubeconfig::parse(ADMIN, Path::new("admin.yaml")).expect("parses");
        let r = cfg.resolve(None).expect("resolves");
        assert_eq!(r.server, "http://127.0.0.1:6443");
        assert_eq!(r.token.as_deref(), Some("abc"));
        assert_eq!(r.namespace, "team-a");
        assert!(matches!(
            cfg.resolve(Some("other")),
            Err(KubeconfigError::Undefined {
                what: "context",
                ..
            })
        ));
    }

    #[test]
    fn merged_files_keep_the_first_definition_of_each_name() {
        let a = Kubeconfig::parse(ADMIN, Path::new("a")).expect("a");
        let b_text = ADMIN
            .replace("http://127.0.0.1:6443", "http://10.0.0.1:6443")
            .replace("name: flotilla\n  context", "name: second\n  context")
            .replace("current-context: flotilla", "current-context: second");
        let b = Kubeconfig::parse(&b_text, Path::new("b")).expect("b");
        let m = a.merge(b);
        assert_eq!(m.current_context.as_deref(), Some("flotilla"));
        assert_eq!(
            m.resolve(None).expect("first").server,
            "http://127.0.0.1:6443"
        );
        assert_eq!(
            m.resolve(Some("second")).expect("second").server,
            "http://127.0.0.1:6443",
            "cluster flotilla is the first file's"
        );
        assert_eq!(m.source(), "a:b");
    }

    #[test]
    fn tls_fields_resolve_with_paths_relative_to_their_file() {
        let text = "clusters:\n- name: c\n  cluster:\n    server: https://h:6443\n    certificate-authority: pki/ca.crt\nusers:\n- name: u\n  user:\n    client-certificate: /abs/u.crt\n    client-certificate-data: Zm9v\n    client-key: u.key\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n";
        let cfg = Kubeconfig::parse(text, Path::new("/etc/flotilla/kc.yaml")).expect("parses");
        let r = cfg.resolve(None).expect("resolves");
        assert_eq!(
            r.certificate_authority,
            Some(PemSource::File {
                field: "certificate-authority",
                path: PathBuf::from("/etc/flotilla/pki/ca.crt"),
            })
        );
        // The -data field wins over the file.
        assert_eq!(
            r.client_certificate.as_ref().map(PemSource::field),
            Some("client-certificate-data")
        );
        assert_eq!(
            r.client_key,
            Some(PemSource::File {
                field: "client-key",
                path: PathBuf::from("/etc/flotilla/u.key"),
            })
        );
        assert!(!r.insecure_skip_tls_verify);
        assert!(
            !format!("{r:?}").contains("Zm9v"),
            "inline data is not logged"
        );
        // Writing the file back keeps what it said, not the resolved paths.
        let written = serde_norway::to_string(&cfg).expect("yaml");
        assert!(
            written.contains("certificate-authority: pki/ca.crt"),
            "{written}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_file_and_position() {
        let e = Kubeconfig::parse("clusters: [\n  - name: x\n  bad", Path::new("broken.yaml"))
            .expect_err("invalid YAML");
        let msg = e.to_string();
        assert!(msg.starts_with("kubeconfig broken.yaml:"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
    }
}
