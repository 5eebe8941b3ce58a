//! A client for the etcd v3 API with the operations the API server needs.
//!
//! Every write is one transaction whose conditions are checked by the store itself, so two
//! API servers (or two requests) racing on one object never both win: the loser sees which
//! condition failed and what is there now.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::request_op::Request as OpRequest;
use flotilla_proto::etcdserverpb::response_op::Response as OpResponse;
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use flotilla_proto::mvccpb::event::EventType;

use super::keys::prefix_end;

/// Largest response the client accepts (a page of a big list).
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An endpoint is not a URL.
    #[error("invalid store endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The revision asked for is below the store's compacted revision.
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compaction point, when known.
        compacted: i64,
    },
    /// The store refused the request as too large.
    #[error("the store refused the request as too large: {0}")]
    TooLarge(String),
    /// The store is unreachable or has no leader.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time.
    #[error("store request timed out: {0}")]
    Timeout(String),
    /// Any other failure the store reported.
    #[error("store error: {0}")]
    Other(String),
}

impl From<tonic::Status> for StoreError {
    fn from(s: tonic::Status) -> Self {
        let msg = s.message().to_string();
        match s.code() {
            tonic::Code::OutOfRange if msg.contains("compacted") => StoreError::Compacted {
                requested: 0,
                compacted: 0,
            },
            tonic::Code::InvalidArgument if msg.contains("too large") => StoreError::TooLarge(msg),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                StoreError::Unavailable(msg)
            }
            tonic::Code::DeadlineExceeded => StoreError::Timeout(msg),
            _ => StoreError::Other(format!("{:?}: {msg}", s.code())),
        }
    }
}

/// A stored key-value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// The revision that created the key.
    pub create_revision: i64,
    /// The revision of the last change.
    pub mod_revision: i64,
}

impl From<flotilla_proto::mvccpb::KeyValue> for Kv {
    fn from(kv: flotilla_proto::mvccpb::KeyValue) -> Self {
        Kv {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }
}

/// A condition of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// The key does not exist.
    Absent(String),
    /// The key was last changed at this revision.
    ModRevision(String, i64),
}

impl Cond {
    fn key(&self) -> &str {
        match self {
            Cond::Absent(k) | Cond::ModRevision(k, _) => k,
        }
    }

    fn holds(&self, current: Option<&Kv>) -> bool {
        match (self, current) {
            (Cond::Absent(_), None) => true,
            (Cond::ModRevision(_, rev), Some(kv)) => kv.mod_revision == *rev,
            _ => false,
        }
    }
}

/// A change in a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Store a value.
    Put(String, Bytes),
    /// Store a value that goes away with a lease.
    PutWithLease(String, Bytes, i64),
    /// Remove a key.
    Delete(String),
}

/// The outcome of a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Every condition held; the changes are stored at this revision.
    Done(i64),
    /// Some condition failed; nothing changed. One entry per condition: did it hold, and
    /// what is stored under its key now.
    Failed(Vec<(bool, Option<Kv>)>),
}

/// One page of a range read.
#[derive(Clone, Debug, Default)]
pub struct RangePage {
    /// The key-values, in key order.
    pub kvs: Vec<Kv>,
    /// More keys follow in the range.
    pub more: bool,
    /// Keys in the whole range.
    pub count: i64,
    /// The revision the read was served at.
    pub revision: i64,
}

/// What a watched change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreEventKind {
    /// A key was created or changed.
    Put,
    /// A key was deleted.
    Delete,
}

/// One watched change.
#[derive(Clone, Debug)]
pub struct StoreEvent {
    /// Created/changed or deleted.
    pub kind: StoreEventKind,
    /// The key and, for a put, its new value; for a delete, `mod_revision` is the revision of
    /// the delete.
    pub kv: Kv,
}

/// One store member's clients.
struct Endpoint {
    url: String,
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    lease: LeaseClient<Channel>,
}

/// Whether a failed call may be repeated on another member.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: always.
    Always,
    /// Writes: only when the request cannot have reached a member (the connection was
    /// refused), so a write is never applied twice.
    IfUnsent,
}

fn worth_another_member(s: &tonic::Status, retry: Retry) -> bool {
    if s.code() != tonic::Code::Unavailable {
        return false;
    }
    match retry {
        Retry::Always => true,
        Retry::IfUnsent => {
            let m = s.message().to_ascii_lowercase();
            m.contains("connect") || m.contains("refused")
        }
    }
}

