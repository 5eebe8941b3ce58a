//! A container's `resources` as cgroup limits, with the kubelet's conversions: cpu
//! requests become relative shares (1 cpu = 1024, at least 2), cpu limits a CFS quota per
//! 100 ms period, the memory limit a byte limit.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use scheduler::quantity::parse_quantity;

use crate::runtime::LinuxResources;

/// The CFS period the quota is measured against, in µs.
pub const CPU_PERIOD: u64 = 100_000;
/// The smallest cpu weight the kernel accepts.
pub const MIN_SHARES: u64 = 2;
/// Processes a container may have at once.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// The cgroup limits for `c`.
pub fn linux_resources(c: &Container) -> LinuxResources {
    let get = |list: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
               name: &str| {
        list.and_then(|l| l.get(name))
            .and_then(|q| parse_quantity(&q.0).ok())
    };
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    // A limit without a request requests the limit (the API server defaults it so).
    let cpu_request = get(requests, "cpu").or_else(|| get(limits, "cpu"));
    let shares = cpu_request
        .map(|q| (q.milli_value().max(0) as u64) * 1024 / 1000)
        .unwrap_or(MIN_SHARES)
        .max(MIN_SHARES);
    let quota = get(limits, "cpu")
        .map(|q| q.milli_value().max(0) * CPU_PERIOD as i64 / 1000)
        .unwrap_or(0);
    LinuxResources {
        cpu_shares: shares,
        cpu_quota: quota,
        cpu_period: CPU_PERIOD,
        memory_limit: get(limits, "memory").map(|q| q.value()).unwrap_or(0),
        pids_limit: DEFAULT_PIDS_LIMIT,
    }
}

/// The limits of the pod's cgroup parent, as the kubelet sets them: cpu shares from the
/// pod's effective cpu request; a cpu quota and a memory limit only when every container
/// (init ones included) declares that limit. Effective means the larger of the app
/// containers' sum and the largest init container, since init containers run alone.
pub fn pod_resources(spec: &PodSpec) -> LinuxResources {
    let apps: Vec<LinuxResources> = spec.containers.iter().map(linux_resources).collect();
    let inits: Vec<LinuxResources> = spec
        .init_containers
        .iter()
        .flatten()
        .map(linux_resources)
        .collect();
    let effective = |f: fn(&LinuxResources) -> i64| {
        let sum: i64 = apps.iter().map(f).sum();
        inits.iter().map(f).max().unwrap_or(0).max(sum)
    };
    let all_declare = |f: fn(&LinuxResources) -> i64| apps.iter().chain(&inits).all(|r| f(r) > 0);
    // Shares come from requests; a container with none counts as the kernel minimum.
    let shares = effective(|r| r.cpu_shares as i64).max(MIN_SHARES as i64) as u64;
    LinuxResources {
        cpu_shares: shares,
        cpu_quota: if all_declare(|r| r.cpu_quota) {
            effective(|r| r.cpu_quota)
        } else {
            0
        },
        cpu_period: CPU_PERIOD,
        memory_limit: if all_declare(|r| r.memory_limit) {
            effective(|r| r.memory_limit)
        } else {
            0
        },
        pids_limit: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_limits_convert_as_the_kubelet_converts_them() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}
        }))
        .expect("container");
        let r = linux_resources(&c);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.memory_limit, 64 << 20);
        let none: Container = serde_json::from_value(serde_json::json!({"name": "c"})).expect("c");
        let r = linux_resources(&none);
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit), (2, 0, 0));
    }

    #[test]
    fn the_pod_cgroup_limits_only_what_every_container_limits() {
        let spec = |v: serde_json::Value| -> PodSpec { serde_json::from_value(v).expect("spec") };
        let limited = |cpu: &str, mem: &str| serde_json::json!({"name": "c", "resources": {"limits": {"cpu": cpu, "memory": mem}}});
        let both = pod_resources(&spec(serde_json::json!({
            "containers": [limited("500m", "64Mi"), limited("250m", "32Mi")],
            "initContainers": [limited("1", "16Mi")]
        })));
        // cpu: the init container's 1 cpu exceeds the apps' 750m; memory: the apps' 96Mi.
        assert_eq!(both.cpu_quota, 100_000);
        assert_eq!(both.memory_limit, 96 << 20);
        assert_eq!(both.cpu_shares, 1024);
        let partly = pod_resources(&spec(serde_json::json!({
            "containers": [limited("500m", "64Mi"), {"name": "free"}]
        })));
        assert_eq!((partly.cpu_quota, partly.memory_limit), (0, 0));
        assert_eq!(partly.cpu_shares, 512 + MIN_SHARES);
    }
}
