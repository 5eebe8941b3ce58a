//! The node's heartbeat: its Lease in `kube-node-lease` renewed every interval (what the
//! node lifecycle controller watches), and its conditions (Ready, MemoryPressure,
//! DiskPressure, PIDPressure) written when they change and at least every five minutes,
//! not on every beat, as the kubelet does since node leases exist.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_client::{Client, Patch};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::node::meminfo_kib;

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a node Lease holds (the kubelet's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Conditions are written at least this often even when unchanged.
pub const STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(300);
/// Memory pressure below this much available memory (the kubelet's hard eviction default).
pub const MEMORY_AVAILABLE_MIN: i64 = 100 << 20;
/// Disk pressure below this share of the data directory's filesystem free.
pub const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;

/// How the heartbeat runs.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// The node.
    pub node_name: String,
    /// How often the Lease is renewed.
    pub interval: Duration,
    /// The filesystem watched for disk pressure.
    pub data_dir: PathBuf,
}

/// One node condition as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCondition {
    /// Ready, MemoryPressure, …
    pub type_: String,
    /// True or False.
    pub status: bool,
    /// Why, in one word.
    pub reason: String,
    /// Why, in a sentence.
    pub message: String,
}

/// Each condition, from the host's state now.
pub fn host_conditions(data_dir: &std::path::Path) -> Vec<HostCondition> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_pressure =
        meminfo_kib(&meminfo, "MemAvailable").is_some_and(|kib| kib * 1024 < MEMORY_AVAILABLE_MIN);
    let disk_pressure = crate::fs_usage::of(data_dir).is_ok_and(|fs| {
        fs.capacity > 0
            && u128::from(fs.available) * 100 / u128::from(fs.capacity)
                < u128::from(DISK_AVAILABLE_MIN_PERCENT)
    });
    let pid_pressure = {
        let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u64::MAX);
        let running = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        running * 10 > max * 9
    };
    let pressure = |kind: &str, on: bool| HostCondition {
        type_: format!("{kind}Pressure"),
        status: on,
        reason: if on {
            format!("AgentHas{kind}Pressure")
        } else {
            format!("AgentHasNo{kind}Pressure")
        },
        message: if on {
            format!("the node is under {} pressure", kind.to_lowercase())
        } else {
            format!("the node has sufficient {}", kind.to_lowercase())
        },
    };
    vec![
        HostCondition {
            type_: "Ready".into(),
            status: true,
            reason: "AgentReady".into(),
            message: "flotilla agent is posting ready status".into(),
        },
        pressure("Memory", memory_pressure),
        pressure("Disk", disk_pressure),
        pressure("PID", pid_pressure),
    ]
}

/// Renews the node's Lease; returns the renewTime it replaced (None for a new Lease).
async fn renew_lease(
    client: &Client,
    node: &str,
    interval: Duration,
) -> Result<Option<jiff::Timestamp>, String> {
    let api = client.api::<Lease>(LEASE_NAMESPACE);
    let now = MicroTime(jiff::Timestamp::now());
    match api.get_opt(node).await.map_err(|e| e.to_string())? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let previous = spec.renew_time.as_ref().map(|t| t.0);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(node.to_string());
            api.update(&lease).await.map_err(|e| e.to_string())?;
            Ok(previous)
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_string()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_string()),
                    lease_duration_seconds: Some(
                        LEASE_DURATION_SECONDS.max(interval.as_secs() as i32 * 4),
                    ),
                    renew_time: Some(now.clone()),
                    acquire_time: Some(now),
                    ..Default::default()
                }),
            };
            api.create(&lease).await.map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}

/// Was the node cut off before this renewal (a renewal failed, or the Lease had gone
/// unrenewed for several intervals)? The node lifecycle controller may have set its
/// conditions to Unknown meanwhile, so they are written again at once rather than at the
/// next change or report period.
fn was_cut_off(
    renewed: &Result<Option<jiff::Timestamp>, String>,
    previous_failed: bool,
    interval: Duration,
) -> bool {
    match renewed {
        Err(_) => false,
        Ok(_) if previous_failed => true,
        Ok(previous) => previous.is_some_and(|p| {
            jiff::Timestamp::now().duration_since(p).unsigned_abs() > interval * 3
        }),
    }
}

/// Writes the node's conditions, keeping each one's transition time while its status
/// holds.
pub async fn report_conditions(
    client: &Client,
    node: &str,
    conditions: &[HostCondition],
) -> Result<(), String> {
    let api = client.api::<Node>("");
    let current = api.get(node).await.map_err(|e| e.to_string())?;
    let old = current
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let list: Vec<NodeCondition> = conditions
        .iter()
        .map(|h| {
            let status = if h.status { "True" } else { "False" };
            let since = old
                .iter()
                .find(|c| c.type_ == h.type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            NodeCondition {
                type_: h.type_.clone(),
                status: status.into(),
                reason: Some(h.reason.clone()),
                message: Some(h.message.clone()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(since),
            }
        })
        .collect();
    api.patch_status(node, &Patch::Merge(json!({"status": {"conditions": list}})))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Beats until `shutdown` flips.
pub async fn run(client: Client, cfg: HeartbeatConfig, mut shutdown: watch::Receiver<bool>) {
    let mut last_written: Option<(Vec<HostCondition>, Instant)> = None;
    let mut renewal_failed = false;
    loop {
        let renewed = renew_lease(&client, &cfg.node_name, cfg.interval).await;
        if let Err(e) = &renewed {
            tracing::warn!(node = %cfg.node_name, error = %e, "renewing the node lease");
        }
        let cut_off = was_cut_off(&renewed, renewal_failed, cfg.interval);
        renewal_failed = renewed.is_err();
        let conditions = host_conditions(&cfg.data_dir);
        let due = cut_off
            || last_written
                .as_ref()
                .is_none_or(|(c, at)| *c != conditions || at.elapsed() >= STATUS_REPORT_FREQUENCY);
        if due {
            match report_conditions(&client, &cfg.node_name, &conditions).await {
                Ok(()) => last_written = Some((conditions, Instant::now())),
                Err(e) => {
                    tracing::warn!(node = %cfg.node_name, error = %e, "reporting node conditions")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_rewritten_after_being_cut_off() {
        let interval = Duration::from_secs(10);
        let now = jiff::Timestamp::now();
        let recent = Ok(Some(now - jiff::SignedDuration::from_secs(10)));
        let stale = Ok(Some(now - jiff::SignedDuration::from_secs(60)));
        assert!(!was_cut_off(&recent, false, interval));
        assert!(
            was_cut_off(&recent, true, interval),
            "the last renewal failed"
        );
        assert!(was_cut_off(&stale, false, interval), "the lease had lapsed");
        assert!(!was_cut_off(&Err("down".into()), true, interval));
        assert!(!was_cut_off(&Ok(None), false, interval), "a new lease");
    }
}