/// A connection to the store: every member's endpoint, one of them in use. A member that
/// stops answering is left for the next one, as etcd's own client does.
#[derive(Clone)]
pub struct Store {
    endpoints: Arc<Vec<Endpoint>>,
    current: Arc<AtomicUsize>,
    timeout: Duration,
    latency: Option<Arc<LatencyFamily>>,
}

/// Store latency by operation.
pub type LatencyFamily = prometheus_client::metrics::family::Family<
    Vec<(&'static str, String)>,
    prometheus_client::metrics::histogram::Histogram,
    fn() -> prometheus_client::metrics::histogram::Histogram,
>;

impl Store {
    /// Connects lazily to the endpoints (`http://host:port`), spreading requests over them.
    pub fn connect(endpoints: &[String], timeout: Duration) -> Result<Self, StoreError> {
        let mut eps = Vec::new();
        for e in endpoints {
            let ep = tonic::transport::Endpoint::from_shared(e.clone())
                .map_err(|err| StoreError::Endpoint {
                    endpoint: e.clone(),
                    reason: err.to_string(),
                })?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10));
            let channel = ep.connect_lazy();
            eps.push(Endpoint {
                url: e.clone(),
                kv: KvClient::new(channel.clone())
                    .max_decoding_message_size(MAX_RESPONSE)
                    .max_encoding_message_size(MAX_RESPONSE),
                watch: WatchClient::new(channel.clone())
                    .max_decoding_message_size(MAX_RESPONSE)
                    .max_encoding_message_size(MAX_RESPONSE),
                lease: LeaseClient::new(channel),
            });
        }
        if eps.is_empty() {
            return Err(StoreError::Endpoint {
                endpoint: String::new(),
                reason: "no store endpoints given".into(),
            });
        }
        Ok(Store {
            endpoints: Arc::new(eps),
            current: Arc::new(AtomicUsize::new(0)),
            timeout,
            latency: None,
        })
    }

    /// Moves on from member `failed` (unless another caller already did).
    fn next_member(&self, failed: usize) {
        let n = self.endpoints.len();
        let next = (failed + 1) % n;
        if self
            .current
            .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            && n > 1
        {
            tracing::warn!(from = %self.endpoints[failed].url, to = %self.endpoints[next].url, "store member unavailable; switching");
        }
    }

    /// Runs a KV call on the current member, moving on to the others when it is
    /// unavailable (and `retry` allows repeating the call).
    async fn kv_call<T, F, Fut>(
        &self,
        op: &'static str,
        retry: Retry,
        call: F,
    ) -> Result<T, tonic::Status>
    where
        F: Fn(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = Instant::now();
        let n = self.endpoints.len();
        let mut attempt = 0;
        loop {
            let i = self.current.load(Ordering::Acquire) % n;
            match call(self.endpoints[i].kv.clone()).await {
                Ok(r) => {
                    self.observe(op, start);
                    return Ok(r.into_inner());
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    self.next_member(i);
                    attempt += 1;
                    if attempt >= n || !worth_another_member(&s, retry) {
                        return Err(s);
                    }
                }
                Err(s) => return Err(s),
            }
        }
    }

    /// Records every round trip's latency in `family`.
    pub fn with_metrics(mut self, family: Arc<LatencyFamily>) -> Self {
        self.latency = Some(family);
        self
    }

    fn observe(&self, op: &'static str, start: std::time::Instant) {
        if let Some(f) = &self.latency {
            f.get_or_create(&vec![("operation", op.to_string())])
                .observe(start.elapsed().as_secs_f64());
        }
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        r
    }

    /// Reads one key (linearizable when `revision` is 0, else at that revision).
    pub async fn get(&self, key: &str, revision: i64) -> Result<(Option<Kv>, i64), StoreError> {
        let req = RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            revision,
            ..Default::default()
        };
        let resp = self
            .kv_call("get", Retry::Always, |mut kv| {
                let r = self.request(req.clone());
                async move { kv.range(r).await }
            })
            .await
            .map_err(|s| compacted_at(s, revision))?;
        let rev = resp.header.map(|h| h.revision).unwrap_or_default();
        Ok((resp.kvs.into_iter().next().map(Kv::from), rev))
    }

    /// Reads keys from `start` (inclusive) to the end of `prefix`, at most `limit` (0: all),
    /// at `revision` (0: latest, linearizable).
    pub async fn range(
        &self,
        prefix: &str,
        start: &[u8],
        limit: i64,
        revision: i64,
    ) -> Result<RangePage, StoreError> {
        let req = RangeRequest {
            key: Bytes::copy_from_slice(start),
            range_end: prefix_end(prefix.as_bytes()).into(),
            limit,
            revision,
            ..Default::default()
        };
        let resp = self
            .kv_call("range", Retry::Always, |mut kv| {
                let r = self.request(req.clone());
                async move { kv.range(r).await }
            })
            .await
            .map_err(|s| compacted_at(s, revision))?;
        Ok(RangePage {
            revision: resp.header.map(|h| h.revision).unwrap_or_default(),
            more: resp.more,
            count: resp.count,
            kvs: resp.kvs.into_iter().map(Kv::from).collect(),
        })
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> Result<i64, StoreError> {
        let req = RangeRequest {
            key: Bytes::from_static(b"\0"),
            count_only: true,
            ..Default::default()
        };
        let resp = self
            .kv_call("revision", Retry::Always, |mut kv| {
                let r = self.request(req.clone());
                async move { kv.range(r).await }
            })
            .await?;
        Ok(resp.header.map(|h| h.revision).unwrap_or_default())
    }

    /// Applies `ops` if every condition holds, atomically.
    pub async fn commit(&self, conds: &[Cond], ops: Vec<Op>) -> Result<Commit, StoreError> {
        let compare = conds
            .iter()
            .map(|c| match c {
                Cond::Absent(k) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Create as i32,
                    key: Bytes::copy_from_slice(k.as_bytes()),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
                Cond::ModRevision(k, rev) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: Bytes::copy_from_slice(k.as_bytes()),
                    target_union: Some(TargetUnion::ModRevision(*rev)),
                    ..Default::default()
                },
            })
            .collect();
        let success = ops
            .into_iter()
            .map(|op| RequestOp {
                request: Some(match op {
                    Op::Put(k, v) => OpRequest::RequestPut(PutRequest {
                        key: k.into_bytes().into(),
                        value: v,
                        ..Default::default()
                    }),
                    Op::PutWithLease(k, v, lease) => OpRequest::RequestPut(PutRequest {
                        key: k.into_bytes().into(),
                        value: v,
                        lease,
                        ..Default::default()
                    }),
                    Op::Delete(k) => OpRequest::RequestDeleteRange(DeleteRangeRequest {
                        key: k.into_bytes().into(),
                        ..Default::default()
                    }),
                }),
            })
            .collect();
        // On failure, read back every conditioned key so the caller learns what is there.
        let failure = conds
            .iter()
            .map(|c| RequestOp {
                request: Some(OpRequest::RequestRange(RangeRequest {
                    key: Bytes::copy_from_slice(c.key().as_bytes()),
                    ..Default::default()
                })),
            })
            .collect();
        let req = TxnRequest {
            compare,
            success,
            failure,
        };
        let resp = self
            .kv_call("txn", Retry::IfUnsent, |mut kv| {
                let r = self.request(req.clone());
                async move { kv.txn(r).await }
            })
            .await?;
        if resp.succeeded {
            return Ok(Commit::Done(
                resp.header.map(|h| h.revision).unwrap_or_default(),
            ));
        }
        let current = conds
            .iter()
            .zip(resp.responses)
            .map(|(c, r)| {
                let kv = match r.response {
                    Some(OpResponse::ResponseRange(rr)) => rr.kvs.into_iter().next().map(Kv::from),
                    _ => None,
                };
                (c.holds(kv.as_ref()), kv)
            })
            .collect();
        Ok(Commit::Failed(current))
    }

    /// Grants a lease of `ttl_seconds`; keys put with it are deleted when it expires.
    pub async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64, StoreError> {
        let n = self.endpoints.len();
        let mut attempt = 0;
        loop {
            let i = self.current.load(Ordering::Acquire) % n;
            let req = self.request(LeaseGrantRequest {
                ttl: ttl_seconds,
                id: 0,
            });
            match self.endpoints[i].lease.clone().lease_grant(req).await {
                Ok(r) => return Ok(r.into_inner().id),
                Err(s) if s.code() == tonic::Code::Unavailable && attempt + 1 < n => {
                    self.next_member(i);
                    attempt += 1;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// Compacts the store's history up to `revision`.
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let req = CompactionRequest {
            revision,
            physical: false,
        };
        self.kv_call("compact", Retry::Always, |mut kv| {
            let r = self.request(req);
            async move { kv.compact(r).await }
        })
        .await?;
        Ok(())
    }

    /// Streams every change under `prefix` from `start_revision` on, in revision order,
    /// one batch per revision group the store sends, and the store's answers to progress
    /// requests. Ends with an error when the store cancels the watch (for example because
    /// `start_revision` was compacted).
    pub async fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<(WatchStream, ProgressRequester), StoreError> {
        let (req_tx, req_rx) = mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: Bytes::copy_from_slice(prefix.as_bytes()),
                range_end: prefix_end(prefix.as_bytes()).into(),
                start_revision,
                ..Default::default()
            })),
        };
        req_tx
            .send(create)
            .await
            .map_err(|_| StoreError::Other("watch request channel closed".into()))?;
        let requests = tokio_stream::wrappers::ReceiverStream::new(req_rx);
        let i = self.current.load(Ordering::Acquire) % self.endpoints.len();
        let mut responses = match self.endpoints[i].watch.clone().watch(requests).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                // The next attempt (the watch cache retries) goes to another member.
                self.next_member(i);
                return Err(s.into());
            }
        };
        let progress = ProgressRequester(req_tx);
        let stream = spawn_stream(move |tx| async move {
            loop {
                let resp = match responses.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(StoreError::Unavailable("watch stream ended".into())))
                            .await;
                        return;
                    }
                    Err(s) => {
                        let _ = tx.send(Err(StoreError::from(s))).await;
                        return;
                    }
                };
                if resp.canceled {
                    let err = if resp.compact_revision > 0 {
                        StoreError::Compacted {
                            requested: start_revision,
                            compacted: resp.compact_revision,
                        }
                    } else {
                        StoreError::Other(format!("watch canceled: {}", resp.cancel_reason))
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                let revision = resp.header.map(|h| h.revision).unwrap_or_default();
                let item = if resp.events.is_empty() {
                    if resp.created {
                        continue;
                    }
                    // An answer to a progress request: every change up to `revision` has
                    // been sent.
                    WatchItem::Progress(revision)
                } else {
                    WatchItem::Events(resp.events.into_iter().map(StoreEvent::from).collect())
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
        });
        Ok((Box::pin(stream), progress))
    }
}

