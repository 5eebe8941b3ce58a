//! Plain-HTTP endpoints served next to gRPC on the client URLs, as etcd serves them:
//! `/metrics` (Prometheus), `/health` and `/version`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::{Shared, VERSION};

/// Adds the HTTP endpoints to a router.
pub fn routes(router: axum::Router, shared: Arc<Shared>) -> axum::Router {
    router.merge(
        axum::Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/version", get(version))
            .with_state(shared),
    )
}

async fn metrics(State(shared): State<Arc<Shared>>) -> String {
    let m = &shared.metrics;
    let status = shared.status.borrow().clone();
    m.is_leader.set(i64::from(status.is_leader));
    m.term.set(status.term as i64);
    m.commit_index.set(status.commit as i64);
    m.applied_index.set(shared.applied.borrow().index as i64);
    {
        let sm = shared.state.read();
        m.revision.set(sm.store.revision());
        m.keys.set(sm.store.key_count() as i64);
        m.watchers.set(sm.watchers.len() as i64);
    }
    m.render()
}

/// Healthy when a leader is known and a linearizable read completes, as etcd checks it.
async fn health(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if shared.status.borrow().leader == 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"health\":\"false\",\"reason\":\"no leader\"}",
        );
    }
    match shared.read_barrier().await {
        Ok(()) => (StatusCode::OK, "{\"health\":\"true\"}"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"health\":\"false\",\"reason\":\"read index timed out\"}",
        ),
    }
}

async fn version() -> String {
    format!("{{\"etcdserver\":\"{VERSION}\",\"etcdcluster\":\"3.4.0\"}}")
}
