//! kubeconfig files, as kubectl reads them: `--kubeconfig`, else `$KUBECONFIG` (a
//! colon-separated list merged in order, the first file to define a name winning), else
//! `~/.flotilla/config`. Clusters, users (bearer token, token file, client certificate),
//! contexts and the current context.

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

/// What a client needs from a kubeconfig, resolved for one context.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        let cluster = &self
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .ok_or_else(|| undefined("cluster", &ctx.cluster))?
            .cluster;
        let user = if ctx.user.is_empty() {
            User::default()
        } else {
            self.users
                .iter()
                .find(|u| u.name == ctx.user)
                .ok_or_else(|| undefined("user", &ctx.user))?
                .user
                .clone()
        };
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|source| KubeconfigError::Read {
                        path: PathBuf::from(f),
                        source,
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Ok(Resolved {
            context: name,
            server: cluster.server.clone(),
            token,
            namespace: ctx.namespace.clone().unwrap_or_else(|| "default".into()),
            source,
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
    fn a_syntax_error_names_the_file_and_position() {
        let e = Kubeconfig::parse("clusters: [\n  - name: x\n  bad", Path::new("broken.yaml"))
            .expect_err("invalid YAML");
        let msg = e.to_string();
        assert!(msg.starts_with("kubeconfig broken.yaml:"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
    }
}