/// What a store watch delivers.
#[derive(Clone, Debug)]
pub enum WatchItem {
    /// Changes, in revision order.
    Events(Vec<StoreEvent>),
    /// Every change up to this revision has been delivered.
    Progress(i64),
}

/// The changes of a store watch.
pub type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<WatchItem, StoreError>> + Send>>;

/// Asks the store for a progress notification on a watch.
#[derive(Clone)]
pub struct ProgressRequester(mpsc::Sender<WatchRequest>);

impl ProgressRequester {
    /// Requests a notification; the store answers once this watch has caught up.
    pub fn request(&self) {
        let _ = self.0.try_send(WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(Default::default())),
        });
    }
}

impl From<flotilla_proto::mvccpb::Event> for StoreEvent {
    fn from(e: flotilla_proto::mvccpb::Event) -> Self {
        StoreEvent {
            kind: if e.r#type == EventType::Delete as i32 {
                StoreEventKind::Delete
            } else {
                StoreEventKind::Put
            },
            kv: e.kv.map(Kv::from).unwrap_or(Kv {
                key: Bytes::new(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: 0,
            }),
        }
    }
}

/// Runs `produce` as a task feeding a channel, and returns the channel as a stream; the
/// task ends when the stream is dropped.
fn spawn_stream<T, F, Fut>(produce: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(produce(tx));
    let abort = AbortOnDrop(task);
    tokio_stream::wrappers::ReceiverStream::new(rx).map(move |item| {
        let _ = &abort;
        item
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn compacted_at(s: tonic::Status, requested: i64) -> StoreError {
    match StoreError::from(s) {
        StoreError::Compacted { compacted, .. } => StoreError::Compacted {
            requested,
            compacted,
        },
        other => other,
    }
}
