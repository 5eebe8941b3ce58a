//! The raft node: an actor that owns `RawNode`, reads commands from its inbox, ticks on a
//! timer, and runs the Ready loop in raft-rs's documented order:
//!
//! send the messages a leader may send before persisting; restore a received snapshot;
//! hand committed entries to the applier; append new entries and the hard state, then
//! fsync; send the messages that depended on them; advance, and do the same for the light
//! ready.
//!
//! Group commit happens naturally: while one Ready is being fsynced, new proposals queue in
//! the inbox, and the next loop turns all of them into one entry and one fsync.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use raft::prelude::{Message, MessageType, Snapshot};
use raft::{INVALID_ID, RawNode, StateRole};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use flotilla_proto::etcdlite::{InternalRequest, RequestBatch, internal_request::Request};

use super::commit_mark::CommitMark;
use super::proposals::{Proposals, Reply};
use super::read_index::{ReadIndexQueue, ReadReply};
use super::storage::{LogError, RaftLog};
use super::transport::Transport;
use crate::apply::{ApplyError, ApplyTask};
use crate::error::EtcdError;
use crate::metrics::Metrics;

/// Largest raft entry we build from batched proposals.
const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
/// Most commands handled before the loop turns to the Ready.
const MAX_COMMANDS_PER_ROUND: usize = 8192;

/// What other parts of the member ask of the raft node.
pub enum Command {
    /// Replicate a write; the reply comes when it is applied.
    Propose(Request, Reply),
    /// Ask for a linearizable read index.
    ReadIndex(ReadReply),
    /// Raft messages from a peer.
    Step(Vec<Message>),
    /// A peer could not be reached.
    Unreachable(u64),
    /// A snapshot send finished.
    SnapshotStatus {
        /// The peer.
        to: u64,
        /// Whether it arrived.
        ok: bool,
    },
    /// The applier saved a snapshot at this index: the log up to it may be discarded.
    Compact(u64),
    /// Hand leadership to another member.
    TransferLeader(u64, oneshot::Sender<Result<(), EtcdError>>),
    /// A member lost its log (its disk was replaced): replicate to it from scratch.
    ResetPeer(u64, oneshot::Sender<Result<(), EtcdError>>),
}

/// The node's view of the cluster, published after every Ready.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// The leader, or 0.
    pub leader: u64,
    /// The current term.
    pub term: u64,
    /// Whether this member leads.
    pub is_leader: bool,
    /// The commit index.
    pub commit: u64,
    /// The last index in the log.
    pub last_index: u64,
}

