//! The agent's endpoint (`flotilla.agent.v1.Agent`): container logs ([`crate::logs`]) and
//! exec ([`crate::exec`]). The API server is the only caller; every call must carry the
//! token of the Secret kube-system/flotilla-agent-proxy, which the API server creates.

use std::sync::{Arc, Mutex};

use flotilla_client::Client;
use flotilla_proto::agent::PROXY_SECRET;
use flotilla_proto::agent::agent_server::Agent;
use flotilla_proto::api::{ExecRequest, ExecResponse, LogsChunk, LogsRequest};
use k8s_openapi::api::core::v1::Secret;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;

/// Checks that a caller presents the API server's token.
pub struct ProxyAuth {
    client: Client,
    /// The token last read, and when.
    token: Mutex<(Option<String>, Option<std::time::Instant>)>,
}

/// The least time between two reads of the Secret: a wrong token must not let any caller
/// make the agent read the API once per call.
const REREAD_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl ProxyAuth {
    /// Checks callers against the proxy Secret, read through `client`.
    pub fn new(client: Client) -> Self {
        ProxyAuth {
            client,
            token: Mutex::new((None, None)),
        }
    }

    /// Ok when `req` carries the API server's bearer token.
    pub async fn authenticate<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string)
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        let (cached, read_at) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if cached.as_deref() == Some(presented.as_str()) {
            return Ok(());
        }
        if read_at.is_some_and(|t| t.elapsed() < REREAD_AFTER) {
            return Err(Status::unauthenticated("the token is not the API server's"));
        }
        // The Secret may be new or rotated: read it again.
        let secret = self
            .client
            .api::<Secret>(PROXY_SECRET.0)
            .get_opt(PROXY_SECRET.1)
            .await
            .map_err(|e| Status::unavailable(format!("reading the proxy token: {e}")))?;
        let current = secret.and_then(|s| s.data).and_then(|d| {
            d.get("token")
                .map(|t| String::from_utf8_lossy(&t.0).to_string())
        });
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) =
            (current.clone(), Some(std::time::Instant::now()));
        if current.as_deref() == Some(presented.as_str()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("the token is not the API server's"))
        }
    }
}

/// The endpoint.
pub struct AgentEndpoint<R> {
    runtime: Arc<R>,
    auth: ProxyAuth,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl<R: Runtime> AgentEndpoint<R> {
    /// The endpoint over `runtime`, checking callers against the proxy Secret via `client`;
    /// followed logs end when `stopping` flips, so the agent's stop never waits on them.
    pub fn new(
        runtime: Arc<R>,
        client: Client,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        AgentEndpoint {
            runtime,
            auth: ProxyAuth::new(client),
            stopping,
        }
    }
}

#[tonic::async_trait]
impl<R: Runtime> Agent for AgentEndpoint<R> {
    async fn container_logs(
        &self,
        req: Request<LogsRequest>,
    ) -> Result<Response<BoxStream<LogsChunk>>, Status> {
        self.auth.authenticate(&req).await?;
        let stream = crate::logs::stream(
            self.runtime.clone(),
            req.into_inner(),
            self.stopping.clone(),
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn exec_sync(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        self.auth.authenticate(&req).await?;
        let r = req.into_inner();
        let pod = format!("{}/{}", r.namespace, r.name);
        // Only the program is logged: arguments can carry secrets.
        let command = r.command.first().cloned().unwrap_or_default();
        match crate::exec::run(self.runtime.as_ref(), r).await {
            Ok(out) => {
                tracing::info!(%pod, container = %out.container, %command, exit_code = out.exit_code, "exec finished");
                Ok(Response::new(out))
            }
            Err(e) => {
                tracing::info!(%pod, %command, error = %e, "exec failed");
                Err(e.to_status())
            }
        }
    }
}
