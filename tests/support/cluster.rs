//! A multi-process store cluster for fault tests, compatibility tests and benchmarks.
//!
//! Every member is a separate OS process (etcd-lite via `flotilla etcd`, or the real etcd)
//! started with etcd's own flag names, so the same test can run against either flavour and
//! a crash really is a crash: `kill` sends SIGKILL and the member restarts from its data dir.
//!
//! Include it with `#[path = "support/cluster.rs"] mod cluster;`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest, StatusResponse};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

/// How often condition waits re-check; short enough not to dominate failover timings.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Upper bound on a single RPC made by the harness itself.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Status is cheap; a member that takes longer is frozen or overloaded, and readiness
/// polls should move on rather than wait out the general RPC timeout.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a member gets to exit after SIGTERM before it is SIGKILLed.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);
/// Log lines per member appended to timeout and crash errors.
const ERROR_LOG_LINES: usize = 40;
/// Fresh port sets tried when a member loses a race for a reserved port.
const START_ATTEMPTS: usize = 3;
/// Set to keep the cluster's directory (data and logs) after the cluster is dropped.
const KEEP_DIR_ENV: &str = "FLOTILLA_KEEP_CLUSTER_DIR";

/// Which store implementation the members run.
#[derive(Clone, Debug)]
pub enum Flavor {
    /// etcd-lite: `<flotilla binary> etcd <flags>`.
    EtcdLite(PathBuf),
    /// The real etcd server binary.
    Etcd(PathBuf),
}

impl Flavor {
    /// The real etcd from `$ETCD_BIN` or `/usr/bin/etcd`, if it is installed.
    pub fn system_etcd() -> Option<Flavor> {
        let path = std::env::var_os("ETCD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        path.is_file().then_some(Flavor::Etcd(path))
    }

    /// A short name for tables and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Flavor::EtcdLite(_) => "etcd-lite",
            Flavor::Etcd(_) => "etcd",
        }
    }

    fn command(&self) -> Command {
        match self {
            Flavor::EtcdLite(flotilla) => {
                let mut command = Command::new(flotilla);
                command.arg("etcd");
                command
            }
            Flavor::Etcd(etcd) => Command::new(etcd),
        }
    }

    /// Flags only this flavour understands; they go before the caller's extra args.
    fn own_args(&self) -> Vec<String> {
        match self {
            Flavor::EtcdLite(_) => Vec::new(),
            // zap to stderr so the per-member log file holds everything; info keeps the
            // elections and membership changes that explain a failing test.
            Flavor::Etcd(_) => vec![
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
                "--log-level=info".into(),
            ],
        }
    }
}

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of voting members.
    pub members: usize,
    /// Which store to run.
    pub flavor: Flavor,
    /// `--heartbeat-interval`, in milliseconds.
    pub heartbeat_ms: u64,
    /// `--election-timeout`, in milliseconds.
    pub election_ms: u64,
    /// `--snapshot-count`, left to the store's default when `None`.
    pub snapshot_count: Option<u64>,
    /// Appended to every member's command line, after the harness's own flags.
    pub extra_args: Vec<String>,
    /// Where the cluster's temporary directory is created (the system temp dir if `None`).
    pub base_dir: Option<PathBuf>,
    /// How long `start` waits for the cluster to elect a leader.
    pub start_timeout: Duration,
}

