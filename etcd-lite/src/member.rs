//! A running member: opens the data directory, wires raft, the applier and the services
//! together, and shuts them down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;

use raft::{Config as RaftConfig, RawNode, ReadOnlyOption};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::Server;

use flotilla_proto::etcdlite::raft_peer_server::RaftPeerServer;
use flotilla_proto::etcdserverpb::cluster_server::ClusterServer;
use flotilla_proto::etcdserverpb::kv_server::KvServer;
use flotilla_proto::etcdserverpb::lease_server::LeaseServer;
use flotilla_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use flotilla_proto::etcdserverpb::watch_server::WatchServer;

use crate::apply::{Applier, ApplyTask};
use crate::config::{ClusterState, ConfigError, EtcdConfig, parse_url};
use crate::datadir::{self, DataDirError};
use crate::lease::Lessor;
use crate::metrics::Metrics;
use crate::mvcc::backend::{AppliedIndex, Backend, BackendError};
use crate::raft::commit_mark::CommitMark;
use crate::raft::logger;
use crate::raft::node::{Node, NodeParts, RaftStatus};
use crate::raft::peer_service::PeerService;
use crate::raft::proposals::Proposals;
use crate::raft::snapfiles::SnapFiles;
use crate::raft::storage::{LogError, RaftLog};
use crate::raft::transport::{MAX_PEER_MESSAGE, PeerFaults, PeerTarget, Transport};
use crate::server::cluster::ClusterService;
use crate::server::h2_authority::AuthorityFix;
use crate::server::kv::KvService;
use crate::server::lease::LeaseService;
use crate::server::maintenance::MaintenanceService;
use crate::server::watch::{WatchService, run_syncer};
use crate::server::{Shared, http, message_limit};
use crate::state::StateMachine;

/// gRPC framing allowance above --max-request-bytes, as etcd allows.
const GRPC_OVERHEAD: usize = 512 * 1024;

