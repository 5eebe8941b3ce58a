//! The scheduler's Prometheus metrics, with kube-scheduler's names: attempts by result and
//! how long each took, bindings by result, and the pods waiting in each part of the queue.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// What one scheduling attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// A node was chosen.
    Scheduled,
    /// No node fits.
    Unschedulable,
}

/// Every metric the scheduler exports.
pub struct Metrics {
    registry: Registry,
    attempts: Family<Labels, Counter>,
    attempt_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    binds: Family<Labels, Counter>,
    pending: Family<Labels, Gauge>,
}

fn attempt_histogram() -> Histogram {
    // 10 µs to ~20 s: one algorithm run on a few nodes up to thousands.
    Histogram::new(exponential_buckets(0.00001, 2.0, 21))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("scheduler");
        let attempts = Family::<Labels, Counter>::default();
        let attempt_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(attempt_histogram);
        let binds = Family::<Labels, Counter>::default();
        let pending = Family::<Labels, Gauge>::default();
        registry.register(
            "schedule_attempts",
            "Scheduling attempts by result (scheduled, unschedulable)",
            attempts.clone(),
        );
        registry.register(
            "scheduling_attempt_duration_seconds",
            "How long the algorithm took for one pod, by result",
            attempt_seconds.clone(),
        );
        registry.register(
            "binds",
            "Bindings written, by result (bound, error)",
            binds.clone(),
        );
        registry.register(
            "pending_pods",
            "Pods waiting to be scheduled, by queue (active, backoff, unschedulable)",
            pending.clone(),
        );
        Metrics {
            registry,
            attempts,
            attempt_seconds,
            binds,
            pending,
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Counts one attempt and its duration.
    pub fn attempt(&self, result: Attempt, took: Duration) {
        let labels = vec![(
            "result",
            match result {
                Attempt::Scheduled => "scheduled",
                Attempt::Unschedulable => "unschedulable",
            },
        )];
        self.attempts.get_or_create(&labels).inc();
        self.attempt_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts one binding.
    pub fn bind(&self, ok: bool) {
        let result = if ok { "bound" } else { "error" };
        self.binds.get_or_create(&vec![("result", result)]).inc();
    }

    /// Sets how many pods wait in each part of the queue.
    pub fn set_pending(&self, counts: [(&'static str, usize); 3]) {
        for (queue, n) in counts {
            self.pending
                .get_or_create(&vec![("queue", queue)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_binds_and_the_queue_are_exported() {
        let m = Metrics::default();
        m.attempt(Attempt::Scheduled, Duration::from_micros(50));
        m.attempt(Attempt::Unschedulable, Duration::from_micros(70));
        m.attempt(Attempt::Scheduled, Duration::from_micros(30));
        m.bind(true);
        m.set_pending([("active", 2), ("backoff", 0), ("unschedulable", 1)]);
        let text = m.render();
        assert!(
            text.contains("scheduler_schedule_attempts_total{result=\"scheduled\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("scheduler_binds_total{result=\"bound\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("scheduler_pending_pods{queue=\"unschedulable\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "scheduler_scheduling_attempt_duration_seconds_count{result=\"unschedulable\"} 1"
            ),
            "{text}"
        );
    }
}
