//! The agent's log endpoint (`flotilla.agent.v1.Agent`): a container's CRI log file read
//! back as lines (partial records joined), with tail, since, timestamps and previous, and
//! followed as it grows — through rotation — until the container ends or the caller goes.
//! The API server is the only caller; it proves it with the token of the Secret
//! kube-system/flotilla-agent-proxy.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_client::Client;
use flotilla_proto::agent::agent_server::Agent;
use flotilla_proto::api::{LogsChunk, LogsRequest};
use k8s_openapi::api::core::v1::Secret;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::cri_log;
use crate::runtime::{ContainerState, ContainerStatus, Runtime};

/// The Secret holding the token the API server presents.
pub const PROXY_SECRET: (&str, &str) = ("kube-system", "flotilla-agent-proxy");
/// How often a followed log is checked for new output.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The endpoint.
pub struct LogService<R> {
    runtime: Arc<R>,
    client: Client,
    token: Mutex<Option<String>>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl<R: Runtime> LogService<R> {
    /// The endpoint over `runtime`, checking callers against the proxy Secret via `client`;
    /// followed logs end when `stopping` flips, so the agent's stop never waits on them.
    pub fn new(
        runtime: Arc<R>,
        client: Client,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        LogService {
            runtime,
            client,
            token: Mutex::new(None),
            stopping,
        }
    }

    async fn authenticate<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string)
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        let cached = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if cached.as_deref() == Some(presented.as_str()) {
            return Ok(());
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
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = current.clone();
        if current.as_deref() == Some(presented.as_str()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("the token is not the API server's"))
        }
    }

    /// The container instance a request is about.
    async fn instance(&self, r: &LogsRequest) -> Result<ContainerStatus, Status> {
        let internal = |e: crate::runtime::RuntimeError| Status::internal(e.to_string());
        let sandboxes = self.runtime.list_pod_sandboxes().await.map_err(internal)?;
        let pod = format!("{}/{}", r.namespace, r.name);
        let mut containers = Vec::new();
        for s in sandboxes.iter().filter(|s| {
            if r.pod_uid.is_empty() {
                s.config.namespace == r.namespace && s.config.name == r.name
            } else {
                s.config.uid == r.pod_uid
            }
        }) {
            containers.extend(
                self.runtime
                    .list_containers(Some(&s.id))
                    .await
                    .map_err(internal)?,
            );
        }
        let mut names: Vec<String> = containers.iter().map(|c| c.config.name.clone()).collect();
        names.sort();
        names.dedup();
        let name = if r.container.is_empty() {
            match names.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Status::not_found(format!(
                        "pod {pod} has no containers on this node yet"
                    )));
                }
                many => {
                    return Err(Status::invalid_argument(format!(
                        "a container name must be specified for pod {}, choose one of: [{}]",
                        r.name,
                        many.join(" ")
                    )));
                }
            }
        } else {
            r.container.clone()
        };
        let mut mine: Vec<ContainerStatus> = containers
            .into_iter()
            .filter(|c| c.config.name == name)
            .collect();
        mine.sort_by_key(|c| std::cmp::Reverse(c.config.attempt));
        let pick = if r.previous {
            mine.get(1)
        } else {
            mine.first()
        };
        pick.cloned().ok_or_else(|| {
            if r.previous {
                Status::invalid_argument(format!(
                    "previous terminated container {name:?} in pod {:?} not found",
                    r.name
                ))
            } else {
                Status::invalid_argument(format!(
                    "container {name:?} in pod {:?} is not running yet",
                    r.name
                ))
            }
        })
    }
}

/// Turns CRI records into output lines: partial records joined, filtered by time, with
/// the time prefixed when asked.
#[derive(Default)]
struct Lines {
    pending: String,
    since: Option<jiff::Timestamp>,
    timestamps: bool,
}

impl Lines {
    fn push(&mut self, record: &str, out: &mut Vec<String>) {
        let Some(r) = cri_log::parse(record) else {
            return;
        };
        self.pending.push_str(&r.text);
        if r.partial {
            return;
        }
        let text = std::mem::take(&mut self.pending);
        let t = r.time.parse::<jiff::Timestamp>().ok();
        if let (Some(since), Some(t)) = (self.since, t)
            && t < since
        {
            return;
        }
        out.push(if self.timestamps {
            format!("{} {text}\n", r.time)
        } else {
            format!("{text}\n")
        });
    }
}

