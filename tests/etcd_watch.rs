//! Watch semantics of etcd-lite: many watchers on one stream, replay from history, filters,
//! cancellation, progress notifications, compaction, and a client too slow to keep up.

#[path = "support/inproc.rs"]
mod inproc;

use std::time::Duration;

use bytes::Bytes;
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::watch_create_request::FilterType;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse, watch_request::RequestUnion,
};
use flotilla_proto::mvccpb::event::EventType;
use inproc::InProcCluster;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(10);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// One watch stream: requests go in through `tx`, responses come out of `rx`.
struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    rx: Streaming<WatchResponse>,
}

impl Stream {
    async fn open(c: &InProcCluster) -> Stream {
        let (tx, requests) = mpsc::channel(16);
        let rx = WatchClient::new(c.channel(0))
            .watch(ReceiverStream::new(requests))
            .await
            .expect("watch stream")
            .into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, r: RequestUnion) {
        self.tx
            .send(WatchRequest {
                request_union: Some(r),
            })
            .await
            .expect("request sent");
    }

    async fn create(&mut self, c: WatchCreateRequest) -> WatchResponse {
        self.send(RequestUnion::CreateRequest(c)).await;
        let resp = self.next().await;
        assert!(resp.created, "expected a created response, got {resp:?}");
        resp
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a watch response in time")
            .expect("stream healthy")
            .expect("stream open")
    }

