//! Benchmark support: a `flotilla server` as its own process, tuning knobs from the
//! environment, latency histograms and a process's memory.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::api::Client;
use super::inproc;

/// Microseconds since the epoch: the time a benchmark stamps on what it sends, so that a
/// watcher can tell how long it took to come back.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A child process, stopped with SIGTERM (and waited for) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// The annotation a benchmark stamps a pod's create time on (µs since the epoch).
pub const SENT_AT: &str = "bench.flotilla.io/sent-at-us";

/// Creates pods `p-0` … `p-{pods-1}` in `default` with `spec`, from `clients` concurrent
/// creators, each stamped with the moment its create is sent; returns how many a watch
/// saw Running and each one's latency from its create to that moment.
pub async fn start_pods(
    c: &Client,
    pods: usize,
    clients: usize,
    spec: &serde_json::Value,
) -> (usize, Histogram<u64>) {
    let mut watch = c
        .watch_from_now(
            super::api::rref("v1", "pods", "default", ""),
            "status.phase=Running",
        )
        .await;
    let follower = tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        let mut latency = hist();
        while seen.len() < pods {
            let Ok(Some(ev)) = watch.next(Duration::from_secs(120)).await else {
                break;
            };
            if ev.object["status"]["phase"] != "Running" {
                continue;
            }
            let name = ev.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if seen.insert(name) {
                let sent: u64 = ev.object["metadata"]["annotations"][SENT_AT]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let _ = latency.record(now_us().saturating_sub(sent).max(1));
            }
        }
        (seen.len(), latency)
    });
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (c, spec) = (c.clone(), spec.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..pods).step_by(clients) {
                let p = serde_json::json!({
                    "metadata": {"name": format!("p-{i}"), "annotations": {SENT_AT: now_us().to_string()}},
                    "spec": spec,
                });
                c.create("v1", "pods", "default", &p).await.expect("pod");
            }
        }));
    }
    for t in tasks {
        t.await.expect("creator");
    }
    follower.await.expect("follower")
}

/// Deletes the pods [`start_pods`] made and waits until their agent has stopped them and
/// they are gone.
pub async fn delete_pods(c: &Client, pods: usize) {
    for i in 0..pods {
        let _ = c
            .delete(
                super::api::rref("v1", "pods", "default", &format!("p-{i}")),
                None,
            )
            .await;
    }
    inproc::wait_until(
        Duration::from_secs(120),
        "every pod is stopped and removed",
        || {
            let c = c.clone();
            async move {
                c.list("v1", "pods", "default")
                    .await
                    .ok()
                    .filter(|p| p.items.is_empty())
                    .map(|_| ())
            }
        },
    )
    .await;
}

/// A knob read from the environment, or its default.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// The `q` quantile of a histogram of microseconds, in milliseconds.
pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A histogram of microseconds up to a minute.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// VmRSS of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A `flotilla server` process.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// The admin token.
    pub token: String,
}

impl ServerProcess {
    /// Starts `flotilla server` on a free port with its data in `dir`, on the embedded
    /// store or `endpoints`, with `extra` flags; returns once it answers.
    pub async fn start(dir: &Path, endpoints: &[String], extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        cmd.arg("server")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(port.to_string())
            .arg("--log-level")
            .arg("warn")
            .stdout(Stdio::null())
            .args(extra)
            .stderr(Stdio::inherit());
        if !endpoints.is_empty() {
            cmd.arg("--etcd-endpoints").arg(endpoints.join(","));
        }
        let child = cmd.spawn().expect("flotilla server starts");
        let tokens = dir.join("tokens.csv");
        let token = inproc::wait_until(
            Duration::from_secs(30),
            "the server writes its token",
            || {
                let t = std::fs::read_to_string(&tokens).ok().and_then(|text| {
                    text.lines()
                        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
                        .and_then(|l| l.split(',').next())
                        .map(str::to_string)
                });
                async move { t }
            },
        )
        .await;
        let server = ServerProcess {
            child,
            addr: port,
            token,
        };
        inproc::wait_until(Duration::from_secs(30), "the server answers", || {
            let addr = server.addr;
            let token = server.token.clone();
            async move {
                let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
                let c = Client::from_channel(channel, Some(token));
                c.list("v1", "namespaces", "").await.ok().map(|_| ())
            }
        })
        .await;
        server
    }

    /// A client with the admin token.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr, Some(self.token.clone())).await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM and waits.
    pub fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    /// A test that fails part-way must not leave its server running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
