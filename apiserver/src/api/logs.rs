//! Logs: the API server finds the pod's node and asks that node's agent for the
//! container's log (`flotilla.agent.v1.Agent/ContainerLogs`), streaming it back, as
//! kube-apiserver proxies `pods/log` to the kubelet.

use flotilla_proto::api::{LogsChunk, LogsRequest};
use futures::StreamExt;
use tonic::codegen::BoxStream;

use super::Api;
use super::agent_proxy::agent_error;
use super::pod_target::Subresource;
use crate::error::ApiError;

impl Api {
    /// The log of a container of pod `req.namespace/req.name`, from its node's agent.
    pub async fn logs(&self, mut req: LogsRequest) -> Result<BoxStream<LogsChunk>, ApiError> {
        let target = self
            .pod_target(&req.namespace, &req.name, &req.container, Subresource::Log)
            .await?;
        req.pod_uid = target.uid;
        let mut agent = self.agent_of(&target.node).await?;
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
