//! The API's verbs, independent of any transport: gRPC (and later REST) front ends
//! translate requests into these calls and their errors into status codes.
//!
//! - [`create`], [`read`] (get, list), [`replace`] (update, status, scale, patch),
//!   [`delete`], [`bind`], [`watch`]: one file per verb family
//! - [`namespaces`]: namespace existence, the namespaces every cluster has, and
//!   finishing a namespace's deletion
//! - [`scale`]: the autoscaling/v1 Scale view of ReplicaSets and Deployments
//! - [`logs`], [`exec`]: the pod subresources served by the pod's node agent, reached
//!   through [`agent_proxy`], each checked against its pod by [`pod_target`]

pub mod agent_proxy;
pub mod bind;
pub mod create;
pub mod delete;
pub mod evict;
pub mod exec;
pub mod logs;
pub mod namespaces;
pub mod pod_target;
pub mod read;
pub mod replace;
pub mod scale;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::alloc::ServiceRanges;
use crate::defaults::toleration_seconds::DefaultTolerationSeconds;
use crate::error::ApiError;
use crate::registry::{AdmitError, Registry, ResourceInfo};
use crate::storage::keys::object_key;
use crate::storage::{Commit, Cond, Op, Store, StoreError};
use crate::watch_cache::object::{decode_stored, set_resource_version};
use crate::watch_cache::{CacheConfig, WatchCache};

/// Requests larger than this are refused (Kubernetes' limit).
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// How often a write that lost a race is retried before giving up.
const MAX_RETRIES: usize = 16;

/// What a call is about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectRef {
    /// "v1", "apps/v1"; empty matches the only version served.
    pub api_version: String,
    /// The plural resource name.
    pub resource: String,
    /// The namespace (ignored for cluster-scoped kinds).
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// "", "status" or "scale".
    pub subresource: String,
}

/// Settings of the API layer.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Cluster IP and node port ranges.
    pub service_ranges: ServiceRanges,
    /// Watch cache sizes.
    pub cache: CacheConfig,
    /// How long an Event is kept after its last write (Kubernetes' --event-ttl).
    pub event_ttl: std::time::Duration,
    /// The tolerationSeconds DefaultTolerationSeconds gives pods.
    pub default_toleration_seconds: DefaultTolerationSeconds,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            service_ranges: ServiceRanges::default(),
            cache: CacheConfig::default(),
            event_ttl: std::time::Duration::from_secs(3600),
            default_toleration_seconds: DefaultTolerationSeconds::default(),
        }
    }
}

/// The API: registry, store and watch caches.
pub struct Api {
    registry: Registry,
    store: Store,
    caches: HashMap<&'static str, Arc<WatchCache>>,
    config: ApiConfig,
    /// The lease Events are written with, and when it was granted.
    event_lease: tokio::sync::Mutex<Option<(i64, tokio::time::Instant)>>,
}

