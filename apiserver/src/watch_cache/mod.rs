//! One watch cache per resource: a single store watch feeds an in-memory copy of every
//! object and a bounded window of recent changes, fanned out to all watchers with their
//! filters. Lists with resourceVersion "0" and every watch are served from here, so a
//! thousand watchers cost the store one watch.
//!
//! - [`object`]: the cached form of an object (its JSON, labels and selectable fields)
//! - [`filter`]: a watcher's namespace and selectors
//!
//! A watcher that does not keep up fills its bounded buffer and is cut off with a
//! resumable error; it never slows the others and never grows memory without bound.

pub mod filter;
pub mod object;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Notify, mpsc, watch};

use crate::error::ApiError;
use crate::registry::ResourceInfo;
use crate::storage::keys::{namespace_prefix, resource_prefix};
use crate::storage::{Store, StoreError, StoreEventKind, WatchItem};

pub use filter::Filter;
pub use object::CachedObject;

/// How long a request for a revision the cache has not reached yet waits for it.
const WAIT_FOR_REVISION: Duration = Duration::from_secs(3);

/// Page size of the initial list.
const LIST_PAGE: i64 = 5_000;

/// Sizes and intervals of a cache.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Changes kept for watchers resuming from a past revision.
    pub history: usize,
    /// Events buffered per watcher before it is cut off.
    pub watcher_buffer: usize,
    /// Interval of BOOKMARK events.
    pub bookmark_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            history: 10_000,
            watcher_buffer: 1_000,
            bookmark_interval: Duration::from_secs(60),
        }
    }
}

/// What happened to an object, as a watcher sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// It appeared (or started matching the filter).
    Added,
    /// It changed.
    Modified,
    /// It was deleted (or stopped matching the filter).
    Deleted,
    /// Nothing changed, but the watcher is current up to this revision.
    Bookmark,
}

/// One event for one watcher.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// What happened.
    pub kind: EventKind,
    /// The object's JSON.
    pub json: Bytes,
    /// The event's revision.
    pub revision: i64,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// Every current object as ADDED, then changes; the cache must first reach
    /// `min_revision` (0: whatever it has).
    Initial {
        /// The least revision the initial state may reflect.
        min_revision: i64,
    },
    /// Changes after this revision.
    After(i64),
}

/// A change kept in the history window.
#[derive(Debug)]
struct Change {
    kind: EventKind,
    obj: Arc<CachedObject>,
    prev: Option<Arc<CachedObject>>,
}

impl Change {
    /// The event a watcher with `filter` receives for this change: transitions across the
    /// filter become ADDED / DELETED, as Kubernetes sends them.
    fn for_filter(&self, filter: &Filter) -> Option<Delivered> {
        let now = filter.matches(&self.obj);
        let before = self.prev.as_ref().is_some_and(|p| filter.matches(p));
        let kind = match (self.kind, before, now) {
            (EventKind::Added, _, true) => EventKind::Added,
            (EventKind::Modified, true, true) => EventKind::Modified,
            (EventKind::Modified, false, true) => EventKind::Added,
            (EventKind::Modified, true, false) => EventKind::Deleted,
            (EventKind::Deleted, _, true) => EventKind::Deleted,
            _ => return None,
        };
        Some(Delivered {
            kind,
            json: self.obj.json.clone(),
            revision: self.obj.revision,
        })
    }
}

struct Watcher {
    filter: Arc<Filter>,
    tx: mpsc::Sender<Delivered>,
    cut: Arc<AtomicBool>,
    bookmarks: bool,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Arc<CachedObject>>,
    history: VecDeque<Change>,
    /// Every change after this revision is in `history`.
    floor: i64,
    /// Every change up to this revision has been applied.
    revision: i64,
    watchers: HashMap<u64, Watcher>,
    next_id: u64,
}

