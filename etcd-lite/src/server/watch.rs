//! The Watch service: many watchers multiplexed on one bidirectional stream. Requests are
//! read by one task per stream; responses (created, events, progress, canceled) all go
//! through one channel per stream, so their order on the wire is the order they were made.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use bytes::Bytes;
use flotilla_proto::etcdserverpb::watch_create_request::FilterType;
use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
use flotilla_proto::etcdserverpb::watch_server::Watch;
use flotilla_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};

use super::Shared;
use crate::mvcc::key_range::KeyRange;
use crate::watch::WatchSpec;

/// Responses buffered per stream before its watchers fall back to replay.
const STREAM_BUFFER: usize = 1024;

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// The etcd Watch service.
pub struct WatchService {
    shared: Arc<Shared>,
}

impl WatchService {
    /// A Watch service over the member's shared handles.
    pub fn new(shared: Arc<Shared>) -> Self {
        WatchService { shared }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let incoming = request.into_inner();
        let stream_id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let session = Session {
            shared: self.shared.clone(),
            stream_id,
            tx,
            ids: HashSet::new(),
            next_id: 0,
        };
        tokio::spawn(session.run(incoming));
        let shared = self.shared.clone();
        let out = ReceiverStream::new(rx).map(move |mut resp: WatchResponse| {
            let rev = resp.header.map_or(0, |h| h.revision);
            resp.header = Some(shared.header(rev));
            Ok(resp)
        });
        Ok(Response::new(Box::pin(out)))
    }
}

struct Session {
    shared: Arc<Shared>,
    stream_id: u64,
    tx: mpsc::Sender<WatchResponse>,
    ids: HashSet<i64>,
    next_id: i64,
}

impl Session {
    async fn run(mut self, mut incoming: Streaming<WatchRequest>) {
        let mut progress = tokio::time::interval(self.shared.progress_interval);
        progress.tick().await;
        loop {
            tokio::select! {
                msg = incoming.message() => match msg {
                    Ok(Some(req)) => self.handle(req),
                    Ok(None) | Err(_) => break,
                },
                _ = progress.tick() => {
                    let mut sm = self.shared.state.write();
                    let rev = sm.store.revision();
                    sm.watchers.progress(self.stream_id, rev);
                }
                _ = self.tx.closed() => break,
            }
        }
        self.shared
            .state
            .write()
            .watchers
            .remove_stream(self.stream_id);
    }

    fn handle(&mut self, req: WatchRequest) {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c),
            Some(RequestUnion::CancelRequest(c)) => {
                let removed = self
                    .shared
                    .state
                    .write()
                    .watchers
                    .remove((self.stream_id, c.watch_id));
                if removed {
                    self.ids.remove(&c.watch_id);
                    let rev = self.shared.state.read().store.revision();
                    let _ = self.tx.try_send(WatchResponse {
                        header: Some(self.shared.header(rev)),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    });
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let mut sm = self.shared.state.write();
                let rev = sm.store.revision();
                sm.watchers.request_progress(self.stream_id, rev, &self.tx);
            }
            None => {}
        }
    }

    fn refuse(&self, reason: &str) {
        let rev = self.shared.state.read().store.revision();
        let _ = self.tx.try_send(WatchResponse {
            header: Some(self.shared.header(rev)),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        });
    }

    /// The ID a new watcher gets: the client's, or the next free one.
    fn choose_id(&mut self, requested: i64) -> i64 {
        if requested != 0 {
            return requested;
        }
        while self.ids.contains(&self.next_id) {
            self.next_id += 1;
        }
        self.next_id
    }

    /// What etcd does with a watcher that starts before its first retained revision: it
    /// creates it, then cancels it with that revision as `compact_revision`.
    fn created_then_compacted(&mut self, requested_id: i64, compact_revision: i64) {
        let id = self.choose_id(requested_id);
        if requested_id == 0 {
            self.next_id += 1;
        }
        let header = Some(
            self.shared
                .header(self.shared.state.read().store.revision()),
        );
        let created = WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        };
        let canceled = WatchResponse {
            header,
            watch_id: id,
            canceled: true,
            compact_revision,
            ..Default::default()
        };
        let _ = self.tx.try_send(created);
        let _ = self.tx.try_send(canceled);
    }

    fn create(&mut self, c: WatchCreateRequest) {
        // etcd treats an empty key as "\0", the smallest key.
        let key = if c.key.is_empty() {
            Bytes::from_static(&[0])
        } else {
            c.key.clone()
        };
        let range = KeyRange::new(&key, &c.range_end);
        if range.bounds().is_none() {
            self.refuse("mvcc: watcher range is empty");
            return;
        }
        let mut start_revision = c.start_revision;
        if start_revision < 0 {
            // etcd does not check for a negative start revision; such a watcher starts
            // before everything. etcd's first retained revision is -1 until the first
            // compaction and the compaction revision after it: a watcher that starts before
            // that is compacted; one that does not (-1, never compacted) finds nothing to
            // replay in the negative range and watches from now on.
            let first = match self.shared.state.read().store.compacted_revision() {
                0 => -1,
                compacted => compacted,
            };
            if start_revision < first {
                self.created_then_compacted(c.watch_id, first);
                return;
            }
            start_revision = 0;
        }
        let id = self.choose_id(c.watch_id);
        let spec = WatchSpec {
            range,
            start_revision,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify,
        };
        let result = {
            let mut sm = self.shared.state.write();
            let sm = &mut *sm;
            sm.watchers
                .add((self.stream_id, id), spec, self.tx.clone(), &sm.store)
        };
        match result {
            Ok(()) => {
                self.ids.insert(id);
                if c.watch_id == 0 {
                    self.next_id += 1;
                }
                self.shared.syncer.notify_one();
            }
            Err(reason) => self.refuse(reason),
        }
    }
}

/// Replays history to watchers that are behind, whenever woken and every 100 ms while any
/// are behind.
pub async fn run_syncer(shared: Arc<Shared>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut behind = false;
    loop {
        if behind {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                _ = shared.syncer.notified() => {}
                _ = shutdown.changed() => return,
            }
        } else {
            tokio::select! {
                _ = shared.syncer.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
        // Several rounds per wake-up, each a bounded batch under the lock, so a long replay
        // does not hold the applier off for long.
        for _ in 0..16 {
            behind = {
                let mut sm = shared.state.write();
                let sm = &mut *sm;
                sm.watchers.sync_step(&sm.store)
            };
            if !behind {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}
