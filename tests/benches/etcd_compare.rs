//! Store benchmark: the same workloads against etcd-lite (`flotilla etcd`) and the real etcd
//! 3.4 in one run, on single-member and 3-member loopback clusters, at several client counts.
//!
//! `cargo bench -p flotilla-cli --bench etcd_compare`, tuned by environment variables:
//! - `BENCH_SECONDS` (3): measured duration of each workload, after `BENCH_WARMUP_MS` (500).
//! - `BENCH_FLAVOURS` (`etcd,lite`), `BENCH_MEMBERS` (`1,3`), `BENCH_CLIENTS` (`1,16,64,256`).
//! - `BENCH_WORKLOADS` (`put,get-lin,get-ser,cas,watch,watch-paced`), `BENCH_KEYS` (10000).
//! - `BENCH_WATCH_RATE` (1000): total puts per second in `watch-paced`, which measures
//!   delivery latency the way etcd's `benchmark watch-latency` does (writes at a fixed rate,
//!   latency from sending the put to receiving its event); `watch` writes flat out and
//!   measures delivery throughput.
//! - `BENCH_DIR`: where the data dirs go (the system temp dir by default). Both flavours use
//!   the same disk and fsync as they would in production: no unsafe durability flags.
//!
//! A flavour that fails (etcd-lite before it exists, say) is reported and the run carries on
//! with the others; the exit status is then non-zero.

#[path = "../support/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use cluster::{ClusterOptions, Flavor, ProcessCluster};
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::response_op::Response;
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
use flotilla_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::codegen::Bytes;
use tonic::transport::{Channel, Endpoint};

const VALUE_SIZE: usize = 256;
/// Clients sharing one gRPC connection, as etcd's benchmark tool does with --conns/--clients.
const CLIENTS_PER_CHANNEL: usize = 8;
const MAX_CHANNELS: usize = 32;
/// A request slower than this counts as an error rather than stalling the run.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed request so a broken member does not turn a client into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// How long the watcher may lag behind the writers before its missing events count as lost.
const WATCH_DRAIN: Duration = Duration::from_secs(30);
/// Concurrency of the preload that makes every key exist before the reads.
const PRELOAD_CLIENTS: usize = 64;
/// The configuration the RESULT line summarises.
const RESULT_CLIENTS: usize = 64;
const RESULT_MEMBERS: usize = 3;
/// Watch workload keys live under this prefix; KV workload keys do not.
const WATCH_PREFIX: &[u8] = b"w";
const WATCH_PREFIX_END: &[u8] = b"x";
/// Written after the watch writers stop: once the watcher sees it, it has seen every write.
const WATCH_SENTINEL: &[u8] = b"w~done";
/// Width of the send timestamp (microseconds) at the start of a watch value.
const STAMP_DIGITS: usize = 20;

/// The two stores under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Store {
    Lite,
    Etcd,
}

impl Store {
    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "lite" | "etcd-lite" => Ok(Store::Lite),
            "etcd" => Ok(Store::Etcd),
            other => Err(format!("unknown flavour {other:?} (want etcd or lite)")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Store::Lite => "etcd-lite",
            Store::Etcd => "etcd",
        }
    }

    fn flavor(self) -> Result<Flavor, String> {
        match self {
            Store::Lite => Ok(Flavor::EtcdLite(PathBuf::from(env!(
                "CARGO_BIN_EXE_flotilla"
            )))),
            Store::Etcd => Flavor::system_etcd()
                .ok_or_else(|| "etcd is not installed at /usr/bin/etcd (or $ETCD_BIN)".into()),
        }
    }
}

/// What each client does back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    Put,
    GetLinearizable,
    GetSerializable,
    Cas,
    Watch,
    WatchPaced,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::Put,
        Workload::GetLinearizable,
        Workload::GetSerializable,
        Workload::Cas,
        Workload::Watch,
        Workload::WatchPaced,
    ];

    fn parse(name: &str) -> Result<Self, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == name || w.key() == name)
            .ok_or_else(|| {
                format!("unknown workload {name:?} (want put, get-lin, get-ser, cas, watch, watch-paced)")
            })
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::GetLinearizable => "get-lin",
            Workload::GetSerializable => "get-ser",
            Workload::Cas => "cas",
            Workload::Watch => "watch",
            Workload::WatchPaced => "watch-paced",
        }
    }

    /// The workload's name on the RESULT line.
    fn key(self) -> &'static str {
        match self {
            Workload::GetLinearizable => "get_lin",
            Workload::GetSerializable => "get_ser",
            Workload::WatchPaced => "watch_paced",
            other => other.name(),
        }
    }
}