/// Why the node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The raft log failed.
    #[error("raft log")]
    Log(#[from] LogError),
    /// raft-rs reported an error.
    #[error("raft")]
    Raft(#[from] raft::Error),
    /// The applier failed.
    #[error("applying")]
    Apply(#[from] ApplyError),
    /// The applier is gone.
    #[error("the applier stopped")]
    ApplierGone,
    /// The commit mark could not be written.
    #[error("writing the commit mark")]
    Mark(#[from] std::io::Error),
}

/// Everything the node actor owns.
pub struct Node {
    raw: RawNode<RaftLog>,
    me: u64,
    inbox: mpsc::Receiver<Command>,
    transport: Transport,
    applier: mpsc::UnboundedSender<ApplyTask>,
    proposals: Arc<Proposals>,
    batch: Vec<InternalRequest>,
    batch_bytes: usize,
    parked: Vec<(Request, Reply)>,
    reads: ReadIndexQueue,
    status: watch::Sender<RaftStatus>,
    tick: Duration,
    election_timeout: Duration,
    snapshot_catchup_entries: u64,
    /// A member that rejoined with an empty disk may have voted before it lost its data;
    /// it stays out of elections until it has heard from a leader.
    recovering: bool,
    /// Whether this member started on an empty disk to rejoin an existing cluster.
    rejoined: bool,
    /// How far the log is known to be committed and durable, kept outside sled.
    commit_mark: CommitMark,
    metrics: Arc<Metrics>,
}

/// How to build a node.
pub struct NodeParts {
    /// The raft node.
    pub raw: RawNode<RaftLog>,
    /// This member's ID.
    pub me: u64,
    /// The inbox.
    pub inbox: mpsc::Receiver<Command>,
    /// Outbound raft traffic.
    pub transport: Transport,
    /// The applier's queue.
    pub applier: mpsc::UnboundedSender<ApplyTask>,
    /// Waiting proposers.
    pub proposals: Arc<Proposals>,
    /// Where the node publishes its status.
    pub status: watch::Sender<RaftStatus>,
    /// One raft tick.
    pub tick: Duration,
    /// The election timeout.
    pub election_timeout: Duration,
    /// Entries kept after a snapshot.
    pub snapshot_catchup_entries: u64,
    /// Whether this member rejoined with an empty disk.
    pub recovering: bool,
    /// The log's high-water mark.
    pub commit_mark: CommitMark,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Node {
    /// Builds the actor.
    pub fn new(p: NodeParts) -> Self {
        Node {
            raw: p.raw,
            me: p.me,
            inbox: p.inbox,
            transport: p.transport,
            applier: p.applier,
            proposals: p.proposals,
            batch: Vec::new(),
            batch_bytes: 0,
            parked: Vec::new(),
            reads: ReadIndexQueue::default(),
            status: p.status,
            tick: p.tick,
            election_timeout: p.election_timeout,
            snapshot_catchup_entries: p.snapshot_catchup_entries,
            recovering: p.recovering,
            rejoined: p.recovering,
            commit_mark: p.commit_mark,
            metrics: p.metrics,
        }
    }

    /// Runs until shutdown or a fatal storage error.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(self.election_timeout);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.raw.tick();
                }
                _ = housekeeping.tick() => {
                    self.proposals.sweep_abandoned();
                    self.parked.retain(|(_, r)| !r.is_closed());
                    self.reads.retry_stale(Instant::now(), self.election_timeout);
                }
                cmd = self.inbox.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    self.handle(cmd)?;
                    for _ in 0..MAX_COMMANDS_PER_ROUND {
                        match self.inbox.try_recv() {
                            Ok(cmd) => self.handle(cmd)?,
                            Err(_) => break,
                        }
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
            self.flush_proposals();
            self.start_read_round();
            self.on_ready().await?;
        }
    }

    fn has_leader(&self) -> bool {
        self.raw.raft.leader_id != INVALID_ID
    }

    fn handle(&mut self, cmd: Command) -> Result<(), NodeError> {
        match cmd {
            Command::Propose(req, reply) => {
                if self.has_leader() {
                    self.enqueue(req, reply);
                } else {
                    self.parked.push((req, reply));
                }
            }
            Command::ReadIndex(reply) => self.reads.push(reply),
            Command::Step(msgs) => {
                for m in msgs {
                    self.step(m);
                }
            }
            Command::Unreachable(peer) => self.raw.report_unreachable(peer),
            Command::SnapshotStatus { to, ok } => {
                let status = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Command::Compact(index) => {
                let upto = index.saturating_sub(self.snapshot_catchup_entries);
                self.raw.mut_store().compact_to(upto)?;
                tracing::info!(
                    snapshot_index = index,
                    compacted_to = upto,
                    "raft log compacted"
                );
            }
            Command::TransferLeader(target, reply) => {
                let result = if !self.raw.raft.state.eq(&StateRole::Leader) {
                    Err(EtcdError::NotLeader)
                } else if !self.raw.raft.prs().conf().voters().contains(target) {
                    Err(EtcdError::BadLeaderTransferee)
                } else {
                    self.raw.transfer_leader(target);
                    Ok(())
                };
                let _ = reply.send(result);
            }
            Command::ResetPeer(peer, reply) => {
                let result = if self.raw.raft.state != StateRole::Leader {
                    Err(EtcdError::NotLeader)
                } else if let Some(pr) = self.raw.raft.mut_prs().get_mut(peer) {
                    // Forgetting what the peer had can only hold back the commit index,
                    // never advance it, so this is safe; raft then probes from the start
                    // and falls back to a snapshot where the log is compacted.
                    pr.matched = 0;
                    pr.become_probe();
                    pr.next_idx = 1;
                    tracing::info!(peer = %format!("{peer:x}"), "replicating from scratch to a member that lost its log");
                    Ok(())
                } else {
                    Err(EtcdError::MemberNotFound)
                };
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    fn step(&mut self, mut m: Message) {
        let t = m.get_msg_type();
        if self.rejoined && t == MessageType::MsgHeartbeat {
            // Until the leader has reset what it believes this member holds, its heartbeats
            // carry a commit index beyond the (empty) log; everything here came from the
            // current leader's log, so committing up to its end is safe.
            m.commit = m.commit.min(self.raw.raft.raft_log.last_index());
        }
        if self.recovering {
            match t {
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => return,
                MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot => {
                    tracing::info!(
                        leader = m.from,
                        term = m.term,
                        "heard from a leader; taking part in elections again"
                    );
                    self.recovering = false;
                }
                _ => {}
            }
        }
        if let Err(e) = self.raw.step(m) {
            // Stepping fails for messages from unknown peers or stale ones; raft-rs has
            // already ignored them.
            tracing::debug!(error = %e, msg_type = ?t, "raft ignored a message");
        }
    }

    fn enqueue(&mut self, req: Request, reply: Reply) {
        let id = self.proposals.register(reply, self.raw.raft.term);
        let r = InternalRequest {
            proposer: self.me,
            id,
            request: Some(req),
        };
        self.batch_bytes += r.encoded_len();
        self.batch.push(r);
        if self.batch_bytes >= MAX_ENTRY_BYTES {
            self.flush_proposals();
        }
    }

    /// Proposes everything batched as one entry.
    fn flush_proposals(&mut self) {
        if self.has_leader() && !self.parked.is_empty() {
            for (req, reply) in std::mem::take(&mut self.parked) {
                self.enqueue(req, reply);
            }
        }
        if self.batch.is_empty() {
            return;
        }
        let requests = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let ids: Vec<u64> = requests.iter().map(|r| r.id).collect();
        self.metrics.proposals_per_entry.observe(ids.len() as f64);
        let data = RequestBatch { requests }.encode_to_vec();
        if let Err(e) = self.raw.propose(Vec::new(), data) {
            tracing::debug!(error = %e, "proposal dropped");
            for id in ids {
                self.proposals.complete(id, Err(EtcdError::NoLeader));
            }
        }
    }

    fn start_read_round(&mut self) {
        if self.has_leader()
            && self.reads.has_waiting()
            && let Some(ctx) = self.reads.start_round(Instant::now())
        {
            self.raw.read_index(ctx);
        }
    }

    async fn on_ready(&mut self) -> Result<(), NodeError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.on_role_change(ss.leader_id, ss.raft_state);
        }
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            self.restore(ready.snapshot().clone()).await?;
        }
        self.hand_off(ready.take_committed_entries())?;
        for rs in ready.take_read_states() {
            self.reads.complete(&rs.request_ctx, rs.index);
        }
        let mut batch = sled::Batch::default();
        let mut dirty = false;
        if !ready.entries().is_empty() {
            self.raw.mut_store().append(ready.entries(), &mut batch)?;
            dirty = true;
        }
        if let Some(hs) = ready.hs() {
            let term_changed = hs.term != self.raw.store().hard_state().term;
            self.raw.mut_store().set_hard_state(hs, &mut batch)?;
            dirty = true;
            if term_changed {
                self.proposals.fail_before_term(hs.term);
            }
        }
        if dirty {
            self.raw.store().write(batch)?;
        }
        if ready.must_sync() {
            let started = std::time::Instant::now();
            self.raw.store().sync().await?;
            self.metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut batch = sled::Batch::default();
            self.raw.mut_store().set_commit(commit, &mut batch)?;
            self.raw.store().write(batch)?;
        }
        self.transport.send(light.take_messages());
        self.hand_off(light.take_committed_entries())?;
        self.raw.advance_apply();
        let log = &self.raw.raft.raft_log;
        self.commit_mark
            .maybe_record(log.committed.min(log.persisted))?;
        self.publish_status();
        Ok(())
    }

    fn on_role_change(&mut self, leader: u64, role: StateRole) {
        tracing::info!(
            member = self.me,
            leader,
            ?role,
            term = self.raw.raft.term,
            "raft role changed"
        );
        self.metrics.leader_changes.inc();
    }

    fn hand_off(&mut self, entries: Vec<raft::prelude::Entry>) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.applier
            .send(ApplyTask::Entries(entries))
            .map_err(|_| NodeError::ApplierGone)
    }

    /// A snapshot from the leader replaces the state machine first (durably), then the log,
    /// so a crash in between never leaves a log that starts after the applied state.
    async fn restore(&mut self, snap: Snapshot) -> Result<(), NodeError> {
        let meta = snap.get_metadata().clone();
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "restoring from a leader's snapshot"
        );
        let (done, wait) = oneshot::channel();
        self.applier
            .send(ApplyTask::Restore {
                snapshot: snap,
                done,
            })
            .map_err(|_| NodeError::ApplierGone)?;
        wait.await.map_err(|_| NodeError::ApplierGone)??;
        let mut batch = sled::Batch::default();
        self.raw.mut_store().apply_snapshot(&meta, &mut batch)?;
        self.raw.store().write(batch)?;
        self.raw.store().sync().await?;
        Ok(())
    }

    fn publish_status(&self) {
        let r = &self.raw.raft;
        let status = RaftStatus {
            leader: r.leader_id,
            term: r.term,
            is_leader: r.state == StateRole::Leader,
            commit: r.raft_log.committed,
            last_index: r.raft_log.last_index(),
        };
        self.status.send_if_modified(|s| {
            if *s != status {
                *s = status;
                true
            } else {
                false
            }
        });
    }
}
