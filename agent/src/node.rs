//! The Node object an agent registers: capacity read from the host (cpu, memory,
//! ephemeral storage of the data directory's filesystem, 110 pods), allocatable =
//! capacity − `--system-reserved`, the well-known labels plus `--node-labels`, taints from
//! `--register-with-taints`, addresses and nodeInfo.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
    Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Pods a node takes at most (the kubelet's default).
pub const MAX_PODS: i64 = 110;

/// The host's resources, in base units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostResources {
    /// CPUs, in millicores.
    pub milli_cpu: i64,
    /// Memory, in bytes.
    pub memory: i64,
    /// The data directory's filesystem, in bytes.
    pub ephemeral_storage: i64,
}

/// Reads the host's resources.
pub fn host_resources(data_dir: &Path) -> HostResources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_kib(&m, "MemTotal"))
        .unwrap_or(0)
        * 1024;
    let storage = crate::fs_usage::of(data_dir)
        .map(|fs| i64::try_from(fs.capacity).unwrap_or(i64::MAX))
        .unwrap_or(0);
    HostResources {
        milli_cpu: cpus * 1000,
        memory,
        ephemeral_storage: storage,
    }
}

/// A field of /proc/meminfo, in KiB.
pub fn meminfo_kib(text: &str, field: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Kubernetes' name for this machine's architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// What the agent registers with.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// The node's name.
    pub name: String,
    /// Its address.
    pub host_ip: String,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Taints to register with.
    pub taints: Vec<Taint>,
    /// Reserved for the system: subtracted from capacity.
    pub reserved: HostResources,
    /// The runtime's name and version (`process://0.1.0`).
    pub runtime_version: String,
    /// The port of the agent's endpoint (logs, exec), recorded in the Node.
    pub port: u16,
    /// The node's pod subnet (`--pod-cidr`).
    pub pod_cidr: Option<String>,
}

fn quantities(r: HostResources) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        (
            "cpu".to_string(),
            Quantity(format!("{}m", r.milli_cpu.max(0))),
        ),
        ("memory".to_string(), Quantity(r.memory.max(0).to_string())),
        (
            "ephemeral-storage".to_string(),
            Quantity(r.ephemeral_storage.max(0).to_string()),
        ),
        ("pods".to_string(), Quantity(MAX_PODS.to_string())),
    ])
}

/// The Node object for this host.
pub fn node_object(reg: &Registration, host: HostResources) -> Node {
    let allocatable = HostResources {
        milli_cpu: host.milli_cpu - reg.reserved.milli_cpu,
        memory: host.memory - reg.reserved.memory,
        ephemeral_storage: host.ephemeral_storage - reg.reserved.ephemeral_storage,
    };
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), reg.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
    ]);
    labels.extend(reg.labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(reg.name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!reg.taints.is_empty()).then(|| reg.taints.clone()),
            pod_cidr: reg.pod_cidr.clone(),
            pod_cidrs: reg.pod_cidr.clone().map(|c| vec![c]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(quantities(host)),
            allocatable: Some(quantities(allocatable)),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(reg.port),
                }),
            }),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: reg.host_ip.clone(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: reg.name.clone(),
                },
            ]),
            node_info: Some(NodeSystemInfo {
                architecture: arch().into(),
                operating_system: "linux".into(),
                kubelet_version: format!("flotilla-{}", env!("CARGO_PKG_VERSION")),
                kube_proxy_version: String::new(),
                container_runtime_version: reg.runtime_version.clone(),
                os_image: os_image(),
                kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
                machine_id: std::fs::read_to_string("/etc/machine-id")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// Parses `--system-reserved` (`cpu=500m,memory=1Gi,ephemeral-storage=1Gi`).
pub fn parse_reserved(s: &str) -> Result<HostResources, String> {
    let mut r = HostResources::default();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not resource=quantity"))?;
        let q = scheduler::quantity::parse_quantity(v.trim())
            .map_err(|_| format!("{v:?} is not a quantity"))?;
        match k.trim() {
            "cpu" => r.milli_cpu = q.milli_value(),
            "memory" => r.memory = q.value(),
            "ephemeral-storage" => r.ephemeral_storage = q.value(),
            other => {
                return Err(format!(
                    "unknown resource {other:?} (cpu, memory, ephemeral-storage)"
                ));
            }
        }
    }
    Ok(r)
}

/// Parses `--register-with-taints` (`key=value:Effect,key:Effect`).
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (kv, effect) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("{part:?} is not key[=value]:Effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "{part:?}: effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        if key.is_empty() {
            return Err(format!("{part:?}: the key is empty"));
        }
        out.push(Taint {
            key: key.into(),
            value,
            effect: effect.into(),
            time_added: None,
        });
    }
    Ok(out)
}

/// Parses `--node-labels` (`k=v,k2=v2`).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("{p:?} is not key=value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocatable_is_capacity_less_what_is_reserved() {
        let reg = Registration {
            name: "n1".into(),
            host_ip: "10.0.0.5".into(),
            labels: parse_labels("disk=ssd").expect("labels"),
            taints: parse_taints("dedicated=gpu:NoSchedule").expect("taints"),
            reserved: parse_reserved("cpu=500m,memory=1Gi").expect("reserved"),
            runtime_version: "process://0.1.0".into(),
            port: 10250,
            pod_cidr: Some("10.244.3.0/24".into()),
        };
        let host = HostResources {
            milli_cpu: 2000,
            memory: 4 << 30,
            ephemeral_storage: 100 << 30,
        };
        let n = node_object(&reg, host);
        let st = n.status.expect("status");
        let alloc = st.allocatable.expect("allocatable");
        assert_eq!(alloc["cpu"].0, "1500m");
        assert_eq!(alloc["memory"].0, (3_i64 << 30).to_string());
        assert_eq!(alloc["pods"].0, "110");
        let labels = n.metadata.labels.expect("labels");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["disk"], "ssd");
        let spec = n.spec.expect("spec");
        assert_eq!(spec.taints.expect("taints")[0].key, "dedicated");
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.3.0/24"));
    }

    #[test]
    fn bad_flags_say_why() {
        assert!(
            parse_taints("a=b:Sometimes")
                .expect_err("effect")
                .contains("effect")
        );
        assert!(
            parse_reserved("gpu=1")
                .expect_err("resource")
                .contains("unknown resource")
        );
        assert!(parse_labels("novalue").is_err());
        assert_eq!(
            meminfo_kib("MemTotal:       16384 kB\nMemFree: 1 kB\n", "MemTotal"),
            Some(16384)
        );
    }
}