impl ClusterOptions {
    /// Options with test-friendly timings: 50 ms heartbeats, 500 ms elections.
    pub fn new(members: usize, flavor: Flavor) -> Self {
        ClusterOptions {
            members,
            flavor,
            heartbeat_ms: 50,
            election_ms: 500,
            snapshot_count: None,
            extra_args: Vec::new(),
            base_dir: None,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything that can go wrong while driving a cluster.
pub enum HarnessError {
    /// A filesystem or process-spawning call failed.
    Io { context: String, source: io::Error },
    /// A member the harness did not stop exited on its own.
    Exited {
        member: usize,
        status: ExitStatus,
        log_tail: String,
    },
    /// A condition did not become true before its deadline.
    Timeout {
        what: String,
        last: String,
        logs: String,
    },
    /// A harness RPC to a member failed or timed out.
    Rpc { member: usize, message: String },
    /// The harness was asked for something impossible, such as restarting a running member.
    Invalid(String),
}

impl HarnessError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        HarnessError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether a member died because another process took one of its ports first.
    fn is_port_clash(&self) -> bool {
        // Go says "address already in use", Rust "Address already in use".
        matches!(self, HarnessError::Exited { log_tail, .. }
            if log_tail.to_lowercase().contains("address already in use"))
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Io { context, source } => write!(f, "{context}: {source}"),
            HarnessError::Exited {
                member,
                status,
                log_tail,
            } => write!(
                f,
                "member m{member} exited unexpectedly ({status})\n{log_tail}"
            ),
            HarnessError::Timeout { what, last, logs } => {
                write!(f, "timed out waiting for {what}; last: {last}\n{logs}")
            }
            HarnessError::Rpc { member, message } => write!(f, "m{member}: {message}"),
            HarnessError::Invalid(message) => f.write_str(message),
        }
    }
}

// Debug is what `expect` prints: keep the log tails readable instead of one escaped line.
impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for HarnessError {}

/// One member's fixed identity (name, ports, directories) and its current process.
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    endpoint: Endpoint,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `new` until the member is wiped and rejoins, `existing` afterwards.
    cluster_state: &'static str,
    starts: usize,
    /// `None` when stopped by the harness; a child that exited on its own stays `Some` so
    /// waits can report the crash. Behind a mutex because `&self` waits need `try_wait`.
    process: Mutex<Option<Child>>,
}

impl Member {
    fn process(&self) -> MutexGuard<'_, Option<Child>> {
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn process_mut(&mut self) -> &mut Option<Child> {
        self.process
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running cluster of store processes; dropping it SIGKILLs every member.
pub struct ProcessCluster {
    flavor: Flavor,
    heartbeat_ms: u64,
    election_ms: u64,
    snapshot_count: Option<u64>,
    extra_args: Vec<String>,
    token: String,
    initial_cluster: String,
    members: Vec<Member>,
    /// An `Option` so Drop can hand the directory over when asked to keep it.
    dir: Option<TempDir>,
}

impl ProcessCluster {
    /// Spawns every member and waits until they agree on a leader.
    pub async fn start(opts: ClusterOptions) -> Result<Self, HarnessError> {
        if opts.members == 0 {
            return Err(HarnessError::Invalid(
                "a cluster needs at least one member".into(),
            ));
        }
        let mut attempt = 1;
        loop {
            let cluster = Self::launch(&opts)?;
            match cluster.wait_ready(opts.start_timeout).await {
                Ok(()) => return Ok(cluster),
                // Ports are released between reservation and the member's bind, so another
                // process can win the race; a fresh set of ports is the cure.
                Err(e) if e.is_port_clash() && attempt < START_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn launch(opts: &ClusterOptions) -> Result<Self, HarnessError> {
        let dir = match &opts.base_dir {
            Some(base) => tempfile::Builder::new()
                .prefix("flotilla-cluster-")
                .tempdir_in(base),
            None => tempfile::Builder::new()
                .prefix("flotilla-cluster-")
                .tempdir(),
        }
        .map_err(|e| HarnessError::io("creating the cluster directory", e))?;
        let ports = reserve_ports(2 * opts.members)?;
        let members = (0..opts.members)
            .map(|i| new_member(dir.path(), i, ports[2 * i], ports[2 * i + 1]))
            .collect::<Result<Vec<_>, _>>()?;
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = ProcessCluster {
            flavor: opts.flavor.clone(),
            heartbeat_ms: opts.heartbeat_ms,
            election_ms: opts.election_ms,
            snapshot_count: opts.snapshot_count,
            extra_args: opts.extra_args.clone(),
            token: unique_token(),
            initial_cluster,
            members,
            dir: Some(dir),
        };
        for i in 0..opts.members {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// Number of members, running or not.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The store flavour this cluster runs.
    pub fn flavor(&self) -> &Flavor {
        &self.flavor
    }

    /// Every member's client URL, `http://127.0.0.1:PORT`, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Member `i`'s client URL.
    pub fn client_url(&self, i: usize) -> String {
        self.members[i].client_url.clone()
    }

    /// Member `i`'s peer URL.
    pub fn peer_url(&self, i: usize) -> String {
        self.members[i].peer_url.clone()
    }

    /// Member `i`'s `--name`.
    pub fn name(&self, i: usize) -> String {
        self.members[i].name.clone()
    }

    /// All client URLs comma-separated, for `etcdctl --endpoints`.
    pub fn endpoints_arg(&self) -> String {
        self.client_urls().join(",")
    }

    /// An `etcdctl` command aimed at every member, ready for subcommand args.
    pub fn etcdctl(&self, etcdctl: &Path) -> Command {
        let mut command = Command::new(etcdctl);
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints_arg()))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s");
        command
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].data_dir.clone()
    }

    /// Member `i`'s log file (every start appends to it).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.members[i].log_path.clone()
    }

    /// Member `i`'s gRPC endpoint, for callers that build channels on their own runtime.
    pub fn endpoint(&self, i: usize) -> Endpoint {
        self.members[i].endpoint.clone()
    }

    /// A channel to member `i` that connects on first use, so it can be made for a stopped
    /// member and survives the member restarting.
    pub fn channel(&self, i: usize) -> Channel {
        self.members[i].endpoint.connect_lazy()
    }

    /// A KV client for member `i`.
    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i))
    }