/// A new Event lease is granted at most this often (a sixth of the TTL when shorter); each
/// lives the TTL plus that, so every Event is kept at least the TTL after its last write
/// and the store holds few leases.
const EVENT_LEASE_REUSE: std::time::Duration = std::time::Duration::from_secs(600);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted {
                requested,
                compacted,
            } => ApiError::gone(format!(
                "The resourceVersion for the provided request is too old (requested {requested}, compacted at {compacted}): list again"
            )),
            StoreError::TooLarge(m) => {
                ApiError::bad_request(format!("the object is too large to store: {m}"))
            }
            StoreError::Unavailable(m) => {
                ApiError::unavailable(format!("the store is unavailable: {m}"))
            }
            StoreError::Timeout(m) => {
                ApiError::timeout(format!("the store did not answer in time: {m}"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// Where a namespaced or cluster-scoped object lives.
pub(crate) struct Located {
    pub info: Arc<ResourceInfo>,
    pub namespace: String,
}

impl Located {
    pub fn key(&self, name: &str) -> String {
        object_key(self.info.plural, &self.namespace, name)
    }
}

impl Api {
    /// The API over `store`, with one (not yet running) watch cache per resource.
    pub fn new(store: Store, config: ApiConfig) -> Arc<Self> {
        let registry = Registry::new();
        let caches = registry
            .all()
            .iter()
            .map(|info| {
                (
                    info.plural,
                    WatchCache::new(info.clone(), store.clone(), config.cache.clone()),
                )
            })
            .collect();
        Arc::new(Api {
            registry,
            store,
            caches,
            config,
            event_lease: Default::default(),
        })
    }

    /// The kinds served.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every watch cache (the server runs them).
    pub fn caches(&self) -> impl Iterator<Item = &Arc<WatchCache>> {
        self.caches.values()
    }

    /// Ready once every cache has loaded.
    pub fn ready(&self) -> bool {
        self.caches.values().all(|c| c.revision() > 0)
    }

    /// Active watchers over all resources.
    pub fn watcher_count(&self) -> usize {
        self.caches.values().map(|c| c.watcher_count()).sum()
    }

    pub(crate) fn cache(&self, info: &ResourceInfo) -> Result<&Arc<WatchCache>, ApiError> {
        self.caches
            .get(info.plural)
            .ok_or_else(|| ApiError::internal(format!("no watch cache for {}", info.plural)))
    }

    /// Resolves the kind and the namespace of a request (namespaced kinds default to
    /// "default" when the request names none and `default_ns` is set).
    pub(crate) fn locate(&self, r: &ObjectRef, default_ns: bool) -> Result<Located, ApiError> {
        let info = self.registry.lookup(&r.api_version, &r.resource)?;
        let namespace = if !info.namespaced {
            String::new()
        } else if r.namespace.is_empty() && default_ns {
            "default".to_string()
        } else {
            r.namespace.clone()
        };
        Ok(Located { info, namespace })
    }

    /// The stored object (linearizable read) and its revision.
    pub(crate) async fn current(&self, at: &Located, name: &str) -> Result<(Value, i64), ApiError> {
        let key = at.key(name);
        let (kv, _) = self.store.get(&key, 0).await?;
        let kv = kv.ok_or_else(|| ApiError::not_found(at.info.plural, at.info.group, name))?;
        let obj = decode_stored(&key, &kv.value, kv.mod_revision)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((obj, kv.mod_revision))
    }

    pub(crate) fn admit_error(info: &ResourceInfo, name: &str, e: AdmitError) -> ApiError {
        match e {
            AdmitError::Invalid(errors) => ApiError::invalid(info.kind, info.group, name, errors),
            AdmitError::Stored(m) => ApiError::internal(format!(
                "stored {} {name:?} cannot be decoded: {m}",
                info.kind
            )),
        }
    }

    /// The write that stores `obj` under `key`: Events carry a lease so that they expire,
    /// as Kubernetes keeps them for --event-ttl.
    pub(crate) async fn put_op(
        &self,
        info: &ResourceInfo,
        key: &str,
        obj: &Value,
    ) -> Result<Op, ApiError> {
        let bytes = stored_bytes(obj);
        if info.plural != "events" {
            return Ok(Op::Put(key.to_string(), bytes));
        }
        let mut lease = self.event_lease.lock().await;
        let reuse = EVENT_LEASE_REUSE.min(self.config.event_ttl / 6);
        let id = match *lease {
            Some((id, granted)) if granted.elapsed() < reuse => id,
            _ => {
                let ttl = (self.config.event_ttl + reuse).as_secs_f64().ceil() as i64;
                let id = self.store.grant_lease(ttl).await?;
                *lease = Some((id, tokio::time::Instant::now()));
                id
            }
        };
        Ok(Op::PutWithLease(key.to_string(), bytes, id))
    }

    pub(crate) async fn commit(&self, conds: &[Cond], ops: Vec<Op>) -> Result<Commit, ApiError> {
        Ok(self.store.commit(conds, ops).await?)
    }
}

/// Parses a request body: within the size limit, JSON, an object.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::too_large(MAX_REQUEST_BYTES));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// Checks (or fills in) apiVersion and kind against the resource addressed.
pub(crate) fn check_type(api_version: &str, kind: &str, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    };
    match map.get("apiVersion").and_then(Value::as_str) {
        None => {
            map.insert("apiVersion".into(), Value::String(api_version.to_string()));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None => {
            map.insert("kind".into(), Value::String(kind.to_string()));
        }
        Some(k) if k == kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({kind})"
            )));
        }
    }
    Ok(())
}

/// metadata.name of an object ("" if unset).
pub(crate) fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// The JSON to store: the object without its resourceVersion (the store's revision is the
/// resourceVersion; keeping a copy inside would only go stale).
pub(crate) fn stored_bytes(obj: &Value) -> Bytes {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).unwrap_or_default().into()
}

/// The object as a client sees it after a write at `revision`.
pub(crate) fn stamped(mut obj: Value, revision: i64) -> Value {
    set_resource_version(&mut obj, revision);
    obj
}

/// Sets a field under metadata.
pub(crate) fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj["metadata"].is_object()
        && let Some(map) = obj.as_object_mut()
    {
        map.insert("metadata".into(), Value::Object(Default::default()));
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(field.to_string(), value);
    }
}
