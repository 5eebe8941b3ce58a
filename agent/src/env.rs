//! A container's environment as the kubelet builds it: `envFrom` (ConfigMaps and Secrets,
//! with a prefix), then `env` in order (literal values with `$(VAR)` references to earlier
//! variables, or `valueFrom` a ConfigMap key, a Secret key or a field of the pod), and the
//! same `$(VAR)` expansion in `command` and `args`.

use std::collections::BTreeMap;

use flotilla_client::Client;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

/// Why a container's environment cannot be built (Kubernetes reports
/// CreateContainerConfigError with this message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// A referenced ConfigMap or Secret (or key) does not exist.
    #[error("{0}")]
    Missing(String),
    /// A fieldRef names a field that cannot be read.
    #[error("unsupported fieldRef {0:?}")]
    Field(String),
}

/// The node's and the pod's addresses, which `status.hostIP` and `status.podIP` read: the
/// pod's comes from its sandbox, since the first start precedes any status report.
#[derive(Clone, Copy, Debug)]
pub struct Ips<'a> {
    /// The node's IP.
    pub host: &'a str,
    /// The pod's IP (the node's for a runtime without pod networking).
    pub pod: &'a str,
}

/// Pod fields a container can read through `fieldRef`.
pub fn field_value(pod: &Pod, path: &str, ips: Ips<'_>) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => ips.pod.to_string(),
        "status.hostIP" => ips.host.to_string(),
        p => {
            if let Some(key) = p
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(key).cloned())
                    .unwrap_or_default()
            } else if let Some(key) = p
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                meta.annotations
                    .as_ref()
                    .and_then(|l| l.get(key).cloned())
                    .unwrap_or_default()
            } else {
                return Err(EnvError::Field(p.to_string()));
            }
        }
    })
}

/// Expands `$(NAME)` from `vars`; `$$(NAME)` escapes to a literal `$(NAME)`; unknown
/// references stay as written (Kubernetes' rules).
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
        {
            let name = &tail[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

async fn config_map(client: &Client, ns: &str, name: &str) -> Result<Option<ConfigMap>, EnvError> {
    client
        .api::<ConfigMap>(ns)
        .get_opt(name)
        .await
        .map_err(|e| EnvError::Missing(format!("configmap {name:?}: {e}")))
}

async fn secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>, EnvError> {
    client
        .api::<Secret>(ns)
        .get_opt(name)
        .await
        .map_err(|e| EnvError::Missing(format!("secret {name:?}: {e}")))
}

fn secret_data(s: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).to_string()))
        .collect();
    out.extend(s.string_data.clone().unwrap_or_default());
    out
}

/// A container's environment, command and arguments, with $(VAR) references expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The variables, in the order Kubernetes sets them.
    pub env: Vec<(String, String)>,
    /// The `command`.
    pub command: Vec<String>,
    /// The `args`.
    pub args: Vec<String>,
}

/// The environment of `c` in `pod`, in order, and its command line expanded.
pub async fn build(
    client: &Client,
    pod: &Pod,
    c: &Container,
    ips: Ips<'_>,
) -> Result<Built, EnvError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(client, &ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(EnvError::Missing(format!(
                        "configmap {:?} not found",
                        r.name
                    )));
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(client, &ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in secret_data(&s) {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::Missing(format!("secret {:?} not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or_default(), &vars),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, ips)?
                } else if let Some(k) = &from.config_map_key_ref {
                    let cm = config_map(client, &ns, &k.name).await?;
                    match cm.and_then(|cm| cm.data.and_then(|d| d.get(&k.key).cloned())) {
                        Some(v) => v,
                        None if k.optional == Some(true) => continue,
                        None => {
                            return Err(EnvError::Missing(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                k.key, ns, k.name
                            )));
                        }
                    }
                } else if let Some(k) = &from.secret_key_ref {
                    let s = secret(client, &ns, &k.name).await?;
                    match s.and_then(|s| secret_data(&s).get(&k.key).cloned()) {
                        Some(v) => v,
                        None if k.optional == Some(true) => continue,
                        None => {
                            return Err(EnvError::Missing(format!(
                                "couldn't find key {} in Secret {}/{}",
                                k.key, ns, k.name
                            )));
                        }
                    }
                } else {
                    // resourceFieldRef: not supported by this agent yet; the variable is
                    // left out rather than set wrong.
                    continue;
                }
            }
        };
        set(&mut vars, e.name.clone(), value);
    }
    let expanded = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter().flatten().map(|a| expand(a, &vars)).collect()
    };
    let (command, args) = (expanded(&c.command), expanded(&c.args));
    let env = order
        .into_iter()
        .filter_map(|k| vars.get(&k).map(|v| (k.clone(), v.clone())))
        .collect();
    Ok(Built { env, command, args })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPS: Ips<'static> = Ips {
        host: "10.0.0.1",
        pod: "10.244.0.7",
    };

    #[test]
    fn references_expand_as_kubernetes_expands_them() {
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
    }

    #[test]
    fn pod_fields_are_readable() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": []}
        }))
        .expect("pod");
        assert_eq!(field_value(&pod, "metadata.name", IPS), Ok("p".into()));
        assert_eq!(field_value(&pod, "spec.nodeName", IPS), Ok("n1".into()));
        assert_eq!(
            field_value(&pod, "status.hostIP", IPS),
            Ok("10.0.0.1".into())
        );
        assert_eq!(
            field_value(&pod, "metadata.labels['app']", IPS),
            Ok("web".into())
        );
        assert_eq!(
            field_value(&pod, "status.podIP", IPS),
            Ok("10.244.0.7".into())
        );
        assert!(field_value(&pod, "spec.containers", IPS).is_err());
    }
}
