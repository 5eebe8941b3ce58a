//! Pods' cpu and memory use, read from the agents as Kubernetes' metrics-server reads the
//! kubelets: each node's agent serves its running containers' cumulative cpu time and
//! working set on `/metrics` (on the endpoint its Node records). CPU use is a rate, so a
//! pod's cpu is known from its second sample on: the difference of the two cumulative
//! times over the time between them.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long one agent may take to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read from an agent.
const MAX_BODY: u64 = 16 << 20;
/// Agents read at the same time.
const SCRAPES_AT_ONCE: usize = 32;
/// How long a pod's last reading is kept when its agent could not be read again.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// One pod's use, summed over its containers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Cores in use (cpu seconds per second).
    pub cpu_cores: f64,
    /// Bytes of working set.
    pub memory_bytes: f64,
}

/// A pod's cumulative cpu time when last read.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cpu_seconds: f64,
    at: Instant,
}

/// The pods' use as of the last scrape, and what the next needs to compute rates.
#[derive(Debug, Default)]
pub struct PodMetrics {
    last: HashMap<(String, String), Sample>,
    usage: HashMap<(String, String), Usage>,
}

/// The address of a node's agent: its InternalIP and its endpoint's port.
fn agent_address(node: &Node) -> Option<(String, u16)> {
    let status = node.status.as_ref()?;
    let ip = status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .clone();
    let port = status
        .daemon_endpoints
        .as_ref()?
        .kubelet_endpoint
        .as_ref()?
        .port;
    Some((ip, u16::try_from(port).ok()?))
}

/// `GET /metrics` from an agent; the body.
async fn scrape(ip: &str, port: u16) -> Result<String, String> {
    let fetch = async {
        let mut s = TcpStream::connect((ip, port))
            .await
            .map_err(|e| e.to_string())?;
        let req =
            format!("GET /metrics HTTP/1.0\r\nHost: {ip}:{port}\r\nAccept: text/plain\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.take(MAX_BODY + 1)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        if raw.len() as u64 > MAX_BODY {
            return Err(format!("the answer is larger than {MAX_BODY} bytes"));
        }
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or("the answer has no body")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(head.lines().next().unwrap_or_default().to_string());
        }
        Ok(body.to_string())
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("no answer within {SCRAPE_TIMEOUT:?}"))?
}

/// The value of `label` in a sample's label set (`a="x",b="y"`).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// Per pod, the cumulative cpu seconds and the working set in an agent's exposition.
fn parse(text: &str) -> HashMap<(String, String), (f64, f64)> {
    let mut out: HashMap<(String, String), (f64, f64)> = HashMap::new();
    for line in text.lines() {
        let (metric, is_cpu) =
            if let Some(r) = line.strip_prefix("container_cpu_usage_seconds_total{") {
                (r, true)
            } else if let Some(r) = line.strip_prefix("container_memory_working_set_bytes{") {
                (r, false)
            } else {
                continue;
            };
        let Some((labels, value)) = metric.rsplit_once("} ") else {
            continue;
        };
        let (Some(ns), Some(pod), Ok(v)) = (
            label(labels, "namespace"),
            label(labels, "pod"),
            value.trim().parse::<f64>(),
        ) else {
            continue;
        };
        let e = out.entry((ns.to_string(), pod.to_string())).or_default();
        if is_cpu {
            e.0 += v;
        } else {
            e.1 += v;
        }
    }
    out
}

impl PodMetrics {
    /// Reads the nodes' agents (several at once), updating each pod's use; returns the
    /// nodes that could not be read, with why. Each agent's answer is timed when it
    /// arrives, so the rate of a pod's cpu is over the time between its own two readings.
    pub async fn refresh(&mut self, nodes: &[std::sync::Arc<Node>]) -> Vec<(String, String)> {
        let agents: Vec<(String, String, u16)> = nodes
            .iter()
            .filter_map(|node| {
                let (ip, port) = agent_address(node)?;
                Some((node.metadata.name.clone().unwrap_or_default(), ip, port))
            })
            .collect();
        // Several at once, on tasks of their own: a slow agent costs its own timeout, not
        // everyone's.
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(SCRAPES_AT_ONCE));
        let mut tasks = tokio::task::JoinSet::new();
        for (name, ip, port) in agents {
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let text = scrape(&ip, port).await;
                (name, text, Instant::now())
            });
        }
        let mut reads = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(r) = r {
                reads.push(r);
            }
        }
        let mut failed = Vec::new();
        let mut usage = HashMap::new();
        for (name, text, at) in reads {
            let text = match text {
                Ok(t) => t,
                Err(e) => {
                    failed.push((name, e));
                    continue;
                }
            };
            for (pod, (cpu_seconds, memory)) in parse(&text) {
                let cpu_cores = self.last.get(&pod).and_then(|prev| {
                    let dt = at.duration_since(prev.at).as_secs_f64();
                    // A restarted container starts its count again: no rate from that pair.
                    (dt > 0.0 && cpu_seconds >= prev.cpu_seconds)
                        .then(|| (cpu_seconds - prev.cpu_seconds) / dt)
                });
                self.last.insert(pod.clone(), Sample { cpu_seconds, at });
                if let Some(cpu_cores) = cpu_cores {
                    usage.insert(
                        pod,
                        Usage {
                            cpu_cores,
                            memory_bytes: memory,
                        },
                    );
                }
            }
        }
        // A pod whose agent could not be read keeps its last reading a while, so that
        // one missed scrape does not restart its rate; gone pods are forgotten.
        let now = Instant::now();
        self.last
            .retain(|_, s| now.duration_since(s.at) < FORGET_AFTER);
        self.usage = usage;
        failed
    }

    /// A pod's use, once it has been read twice.
    pub fn usage(&self, namespace: &str, pod: &str) -> Option<Usage> {
        self.usage
            .get(&(namespace.to_string(), pod.to_string()))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP container_cpu_usage_seconds Cumulative cpu time
# TYPE container_cpu_usage_seconds counter
container_cpu_usage_seconds_total{namespace=\"default\",pod=\"web-1\",container=\"main\",node=\"n1\"} 2.5
container_cpu_usage_seconds_total{namespace=\"default\",pod=\"web-1\",container=\"side\",node=\"n1\"} 0.5
container_memory_working_set_bytes{namespace=\"default\",pod=\"web-1\",container=\"main\",node=\"n1\"} 1048576
# EOF
";

    #[test]
    fn containers_add_up_to_their_pod() {
        let pods = parse(EXPOSITION);
        assert_eq!(
            pods.get(&("default".to_string(), "web-1".to_string())),
            Some(&(3.0, 1048576.0))
        );
        assert_eq!(pods.len(), 1);
    }
}
