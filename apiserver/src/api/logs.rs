//! Logs: the API server finds the pod's node and asks that node's agent for the
//! container's log (`flotilla.agent.v1.Agent/ContainerLogs`), streaming it back, as
//! kube-apiserver proxies `pods/log` to the kubelet. The agent trusts the token of the
//! Secret kube-system/flotilla-agent-proxy, which the server creates at start.

use std::time::Duration;

use flotilla_proto::agent::agent_client::AgentClient;
use flotilla_proto::api::{LogsChunk, LogsRequest};
use futures::StreamExt;
use serde_json::{Value, json};
use tonic::codegen::BoxStream;

use super::{Api, ObjectRef};
use crate::error::{ApiError, Reason};

/// The Secret whose token the server presents to agents.
pub const PROXY_SECRET: (&str, &str) = ("kube-system", "flotilla-agent-proxy");
/// How long reaching an agent may take.
pub const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn object(api_version: &str, resource: &str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: api_version.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        subresource: String::new(),
    }
}

fn token_of(secret: &Value) -> Option<String> {
    use base64::Engine;
    let b64 = secret["data"]["token"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

impl Api {
    /// The token agents accept from this server, created on first use.
    pub async fn agent_proxy_token(&self) -> Result<String, ApiError> {
        let r = object("v1", "secrets", PROXY_SECRET.0, PROXY_SECRET.1);
        match self.get(&r, "").await {
            Ok(s) => {
                return token_of(&s)
                    .ok_or_else(|| ApiError::internal("the agent proxy Secret has no token"));
            }
            Err(e) if e.reason == Reason::NotFound => {}
            Err(e) => return Err(e),
        }
        let token = crate::auth::new_token();
        let body = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": PROXY_SECRET.1, "namespace": PROXY_SECRET.0},
            "type": "Opaque",
            "stringData": {"token": token},
        });
        let mut create = r.clone();
        create.name = String::new();
        match self
            .create(&create, body.to_string().as_bytes(), false)
            .await
        {
            Ok(_) => Ok(token),
            // Another server made it first: use theirs.
            Err(e) if e.reason == Reason::AlreadyExists => {
                let s = self.get(&r, "").await?;
                token_of(&s)
                    .ok_or_else(|| ApiError::internal("the agent proxy Secret has no token"))
            }
            Err(e) => Err(e),
        }
    }

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
        let node = self.get(&object("v1", "nodes", "", node_name), "").await?;
        let address = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .ok_or_else(|| {
                ApiError::unavailable(format!("node {node_name} has no InternalIP address"))
            })?;
        let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_i64()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                ApiError::unavailable(format!("node {node_name} has no agent endpoint"))
            })?;
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.to_string()
        };
        let url = format!("http://{host}:{port}");
        let unreachable = |e: String| {
            ApiError::unavailable(format!("the agent of node {node_name} at {url}: {e}"))
        };
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(AGENT_CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let token = self.agent_proxy_token().await?;
        let mut call = tonic::Request::new(req);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ApiError::internal("the proxy token is not a valid header"))?;
        call.metadata_mut().insert("authorization", value);
        let stream = AgentClient::new(channel)
            .container_logs(call)
            .await
            .map_err(|s| agent_error(&s))?
            .into_inner();
        Ok(Box::pin(
            stream.map(|item| item.map_err(|s| agent_error(&s).to_grpc())),
        ))
    }
}

/// The agent's answer in API terms (its messages are meant for users).
fn agent_error(s: &tonic::Status) -> ApiError {
    match s.code() {
        tonic::Code::InvalidArgument => ApiError::bad_request(s.message()),
        tonic::Code::NotFound => ApiError::bad_request(s.message()),
        _ => ApiError::unavailable(format!("from the node's agent: {}", s.message())),
    }
}
