//! Events the agent records on pods (Unhealthy, Killing, …), as the kubelet does.

use flotilla_client::Client;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// Records an Event about `pod`; a failure to record is logged, never fatal.
pub async fn record(
    client: &Client,
    node: &str,
    pod: &Pod,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": name, "uid": pod.metadata.uid},
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": "flotilla-agent", "host": node},
        "reportingComponent": "flotilla-agent",
        "reportingInstance": node,
        "count": 1,
    });
    if let Err(e) = client
        .dynamic("v1", "events", &ns)
        .create(&event, false)
        .await
    {
        tracing::debug!(pod = %name, error = %e, "could not record an event");
    }
}
