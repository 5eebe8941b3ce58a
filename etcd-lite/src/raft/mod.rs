//! Consensus: raft-rs driven through `RawNode`, with the log in sled and peers over gRPC.
//!
//! - [`node`]: the actor that owns `RawNode` and runs the Ready loop
//! - [`storage`]: the raft log, hard state and conf state (raft-rs `Storage`), with
//!   [`entry_cache`] holding its tail in memory
//! - [`snapfiles`]: state-machine snapshots on disk
//! - [`transport`] / [`peer_service`]: raft messages between members
//! - [`proposals`] / [`read_index`]: clients waiting on writes and linearizable reads
//! - [`commit_mark`]: a durable record of how far the log reached, to catch damage sled
//!   would hide
//! - [`logger`]: raft-rs's slog output into tracing

pub mod commit_mark;
pub mod entry_cache;
pub mod logger;
pub mod node;
pub mod peer_service;
pub mod proposals;
pub mod read_index;
pub mod snapfiles;
pub mod storage;
pub mod transport;
