//! The controller manager's Prometheus metrics, as kube-controller-manager names its
//! work queues' and syncs': keys synced by controller and result, how long a sync took,
//! and each work queue's depth. One set per process, shared by every controller and
//! manager in it, as Prometheus' default registry is.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

struct Metrics {
    registry: Registry,
    syncs: Family<Labels, Counter>,
    sync_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    depth: Family<Labels, Gauge>,
}

fn sync_histogram() -> Histogram {
    // 100 µs to ~100 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let syncs = Family::<Labels, Counter>::default();
        let sync_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(sync_histogram);
        let depth = Family::<Labels, Gauge>::default();
        registry.register(
            "controller_syncs",
            "Keys synced, by controller and result (success, conflict, error)",
            syncs.clone(),
        );
        registry.register(
            "controller_sync_duration_seconds",
            "How long one key's sync took, by controller",
            sync_seconds.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Keys waiting in a controller's work queue",
            depth.clone(),
        );
        Metrics {
            registry,
            syncs,
            sync_seconds,
            depth,
        }
    })
}

/// Counts one sync of `controller`'s and how long it took.
pub fn sync(controller: &'static str, result: &'static str, took: Duration) {
    let m = metrics();
    m.syncs
        .get_or_create(&vec![("controller", controller), ("result", result)])
        .inc();
    m.sync_seconds
        .get_or_create(&vec![("controller", controller)])
        .observe(took.as_secs_f64());
}

/// Sets how many keys wait in `controller`'s queue.
pub fn queue_depth(controller: &'static str, depth: usize) {
    metrics()
        .depth
        .get_or_create(&vec![("name", controller)])
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
}

/// Every controller's metrics in Prometheus' text format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &metrics().registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_and_queue_depths_are_exported() {
        sync("test-controller", "success", Duration::from_millis(2));
        sync("test-controller", "error", Duration::from_millis(3));
        queue_depth("test-controller", 7);
        let text = render();
        assert!(
            text.contains(
                "controller_syncs_total{controller=\"test-controller\",result=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("workqueue_depth{name=\"test-controller\"} 7"),
            "{text}"
        );
    }
}