    /// A Watch client for member `i`.
    pub async fn watch(&self, i: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channel(i))
    }

    /// A Lease client for member `i`.
    pub async fn lease(&self, i: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(i))
    }

    /// A Maintenance client for member `i`.
    pub async fn maintenance(&self, i: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel(i))
    }

    /// A Cluster (membership) client for member `i`.
    pub async fn cluster_client(&self, i: usize) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(i))
    }

    /// Member `i`'s Maintenance.Status, bounded by the harness RPC timeout.
    pub async fn status(&self, i: usize) -> Result<StatusResponse, HarnessError> {
        let mut client = self.maintenance(i).await;
        self.rpc(i, "Status", STATUS_TIMEOUT, client.status(StatusRequest {}))
            .await
    }

    /// Puts `key` through member `i`; returns the revision of the write.
    pub async fn put(&self, i: usize, key: &[u8], value: &[u8]) -> Result<i64, HarnessError> {
        let mut client = self.kv(i).await;
        let request = PutRequest {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            ..Default::default()
        };
        let response = self.rpc(i, "Put", RPC_TIMEOUT, client.put(request)).await?;
        Ok(response.header.map_or(0, |h| h.revision))
    }

    /// Reads `key` through member `i`; `serializable` answers from the member's local state.
    pub async fn get(
        &self,
        i: usize,
        key: &[u8],
        serializable: bool,
    ) -> Result<Option<Vec<u8>>, HarnessError> {
        let mut client = self.kv(i).await;
        let request = RangeRequest {
            key: key.to_vec().into(),
            serializable,
            ..Default::default()
        };
        let response = self
            .rpc(i, "Range", RPC_TIMEOUT, client.range(request))
            .await?;
        Ok(response.kvs.first().map(|kv| kv.value.to_vec()))
    }

    async fn rpc<T>(
        &self,
        i: usize,
        what: &str,
        timeout: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, HarnessError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(HarnessError::Rpc {
                member: i,
                message: format!("{what}: {} ({:?})", status.message(), status.code()),
            }),
            Err(_) => Err(HarnessError::Rpc {
                member: i,
                message: format!("{what}: no answer within {timeout:?}"),
            }),
        }
    }

    /// Whether member `i` has a process the harness has not stopped (it may have crashed).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].process().is_some()
    }

    /// Indices of the members the harness has not stopped.
    pub fn running(&self) -> Vec<usize> {
        (0..self.size()).filter(|&i| self.is_running(i)).collect()
    }

    /// Fails if a member the harness did not stop has exited.
    pub fn check_alive(&self) -> Result<(), HarnessError> {
        for (i, member) in self.members.iter().enumerate() {
            let mut process = member.process();
            let Some(child) = process.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    drop(process);
                    return Err(HarnessError::Exited {
                        member: i,
                        status,
                        log_tail: self.log_tail(i, ERROR_LOG_LINES),
                    });
                }
                Err(e) => return Err(HarnessError::io(format!("polling m{i}"), e)),
            }
        }
        Ok(())
    }

    /// Waits until every running member answers Status and all name the same running leader.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<(), HarnessError> {
        self.wait_until(
            deadline,
            "every running member to answer Status and agree on a running leader",
            async || self.agreed_leader().await.map(drop),
        )
        .await
    }

    /// Index of the member that currently considers itself leader (the highest term wins if
    /// a deposed leader has not noticed yet), or `None` if no running member is leader.
    pub async fn leader(&self) -> Option<usize> {
        let statuses = self.running_statuses().await;
        statuses
            .iter()
            .filter_map(|(i, status)| {
                let status = status.as_ref().ok()?;
                let own_id = status.header.as_ref()?.member_id;
                (status.leader != 0 && status.leader == own_id).then_some((status.raft_term, *i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// Waits until the running members agree on a running leader and returns its index.
    pub async fn wait_leader(&self, deadline: Duration) -> Result<usize, HarnessError> {
        self.wait_until(
            deadline,
            "the running members to agree on a running leader",
            async || self.agreed_leader().await,
        )
        .await
    }

    /// The leader every running member names, or why there is none yet.
    async fn agreed_leader(&self) -> Result<usize, String> {
        let statuses = self.running_statuses().await;
        if statuses.is_empty() {
            return Err("no member is running".into());
        }
        let mut leader_id = None;
        let mut ids = Vec::new();
        for (i, status) in &statuses {
            let status = status.as_ref().map_err(|e| e.to_string())?;
            let own_id = status.header.as_ref().map_or(0, |h| h.member_id);
            ids.push((*i, own_id));
            if status.leader == 0 {
                return Err(format!("m{i} knows no leader"));
            }
            match leader_id {
                None => leader_id = Some(status.leader),
                Some(id) if id == status.leader => {}
                Some(id) => {
                    return Err(format!(
                        "members disagree on the leader: {id:x} vs {:x} (m{i})",
                        status.leader
                    ));
                }
            }
        }
        let leader_id = leader_id.unwrap_or_default();
        ids.iter()
            .find(|(_, id)| *id == leader_id)
            .map(|(i, _)| *i)
            .ok_or_else(|| format!("leader {leader_id:x} is not a running member"))
    }

    async fn running_statuses(&self) -> Vec<(usize, Result<StatusResponse, HarnessError>)> {
        let running = self.running();
        let calls = running.iter().map(|&i| self.status(i));
        running
            .iter()
            .copied()
            .zip(futures::future::join_all(calls).await)
            .collect()
    }

    /// Polls `check` until it succeeds; fails early if a member crashes, and on timeout
    /// reports `what`, the last reason `check` gave and every member's log tail.
    pub async fn wait_until<T>(
        &self,
        deadline: Duration,
        what: &str,
        mut check: impl AsyncFnMut() -> Result<T, String>,
    ) -> Result<T, HarnessError> {
        let end = Instant::now() + deadline;
        let mut last = String::from("no check finished");
        loop {
            self.check_alive()?;
            if let Some(value) = check_once(end, &mut check, &mut last).await {
                return Ok(value);
            }
            if Instant::now() >= end {
                return Err(HarnessError::Timeout {
                    what: what.to_string(),
                    last,
                    logs: self.all_log_tails(ERROR_LOG_LINES),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGKILLs member `i` and reaps it; a no-op if it is not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process_mut().take() {
            // std's kill is SIGKILL and knows not to signal a child it has already reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs member `i` and waits for it to exit, SIGKILLing it if it hangs.
    pub fn terminate(&mut self, i: usize) {
        let Some(mut child) = self.members[i].process_mut().take() else {
            return;
        };
        // A child that was reaped already must not be signalled: its pid may be reused.
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
            // A paused member only acts on SIGTERM once it runs again.
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
        let end = Instant::now() + TERMINATE_GRACE;
        while Instant::now() < end {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Member `i`'s process id while the harness has it running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].process().as_ref().map(Child::id)
    }

    /// Freezes member `i` with SIGSTOP: it keeps its sockets but stops answering, like a
    /// member stuck in a long GC pause or on a dead disk.
    pub fn pause(&self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, Signal::SIGSTOP)
    }

    /// Thaws a member frozen by `pause`.
    pub fn resume(&self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, Signal::SIGCONT)
    }

    fn signal(&self, i: usize, sig: Signal) -> Result<(), HarnessError> {
        let mut process = self.members[i].process();
        let child = process
            .as_mut()
            .ok_or_else(|| HarnessError::Invalid(format!("cannot signal m{i}: it is stopped")))?;
        // Only a child that has not been reaped may be signalled: its pid may be reused.
        if !matches!(child.try_wait(), Ok(None)) {
            return Err(HarnessError::Invalid(format!(
                "cannot signal m{i}: it has exited"
            )));
        }
        let pid = i32::try_from(child.id())
            .map_err(|_| HarnessError::Invalid(format!("m{i}: pid out of range")))?;
        signal::kill(Pid::from_raw(pid), sig)
            .map_err(|e| HarnessError::io(format!("sending {sig} to m{i}"), e.into()))
    }

    /// Starts stopped member `i` again with the same flags, ports and data dir.
    pub fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.ensure_stopped(i, "restart")?;
        self.spawn(i)
    }

    /// Deletes stopped member `i`'s data dir and starts it with `--initial-cluster-state
    /// existing`, as an operator replacing a lost disk would.
    pub fn wipe_and_rejoin(&mut self, i: usize) -> Result<(), HarnessError> {
        self.ensure_stopped(i, "wipe")?;
        let dir = self.members[i].data_dir.clone();
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(HarnessError::io(format!("removing {}", dir.display()), e)),
        }
        self.members[i].cluster_state = "existing";
        self.spawn(i)
    }

    fn ensure_stopped(&mut self, i: usize, action: &str) -> Result<(), HarnessError> {
        let process = self.members[i].process_mut();
        match process.as_mut().map(Child::try_wait) {
            None => Ok(()),
            // It crashed; forget the corpse so it can be started again.
            Some(Ok(Some(_))) => {
                *process = None;
                Ok(())
            }
            Some(_) => Err(HarnessError::Invalid(format!(
                "cannot {action} m{i}: it is still running (kill or terminate it first)"
            ))),
        }
    }

    fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let args = self.member_args(i);
        let member = &mut self.members[i];
        member.starts += 1;
        let mut log = append_file(&member.log_path)?;
        let banner = format!(
            "===== flotilla harness: start #{} of {} ({}): {}\n",
            member.starts,
            member.name,
            self.flavor.name(),
            args.join(" ")
        );
        log.write_all(banner.as_bytes())
            .map_err(|e| HarnessError::io("writing the log banner", e))?;
        let stderr = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file", e))?;
        let mut command = self.flavor.command();
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        // etcd reads ETCD_* variables as flags; a stray one in the test environment would
        // silently change the cluster.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().map_err(|e| {
            HarnessError::io(format!("spawning {} for m{i}", self.flavor.name()), e)
        })?;
        *member.process_mut() = Some(child);
        Ok(())
    }

    /// The command line of member `i`, with etcd's flag names for both flavours.
    fn member_args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let mut args: Vec<String> = [
            ("--name", m.name.clone()),
            ("--data-dir", m.data_dir.display().to_string()),
            ("--listen-client-urls", m.client_url.clone()),
            ("--advertise-client-urls", m.client_url.clone()),
            ("--listen-peer-urls", m.peer_url.clone()),
            ("--initial-advertise-peer-urls", m.peer_url.clone()),
            ("--initial-cluster", self.initial_cluster.clone()),
            ("--initial-cluster-state", m.cluster_state.to_string()),
            ("--initial-cluster-token", self.token.clone()),
            ("--heartbeat-interval", self.heartbeat_ms.to_string()),
            ("--election-timeout", self.election_ms.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect();
        if let Some(count) = self.snapshot_count {
            args.extend(["--snapshot-count".to_string(), count.to_string()]);
        }
        args.extend(self.flavor.own_args());
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The last `lines` lines of member `i`'s log (all of its starts).
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let path = &self.members[i].log_path;
        match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", path.display()),
        }
    }

    /// Every member's log tail under a header naming it.
    pub fn all_log_tails(&self, lines: usize) -> String {
        (0..self.size())
            .map(|i| {
                format!(
                    "----- m{i} ({}) last {lines} log lines -----\n{}",
                    self.members[i].log_path.display(),
                    self.log_tail(i, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::env::var_os(KEEP_DIR_ENV).is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("keeping cluster directory {}", dir.keep().display());
        }
    }
}

/// Polls `check` until it succeeds or `deadline` passes; for waits that do not involve a
/// cluster (or must not fail when a member exits).
pub async fn wait_until<T>(
    deadline: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, HarnessError> {
    let end = Instant::now() + deadline;
    let mut last = String::from("no check finished");
    loop {
        if let Some(value) = check_once(end, &mut check, &mut last).await {
            return Ok(value);
        }
        if Instant::now() >= end {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                last,
                logs: String::new(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `check` once, cut short at `end` (but always given one poll interval) so a hanging
/// check cannot outlive its wait; a failure's reason goes to `last`. A check cut short keeps
/// the previous reason, which says more than the cut itself.
async fn check_once<T>(
    end: Instant,
    check: &mut impl AsyncFnMut() -> Result<T, String>,
    last: &mut String,
) -> Option<T> {
    let remaining = end.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining.max(POLL_INTERVAL), check()).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(why)) => {
            *last = why;
            None
        }
        Err(_) => {
            last.push_str(" (and the final check was still running at the deadline)");
            None
        }
    }
}

fn new_member(
    dir: &Path,
    i: usize,
    client_port: u16,
    peer_port: u16,
) -> Result<Member, HarnessError> {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let endpoint = Endpoint::from_shared(client_url.clone())
        .map_err(|e| HarnessError::Invalid(format!("bad client URL {client_url}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    let log_dir = dir.join("logs");
    fs::create_dir_all(&log_dir).map_err(|e| HarnessError::io("creating the log directory", e))?;
    Ok(Member {
        name: format!("m{i}"),
        client_url,
        peer_url: format!("http://127.0.0.1:{peer_port}"),
        endpoint,
        data_dir: dir.join(format!("m{i}.data")),
        log_path: log_dir.join(format!("m{i}.log")),
        cluster_state: "new",
        starts: 0,
        process: Mutex::new(None),
    })
}

/// Ports handed out by this process, never handed out twice: clusters of concurrently
/// running tests must not collide with each other's (possibly stopped) members.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Reserves `n` distinct loopback ports by binding port 0 and releasing the sockets.
fn reserve_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    // All listeners stay open until every port is chosen, so the kernel cannot give one
    // port twice; ports this process used before are skipped.
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| HarnessError::io("reserving a loopback port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading a reserved port", e))?
            .port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        listeners.push(listener);
    }
    Ok(ports)
}

fn unique_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "flotilla-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn append_file(path: &Path) -> Result<File, HarnessError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| HarnessError::io(format!("opening {}", path.display()), e))
}