impl State {
    fn dispatch(&mut self, change: &Change) {
        self.watchers.retain(|_, w| {
            let Some(ev) = change.for_filter(&w.filter) else {
                return true;
            };
            match w.tx.try_send(ev) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.cut.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    fn record(&mut self, change: Change, capacity: usize) {
        self.dispatch(&change);
        self.history.push_back(change);
        while self.history.len() > capacity {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.obj.revision;
            }
        }
    }

    fn cut_all(&mut self) {
        for (_, w) in self.watchers.drain() {
            w.cut.store(true, Ordering::Release);
        }
    }
}

/// The cache of one resource.
pub struct WatchCache {
    info: Arc<ResourceInfo>,
    prefix: String,
    store: Store,
    config: CacheConfig,
    state: Mutex<State>,
    revision: watch::Sender<i64>,
    want_progress: Notify,
}

impl WatchCache {
    /// A cache of `info`'s objects; it fills once [`WatchCache::run`] runs.
    pub fn new(info: Arc<ResourceInfo>, store: Store, config: CacheConfig) -> Arc<Self> {
        Arc::new(WatchCache {
            prefix: resource_prefix(info.plural),
            info,
            store,
            config,
            state: Mutex::new(State::default()),
            revision: watch::channel(0).0,
            want_progress: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic in a holder (every update is a plain
        // field write), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The revision the cache is current to (0 until the first list is loaded).
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// The resource cached.
    pub fn resource(&self) -> &'static str {
        self.info.plural
    }

    /// Active watchers.
    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Waits until the cache is current to at least `revision` (asking the store for a
    /// progress notification if needed), up to a few seconds.
    pub async fn wait_for(&self, revision: i64) -> Result<(), ApiError> {
        let mut rx = self.revision.subscribe();
        if *rx.borrow() >= revision.max(1) {
            return Ok(());
        }
        self.want_progress.notify_one();
        let wait = rx.wait_for(|r| *r >= revision.max(1));
        match tokio::time::timeout(WAIT_FOR_REVISION, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ApiError::unavailable("the watch cache stopped")),
            Err(_) => Err(ApiError::timeout(format!(
                "Too large resource version: {revision}, current: {}",
                self.revision()
            ))),
        }
    }

    /// One object, as the cache has it.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object passing `filter`, in key order, and the revision they reflect.
    pub fn list(&self, filter: &Filter) -> (Vec<Arc<CachedObject>>, i64) {
        let state = self.lock();
        let items = match &filter.namespace {
            Some(ns) => {
                let prefix = namespace_prefix(self.info.plural, ns);
                state
                    .objects
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, o)| o)
                    .filter(|o| filter.matches(o))
                    .cloned()
                    .collect()
            }
            None => state
                .objects
                .values()
                .filter(|o| filter.matches(o))
                .cloned()
                .collect(),
        };
        (items, state.revision)
    }

    /// Starts a watch. Fails with Expired when `start` is older than the history window.
    pub async fn watch(
        self: &Arc<Self>,
        filter: Filter,
        start: WatchStart,
        bookmarks: bool,
    ) -> Result<CacheWatch, ApiError> {
        let need = match start {
            WatchStart::Initial { min_revision } => min_revision,
            WatchStart::After(rv) => rv,
        };
        self.wait_for(need).await?;
        let filter = Arc::new(filter);
        let (tx, rx) = mpsc::channel(self.config.watcher_buffer);
        let cut = Arc::new(AtomicBool::new(false));
        let mut state = self.lock();
        let initial: VecDeque<Delivered> = match start {
            WatchStart::Initial { .. } => state
                .objects
                .values()
                .filter(|o| filter.matches(o))
                .map(|o| Delivered {
                    kind: EventKind::Added,
                    json: o.json.clone(),
                    revision: o.revision,
                })
                .collect(),
            WatchStart::After(rv) => {
                if rv < state.floor {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        state.floor + 1
                    )));
                }
                state
                    .history
                    .iter()
                    .filter(|c| c.obj.revision > rv)
                    .filter_map(|c| c.for_filter(&filter))
                    .collect()
            }
        };
        let id = state.next_id;
        state.next_id += 1;
        state.watchers.insert(
            id,
            Watcher {
                filter,
                tx,
                cut: cut.clone(),
                bookmarks,
            },
        );
        drop(state);
        Ok(CacheWatch {
            initial,
            rx,
            cut,
            id,
            cache: self.clone(),
            ended: false,
        })
    }

    fn unregister(&self, id: u64) {
        self.lock().watchers.remove(&id);
    }

