//! Watchers and event delivery.
//!
//! A watcher is *synced* when it has received every change up to the store's revision; the
//! applier hands synced watchers each new batch of changes directly. A watcher that starts
//! in the past, or whose client reads too slowly (its channel is full), is *unsynced*: the
//! syncer replays the change log to it from the first revision it has not received, and
//! moves it back to synced once it has caught up. Both paths run under the state lock, so
//! every change reaches every watcher exactly once, in revision order.

use std::collections::HashMap;

use flotilla_proto::etcdserverpb::WatchResponse;
use flotilla_proto::mvccpb::{Event, event::EventType};
use tokio::sync::mpsc;

use crate::mvcc::MvccStore;
use crate::mvcc::key_range::KeyRange;
use crate::mvcc::store::Change;

/// Most changes replayed to one watcher per syncer pass (whole revisions are kept together).
const REPLAY_BATCH: usize = 1000;

/// What a watcher wants.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// The keys watched.
    pub range: KeyRange,
    /// The first revision wanted; 0 means "after now".
    pub start_revision: i64,
    /// Deliver the previous key-value with each event.
    pub prev_kv: bool,
    /// Filter out puts.
    pub no_put: bool,
    /// Filter out deletes.
    pub no_delete: bool,
    /// Send periodic progress notifications.
    pub progress_notify: bool,
}

struct Watcher {
    spec: WatchSpec,
    tx: mpsc::Sender<WatchResponse>,
    /// The first revision this watcher has not been sent.
    next_rev: i64,
    synced: bool,
}

/// Identifies a watcher: the stream it lives on and its ID there.
pub type WatcherKey = (u64, i64);

/// Every watcher of the member.
#[derive(Default)]
pub struct WatcherSet {
    watchers: HashMap<WatcherKey, Watcher>,
}

/// A watch response with only the fields the hub knows; the stream adds the header.
fn response(watch_id: i64, revision: i64) -> WatchResponse {
    WatchResponse {
        header: Some(flotilla_proto::etcdserverpb::ResponseHeader {
            revision,
            ..Default::default()
        }),
        watch_id,
        ..Default::default()
    }
}

impl WatchSpec {
    fn wants(&self, c: &Change) -> bool {
        let filtered = if c.version.tombstone {
            self.no_delete
        } else {
            self.no_put
        };
        !filtered && self.range.contains(&c.key)
    }

    fn event(&self, c: &Change) -> Event {
        let mut e = c.to_event();
        if !self.prev_kv {
            e.prev_kv = None;
        }
        debug_assert!(e.r#type == EventType::Put as i32 || e.r#type == EventType::Delete as i32);
        e
    }
}

impl WatcherSet {
    /// Registers a watcher and sends its `created` response; it is synced if it starts
    /// after the current revision. Fails if the ID is taken on this stream or the stream's
    /// channel is full.
    pub fn add(
        &mut self,
        key: WatcherKey,
        spec: WatchSpec,
        tx: mpsc::Sender<WatchResponse>,
        store: &MvccStore,
    ) -> Result<(), &'static str> {
        if self.watchers.contains_key(&key) {
            return Err("watcher ID already in use on this stream");
        }
        let current = store.revision();
        let next_rev = if spec.start_revision > 0 {
            spec.start_revision
        } else {
            current + 1
        };
        let mut created = response(key.1, current);
        created.created = true;
        tx.try_send(created)
            .map_err(|_| "the watch stream is not being read")?;
        self.watchers.insert(
            key,
            Watcher {
                spec,
                tx,
                next_rev,
                synced: next_rev > current,
            },
        );
        Ok(())
    }

    /// Removes a watcher; returns whether it existed.
    pub fn remove(&mut self, key: WatcherKey) -> bool {
        self.watchers.remove(&key).is_some()
    }

    /// Removes every watcher of a stream.
    pub fn remove_stream(&mut self, stream: u64) {
        self.watchers.retain(|(s, _), _| *s != stream);
    }

    /// Delivers freshly applied changes (revisions up to `current`) to synced watchers.
    pub fn dispatch(&mut self, changes: &[Change], current: i64) {
        for ((_, id), w) in self.watchers.iter_mut().filter(|(_, w)| w.synced) {
            let events: Vec<Event> = changes
                .iter()
                .filter(|c| c.version.rev.main >= w.next_rev && w.spec.wants(c))
                .map(|c| w.spec.event(c))
                .collect();
            if !events.is_empty() {
                let mut resp = response(*id, current);
                resp.events = events;
                if w.tx.try_send(resp).is_err() {
                    // The client is behind: replay from the first change of this batch.
                    w.synced = false;
                    continue;
                }
            }
            w.next_rev = w.next_rev.max(current + 1);
        }
    }

    /// Whether any watcher needs the syncer.
    pub fn has_unsynced(&self) -> bool {
        self.watchers.values().any(|w| !w.synced)
    }

    /// Marks every watcher unsynced (after the store was replaced by a snapshot).
    pub fn unsync_all(&mut self) {
        for w in self.watchers.values_mut() {
            w.synced = false;
        }
    }

    /// Replays history to unsynced watchers, one batch each; cancels those whose next
    /// revision was compacted. Returns whether any remain unsynced.
    pub fn sync_step(&mut self, store: &MvccStore) -> bool {
        let current = store.revision();
        let compacted = store.compacted_revision();
        let mut cancelled = Vec::new();
        for (key, w) in self.watchers.iter_mut().filter(|(_, w)| !w.synced) {
            if w.next_rev < compacted {
                let mut resp = response(key.1, current);
                resp.compact_revision = compacted;
                // etcd gives no reason: clients recognise the case by compact_revision.
                resp.canceled = true;
                if w.tx.try_send(resp).is_ok() {
                    cancelled.push(*key);
                }
                continue;
            }
            let changes = store.changes_between(w.next_rev, current, REPLAY_BATCH);
            let upto = if changes.len() >= REPLAY_BATCH {
                changes.last().map_or(current, |c| c.version.rev.main)
            } else {
                current
            };
            let events: Vec<Event> = changes
                .iter()
                .filter(|c| w.spec.wants(c))
                .map(|c| w.spec.event(c))
                .collect();
            if !events.is_empty() {
                let mut resp = response(key.1, upto);
                resp.events = events;
                if w.tx.try_send(resp).is_err() {
                    continue;
                }
            }
            w.next_rev = upto + 1;
            w.synced = upto == current;
        }
        for key in cancelled {
            self.watchers.remove(&key);
        }
        self.has_unsynced()
    }

    /// Sends a progress notification (an empty response at the current revision) to the
    /// synced watchers of `stream` that asked for them.
    pub fn progress(&mut self, stream: u64, current: i64) {
        for ((s, id), w) in &self.watchers {
            if *s == stream && w.synced && w.spec.progress_notify {
                let _ = w.tx.try_send(response(*id, current));
            }
        }
    }

    /// Answers a client's progress request on `stream`: one response with watch ID -1 at
    /// the current revision, but only when every watcher of the stream is synced, since the
    /// revision promises that nothing older is still to come.
    pub fn request_progress(
        &mut self,
        stream: u64,
        current: i64,
        tx: &mpsc::Sender<WatchResponse>,
    ) {
        let all_synced = self
            .watchers
            .iter()
            .filter(|((s, _), _)| *s == stream)
            .all(|(_, w)| w.synced);
        if all_synced {
            let _ = tx.try_send(response(-1, current));
        }
    }

    /// Number of watchers.
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    /// Whether there are no watchers.
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }
}
