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
