//! A plain HTTP/1.0 GET for tests that reach pods, hostPorts and `/metrics` endpoints.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` from `host:port`: the whole response when it is a 200, None otherwise (and
/// while nothing answers).
pub async fn get(host: &str, port: u16, path: &str) -> Option<String> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .ok()?
    .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let status = out.lines().next()?;
    (status.starts_with("HTTP/1.") && status.contains(" 200")).then_some(out)
}

/// The value of the sample of `metric` whose labels include every one of `labels`
/// (`name="value"` pairs) in a Prometheus text exposition.
pub fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(metric))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .find(|rest| labels.iter().all(|want| rest.contains(want)))
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}
