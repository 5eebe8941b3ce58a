//! Informers: a local cache of one resource kept current by list + watch, with indexes and
//! change handlers. The scheduler, controllers and agents read the cache instead of the
//! server and react to changes.
//!
//! The informer lists, then watches from the list's resourceVersion; a watch that ends is
//! resumed from the last resourceVersion seen (bookmarks keep it recent); a resourceVersion
//! the server no longer has (Expired) sends it back to a full list, whose differences with
//! the cache are delivered as changes, so handlers never miss the net effect.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::api::{Api, ListParams, WatchEvent};
use crate::error::ClientError;

/// A change to the cache.
#[derive(Debug)]
pub enum Change<K> {
    /// A new object.
    Added(Arc<K>),
    /// An object changed.
    Updated {
        /// Before.
        old: Arc<K>,
        /// After.
        new: Arc<K>,
    },
    /// An object is gone (its last known state).
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    /// The object as it is now (its last known state, when deleted).
    pub fn latest(&self) -> &Arc<K> {
        match self {
            Change::Added(o) | Change::Updated { new: o, .. } | Change::Deleted(o) => o,
        }
    }
}

/// What an informer can hold: a Kubernetes kind, with metadata, in JSON.
pub trait Object:
    k8s_openapi::Resource
    + Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Object for K where
    K: k8s_openapi::Resource
        + Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Index values of an object.
pub type IndexFn<K> = fn(&K) -> Vec<String>;

/// A change handler.
pub type Handler<K> = Box<dyn Fn(&Change<K>) + Send + Sync>;

