//! Container probes as the kubelet runs them: exec (a command in the container's context),
//! httpGet (a status from 200 to 399) and tcpSocket (a connection), each with
//! initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold and
//! failureThreshold. A probe's result flips only after that many consecutive outcomes.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::runtime::Runtime;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Failing restarts the container.
    Liveness,
    /// Failing takes the pod out of service.
    Readiness,
    /// Until it passes, the others wait; failing restarts the container.
    Startup,
}

impl Kind {
    /// Its name in Events ("Liveness probe failed: …").
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// One probe of one container instance, with its running tally.
#[derive(Debug, Clone)]
pub struct Prober {
    /// Which probe.
    pub kind: Kind,
    probe: Probe,
    /// The current verdict.
    pub passing: bool,
    successes: i32,
    failures: i32,
    next: Instant,
    /// The last failure's explanation.
    pub last_failure: String,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

impl Prober {
    /// A prober for a container that started at `started`.
    pub fn new(kind: Kind, probe: Probe, started: Instant) -> Self {
        let delay = secs(probe.initial_delay_seconds, 0);
        Prober {
            kind,
            // Liveness is presumed until shown otherwise; readiness and startup are earned.
            passing: kind == Kind::Liveness,
            successes: 0,
            failures: 0,
            next: started + delay,
            last_failure: String::new(),
            probe,
        }
    }

    /// Has it failed failureThreshold times in a row?
    pub fn failed(&self) -> bool {
        self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1)
    }

    /// Is it time to run it?
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// When it next runs.
    pub fn next_run(&self) -> Instant {
        self.next
    }

    fn period(&self) -> Duration {
        secs(self.probe.period_seconds, 10).max(Duration::from_secs(1))
    }

    /// Counts one outcome; returns true if the verdict flipped.
    pub fn record(&mut self, ok: bool, why: String) -> bool {
        self.next = Instant::now() + self.period();
        let before = self.passing;
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                self.passing = true;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            self.last_failure = why;
            if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                self.passing = false;
            }
        }
        before != self.passing
    }

    /// Runs the probe once against container `id` (IP `ip`, spec `c`).
    pub async fn run<R: Runtime>(
        &self,
        rt: &R,
        id: &str,
        ip: &str,
        c: &Container,
    ) -> Result<(), String> {
        let timeout = secs(self.probe.timeout_seconds, 1).max(Duration::from_secs(1));
        let p = &self.probe;
        let action = Action {
            exec: p.exec.as_ref(),
            http_get: p.http_get.as_ref(),
            tcp_socket: p.tcp_socket.as_ref(),
        };
        if let Some(result) = action.run(rt, id, ip, c, timeout).await {
            return result;
        }
        if p.grpc.is_some() {
            return Err("gRPC probes are not supported by this agent".into());
        }
        Err("the probe names no action (exec, httpGet or tcpSocket)".into())
    }
}

/// What a probe or a lifecycle hook does: a command in the container, an HTTP GET or a
/// TCP connection to it.
pub struct Action<'a> {
    /// A command run in the container's context; it succeeds by exiting 0.
    pub exec: Option<&'a ExecAction>,
    /// A GET that succeeds with a status from 200 to 399.
    pub http_get: Option<&'a HTTPGetAction>,
    /// A connection that succeeds by being accepted.
    pub tcp_socket: Option<&'a TCPSocketAction>,
}

impl Action<'_> {
    /// Runs the action against container `id` (IP `ip`, spec `c`) for at most `timeout`;
    /// None when it names none.
    pub async fn run<R: Runtime>(
        &self,
        rt: &R,
        id: &str,
        ip: &str,
        c: &Container,
        timeout: Duration,
    ) -> Option<Result<(), String>> {
        if let Some(exec) = self.exec {
            let argv = exec.command.clone().unwrap_or_default();
            let out = match rt.exec_sync(id, &argv, timeout).await {
                Ok(out) => out,
                Err(e) => return Some(Err(e.to_string())),
            };
            return Some(if out.exit_code == 0 {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
                Err(format!(
                    "command {argv:?} exited with {}: {text}",
                    out.exit_code
                ))
            });
        }
        if let Some(http) = self.http_get {
            return Some(http_action(http, ip, c, timeout).await);
        }
        if let Some(tcp) = self.tcp_socket {
            let host = target_host(tcp.host.as_deref(), ip);
            let port = match port_number(&tcp.port, c) {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            return Some(
                match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
                    Err(_) => Err(format!("dial tcp {host}:{port}: timed out")),
                },
            );
        }
        None
    }
}

/// The host an action reaches: the one it names, else the pod's IP.
fn target_host(named: Option<&str>, ip: &str) -> String {
    named.filter(|h| !h.is_empty()).unwrap_or(ip).to_string()
}

async fn http_action(
    http: &HTTPGetAction,
    ip: &str,
    c: &Container,
    timeout: Duration,
) -> Result<(), String> {
    let host = target_host(http.host.as_deref(), ip);
    let port = port_number(&http.port, c)?;
    if http
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
    {
        return Err("HTTPS probes are not supported by this agent".into());
    }
    let path = http
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let headers: String = http
        .http_headers
        .iter()
        .flatten()
        .map(|h| format!("{}: {}\r\n", h.name, h.value))
        .collect();
    tokio::time::timeout(timeout, http_get(&host, port, &path, &headers))
        .await
        .map_err(|_| format!("Get \"http://{host}:{port}{path}\": timed out after {timeout:?}"))?
}

/// A probe's port, by number or by the name of one of the container's ports.
fn port_number(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

async fn http_get(host: &str, port: u16, path: &str, headers: &str) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let mut s = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: flotilla-probe/{}\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = vec![0u8; 1024];
    let n = s
        .read(&mut head)
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"{url}\": not an HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).expect("probe")
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_flip_only_after_their_thresholds() {
        let now = Instant::now();
        let mut p = Prober::new(
            Kind::Readiness,
            probe(
                serde_json::json!({"exec": {"command": ["true"]}, "successThreshold": 2, "failureThreshold": 2, "initialDelaySeconds": 5}),
            ),
            now,
        );
        assert_eq!(p.next_run(), now + Duration::from_secs(5));
        assert!(!p.passing, "readiness is earned");
        assert!(!p.record(true, String::new()));
        assert!(p.record(true, String::new()), "two successes make it ready");
        assert!(!p.record(false, "no".into()));
        assert!(p.passing, "one failure is not enough");
        assert!(p.record(false, "no".into()));
        assert!(!p.passing);
        assert_eq!(p.last_failure, "no");
        let live = Prober::new(
            Kind::Liveness,
            probe(serde_json::json!({"tcpSocket": {"port": 80}})),
            now,
        );
        assert!(live.passing, "liveness is presumed");
    }

    #[tokio::test]
    async fn http_gets_pass_on_2xx_and_3xx_and_fail_otherwise() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /healthz ") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        assert_eq!(http_get("127.0.0.1", port, "/healthz", "").await, Ok(()));
        assert_eq!(
            http_get("127.0.0.1", port, "/other", "").await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .expect("container");
        assert_eq!(
            port_number(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert!(port_number(&IntOrString::String("grpc".into()), &c).is_err());
        assert_eq!(port_number(&IntOrString::Int(9000), &c), Ok(9000));
    }
}