/// The run's parameters, from the environment.
struct Config {
    seconds: Duration,
    warmup: Duration,
    stores: Vec<Store>,
    members: Vec<usize>,
    clients: Vec<usize>,
    workloads: Vec<Workload>,
    keys: usize,
    watch_rate: f64,
    base_dir: Option<PathBuf>,
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let seconds: f64 = env_value("BENCH_SECONDS", 3.0)?;
        let warmup_ms: u64 = env_value("BENCH_WARMUP_MS", 500)?;
        let keys: usize = env_value("BENCH_KEYS", 10_000)?;
        let watch_rate: f64 = env_value("BENCH_WATCH_RATE", 1000.0)?;
        if !(watch_rate.is_finite() && watch_rate > 0.0) {
            return Err("BENCH_WATCH_RATE must be positive".into());
        }
        if !(seconds.is_finite() && seconds > 0.0) || keys == 0 {
            return Err("BENCH_SECONDS and BENCH_KEYS must be positive".into());
        }
        let config = Config {
            seconds: Duration::from_secs_f64(seconds),
            warmup: Duration::from_millis(warmup_ms),
            stores: env_list("BENCH_FLAVOURS", "etcd,lite", Store::parse)?,
            members: env_list("BENCH_MEMBERS", "1,3", parse_positive)?,
            clients: env_list("BENCH_CLIENTS", "1,16,64,256", parse_positive)?,
            workloads: env_list(
                "BENCH_WORKLOADS",
                "put,get-lin,get-ser,cas,watch,watch-paced",
                Workload::parse,
            )?,
            keys,
            watch_rate,
            base_dir: std::env::var_os("BENCH_DIR").map(PathBuf::from),
        };
        Ok(config)
    }
}

fn env_value<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

fn env_list<T>(
    name: &str,
    default: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_string());
    let items = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| parse(item).map_err(|e| format!("{name}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if items.is_empty() {
        return Err(format!("{name} is empty"));
    }
    Ok(items)
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?} is not a positive integer")),
    }
}

/// One measured (store, members, clients, workload) combination.
struct Row {
    store: Store,
    members: usize,
    clients: usize,
    workload: Workload,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    note: String,
}

type Key = (Store, usize, usize, Workload);

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("etcd_compare: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("etcd_compare: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (rows, failures) = runtime.block_on(run_all(&config));
    print_table(&rows);
    print_comparison(&rows);
    for failure in &failures {
        println!("FAILED {failure}");
    }
    println!("{}", result_line(&config, &rows));
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Benchmarks every requested cluster; returns the rows and one message per failure.
async fn run_all(config: &Config) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for &members in &config.members {
        for &store in &config.stores {
            eprintln!("== {} with {members} member(s)", store.name());
            let mut fail = |what: String, error: String| {
                eprintln!("!! {} {members}m {what} failed: {error}", store.name());
                failures.push(format!(
                    "{} {members}m {what}: {}",
                    store.name(),
                    first_line(&error)
                ));
            };
            if let Err(e) = bench_cluster(config, store, members, &mut rows, &mut fail).await {
                fail("cluster".into(), e);
            }
        }
    }
    (rows, failures)
}

