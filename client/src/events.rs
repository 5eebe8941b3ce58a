//! Events: what components record about the objects they act on (FailedScheduling,
//! SuccessfulCreate, Unhealthy, …), shown by `flotctl describe`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde_json::json;

use crate::api::Client;

/// Who records an Event: a component, and the node it runs on, if any.
#[derive(Debug, Clone, Copy)]
pub struct Recorder<'a> {
    /// `default-scheduler`, `replicaset-controller`, `flotilla-agent`, …
    pub component: &'a str,
    /// The node, for per-node components.
    pub host: Option<&'a str>,
}

impl Recorder<'_> {
    /// Records an Event of `type_` (Normal or Warning) about `object`. A failure to record
    /// is logged, never returned: an Event is a note, not part of the work.
    pub async fn record<K>(
        &self,
        client: &Client,
        object: &K,
        type_: &str,
        reason: &str,
        message: &str,
    ) where
        K: Resource + Metadata<Ty = ObjectMeta>,
    {
        let meta = object.metadata();
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": ns},
            "involvedObject": {
                "kind": K::KIND, "apiVersion": K::API_VERSION,
                "namespace": ns, "name": name, "uid": meta.uid,
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host,
            "count": 1,
        });
        if let Err(e) = client
            .dynamic("v1", "events", &ns)
            .create(&event, false)
            .await
        {
            tracing::warn!(component = self.component, object = %name, reason, error = %e, "could not record an event");
        }
    }
}