/// Reads whatever follows `offset` in `path`; returns the new offset and the complete
/// records (a record still being written waits for the next read).
fn read_from(path: &Path, offset: u64) -> std::io::Result<(u64, Vec<String>)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    // Shorter than where we were: rotated; the new file starts from scratch.
    let start = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&buf[..complete]);
    Ok((
        start + complete as u64,
        text.lines().map(str::to_string).collect(),
    ))
}

fn rotated(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.1", path.display()))
}

/// Sends `lines` as one chunk (nothing when empty); false once the caller has gone.
async fn send(tx: &mpsc::Sender<Result<LogsChunk, Status>>, lines: &[String]) -> bool {
    lines.is_empty()
        || tx
            .send(Ok(LogsChunk {
                data: lines.concat().into(),
            }))
            .await
            .is_ok()
}

#[tonic::async_trait]
impl<R: Runtime> Agent for LogService<R> {
    async fn container_logs(
        &self,
        req: Request<LogsRequest>,
    ) -> Result<Response<BoxStream<LogsChunk>>, Status> {
        self.authenticate(&req).await?;
        let r = req.into_inner();
        let c = self.instance(&r).await?;
        let path = c.log_path.clone();
        let mut lines = Lines {
            since: r
                .since_seconds
                .map(|s| jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s.max(0))),
            timestamps: r.timestamps,
            ..Default::default()
        };
        // What is there now: the rotated file, then the current one.
        let mut out = Vec::new();
        if let Ok((_, records)) = read_from(&rotated(&path), 0) {
            for rec in &records {
                lines.push(rec, &mut out);
            }
        }
        let (mut offset, records) = read_from(&path, 0).unwrap_or((0, Vec::new()));
        for rec in &records {
            lines.push(rec, &mut out);
        }
        if let Some(n) = r.tail_lines {
            let keep = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
            let drop = out.len().saturating_sub(keep);
            out.drain(..drop);
        }
        let (tx, rx) = mpsc::channel(16);
        let runtime = self.runtime.clone();
        let follow = r.follow && !r.previous;
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            if !send(&tx, &out).await || !follow {
                return;
            }
            loop {
                let ended = runtime
                    .container_status(&c.id)
                    .await
                    .map_or(true, |s| s.state == ContainerState::Exited);
                let Ok((next, records)) = read_from(&path, offset) else {
                    return;
                };
                offset = next;
                let mut out = Vec::new();
                for rec in &records {
                    lines.push(rec, &mut out);
                }
                if !send(&tx, &out).await || ended {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    _ = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_records_join_and_old_lines_are_filtered() {
        let mut l = Lines {
            since: Some("2026-01-01T00:00:01Z".parse().expect("time")),
            timestamps: false,
            ..Default::default()
        };
        let mut out = Vec::new();
        l.push("2026-01-01T00:00:00Z stdout F too old", &mut out);
        l.push("2026-01-01T00:00:02Z stdout P hello ", &mut out);
        l.push("2026-01-01T00:00:02Z stdout F world", &mut out);
        assert_eq!(out, vec!["hello world\n".to_string()]);
    }

    #[test]
    fn incomplete_records_wait_for_their_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0.log");
        std::fs::write(
            &p,
            "2026-01-01T00:00:00Z stdout F a\n2026-01-01T00:00:00Z stdout F b",
        )
        .expect("write");
        let (off, recs) = read_from(&p, 0).expect("read");
        assert_eq!(recs.len(), 1);
        std::fs::write(
            &p,
            "2026-01-01T00:00:00Z stdout F a\n2026-01-01T00:00:00Z stdout F b\n",
        )
        .expect("write");
        let (_, recs) = read_from(&p, off).expect("read");
        assert_eq!(recs, vec!["2026-01-01T00:00:00Z stdout F b".to_string()]);
    }
}
