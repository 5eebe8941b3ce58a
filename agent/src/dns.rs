//! A pod's resolver configuration from its `dnsPolicy` and `dnsConfig`, as the kubelet
//! builds it. Flotilla runs no cluster DNS, so `ClusterFirst` (the default) resolves as
//! `Default` does — through the node's resolv.conf — as the kubelet does when it has no
//! cluster DNS configured.

use k8s_openapi::api::core::v1::PodSpec;

use crate::runtime::DnsConfig;

/// Most name servers a resolver uses.
pub const MAX_SERVERS: usize = 3;
/// Most search domains the kubelet passes on.
pub const MAX_SEARCHES: usize = 32;

/// The name servers, search domains and options of a resolv.conf. Loopback servers are
/// left out: a pod has its own loopback, where the node's local resolver is not.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut out = DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(s) = words.next()
                    && !s
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
                {
                    out.servers.push(s.to_string());
                }
            }
            // The last search (or domain) line wins, as in the resolver.
            Some("search") | Some("domain") => {
                out.searches = words.map(str::to_string).collect();
            }
            Some("options") => out.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    out
}

/// The pod's resolv.conf given the node's (`host`).
pub fn pod_dns(spec: &PodSpec, host: &DnsConfig) -> DnsConfig {
    let mut dns = match spec.dns_policy.as_deref() {
        Some("None") => DnsConfig::default(),
        // Default, ClusterFirst and ClusterFirstWithHostNet without a cluster DNS.
        _ => host.clone(),
    };
    if let Some(extra) = &spec.dns_config {
        for s in extra.nameservers.iter().flatten() {
            if !dns.servers.contains(s) {
                dns.servers.push(s.clone());
            }
        }
        for s in extra.searches.iter().flatten() {
            if !dns.searches.contains(s) {
                dns.searches.push(s.clone());
            }
        }
        // The pod's options replace the node's of the same name.
        for o in extra.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            dns.options.retain(|x| x.split(':').next() != Some(name));
            dns.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            });
        }
    }
    dns.servers.truncate(MAX_SERVERS);
    dns.searches.truncate(MAX_SEARCHES);
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn resolv_conf_parses_without_loopback_servers() {
        let host = parse_resolv_conf(
            "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2 # office\n\
             search a.example b.example\noptions ndots:2 edns0\n",
        );
        assert_eq!(host.servers, ["10.0.0.2"]);
        assert_eq!(host.searches, ["a.example", "b.example"]);
        assert_eq!(host.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn policies_and_pod_dns_config_merge_as_the_kubelet_merges_them() {
        let host = parse_resolv_conf("nameserver 10.0.0.2\nsearch corp\noptions ndots:2\n");
        assert_eq!(
            pod_dns(&spec(serde_json::json!({"containers": []})), &host),
            host
        );
        let none = pod_dns(
            &spec(serde_json::json!({
                "containers": [], "dnsPolicy": "None",
                "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["x"]}
            })),
            &host,
        );
        assert_eq!(none.servers, ["1.1.1.1"]);
        assert_eq!(none.searches, ["x"]);
        assert!(none.options.is_empty());
        let merged = pod_dns(
            &spec(serde_json::json!({
                "containers": [],
                "dnsConfig": {"nameservers": ["10.0.0.3", "10.0.0.4", "10.0.0.5"],
                              "searches": ["corp", "svc"],
                              "options": [{"name": "ndots", "value": "5"}, {"name": "rotate"}]}
            })),
            &host,
        );
        assert_eq!(merged.servers, ["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        assert_eq!(merged.searches, ["corp", "svc"]);
        assert_eq!(merged.options, ["ndots:5", "rotate"]);
    }
}
