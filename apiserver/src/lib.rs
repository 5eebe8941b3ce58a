//! The Flotilla API server: Kubernetes objects over gRPC, stored in an etcd v3 store.
//!
//! Layout:
//! - [`registry`]: the kinds served and their typed hooks; [`kinds`] (per-kind validation
//!   and defaulting), [`validation`] (field paths and errors), [`defaults`], [`decode`]
//!   (strict decoding): what makes a manifest mean what it means in Kubernetes
//! - [`api`]: the verbs (create, get, list, update, patch, delete, bind, watch), knowing
//!   nothing of transport; [`meta`]: server-owned metadata; [`alloc`]: Service IPs/ports
//! - [`storage`]: the etcd v3 client; [`watch_cache`]: one cache per resource feeding
//!   lists and watches
//! - [`selector`]: label and field selectors; [`error`]: Kubernetes statuses and their gRPC
//!   codes
//! - [`grpc`]: the `flotilla.api.v1.Resources` front end; [`auth`]: bearer tokens and
//!   client certificates; [`tls`]: serving certificates, the client CA, the `--tls` PKI;
//!   [`metrics`]; [`compaction`]: periodic history compaction; [`server`]: the process
//!   (embedded or external store, listener, `/healthz`, `/readyz`, `/metrics`)

pub use server::{Server, ServerConfig, ServerError, run};

pub mod alloc;
pub mod api;
pub mod auth;
pub mod compaction;
pub mod decode;
pub mod defaults;
pub mod error;
pub mod grpc;
pub mod kinds;
pub mod meta;
pub mod metrics;
pub mod registry;
pub mod selector;
pub mod server;
pub mod storage;
pub mod tls;
pub mod validation;
pub mod watch_cache;
