//! Command-line front ends. `cli` only parses flags and calls the component crates'
//! `run(config, shutdown)`; everything else lives in those crates.
//!
//! - [`agent`]: `flotilla agent`, the node agent
//! - [`component`]: reaching the API server, leader-election flags
//! - [`controller`]: `flotilla controller`, the controller manager as its own process
//! - [`etcd`]: `flotilla etcd`, an etcd-lite member with etcd's own flags
//! - [`hollow`]: `flotilla hollow-nodes`, simulated nodes for scale tests
//! - [`flotctl`]: the `flotctl` command line
//! - [`scheduler`]: `flotilla scheduler`, the scheduler as its own process
//! - [`server`]: `flotilla server`, the all-in-one control plane
//! - [`signals`]: SIGTERM/SIGINT as a shutdown future
//! - [`logging`]: the tracing subscriber every daemon uses

pub mod agent;
pub mod component;
pub mod controller;
pub mod etcd;
pub mod flotctl;
pub mod hollow;
pub mod logging;
pub mod scheduler;
pub mod server;
pub mod signals;