    /// Keeps the cache filled until `shutdown` flips: list, then watch from the list's
    /// revision; re-list when the store has compacted past the cache.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let mut need_list = true;
        while !*shutdown.borrow() {
            if need_list {
                match self.load().await {
                    Ok(()) => {
                        need_list = false;
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(resource = self.info.plural, error = %e, "watch cache list failed");
                        if sleep_or_shutdown(backoff, &mut shutdown).await {
                            break;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            match self.follow(&mut shutdown).await {
                Ok(()) => break,
                Err(StoreError::Compacted { .. }) => {
                    tracing::warn!(
                        resource = self.info.plural,
                        "watch cache fell behind compaction; re-listing"
                    );
                    need_list = true;
                }
                Err(e) => {
                    tracing::warn!(resource = self.info.plural, error = %e, "watch cache lost its store watch; resuming");
                    if sleep_or_shutdown(backoff, &mut shutdown).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Closing the channels without the cut-off mark ends every watch cleanly.
        self.lock().watchers.clear();
    }

    /// Loads every object at one revision.
    async fn load(&self) -> Result<(), StoreError> {
        let mut objects = BTreeMap::new();
        let mut start = self.prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let page = self
                .store
                .range(&self.prefix, &start, LIST_PAGE, revision)
                .await?;
            // Later pages are read at the first page's revision (their headers carry the
            // store's current one).
            if revision == 0 {
                revision = page.revision;
            }
            for kv in &page.kvs {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                match CachedObject::from_stored(&self.info, &key, &kv.value, kv.mod_revision) {
                    Ok(o) => {
                        objects.insert(key, Arc::new(o));
                    }
                    Err(e) => tracing::error!(error = %e, "skipping undecodable stored object"),
                }
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => start = crate::storage::keys::key_after(&last.key),
                _ => break,
            }
        }
        let mut state = self.lock();
        state.cut_all();
        state.objects = objects;
        state.history.clear();
        state.floor = revision;
        state.revision = revision;
        drop(state);
        self.revision.send_replace(revision);
        tracing::debug!(resource = self.info.plural, revision, "watch cache loaded");
        Ok(())
    }

    /// Follows the store watch from the cache's revision until shutdown (Ok) or a failure.
    async fn follow(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), StoreError> {
        let from = self.revision() + 1;
        let (mut stream, progress) = self.store.watch(&self.prefix, from).await?;
        let mut bookmark_tick = tokio::time::interval(self.config.bookmark_interval);
        bookmark_tick.tick().await;
        let mut bookmark_due = false;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = self.want_progress.notified() => progress.request(),
                _ = bookmark_tick.tick() => {
                    bookmark_due = true;
                    progress.request();
                }
                item = stream.next() => match item {
                    None => return Err(StoreError::Unavailable("store watch ended".into())),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(WatchItem::Events(events))) => self.apply(events),
                    Some(Ok(WatchItem::Progress(rev))) => {
                        self.advance(rev);
                        if std::mem::take(&mut bookmark_due) {
                            self.send_bookmarks();
                        }
                    }
                },
            }
        }
    }

    fn apply(&self, events: Vec<crate::storage::StoreEvent>) {
        let mut state = self.lock();
        let mut last = state.revision;
        for ev in events {
            let key = String::from_utf8_lossy(&ev.kv.key).into_owned();
            let rev = ev.kv.mod_revision;
            last = last.max(rev);
            let change = match ev.kind {
                StoreEventKind::Put => {
                    let obj = match CachedObject::from_stored(&self.info, &key, &ev.kv.value, rev) {
                        Ok(o) => Arc::new(o),
                        Err(e) => {
                            tracing::error!(error = %e, "skipping undecodable stored object");
                            continue;
                        }
                    };
                    let prev = state.objects.insert(key, obj.clone());
                    Change {
                        kind: if prev.is_some() {
                            EventKind::Modified
                        } else {
                            EventKind::Added
                        },
                        obj,
                        prev,
                    }
                }
                StoreEventKind::Delete => {
                    let Some(prev) = state.objects.remove(&key) else {
                        continue;
                    };
                    Change {
                        kind: EventKind::Deleted,
                        obj: Arc::new(prev.deleted_at(&self.info, rev)),
                        prev: Some(prev),
                    }
                }
            };
            state.record(change, self.config.history);
        }
        state.revision = last;
        drop(state);
        self.revision.send_replace(last);
    }

    fn advance(&self, revision: i64) {
        let mut state = self.lock();
        if revision > state.revision {
            state.revision = revision;
            drop(state);
            self.revision.send_replace(revision);
        }
    }

    fn send_bookmarks(&self) {
        let mut state = self.lock();
        let revision = state.revision;
        let json: Bytes = serde_json::to_vec(&serde_json::json!({
            "kind": self.info.kind,
            "apiVersion": self.info.api_version,
            "metadata": {"resourceVersion": revision.to_string()},
        }))
        .unwrap_or_default()
        .into();
        for w in state.watchers.values_mut().filter(|w| w.bookmarks) {
            // A watcher with a full buffer simply misses this bookmark; events cut it off.
            let _ = w.tx.try_send(Delivered {
                kind: EventKind::Bookmark,
                json: json.clone(),
                revision,
            });
        }
    }
}

/// Sleeps, or returns true early when shutdown flips.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    };
    stopped || *shutdown.borrow()
}

/// One watcher's events: the initial replay, then live changes.
pub struct CacheWatch {
    initial: VecDeque<Delivered>,
    rx: mpsc::Receiver<Delivered>,
    cut: Arc<AtomicBool>,
    id: u64,
    cache: Arc<WatchCache>,
    ended: bool,
}

impl CacheWatch {
    /// The next event; an error once if the watcher was cut off (resume from the last
    /// revision received); None when the server shuts down.
    pub async fn next(&mut self) -> Option<Result<Delivered, ApiError>> {
        if let Some(ev) = self.initial.pop_front() {
            return Some(Ok(ev));
        }
        if self.ended {
            return None;
        }
        match self.rx.recv().await {
            Some(ev) => Some(Ok(ev)),
            None => {
                self.ended = true;
                self.cut.load(Ordering::Acquire).then(|| {
                    Err(ApiError::unavailable(
                        "the watch fell behind and was closed; resume from the last resourceVersion received",
                    ))
                })
            }
        }
    }
}

impl Drop for CacheWatch {
    fn drop(&mut self) {
        self.cache.unregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{FieldSelector, LabelSelector};

    fn obj(name: &str, labels: &[(&str, &str)], revision: i64) -> Arc<CachedObject> {
        Arc::new(CachedObject {
            key: format!("/registry/configmaps/default/{name}"),
            namespace: "default".into(),
            name: name.into(),
            revision,
            json: Bytes::from(format!("{{\"rv\":{revision}}}")),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: Vec::new(),
        })
    }

    fn filter(labels: &str) -> Filter {
        Filter {
            namespace: Some("default".into()),
            labels: LabelSelector::parse(labels).expect("selector"),
            fields: FieldSelector::default(),
        }
    }

    #[test]
    fn changes_across_a_selector_become_added_and_deleted() {
        let f = filter("app=web");
        let before = obj("a", &[("app", "db")], 5);
        let after = obj("a", &[("app", "web")], 6);
        let starts = Change {
            kind: EventKind::Modified,
            obj: after.clone(),
            prev: Some(before.clone()),
        };
        assert_eq!(
            starts.for_filter(&f).map(|d| d.kind),
            Some(EventKind::Added)
        );
        let stops = Change {
            kind: EventKind::Modified,
            obj: before.clone(),
            prev: Some(after.clone()),
        };
        let ev = stops.for_filter(&f).expect("an event");
        assert_eq!(ev.kind, EventKind::Deleted);
        assert_eq!(
            ev.revision, 5,
            "the DELETED event carries the new state's revision"
        );
        let stays_out = Change {
            kind: EventKind::Modified,
            obj: before.clone(),
            prev: Some(before),
        };
        assert!(stays_out.for_filter(&f).is_none());
        let stays_in = Change {
            kind: EventKind::Modified,
            obj: after.clone(),
            prev: Some(after.clone()),
        };
        assert_eq!(
            stays_in.for_filter(&f).map(|d| d.kind),
            Some(EventKind::Modified)
        );
        let gone = Change {
            kind: EventKind::Deleted,
            obj: after,
            prev: None,
        };
        assert_eq!(
            gone.for_filter(&f).map(|d| d.kind),
            Some(EventKind::Deleted)
        );
    }

    #[test]
    fn other_namespaces_are_filtered_out() {
        let mut f = filter("");
        f.namespace = Some("kube-system".into());
        let added = Change {
            kind: EventKind::Added,
            obj: obj("a", &[], 3),
            prev: None,
        };
        assert!(added.for_filter(&f).is_none());
    }

    #[test]
    fn history_trimming_raises_the_floor_and_a_full_watcher_is_cut_off() {
        let mut state = State::default();
        let (tx, mut rx) = mpsc::channel(2);
        let cut = Arc::new(AtomicBool::new(false));
        state.watchers.insert(
            0,
            Watcher {
                filter: Arc::new(filter("")),
                tx,
                cut: cut.clone(),
                bookmarks: false,
            },
        );
        for rev in 1..=4 {
            state.record(
                Change {
                    kind: EventKind::Added,
                    obj: obj(&format!("o{rev}"), &[], rev),
                    prev: None,
                },
                3,
            );
        }
        assert_eq!(state.history.len(), 3);
        assert_eq!(state.floor, 1, "changes after revision 1 are all kept");
        assert!(
            cut.load(Ordering::Acquire),
            "the third event overflowed a buffer of two"
        );
        assert!(state.watchers.is_empty());
        assert_eq!(rx.try_recv().map(|d| d.revision).ok(), Some(1));
        assert_eq!(rx.try_recv().map(|d| d.revision).ok(), Some(2));
        assert!(rx.try_recv().is_err());
    }
}