/// Why a member could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory cannot be used.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The state machine could not be loaded.
    #[error("loading the state machine")]
    Backend(#[from] BackendError),
    /// The raft log could not be opened.
    #[error("opening the raft log")]
    Log(#[from] LogError),
    /// raft-rs refused the configuration.
    #[error("starting raft")]
    Raft(#[from] raft::Error),
    /// A listener could not be bound.
    #[error("listening on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A component failed while running.
    #[error("{0}")]
    Failed(String),
}

/// Listeners bound before the member starts (tests bind port 0 and pass them in).
pub struct Listeners {
    /// For clients.
    pub client: Vec<TcpListener>,
    /// For peers.
    pub peer: Vec<TcpListener>,
}

impl Listeners {
    /// Binds every address of the configuration's listen URLs.
    pub async fn bind(cfg: &EtcdConfig) -> Result<Self, MemberError> {
        let mut out = Listeners {
            client: Vec::new(),
            peer: Vec::new(),
        };
        for (flag, urls, into) in [
            (
                "listen-client-urls",
                &cfg.listen_client_urls,
                &mut out.client,
            ),
            ("listen-peer-urls", &cfg.listen_peer_urls, &mut out.peer),
        ] {
            for u in urls {
                let addr = parse_url(flag, u)?;
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| MemberError::Bind { addr, source })?;
                into.push(l);
            }
        }
        Ok(out)
    }
}

/// A running member.
pub struct Member {
    /// This member's ID.
    pub id: u64,
    /// The cluster's ID.
    pub cluster_id: u64,
    shutdown: watch::Sender<bool>,
    failed: watch::Receiver<Option<String>>,
    faults: Arc<PeerFaults>,
    node_task: JoinHandle<()>,
    applier_thread: Option<std::thread::JoinHandle<()>>,
    applier: mpsc::UnboundedSender<ApplyTask>,
    servers: Vec<JoinHandle<()>>,
    dbs: [sled::Db; 2],
    client_addrs: Vec<SocketAddr>,
    status: watch::Receiver<RaftStatus>,
}

/// Accepted connections from every listener. Nagle is switched off on each: gRPC messages
/// are small and latency-bound, and tonic's own nodelay setting does not reach sockets
/// accepted from an external stream (without this, a response's trailers wait for the
/// client's delayed ACK: 40 ms per call).
fn incoming(
    listeners: Vec<TcpListener>,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::select_all(listeners.into_iter().map(TcpListenerStream::new)).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

impl Member {
    /// Starts a member, binding its listen URLs.
    pub async fn start(cfg: EtcdConfig) -> Result<Self, MemberError> {
        cfg.validate()?;
        let listeners = Listeners::bind(&cfg).await?;
        Self::start_with(cfg, listeners).await
    }

    /// Starts a member on listeners bound by the caller.
    pub async fn start_with(cfg: EtcdConfig, listeners: Listeners) -> Result<Self, MemberError> {
        cfg.validate()?;
        let dir = datadir::open(&cfg)?;
        let identity = dir.identity.clone();
        let me = identity.member_id;
        let cluster_id = identity.cluster_id;
        let voters: Vec<u64> = identity.members.iter().map(|m| m.id).collect();
        tracing::info!(
            member = %format!("{me:x}"),
            cluster = %format!("{cluster_id:x}"),
            name = %identity.member_name,
            fresh = dir.fresh,
            "starting etcd-lite member"
        );

        let state_db = dir.state_db.clone();
        let backend = Backend::open(&state_db)?;
        let snaps = SnapFiles::new(dir.snap_dir.clone());
        let (store, applied) = load_state(&backend, &snaps, cluster_id, &state_db)?;
        let mut log = RaftLog::open(dir.raft_db.clone(), snaps.clone(), &voters)?;
        log.ensure_commit_at_least(applied.index)?;
        let (commit_mark, marked) = CommitMark::open(&dir.commit_mark)
            .map_err(|e| MemberError::Failed(format!("{}: {e}", dir.commit_mark.display())))?;
        if log.last() < marked {
            return Err(MemberError::Log(LogError::Corrupt(format!(
                "the log ends at entry {} but entries up to {marked} were committed and durable: the raft database lost data",
                log.last()
            ))));
        }

        let raft_cfg = RaftConfig {
            id: me,
            election_tick: cfg.election_ticks(),
            heartbeat_tick: 1,
            applied: applied.index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let mut raw = RawNode::new(&raft_cfg, log, &logger::logger(&identity.member_name))?;
        if voters == [me] && raw.raft.leader_id == 0 {
            // Alone in the cluster: no reason to wait an election timeout.
            raw.campaign()?;
        }

        let metrics = Arc::new(Metrics::default());
        metrics
            .db_size_bytes
            .set(db_size(&[&dir.raft_db, &state_db]) as i64);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (failed_tx, failed) = watch::channel(None::<String>);
        let (node_tx, node_rx) = mpsc::channel(4096);
        let (applier_tx, applier_rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(RaftStatus::default());
        let (applied_tx, applied_rx) = watch::channel(applied);
        let proposals = Arc::new(Proposals::default());
        let state = Arc::new(StateMachine::new(store, applied));
        let syncer = Arc::new(Notify::new());
        let faults = Arc::new(PeerFaults::default());
        let lessor = Arc::new(Lessor::new(status.clone(), state.clone()));

        let shared = Arc::new(Shared {
            member_id: me,
            name: identity.member_name.clone(),
            cluster_id,
            members: identity.members.clone(),
            client_urls: cfg.advertise_client_urls.clone(),
            node: node_tx.clone(),
            status: status.clone(),
            applied: applied_rx,
            state: state.clone(),
            lessor: lessor.clone(),
            syncer: syncer.clone(),
            metrics: metrics.clone(),
            max_request_bytes: cfg.max_request_bytes,
            max_txn_ops: cfg.max_txn_ops,
            min_lease_ttl: min_lease_ttl(&cfg),
            request_timeout: Duration::from_secs(5) + cfg.election_timeout * 2,
            progress_interval: cfg.watch_progress_notify_interval,
            peer_clients: Default::default(),
        });

        let peers = identity
            .members
            .iter()
            .filter(|m| m.id != me)
            .map(|m| PeerTarget {
                id: m.id,
                urls: m.peer_ur_ls.clone(),
            })
            .collect();
        let transport = Transport::start(
            me,
            cluster_id,
            peers,
            node_tx.clone(),
            faults.clone(),
            shutdown.clone(),
        );

        let node = Node::new(NodeParts {
            raw,
            me,
            inbox: node_rx,
            transport,
            applier: applier_tx.clone(),
            proposals: proposals.clone(),
            status: status_tx,
            tick: cfg.heartbeat_interval,
            election_timeout: cfg.election_timeout,
            snapshot_catchup_entries: cfg.snapshot_catchup_entries,
            recovering: dir.fresh && cfg.initial_cluster_state == ClusterState::Existing,
            commit_mark,
            metrics: metrics.clone(),
        });
        let node_task = {
            let shutdown = shutdown.clone();
            let failed_tx = failed_tx.clone();
            tokio::spawn(async move {
                // A panic in the raft loop must stop the member, not leave it half alive.
                let outcome = AssertUnwindSafe(node.run(shutdown)).catch_unwind().await;
                let msg = match outcome {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => format!("raft node stopped: {}", error_chain(&e)),
                    Err(panic) => format!("raft node panicked: {}", panic_message(&panic)),
                };
                tracing::error!("{msg}");
                failed_tx.send_replace(Some(msg));
            })
        };

        let applier = Applier {
            state: state.clone(),
            backend,
            db: state_db.clone(),
            log_db: dir.raft_db.clone(),
            snaps,
            proposals,
            me,
            cluster_id,
            snapshot_count: cfg.snapshot_count,
            last_snapshot: applied.index,
            node: node_tx.clone(),
            applied: applied_tx,
            syncer: syncer.clone(),
            metrics: metrics.clone(),
            size_checked: None,
            snapshotting: Default::default(),
        };
        let applier_thread = {
            let failed_tx = failed_tx.clone();
            std::thread::Builder::new()
                .name(format!("apply-{}", identity.member_name))
                .spawn(move || {
                    let outcome =
                        std::panic::catch_unwind(AssertUnwindSafe(|| applier.run(applier_rx)));
                    let msg = match outcome {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => format!("applier stopped: {}", error_chain(&e)),
                        Err(panic) => format!("applier panicked: {}", panic_message(&panic)),
                    };
                    tracing::error!("{msg}");
                    failed_tx.send_replace(Some(msg));
                })
                .map_err(|e| MemberError::Failed(format!("spawning the applier thread: {e}")))?
        };

        let mut servers = Vec::new();
        if dir.fresh && cfg.initial_cluster_state == ClusterState::Existing {
            servers.push(tokio::spawn(ask_for_fresh_replication(
                shared.clone(),
                shutdown.clone(),
            )));
        }
        servers.push(tokio::spawn(run_syncer(shared.clone(), shutdown.clone())));
        servers.push(tokio::spawn(
            lessor.clone().run_expiry(node_tx.clone(), shutdown.clone()),
        ));

        let client_addrs = listeners
            .client
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        servers.push(serve_clients(
            shared.clone(),
            listeners.client,
            cfg.max_request_bytes + GRPC_OVERHEAD,
            shutdown.clone(),
            failed_tx.clone(),
        ));
        servers.push(serve_peers(
            PeerService::new(shared, faults.clone()),
            listeners.peer,
            shutdown.clone(),
            failed_tx,
        ));

        Ok(Member {
            id: me,
            cluster_id,
            shutdown: shutdown_tx,
            failed,
            faults,
            node_task,
            applier_thread: Some(applier_thread),
            applier: applier_tx,
            servers,
            dbs: [dir.raft_db.clone(), state_db],
            client_addrs,
            status,
        })
    }

    /// The switch that cuts this member's raft traffic with chosen peers (for fault tests).
    pub fn faults(&self) -> Arc<PeerFaults> {
        self.faults.clone()
    }

    /// The addresses clients connect to.
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// The raft node's status.
    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// Waits until a component fails; returns its error.
    pub async fn failed(&mut self) -> MemberError {
        let reason = self
            .failed
            .wait_for(|f| f.is_some())
            .await
            .map(|f| f.clone().unwrap_or_default())
            .unwrap_or_else(|_| "member stopped".into());
        MemberError::Failed(reason)
    }

    /// Stops everything, flushes the database, and waits for the applier.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        let _ = (&mut self.node_task).await;
        for s in self.servers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        let _ = self.applier.send(ApplyTask::Stop);
        if let Some(t) = self.applier_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        for db in &self.dbs {
            if let Err(e) = db.flush_async().await {
                tracing::error!(error = %e, "flushing the database on shutdown");
            }
        }
        tracing::info!(member = %format!("{:x}", self.id), "etcd-lite member stopped");
    }
}

/// Runs a member until `shutdown` resolves (then stops it cleanly) or a component fails.
pub async fn run(cfg: EtcdConfig, shutdown: impl Future<Output = ()>) -> Result<(), MemberError> {
    let mut member = Member::start(cfg).await?;
    tokio::select! {
        _ = shutdown => {
            member.shutdown().await;
            Ok(())
        }
        err = member.failed() => {
            member.shutdown().await;
            Err(err)
        }
    }
}

/// A member that rejoins with an empty disk tells the leader, which otherwise still believes
/// this member holds the log it had before and would never send it again.
async fn ask_for_fresh_replication(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let leader = shared.status.borrow().leader;
        if leader != 0
            && leader != shared.member_id
            && let Some(mut peer) = shared.peer(leader)
        {
            let req = flotilla_proto::etcdlite::ResetProgressRequest {
                cluster_id: shared.cluster_id,
                member_id: shared.member_id,
            };
            match peer.reset_progress(req).await {
                Ok(_) => {
                    tracing::info!(leader = %format!("{leader:x}"), "asked the leader to replicate from scratch");
                    return;
                }
                Err(status) => {
                    tracing::debug!(%status, "asking the leader to replicate from scratch")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Bytes both databases take on disk.
pub fn db_size(dbs: &[&sled::Db]) -> u64 {
    dbs.iter().map(|db| db.size_on_disk().unwrap_or(0)).sum()
}

/// The smallest lease TTL etcd grants: long enough to survive a leader election.
fn min_lease_ttl(cfg: &EtcdConfig) -> i64 {
    let ms = (cfg.election_timeout.as_millis() * 3 / 2) as i64;
    (ms + 999) / 1000
}

/// Loads the state machine; if a snapshot on disk is newer than it (a crash between saving
/// a received snapshot and replacing the state), restores from the snapshot.
fn load_state(
    backend: &Backend,
    snaps: &SnapFiles,
    cluster_id: u64,
    db: &sled::Db,
) -> Result<(crate::mvcc::MvccStore, AppliedIndex), MemberError> {
    let (store, applied) = backend.load()?;
    let latest = snaps
        .latest()
        .map_err(|e| MemberError::Failed(format!("listing snapshots: {e}")))?;
    let Some(snap) = latest.filter(|s| s.index > applied.index) else {
        return Ok((store, applied));
    };
    tracing::warn!(
        snapshot = snap.index,
        applied = applied.index,
        "state machine is behind its snapshot; restoring from it"
    );
    let data = snaps.read(&snap).map_err(|e| {
        MemberError::Failed(format!("reading snapshot {}: {e}", snap.path.display()))
    })?;
    let decoded = crate::mvcc::snapshot::decode(&data)
        .map_err(|e| MemberError::Failed(format!("snapshot {}: {e}", snap.path.display())))?;
    if decoded.header.cluster_id != cluster_id {
        return Err(MemberError::Failed(format!(
            "snapshot {} belongs to another cluster",
            snap.path.display()
        )));
    }
    backend.replace(
        &decoded.leases,
        &decoded.revisions,
        AppliedIndex {
            index: snap.index,
            term: snap.term,
        },
        decoded.header.revision,
        decoded.header.compacted_revision,
    )?;
    db.flush().map_err(BackendError::from)?;
    Ok(backend.load()?)
}

fn serve_clients(
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    max_message: usize,
    mut shutdown: watch::Receiver<bool>,
    failed: watch::Sender<Option<String>>,
) -> JoinHandle<()> {
    let routes = Routes::new(
        KvServer::new(KvService::new(shared.clone())).max_decoding_message_size(max_message),
    )
    .add_service(
        WatchServer::new(WatchService::new(shared.clone())).max_decoding_message_size(max_message),
    )
    .add_service(
        LeaseServer::new(LeaseService::new(shared.clone())).max_decoding_message_size(max_message),
    )
    .add_service(ClusterServer::new(ClusterService::new(shared.clone())))
    .add_service(MaintenanceServer::new(MaintenanceService::new(
        shared.clone(),
    )));
    let router = message_limit::layer(http::routes(routes.into_axum_router(), shared));
    let routes = Routes::from(router);
    tokio::spawn(async move {
        let result = Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                incoming(listeners).map(|conn| conn.map(AuthorityFix::new)),
                async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                },
            )
            .await;
        if let Err(e) = result {
            failed.send_replace(Some(format!("client server failed: {}", error_chain(&e))));
        }
    })
}

fn serve_peers(
    service: PeerService,
    listeners: Vec<TcpListener>,
    mut shutdown: watch::Receiver<bool>,
    failed: watch::Sender<Option<String>>,
) -> JoinHandle<()> {
    let svc = RaftPeerServer::new(service)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE);
    tokio::spawn(async move {
        let result = Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming(listeners), async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            failed.send_replace(Some(format!("peer server failed: {}", error_chain(&e))));
        }
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// An error with its sources, for one log line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