/// The cache key of an object: `namespace/name`, or `name` for cluster-scoped ones.
pub fn key_of(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Index by namespace (every store has it, as "namespace").
pub fn by_namespace<K: Metadata<Ty = ObjectMeta>>(k: &K) -> Vec<String> {
    k.metadata().namespace.clone().into_iter().collect()
}

/// Index by owner uid.
pub fn by_owner<K: Metadata<Ty = ObjectMeta>>(k: &K) -> Vec<String> {
    k.metadata()
        .owner_references
        .iter()
        .flatten()
        .map(|o| o.uid.clone())
        .collect()
}

/// Index pods by spec.nodeName ("" for unbound pods).
pub fn pods_by_node(p: &k8s_openapi::api::core::v1::Pod) -> Vec<String> {
    vec![
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
    ]
}

struct Inner<K> {
    objects: HashMap<String, Arc<K>>,
    indexers: Vec<(&'static str, IndexFn<K>)>,
    indexes: HashMap<&'static str, HashMap<String, HashSet<String>>>,
}

impl<K> Inner<K> {
    fn unindex(&mut self, key: &str, obj: &K) {
        for (name, f) in &self.indexers {
            if let Some(idx) = self.indexes.get_mut(name) {
                for v in f(obj) {
                    if let Some(set) = idx.get_mut(&v) {
                        set.remove(key);
                        if set.is_empty() {
                            idx.remove(&v);
                        }
                    }
                }
            }
        }
    }

    fn index(&mut self, key: &str, obj: &K) {
        for (name, f) in &self.indexers {
            let idx = self.indexes.entry(name).or_default();
            for v in f(obj) {
                idx.entry(v).or_default().insert(key.to_string());
            }
        }
    }

    fn upsert(&mut self, key: String, obj: Arc<K>) -> Option<Arc<K>> {
        let old = self.objects.insert(key.clone(), obj.clone());
        if let Some(o) = &old {
            self.unindex(&key, o);
        }
        self.index(&key, &obj);
        old
    }

    fn remove(&mut self, key: &str) -> Option<Arc<K>> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }
}

/// A read handle on an informer's cache.
pub struct Store<K> {
    inner: Arc<RwLock<Inner<K>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            inner: self.inner.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K> Store<K> {
    fn read(&self) -> RwLockReadGuard<'_, Inner<K>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The object under a key (`namespace/name` or `name`).
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    /// The objects whose index `index` has `value`.
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<K>> {
        let inner = self.read();
        inner
            .indexes
            .get(index)
            .and_then(|i| i.get(value))
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| inner.objects.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Objects in the cache.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// Is the cache empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Has the first list been loaded?
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first list is loaded (false if the informer stopped first).
    pub async fn wait_until_ready(&self) -> bool {
        self.ready.clone().wait_for(|r| *r).await.is_ok()
    }
}

/// Keeps a [`Store`] current and calls handlers on every change.
pub struct Informer<K> {
    api: Api<K>,
    params: ListParams,
    inner: Arc<RwLock<Inner<K>>>,
    ready: watch::Sender<bool>,
    handlers: Vec<Handler<K>>,
}

/// Page size of the informer's lists.
const LIST_PAGE: i64 = 500;

impl<K: Object> Informer<K> {
    /// An informer over the objects `api` and `params` (selectors) select.
    pub fn new(api: Api<K>, params: ListParams) -> Self {
        Informer {
            api,
            params,
            inner: Arc::new(RwLock::new(Inner {
                objects: HashMap::new(),
                indexers: vec![("namespace", by_namespace::<K> as IndexFn<K>)],
                indexes: HashMap::new(),
            })),
            ready: watch::channel(false).0,
            handlers: Vec::new(),
        }
    }

    /// Adds an index.
    pub fn with_index(mut self, name: &'static str, f: IndexFn<K>) -> Self {
        self.add_index(name, f);
        self
    }

    /// Adds a change handler (called in order, on the informer's task: keep it quick, e.g.
    /// put a key on a work queue).
    pub fn on_change(mut self, handler: impl Fn(&Change<K>) + Send + Sync + 'static) -> Self {
        self.add_handler(handler);
        self
    }

    /// Adds an index before the informer runs; a name already indexed is kept as it is
    /// (several users of a shared informer may each ask for it).
    pub fn add_index(&mut self, name: &'static str, f: IndexFn<K>) -> &mut Self {
        let mut inner = self.write();
        if !inner.indexers.iter().any(|(n, _)| *n == name) {
            inner.indexers.push((name, f));
        }
        drop(inner);
        self
    }

    /// Adds a change handler before the informer runs (see [`Informer::on_change`]).
    pub fn add_handler(
        &mut self,
        handler: impl Fn(&Change<K>) + Send + Sync + 'static,
    ) -> &mut Self {
        self.handlers.push(Box::new(handler));
        self
    }

    #[cfg(test)]
    pub(crate) fn handler_count(&self) -> usize {
        self.handlers.len()
    }

    #[cfg(test)]
    pub(crate) fn index_names(&self) -> Vec<&'static str> {
        self.write().indexers.iter().map(|(n, _)| *n).collect()
    }

    /// A read handle on the cache.
    pub fn store(&self) -> Store<K> {
        Store {
            inner: self.inner.clone(),
            ready: self.ready.subscribe(),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<K>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, change: Change<K>) {
        for h in &self.handlers {
            h(&change);
        }
    }

    fn apply(&self, obj: K, deleted: bool) {
        let key = key_of(obj.metadata());
        let change = if deleted {
            self.write().remove(&key).map(Change::Deleted)
        } else {
            let new = Arc::new(obj);
            match self.write().upsert(key, new.clone()) {
                Some(old) => Some(Change::Updated { old, new }),
                None => Some(Change::Added(new)),
            }
        };
        if let Some(c) = change {
            self.emit(c);
        }
    }

    /// Lists everything (one consistent snapshot), replaces the cache and reports the
    /// differences; returns the list's resourceVersion.
    async fn relist(&self) -> Result<String, ClientError> {
        let mut fresh: HashMap<String, K> = HashMap::new();
        let mut params = ListParams {
            limit: LIST_PAGE,
            ..self.params.clone()
        };
        let resource_version = loop {
            let page = self.api.list(&params).await?;
            for obj in page.items {
                fresh.insert(key_of(obj.metadata()), obj);
            }
            if page.continue_token.is_empty() {
                break page.resource_version;
            }
            params.continue_token = page.continue_token;
        };
        let gone: Vec<String> = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            inner
                .objects
                .keys()
                .filter(|k| !fresh.contains_key(*k))
                .cloned()
                .collect()
        };
        for key in gone {
            if let Some(old) = self.write().remove(&key) {
                self.emit(Change::Deleted(old));
            }
        }
        for (i, (key, obj)) in fresh.into_iter().enumerate() {
            let unchanged = self.store().get(&key).is_some_and(|old| {
                old.metadata().resource_version == obj.metadata().resource_version
            });
            if !unchanged {
                self.apply(obj, false);
            }
            // A relist of many objects runs every handler for each: let other tasks in.
            if i % 256 == 255 {
                tokio::task::yield_now().await;
            }
        }
        self.ready.send_replace(true);
        Ok(resource_version)
    }

    /// Runs until `shutdown` flips.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut resource_version: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        let kind = K::KIND;
        while !*shutdown.borrow() {
            let rv = match &resource_version {
                Some(rv) => rv.clone(),
                None => match self.relist().await {
                    Ok(rv) => {
                        resource_version = Some(rv.clone());
                        rv
                    }
                    Err(e) => {
                        tracing::warn!(kind, error = %e, "informer list failed");
                        if sleep_or_stop(&mut backoff, &mut shutdown).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let mut stream = match self.api.watch(&self.params, &rv).await {
                Ok(s) => s,
                Err(e) if e.is_expired() => {
                    resource_version = None;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(kind, error = %e, "informer watch failed");
                    if sleep_or_stop(&mut backoff, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            loop {
                let item = tokio::select! {
                    _ = shutdown.changed() => return,
                    item = stream.next() => item,
                };
                match item {
                    None => break,
                    Some(Ok(WatchEvent::Bookmark(rv))) => resource_version = Some(rv),
                    Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                        resource_version = o.metadata().resource_version.clone();
                        self.apply(o, false);
                    }
                    Some(Ok(WatchEvent::Deleted(o))) => {
                        resource_version = o.metadata().resource_version.clone();
                        self.apply(o, true);
                    }
                    Some(Err(e)) if e.is_expired() => {
                        resource_version = None;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(kind, error = %e, "informer watch ended; resuming");
                        break;
                    }
                }
            }
        }
    }
}

/// Sleeps the back-off (doubling it, up to 5 s); true if shutdown flipped meanwhile.
async fn sleep_or_stop(backoff: &mut Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let d = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    };
    stopped || *shutdown.borrow()
}
