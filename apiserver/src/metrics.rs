//! Prometheus metrics of the API server, served at `/metrics`: requests by verb, resource
//! and code with latency histograms, watchers per resource, and store latency.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the API server exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    watchers: Family<Labels, Gauge>,
    /// Store round trips by operation (shared with the store client).
    pub store_seconds: Arc<crate::storage::etcd::LatencyFamily>,
    /// Components running in this process (the in-process scheduler), whose metrics are
    /// served here after the server's own.
    sources: std::sync::Mutex<Vec<Source>>,
}

/// A component's metrics in Prometheus' text format.
pub type Source = Arc<dyn Fn() -> String + Send + Sync>;

/// The OpenMetrics end-of-exposition line, which only the whole page may end with.
const EOF: &str = "# EOF\n";

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("apiserver");
        let requests = Family::<Labels, Counter>::default();
        let request_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let watchers = Family::<Labels, Gauge>::default();
        let store_seconds = Arc::new(
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram),
        );
        registry.register(
            "request",
            "API requests by verb, resource and HTTP-equivalent code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "API request latency by verb and resource",
            request_seconds.clone(),
        );
        registry.register(
            "registered_watchers",
            "Active watchers by resource",
            watchers.clone(),
        );
        registry.register(
            "storage_request_duration_seconds",
            "Store round-trip latency by operation",
            store_seconds.as_ref().clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            watchers,
            store_seconds,
            sources: Default::default(),
        }
    }
}

impl Metrics {
    /// Records one API request.
    pub fn request(&self, verb: &'static str, resource: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&vec![
                ("verb", verb.to_string()),
                ("resource", resource.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
        self.request_seconds
            .get_or_create(&vec![
                ("verb", verb.to_string()),
                ("resource", resource.to_string()),
            ])
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the watcher count of a resource.
    pub fn set_watchers(&self, resource: &str, n: usize) {
        self.watchers
            .get_or_create(&vec![("resource", resource.to_string())])
            .set(n as i64);
    }

    /// Serves `source`'s metrics here too.
    pub fn add_source(&self, source: Source) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    /// The text exposition: the server's metrics, then its in-process components'.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if sources.is_empty() {
            return out;
        }
        let mut page = out.strip_suffix(EOF).unwrap_or(&out).to_string();
        for source in sources {
            let text = source();
            page.push_str(text.strip_suffix(EOF).unwrap_or(&text));
        }
        page.push_str(EOF);
        page
    }
}