    /// Collects events until `n` have arrived, returning (watch id, type, key, value).
    async fn events(&mut self, n: usize) -> Vec<(i64, i32, String, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            let resp = self.next().await;
            for e in resp.events {
                let kv = e.kv.unwrap_or_default();
                out.push((
                    resp.watch_id,
                    e.r#type,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                ));
            }
        }
        out
    }
}

async fn put(c: &InProcCluster, k: &str, v: &str) -> i64 {
    c.kv(0)
        .put(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner()
        .header
        .map_or(0, |h| h.revision)
}

async fn delete(c: &InProcCluster, k: &str) {
    c.kv(0)
        .delete_range(DeleteRangeRequest {
            key: b(k),
            ..Default::default()
        })
        .await
        .expect("delete");
}

fn prefix(p: &str) -> WatchCreateRequest {
    let mut end = p.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    WatchCreateRequest {
        key: b(p),
        range_end: end.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_one_stream_each_get_only_their_keys() {
    let c = InProcCluster::start(1).await;
    let mut s = Stream::open(&c).await;
    let a = s.create(prefix("a/")).await.watch_id;
    let single = s
        .create(WatchCreateRequest {
            key: b("b/one"),
            ..Default::default()
        })
        .await
        .watch_id;
    let chosen = s
        .create(WatchCreateRequest {
            watch_id: 42,
            ..prefix("c/")
        })
        .await
        .watch_id;
    assert_eq!(chosen, 42);
    assert_ne!(a, single);
    put(&c, "a/1", "x").await;
    put(&c, "b/two", "ignored").await;
    put(&c, "b/one", "y").await;
    put(&c, "c/1", "z").await;
    let events = s.events(3).await;
    assert_eq!(
        events,
        vec![
            (a, EventType::Put as i32, "a/1".into(), "x".into()),
            (single, EventType::Put as i32, "b/one".into(), "y".into()),
            (42, EventType::Put as i32, "c/1".into(), "z".into()),
        ]
    );
    // A second watcher asking for an ID already in use is refused, the others carry on.
    s.send(RequestUnion::CreateRequest(WatchCreateRequest {
        watch_id: 42,
        ..prefix("d/")
    }))
    .await;
    let refused = s.next().await;
    assert!(refused.created && refused.canceled, "{refused:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_past_replays_history_with_previous_values_then_follows() {
    let c = InProcCluster::start(1).await;
    let first = put(&c, "k", "1").await;
    put(&c, "k", "2").await;
    delete(&c, "k").await;
    let mut s = Stream::open(&c).await;
    s.create(WatchCreateRequest {
        key: b("k"),
        start_revision: first,
        prev_kv: true,
        ..Default::default()
    })
    .await;
    put(&c, "k", "3").await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let resp = s.next().await;
        seen.extend(resp.events);
    }
    let kinds: Vec<i32> = seen.iter().map(|e| e.r#type).collect();
    assert_eq!(kinds, [0, 0, 1, 0]);
    assert_eq!(
        seen[1].prev_kv.as_ref().map(|kv| kv.value.clone()),
        Some(b("1"))
    );
    assert_eq!(
        seen[2].prev_kv.as_ref().map(|kv| kv.value.clone()),
        Some(b("2"))
    );
    assert!(
        seen[3].prev_kv.is_none(),
        "a put after a delete has no previous value"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_drop_puts_or_deletes_and_cancel_stops_events() {
    let c = InProcCluster::start(1).await;
    let mut s = Stream::open(&c).await;
    let no_put = s
        .create(WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            ..prefix("f/")
        })
        .await
        .watch_id;
    put(&c, "f/1", "x").await;
    delete(&c, "f/1").await;
    let events = s.events(1).await;
    assert_eq!(events[0].0, no_put);
    assert_eq!(events[0].1, EventType::Delete as i32);
    s.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: no_put,
    }))
    .await;
    let cancelled = s.next().await;
    assert!(
        cancelled.canceled && cancelled.watch_id == no_put,
        "{cancelled:?}"
    );
    // Nothing more for the cancelled watcher: the next response is for a new one.
    put(&c, "f/2", "y").await;
    let other = s.create(prefix("g/")).await.watch_id;
    put(&c, "g/1", "z").await;
    let events = s.events(1).await;
    assert_eq!(events[0].0, other);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_notified_periodically_and_on_request() {
    let c = InProcCluster::start_with(1, |cfg| {
        cfg.watch_progress_notify_interval = Duration::from_millis(200);
    })
    .await;
    let rev = put(&c, "p", "1").await;
    let mut s = Stream::open(&c).await;
    let id = s
        .create(WatchCreateRequest {
            key: b("elsewhere"),
            progress_notify: true,
            ..Default::default()
        })
        .await
        .watch_id;
    let notice = s.next().await;
    assert_eq!(notice.watch_id, id);
    assert!(notice.events.is_empty());
    assert_eq!(notice.header.map(|h| h.revision), Some(rev));
    s.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    loop {
        let resp = s.next().await;
        if resp.watch_id == -1 {
            assert_eq!(resp.header.map(|h| h.revision), Some(rev));
            break;
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compaction_point() {
    let c = InProcCluster::start(1).await;
    let first = put(&c, "k", "1").await;
    put(&c, "k", "2").await;
    let last = put(&c, "k", "3").await;
    c.kv(0)
        .compact(CompactionRequest {
            revision: last,
            physical: true,
        })
        .await
        .expect("compact");
    let mut s = Stream::open(&c).await;
    s.create(WatchCreateRequest {
        key: b("k"),
        start_revision: first,
        ..Default::default()
    })
    .await;
    let resp = s.next().await;
    assert!(resp.canceled, "{resp:?}");
    assert_eq!(resp.compact_revision, last);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_nothing_when_it_resumes() {
    let c = InProcCluster::start(1).await;
    let mut s = Stream::open(&c).await;
    s.create(prefix("slow/")).await;
    // Megabytes of events while the client reads nothing: more than HTTP/2 flow control and
    // the stream's buffer hold, so the watcher falls behind and must be replayed from
    // history, in order and without gaps, once the client reads again.
    // One writer, so that every event travels in a response of its own.
    let (writers, each) = (1, 2500);
    let padding = "x".repeat(2000);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let mut kv = c.kv(0);
            let padding = padding.clone();
            tokio::spawn(async move {
                for n in 0..each {
                    kv.put(PutRequest {
                        key: b(&format!("slow/{w}")),
                        value: b(&format!("{w}-{n}-{padding}")),
                        ..Default::default()
                    })
                    .await
                    .expect("put");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let mut revisions = Vec::new();
    let mut values = std::collections::HashSet::new();
    while revisions.len() < writers * each {
        for e in s.next().await.events {
            let kv = e.kv.unwrap_or_default();
            revisions.push(kv.mod_revision);
            let v = String::from_utf8_lossy(&kv.value).into_owned();
            values.insert(v.split('-').take(2).collect::<Vec<_>>().join("-"));
        }
    }
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "events out of order or repeated"
    );
    assert_eq!(values.len(), writers * each, "every write delivered once");
    c.shutdown().await;
}
