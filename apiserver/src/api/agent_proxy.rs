//! Reaching a node's agent (`flotilla.agent.v1.Agent`), as kube-apiserver reaches the
//! kubelet for `pods/log` and `pods/exec`: the node's InternalIP and the agent port it
//! registered, and the token of the Secret kube-system/flotilla-agent-proxy (created here
//! on first use), which agents trust.

use std::time::Duration;

use flotilla_proto::agent::PROXY_SECRET;
use flotilla_proto::agent::agent_client::AgentClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{Api, ObjectRef};
use crate::error::{ApiError, Reason};

/// How long reaching an agent may take.
pub const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read from an agent: exec's output, with room for framing.
pub const MAX_AGENT_MESSAGE: usize = flotilla_proto::exec::MAX_OUTPUT + 1024 * 1024;

/// A reference to an object, for internal reads.
pub(crate) fn object(api_version: &str, resource: &str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: api_version.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        subresource: String::new(),
    }
}

/// The token in the proxy Secret `secret`.
fn token_of(secret: &Value) -> Result<String, ApiError> {
    use base64::Engine;
    secret["data"]["token"]
        .as_str()
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::internal("the agent proxy Secret has no token"))
}

/// The agent's address in a Node object: `http://<InternalIP>:<agent port>`.
pub fn agent_url(node: &Value) -> Result<String, ApiError> {
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    let address = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| ApiError::unavailable(format!("node {name} has no InternalIP address")))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::unavailable(format!("node {name} has no agent endpoint")))?;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Ok(format!("http://{host}:{port}"))
}

/// An agent's error in API terms (its messages are meant for users).
pub fn agent_error(s: &tonic::Status) -> ApiError {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
            ApiError::bad_request(s.message())
        }
        tonic::Code::DeadlineExceeded => ApiError::timeout(s.message()),
        tonic::Code::ResourceExhausted => {
            ApiError::bad_request(format!("from the node's agent: {}", s.message()))
        }
        _ => ApiError::unavailable(format!("from the node's agent: {}", s.message())),
    }
}

impl Api {
    /// The token agents accept from this server, created on first use. Read from the
    /// watch cache (resourceVersion 0): every logs and exec call asks, and a rotated
    /// Secret reaches the cache within a watch event.
    pub async fn agent_proxy_token(&self) -> Result<String, ApiError> {
        let r = object("v1", "secrets", PROXY_SECRET.0, PROXY_SECRET.1);
        match self.get(&r, "0").await {
            Ok(s) => return token_of(&s),
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
            Err(e) if e.reason == Reason::AlreadyExists => token_of(&self.get(&r, "").await?),
            Err(e) => Err(e),
        }
    }

    /// A connection to the agent of node `node_name`.
    pub async fn agent_of(&self, node_name: &str) -> Result<AgentClient<Channel>, ApiError> {
        // The node's address and port from the watch cache, as for the token.
        let node = self.get(&object("v1", "nodes", "", node_name), "0").await?;
        let url = agent_url(&node)?;
        let unreachable = |e: String| {
            ApiError::unavailable(format!("the agent of node {node_name} at {url}: {e}"))
        };
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(AGENT_CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(AgentClient::new(channel).max_decoding_message_size(MAX_AGENT_MESSAGE))
    }

    /// `msg` as a call to an agent, carrying the proxy token.
    pub async fn agent_request<T>(&self, msg: T) -> Result<tonic::Request<T>, ApiError> {
        let token = self.agent_proxy_token().await?;
        let mut call = tonic::Request::new(msg);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ApiError::internal("the proxy token is not a valid header"))?;
        call.metadata_mut().insert("authorization", value);
        Ok(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_reached_on_the_internal_ip_and_registered_port() {
        let node = |addr: &str| {
            json!({
                "metadata": {"name": "n1"},
                "status": {
                    "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": addr}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                }
            })
        };
        assert_eq!(
            agent_url(&node("10.0.0.5")).expect("url"),
            "http://10.0.0.5:10250"
        );
        assert_eq!(
            agent_url(&node("fd00::5")).expect("url"),
            "http://[fd00::5]:10250"
        );
        let e = agent_url(&json!({"metadata": {"name": "n2"}})).expect_err("no address");
        assert!(
            e.message.contains("node n2 has no InternalIP"),
            "{}",
            e.message
        );
    }
}
