//! A container's `resources` as cgroup limits, with the kubelet's conversions: cpu
//! requests become relative shares (1 cpu = 1024, at least 2), cpu limits a CFS quota per
//! 100 ms period, the memory limit a byte limit.

use k8s_openapi::api::core::v1::Container;
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
}