/// Runs every workload at every client count on one cluster. A failed run is reported
/// through `fail` and the next one goes ahead; a crashed member ends the cluster's turn.
async fn bench_cluster(
    config: &Config,
    store: Store,
    members: usize,
    rows: &mut Vec<Row>,
    fail: &mut impl FnMut(String, String),
) -> Result<(), String> {
    let mut options = ClusterOptions::new(members, store.flavor()?);
    // etcd's defaults: the benchmark measures stores as they would be deployed.
    options.heartbeat_ms = 100;
    options.election_ms = 1000;
    options.base_dir = config.base_dir.clone();
    let cluster = ProcessCluster::start(options)
        .await
        .map_err(|e| format!("did not start: {e}"))?;
    let shared = Arc::new(Shared::new(config.keys));
    preload(&cluster, &shared).await?;
    for &workload in &config.workloads {
        for &clients in &config.clients {
            let run = Run {
                store,
                cluster: &cluster,
                shared: &shared,
                clients,
                window: Window::after(config.warmup, config.seconds),
            };
            let outcome = match workload {
                Workload::Watch => run.watch(None).await,
                Workload::WatchPaced => run.watch(Some(config.watch_rate)).await,
                kv => run.kv(kv).await,
            };
            match outcome {
                Ok(row) => {
                    eprintln!("   {}", format_row(&row));
                    rows.push(row);
                }
                Err(e) => fail(format!("{} {clients}c", workload.name()), e),
            }
            // A crashed member would make every later number meaningless.
            cluster.check_alive().map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Keys, the put value and the last mod revision seen per key, shared by all clients.
struct Shared {
    keys: Vec<Bytes>,
    value: Bytes,
    revisions: Vec<AtomicI64>,
}

impl Shared {
    fn new(keys: usize) -> Self {
        let mut rng = SmallRng::seed_from_u64(0x5eed);
        let value: Vec<u8> = (0..VALUE_SIZE)
            .map(|_| rng.random_range(b'a'..=b'z'))
            .collect();
        Shared {
            keys: (0..keys).map(|i| Bytes::from(format!("k{i:07}"))).collect(),
            value: Bytes::from(value),
            revisions: (0..keys).map(|_| AtomicI64::new(0)).collect(),
        }
    }
}

/// Writes every key once, so reads hit and compare-and-swap starts from known revisions.
async fn preload(cluster: &ProcessCluster, shared: &Arc<Shared>) -> Result<(), String> {
    let started = Instant::now();
    let channels = channels(cluster, PRELOAD_CLIENTS, None);
    let tasks: Vec<_> = (0..PRELOAD_CLIENTS)
        .map(|c| {
            let mut kv = KvClient::new(channels[c % channels.len()].clone());
            let shared = shared.clone();
            tokio::spawn(async move {
                for i in (c..shared.keys.len()).step_by(PRELOAD_CLIENTS) {
                    let revision = put(&mut kv, shared.keys[i].clone(), shared.value.clone())
                        .await
                        .map_err(|e| format!("preload of key {i}: {e}"))?;
                    shared.revisions[i].store(revision, Ordering::Relaxed);
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| format!("preload task: {e}"))??;
    }
    eprintln!(
        "   preloaded {} keys in {:.1}s",
        shared.keys.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads every key's current mod revision, so that compare failures in a CAS run come from
/// contention between its own clients rather than from the workloads that ran before it.
async fn refresh_revisions(cluster: &ProcessCluster, shared: &Shared) -> Result<(), String> {
    const PAGE: i64 = 1000;
    let mut kv = cluster.kv(0).await;
    let mut from = Bytes::from_static(b"k");
    loop {
        let request = RangeRequest {
            key: from.clone(),
            range_end: Bytes::from_static(b"l"),
            limit: PAGE,
            keys_only: true,
            ..Default::default()
        };
        let call = tokio::time::timeout(OP_TIMEOUT, kv.range(request));
        let response = call
            .await
            .map_err(|_| "revision refresh timed out".to_string())?
            .map_err(status_text)?
            .into_inner();
        for found in &response.kvs {
            let index = std::str::from_utf8(&found.key[1..])
                .ok()
                .and_then(|digits| digits.parse::<usize>().ok());
            if let Some(slot) = index.and_then(|i| shared.revisions.get(i)) {
                slot.store(found.mod_revision, Ordering::Relaxed);
            }
        }
        match response.kvs.last() {
            Some(last) if response.more => {
                let mut next = last.key.to_vec();
                next.push(0);
                from = Bytes::from(next);
            }
            _ => return Ok(()),
        }
    }
}

async fn put(kv: &mut KvClient<Channel>, key: Bytes, value: Bytes) -> Result<i64, String> {
    let request = PutRequest {
        key,
        value,
        ..Default::default()
    };
    let call = tokio::time::timeout(OP_TIMEOUT, kv.put(request));
    let response = call.await.map_err(|_| "put timed out".to_string())?;
    let response = response.map_err(status_text)?.into_inner();
    Ok(response.header.map_or(0, |h| h.revision))
}

fn status_text(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Channels for `clients` clients: about one per `CLIENTS_PER_CHANNEL`, at most
/// `MAX_CHANNELS`, and a multiple of the member count so every member gets the same share.
/// `only` pins every channel to one member.
fn channels(cluster: &ProcessCluster, clients: usize, only: Option<usize>) -> Vec<Channel> {
    let targets: Vec<usize> = match only {
        Some(member) => vec![member],
        None => (0..cluster.size()).collect(),
    };
    let count = channel_count(clients, targets.len());
    (0..count)
        .map(|j| cluster.channel(targets[j % targets.len()]))
        .collect()
}

fn channel_count(clients: usize, members: usize) -> usize {
    if clients <= members {
        return clients.max(1);
    }
    let per_member = clients.div_ceil(CLIENTS_PER_CHANNEL).div_ceil(members);
    let cap = (MAX_CHANNELS / members).max(1);
    per_member.clamp(1, cap) * members
}

/// The measured interval: operations that start inside it are counted.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn after(warmup: Duration, length: Duration) -> Self {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + length,
        }
    }

    fn contains(&self, at: Instant) -> bool {
        self.start <= at && at < self.end
    }

    fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// Latency histogram (microseconds) and counters of one client, or of all merged.
struct Stats {
    latency: Histogram<u64>,
    ops: u64,
    errors: u64,
    cas_succeeded: u64,
    cas_failed: u64,
    missing: u64,
    last_error: Option<String>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            latency: new_histogram(),
            ops: 0,
            errors: 0,
            cas_succeeded: 0,
            cas_failed: 0,
            missing: 0,
            last_error: None,
        }
    }

    fn record(&mut self, latency: Duration) {
        self.latency.saturating_record(micros(latency).max(1));
        self.ops += 1;
    }

    fn error(&mut self, error: String) {
        self.errors += 1;
        self.last_error = Some(error);
    }

    fn merge(&mut self, other: Stats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.errors += other.errors;
        self.cas_succeeded += other.cas_succeeded;
        self.cas_failed += other.cas_failed;
        self.missing += other.missing;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
    }

    fn percentile_ms(&self, quantile: f64) -> f64 {
        if self.latency.is_empty() {
            return f64::NAN;
        }
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

fn new_histogram() -> Histogram<u64> {
    // Fixed bounds, so every client's histogram can be added to the total; slower
    // operations than an hour saturate (and OP_TIMEOUT makes them errors long before).
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// How a single KV operation ended, when it got an answer.
enum Outcome {
    Done,
    CasSucceeded,
    CasFailed,
    /// A read of a preloaded key found nothing: the store lost or hid a write.
    Missing,
}

/// One workload at one client count against one cluster.
struct Run<'a> {
    store: Store,
    cluster: &'a ProcessCluster,
    shared: &'a Arc<Shared>,
    clients: usize,
    window: Window,
}

impl Run<'_> {
    async fn kv(&self, workload: Workload) -> Result<Row, String> {
        if workload == Workload::Cas {
            refresh_revisions(self.cluster, self.shared).await?;
        }
        let channels = channels(self.cluster, self.clients, None);
        let tasks: Vec<_> = (0..self.clients)
            .map(|c| {
                let kv = KvClient::new(channels[c % channels.len()].clone());
                tokio::spawn(kv_client(c, kv, workload, self.shared.clone(), self.window))
            })
            .collect();
        let mut total = Stats::new();
        for task in tasks {
            total.merge(task.await.map_err(|e| format!("client task: {e}"))?);
        }
        Ok(self.row(workload, &total))
    }

    fn row(&self, workload: Workload, total: &Stats) -> Row {
        let mut notes = Vec::new();
        if workload == Workload::Cas {
            notes.push(format!(
                "swapped={} compare-failed={}",
                total.cas_succeeded, total.cas_failed
            ));
        }
        if total.missing > 0 {
            notes.push(format!("missing-keys={}", total.missing));
        }
        if let Some(error) = &total.last_error {
            notes.push(format!("last error: {}", first_line(error)));
        }
        Row {
            store: self.store,
            members: self.cluster.size(),
            clients: self.clients,
            workload,
            ops_per_s: total.ops as f64 / self.window.seconds(),
            p50_ms: total.percentile_ms(0.50),
            p99_ms: total.percentile_ms(0.99),
            errors: total.errors + total.missing,
            note: notes.join(" "),
        }
    }

    /// One watcher on the watch prefix, on the last member; writers on member 0, so in a
    /// 3-member cluster every event crosses replication before it is delivered. With a
    /// `rate`, the writers together put that many keys per second; without, flat out.
    async fn watch(&self, rate: Option<f64>) -> Result<Row, String> {
        let epoch = Instant::now();
        let window = self.window;
        let endpoint = self.cluster.endpoint(self.cluster.size() - 1);
        let watcher = Watcher::spawn(endpoint, window, epoch)?;
        watcher
            .created
            .await
            .map_err(|_| "the watcher thread died".to_string())??;
        let channels = channels(self.cluster, self.clients, Some(0));
        let writers: Vec<_> = (0..self.clients)
            .map(|c| {
                let kv = KvClient::new(channels[c % channels.len()].clone());
                let pace = rate.map(|r| Duration::from_secs_f64(self.clients as f64 / r));
                tokio::spawn(watch_writer(
                    c,
                    kv,
                    self.shared.clone(),
                    window,
                    epoch,
                    pace,
                ))
            })
            .collect();
        let mut written = Stats::new();
        for writer in writers {
            written.merge(writer.await.map_err(|e| format!("writer task: {e}"))?);
        }
        let mut kv = KvClient::new(channels[0].clone());
        put(&mut kv, WATCH_SENTINEL.into(), "done".into()).await?;
        let delivered = watcher
            .delivered
            .await
            .map_err(|_| "the watcher thread died".to_string())??;
        let workload = if rate.is_some() {
            Workload::WatchPaced
        } else {
            Workload::Watch
        };
        Ok(self.watch_row(workload, &written, &delivered))
    }

    fn watch_row(&self, workload: Workload, written: &Stats, delivered: &Delivered) -> Row {
        let missing = written.ops.saturating_sub(delivered.stats.ops);
        let mut row = self.row(workload, &delivered.stats);
        row.errors = written.errors + missing;
        let mut note = format!(
            "writes/s={:.0} put-p50/p99={}/{}ms events={} missing={missing}",
            written.ops as f64 / self.window.seconds(),
            format_ms(written.percentile_ms(0.50)),
            format_ms(written.percentile_ms(0.99)),
            delivered.stats.ops
        );
        if !delivered.drained {
            note.push_str(&format!(" watcher-lagged>{}s", WATCH_DRAIN.as_secs()));
        }
        if let Some(error) = &written.last_error {
            note.push_str(&format!(" last error: {}", first_line(error)));
        }
        row.note = note;
        row
    }
}

async fn kv_client(
    id: usize,
    mut kv: KvClient<Channel>,
    workload: Workload,
    shared: Arc<Shared>,
    window: Window,
) -> Stats {
    let mut rng = SmallRng::seed_from_u64(id as u64);
    let mut stats = Stats::new();
    while Instant::now() < window.end {
        let index = rng.random_range(0..shared.keys.len());
        let started = Instant::now();
        let outcome = tokio::time::timeout(OP_TIMEOUT, kv_op(&mut kv, workload, &shared, index))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        let measured = window.contains(started);
        match outcome {
            Ok(outcome) if measured => {
                stats.record(started.elapsed());
                match outcome {
                    Outcome::Done => {}
                    Outcome::CasSucceeded => stats.cas_succeeded += 1,
                    Outcome::CasFailed => stats.cas_failed += 1,
                    Outcome::Missing => stats.missing += 1,
                }
            }
            Ok(_) => {}
            Err(error) => {
                if measured {
                    stats.error(error);
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    stats
}

async fn kv_op(
    kv: &mut KvClient<Channel>,
    workload: Workload,
    shared: &Shared,
    index: usize,
) -> Result<Outcome, String> {
    let key = shared.keys[index].clone();
    match workload {
        Workload::Put => {
            put(kv, key, shared.value.clone()).await?;
            Ok(Outcome::Done)
        }
        Workload::GetLinearizable | Workload::GetSerializable => {
            let request = RangeRequest {
                key,
                serializable: workload == Workload::GetSerializable,
                ..Default::default()
            };
            let response = kv.range(request).await.map_err(status_text)?.into_inner();
            Ok(if response.kvs.is_empty() {
                Outcome::Missing
            } else {
                Outcome::Done
            })
        }
        Workload::Cas => cas(kv, shared, index).await,
        Workload::Watch | Workload::WatchPaced => Err("watch is not a KV workload".into()),
    }
}

/// Compare-and-swap against the last mod revision any client saw for the key; on a failed
/// compare the same transaction reads the key, so the next attempt uses its real revision.
async fn cas(kv: &mut KvClient<Channel>, shared: &Shared, index: usize) -> Result<Outcome, String> {
    let key = shared.keys[index].clone();
    let seen = shared.revisions[index].load(Ordering::Relaxed);
    let request = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::ModRevision(seen)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.clone(),
                value: shared.value.clone(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    };
    let response = kv.txn(request).await.map_err(status_text)?.into_inner();
    if response.succeeded {
        let revision = response.header.map_or(0, |h| h.revision);
        shared.revisions[index].store(revision, Ordering::Relaxed);
        return Ok(Outcome::CasSucceeded);
    }
    let current = response
        .responses
        .into_iter()
        .find_map(|r| match r.response {
            Some(Response::ResponseRange(range)) => range.kvs.into_iter().next(),
            _ => None,
        });
    match current {
        Some(kv) => {
            shared.revisions[index].store(kv.mod_revision, Ordering::Relaxed);
            Ok(Outcome::CasFailed)
        }
        None => Ok(Outcome::Missing),
    }
}

/// The watcher runs on its own thread and runtime: among hundreds of writer tasks on the
/// shared runtime it would be scheduled late and measure the benchmark, not the store.
struct Watcher {
    /// Resolves once the store has confirmed the watch.
    created: oneshot::Receiver<Result<(), String>>,
    /// Resolves once the watcher has seen the sentinel or given up.
    delivered: oneshot::Receiver<Result<Delivered, String>>,
}

impl Watcher {
    fn spawn(endpoint: Endpoint, window: Window, epoch: Instant) -> Result<Self, String> {
        let (created_tx, created) = oneshot::channel();
        let (delivered_tx, delivered) = oneshot::channel();
        let body = move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = created_tx.send(Err(format!("watcher runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                // The channel is made here so its connection is driven by this runtime.
                match open_watch(endpoint.connect_lazy()).await {
                    Ok((requests, stream)) => {
                        let _ = created_tx.send(Ok(()));
                        let _ = delivered_tx.send(watch_events(stream, window, epoch).await);
                        drop(requests);
                    }
                    Err(e) => {
                        let _ = created_tx.send(Err(e));
                    }
                }
            });
        };
        std::thread::Builder::new()
            .name("bench-watcher".into())
            .spawn(body)
            .map_err(|e| format!("spawning the watcher thread: {e}"))?;
        Ok(Watcher { created, delivered })
    }
}

/// Creates the prefix watch and waits for the store to confirm it; the returned sender
/// keeps the request stream (and so the watch) open until dropped.
async fn open_watch(
    channel: Channel,
) -> Result<(mpsc::Sender<WatchRequest>, Streaming<WatchResponse>), String> {
    let (requests, receiver) = mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: WATCH_PREFIX.into(),
            range_end: WATCH_PREFIX_END.into(),
            ..Default::default()
        })),
    };
    requests
        .send(create)
        .await
        .map_err(|_| "watch request stream closed".to_string())?;
    let mut client = WatchClient::new(channel);
    let call = tokio::time::timeout(OP_TIMEOUT, client.watch(ReceiverStream::new(receiver)));
    let mut stream = call
        .await
        .map_err(|_| "watch call timed out".to_string())?
        .map_err(status_text)?
        .into_inner();
    let first = tokio::time::timeout(OP_TIMEOUT, stream.message())
        .await
        .map_err(|_| "no watch-created response".to_string())?
        .map_err(status_text)?;
    match first {
        Some(response) if response.created => Ok((requests, stream)),
        other => Err(format!("unexpected first watch response: {other:?}")),
    }
}

/// What the watcher saw: delivery latencies of the events written inside the window.
struct Delivered {
    stats: Stats,
    /// Whether the sentinel arrived, i.e. the watcher caught up with every write.
    drained: bool,
}

async fn watch_events(
    mut stream: Streaming<WatchResponse>,
    window: Window,
    epoch: Instant,
) -> Result<Delivered, String> {
    let mut stats = Stats::new();
    let give_up = tokio::time::Instant::from_std(window.end + WATCH_DRAIN);
    loop {
        let response = match tokio::time::timeout_at(give_up, stream.message()).await {
            Err(_) => {
                return Ok(Delivered {
                    stats,
                    drained: false,
                });
            }
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => return Err("the store ended the watch stream".into()),
            Ok(Err(status)) => return Err(format!("watch stream: {}", status_text(status))),
        };
        if response.canceled {
            return Err(format!("watch canceled: {}", response.cancel_reason));
        }
        let received = Instant::now();
        for event in response.events {
            let Some(kv) = event.kv else { continue };
            if kv.key.as_ref() == WATCH_SENTINEL {
                return Ok(Delivered {
                    stats,
                    drained: true,
                });
            }
            let Some(sent) = parse_stamp(&kv.value).map(|us| epoch + Duration::from_micros(us))
            else {
                stats.error(format!("event without a send stamp on {:?}", kv.key));
                continue;
            };
            if window.contains(sent) {
                stats.record(received.saturating_duration_since(sent));
            }
        }
    }
}

async fn watch_writer(
    id: usize,
    mut kv: KvClient<Channel>,
    shared: Arc<Shared>,
    window: Window,
    epoch: Instant,
    pace: Option<Duration>,
) -> Stats {
    let mut rng = SmallRng::seed_from_u64(id as u64);
    let mut stats = Stats::new();
    let padding = &shared.value[..VALUE_SIZE - STAMP_DIGITS];
    let mut ticker = pace.map(|p| {
        let mut t = tokio::time::interval(p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    while Instant::now() < window.end {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let key = format!("w{:07}", rng.random_range(0..shared.keys.len()));
        let sent = Instant::now();
        let mut value =
            format!("{:0width$}", micros(sent - epoch), width = STAMP_DIGITS).into_bytes();
        value.extend_from_slice(padding);
        match put(&mut kv, key.into(), value.into()).await {
            // Counted writes are the events the watcher must deliver inside the window.
            Ok(_) if window.contains(sent) => stats.record(sent.elapsed()),
            Ok(_) => {}
            Err(error) => {
                if window.contains(sent) {
                    stats.error(error);
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    stats
}

fn parse_stamp(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.get(..STAMP_DIGITS)?)
        .ok()?
        .parse()
        .ok()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn format_ms(ms: f64) -> String {
    if ms.is_nan() {
        "-".into()
    } else {
        format!("{ms:.3}")
    }
}

fn format_row(row: &Row) -> String {
    format!(
        "{:<10} {:>7} {:>7} {:<8} {:>11.1} {:>9} {:>9} {:>7}  {}",
        row.store.name(),
        row.members,
        row.clients,
        row.workload.name(),
        row.ops_per_s,
        format_ms(row.p50_ms),
        format_ms(row.p99_ms),
        row.errors,
        row.note
    )
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "Results (latency in ms; watch: ops/s = events delivered/s, latency = send to delivery)"
    );
    println!(
        "{:<10} {:>7} {:>7} {:<8} {:>11} {:>9} {:>9} {:>7}  notes",
        "flavour", "members", "clients", "workload", "ops/s", "p50 ms", "p99 ms", "errors"
    );
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by_key(|row| (row.store, row.members, row.workload, row.clients));
    for row in sorted {
        println!("{}", format_row(row));
    }
}

fn index(rows: &[Row]) -> BTreeMap<Key, &Row> {
    rows.iter()
        .map(|row| ((row.store, row.members, row.clients, row.workload), row))
        .collect()
}

fn print_comparison(rows: &[Row]) {
    let by_key = index(rows);
    let mut pairs: Vec<(&Row, &Row)> = by_key
        .iter()
        .filter(|((store, ..), _)| *store == Store::Lite)
        .filter_map(|(&(_, m, c, w), lite)| Some((*lite, *by_key.get(&(Store::Etcd, m, c, w))?)))
        .collect();
    pairs.sort_by_key(|(lite, _)| (lite.members, lite.workload, lite.clients));
    println!();
    println!("etcd-lite / etcd (ops ratio > 1: etcd-lite faster; p99 ratio < 1: etcd-lite faster)");
    println!(
        "{:>7} {:>7} {:<8} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "members",
        "clients",
        "workload",
        "lite ops/s",
        "etcd ops/s",
        "ops ratio",
        "lite p99",
        "etcd p99",
        "p99 ratio"
    );
    if pairs.is_empty() {
        println!("(no configuration ran on both flavours)");
    }
    for (lite, etcd) in pairs {
        println!(
            "{:>7} {:>7} {:<8} {:>11.1} {:>11.1} {:>9} {:>9} {:>9} {:>9}",
            lite.members,
            lite.clients,
            lite.workload.name(),
            lite.ops_per_s,
            etcd.ops_per_s,
            format_ratio(lite.ops_per_s, etcd.ops_per_s),
            format_ms(lite.p99_ms),
            format_ms(etcd.p99_ms),
            format_ratio(lite.p99_ms, etcd.p99_ms),
        );
    }
}

fn format_ratio(numerator: f64, denominator: f64) -> String {
    let ratio = numerator / denominator;
    if ratio.is_finite() {
        format!("{ratio:.3}")
    } else {
        "NA".into()
    }
}

/// The machine-readable summary: 64 clients on 3 members, NA where a figure did not run.
fn result_line(config: &Config, rows: &[Row]) -> String {
    let by_key = index(rows);
    let get = |store, workload| by_key.get(&(store, RESULT_MEMBERS, RESULT_CLIENTS, workload));
    let ops = |row: Option<&&Row>| row.map_or("NA".into(), |r| format!("{:.0}", r.ops_per_s));
    let ms = |row: Option<&&Row>| row.map_or("NA".into(), |r| number_or_na(r.p99_ms));
    let suffix = format!("{RESULT_CLIENTS}c_{RESULT_MEMBERS}m");
    let mut fields = vec![
        "bench=etcd".to_string(),
        format!("seconds={}", config.seconds.as_secs_f64()),
    ];
    for workload in [
        Workload::Put,
        Workload::GetLinearizable,
        Workload::GetSerializable,
        Workload::Cas,
    ] {
        let (lite, etcd) = (get(Store::Lite, workload), get(Store::Etcd, workload));
        let name = workload.key();
        let ratio = match (lite, etcd) {
            (Some(l), Some(e)) => format_ratio(l.ops_per_s, e.ops_per_s),
            _ => "NA".into(),
        };
        fields.push(format!("lite_{name}_{suffix}_ops={}", ops(lite)));
        fields.push(format!("etcd_{name}_{suffix}_ops={}", ops(etcd)));
        fields.push(format!("{name}_ratio_{suffix}={ratio}"));
        fields.push(format!("lite_{name}_{suffix}_p99_ms={}", ms(lite)));
        fields.push(format!("etcd_{name}_{suffix}_p99_ms={}", ms(etcd)));
    }
    // Delivery latency at a fixed write rate (etcd's watch-latency method), then delivery
    // throughput with writers flat out.
    let (lite, etcd) = (
        get(Store::Lite, Workload::WatchPaced),
        get(Store::Etcd, Workload::WatchPaced),
    );
    let p50 = |row: Option<&&Row>| row.map_or("NA".into(), |r| number_or_na(r.p50_ms));
    fields.push(format!("watch_rate={}", config.watch_rate));
    fields.push(format!("watch_p50_ms={}", p50(lite)));
    fields.push(format!("watch_p99_ms={}", ms(lite)));
    fields.push(format!("etcd_watch_p50_ms={}", p50(etcd)));
    fields.push(format!("etcd_watch_p99_ms={}", ms(etcd)));
    let (lite, etcd) = (
        get(Store::Lite, Workload::Watch),
        get(Store::Etcd, Workload::Watch),
    );
    fields.push(format!("watch_flat_out_events_s={}", ops(lite)));
    fields.push(format!("watch_flat_out_p99_ms={}", ms(lite)));
    fields.push(format!("etcd_watch_flat_out_events_s={}", ops(etcd)));
    fields.push(format!("etcd_watch_flat_out_p99_ms={}", ms(etcd)));
    format!("RESULT {}", fields.join(" "))
}

fn number_or_na(ms: f64) -> String {
    if ms.is_nan() {
        "NA".into()
    } else {
        format!("{ms:.3}")
    }
}
