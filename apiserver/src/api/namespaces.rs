//! Namespaces: the ones every cluster has, refusing content in a missing or terminating
//! namespace, and deleting a namespace with everything in it.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::storage::keys::{key_after, namespace_prefix, object_key};
use crate::storage::{Commit, Cond, Op};
use crate::watch_cache::object::decode_stored;

use super::{Api, ObjectRef};

/// Namespaces that exist on every cluster and may not be deleted.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

fn terminating(ns: &Value) -> bool {
    ns["status"]["phase"] == "Terminating" || !ns["metadata"]["deletionTimestamp"].is_null()
}

impl Api {
    /// Creates the system namespaces that do not exist yet.
    pub async fn ensure_system_namespaces(&self) -> Result<(), ApiError> {
        for ns in SYSTEM_NAMESPACES {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let r = ObjectRef {
                api_version: "v1".into(),
                resource: "namespaces".into(),
                ..Default::default()
            };
            match self.create(&r, body.to_string().as_bytes(), false).await {
                Ok(_) => tracing::info!(namespace = ns, "created namespace"),
                Err(e) if e.reason == crate::error::Reason::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Fails with NotFound when the namespace does not exist, Forbidden when it is being
    /// deleted.
    pub(crate) async fn ensure_namespace_open(&self, ns: &str) -> Result<(), ApiError> {
        let key = object_key("namespaces", "", ns);
        let info = self.registry.lookup("v1", "namespaces")?;
        let cached = self.cache(&info)?.get(&key);
        let obj = match cached {
            Some(o) => serde_json::from_slice::<Value>(&o.json).ok(),
            None => None,
        };
        // The cache may lag a namespace created a moment ago: ask the store before saying
        // it does not exist.
        let obj = match obj {
            Some(o) => o,
            None => {
                let (kv, _) = self.store.get(&key, 0).await?;
                let kv = kv.ok_or_else(|| ApiError::not_found("namespaces", "", ns))?;
                decode_stored(&key, &kv.value, kv.mod_revision)
                    .map_err(|e| ApiError::internal(e.to_string()))?
            }
        };
        if terminating(&obj) {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Deletes every object in a terminating namespace, then the namespace itself.
    pub(crate) async fn finish_namespace_deletion(&self, ns: &str) -> Result<(), ApiError> {
        let namespaced: Vec<_> = self
            .registry
            .all()
            .iter()
            .filter(|i| i.namespaced)
            .cloned()
            .collect();
        for info in namespaced {
            let prefix = namespace_prefix(info.plural, ns);
            let mut start = prefix.as_bytes().to_vec();
            loop {
                let page = self.store.range(&prefix, &start, 500, 0).await?;
                for kv in &page.kvs {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    let mut ops = vec![Op::Delete(key.clone())];
                    if info.plural == "services"
                        && let Ok(obj) = serde_json::from_slice::<Value>(&kv.value)
                    {
                        ops.extend(crate::alloc::held_keys(&obj).into_iter().map(Op::Delete));
                    }
                    // A concurrent change just means another pass deletes it.
                    self.commit(&[Cond::ModRevision(key, kv.mod_revision)], ops)
                        .await?;
                }
                match (page.more, page.kvs.last()) {
                    (true, Some(last)) => start = key_after(&last.key),
                    _ => break,
                }
            }
        }
        let key = object_key("namespaces", "", ns);
        let (kv, _) = self.store.get(&key, 0).await?;
        if let Some(kv) = kv {
            match self
                .commit(
                    &[Cond::ModRevision(key, kv.mod_revision)],
                    vec![Op::Delete(object_key("namespaces", "", ns))],
                )
                .await?
            {
                Commit::Done(_) => tracing::info!(namespace = ns, "namespace deleted"),
                Commit::Failed(_) => {
                    tracing::debug!(namespace = ns, "namespace changed while being deleted")
                }
            }
        }
        Ok(())
    }

    /// Finishes deleting namespaces a previous run left terminating.
    pub async fn resume_namespace_deletions(&self) -> Result<(), ApiError> {
        let prefix = crate::storage::keys::resource_prefix("namespaces");
        let page = self.store.range(&prefix, prefix.as_bytes(), 0, 0).await?;
        for kv in page.kvs {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            if let Ok(obj) = decode_stored(&key, &kv.value, kv.mod_revision)
                && terminating(&obj)
            {
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.finish_namespace_deletion(&name).await?;
            }
        }
        Ok(())
    }
}
