//! Logs: the API server finds the pod's node and asks that node's agent for the
//! container's log (`flotilla.agent.v1.Agent/ContainerLogs`), streaming it back, as
//! kube-apiserver proxies `pods/log` to the kubelet.

use flotilla_proto::api::{LogsChunk, LogsRequest};
use futures::StreamExt;
use tonic::codegen::BoxStream;

use super::Api;
use super::agent_proxy::{agent_error, object};
use crate::error::ApiError;

impl Api {
    /// The log of a container of pod `req.namespace/req.name`, from its node's agent.
    pub async fn logs(&self, mut req: LogsRequest) -> Result<BoxStream<LogsChunk>, ApiError> {
        let pod = self
            .get(&object("v1", "pods", &req.namespace, &req.name), "")
            .await?;
        let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            return Err(ApiError::bad_request(format!(
                "pod {} does not have a host assigned",
                req.name
            )));
        };
        if !req.container.is_empty() {
            let names: Vec<&str> = ["initContainers", "containers"]
                .iter()
                .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
                .filter_map(|c| c["name"].as_str())
                .collect();
            if !names.contains(&req.container.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "container {} is not valid for pod {}",
                    req.container, req.name
                )));
            }
        }
        req.pod_uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut agent = self.agent_of(node_name).await?;
        let call = self.agent_request(req).await?;
        let stream = agent
            .container_logs(call)
            .await
            .map_err(|s| agent_error(&s))?
            .into_inner();
        Ok(Box::pin(
            stream.map(|item| item.map_err(|s| agent_error(&s).to_grpc())),
        ))
    }
}
