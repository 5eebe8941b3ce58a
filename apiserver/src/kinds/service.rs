//! Services and Endpoints. Cluster IPs and node ports are allocated by the server (see
//! `alloc`); here they are only checked for form, range and immutability.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{NameRule, validate_labels, validate_object_meta, validate_object_meta_update};
use crate::defaults::ApplyDefaults;
use crate::validation::{ErrorList, FieldError, FieldPath, Validate};

const TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const NODE_PORTS: std::ops::RangeInclusive<i32> = 30000..=32767;

fn validate_spec(spec: &ServiceSpec, errs: &mut ErrorList) {
    let path = FieldPath::new("spec");
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(path.child("type"), ty, &TYPES));
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        && ip.parse::<IpAddr>().is_err()
    {
        errs.push(FieldError::invalid(
            path.child("clusterIP"),
            ip,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if ty == "ExternalName" {
        if spec.external_name.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required(path.child("externalName"), ""));
        }
    } else {
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ports.is_empty() && !headless {
            errs.push(FieldError::required(path.child("ports"), ""));
        }
        let mut names = BTreeSet::new();
        for (i, p) in ports.iter().enumerate() {
            let pp = path.child("ports").index(i);
            match p.name.as_deref().filter(|n| !n.is_empty()) {
                None if ports.len() > 1 => errs.push(FieldError::required(pp.child("name"), "")),
                None => {}
                Some(n) => {
                    for e in super::names::dns1123_label(n) {
                        errs.push(FieldError::invalid(pp.child("name"), n, e));
                    }
                    if !names.insert(n) {
                        errs.push(FieldError::duplicate(pp.child("name"), n));
                    }
                }
            }
            if !(1..=65535).contains(&p.port) {
                errs.push(FieldError::invalid(
                    pp.child("port"),
                    p.port,
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(proto) = p.protocol.as_deref()
                && !PROTOCOLS.contains(&proto)
            {
                errs.push(FieldError::not_supported(
                    pp.child("protocol"),
                    proto,
                    &PROTOCOLS,
                ));
            }
            match &p.target_port {
                Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => {
                    errs.push(FieldError::invalid(
                        pp.child("targetPort"),
                        *t,
                        "must be between 1 and 65535, inclusive",
                    ))
                }
                Some(IntOrString::String(s)) if s.is_empty() || s.len() > 15 => {
                    errs.push(FieldError::invalid(
                        pp.child("targetPort"),
                        s,
                        "must be a valid port name (at most 15 characters)",
                    ))
                }
                _ => {}
            }
            if let Some(np) = p.node_port.filter(|n| *n != 0) {
                if ty == "ClusterIP" {
                    errs.push(FieldError::forbidden(
                        pp.child("nodePort"),
                        "may not be used when `type` is 'ClusterIP'",
                    ));
                } else if !NODE_PORTS.contains(&np) {
                    errs.push(FieldError::invalid(pp.child("nodePort"), np, "provided port is not in the valid range. The range of valid ports is 30000-32767"));
                }
            }
        }
    }
    if let Some(sa) = spec.session_affinity.as_deref()
        && !["None", "ClientIP"].contains(&sa)
    {
        errs.push(FieldError::not_supported(
            path.child("sessionAffinity"),
            sa,
            &["ClientIP", "None"],
        ));
    }
    if let Some(sel) = &spec.selector {
        errs.extend(validate_labels(sel, &path.child("selector")));
    }
}

impl Validate for Service {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Dns1035);
        match &self.spec {
            None => errs.push(FieldError::required(FieldPath::new("spec"), "")),
            Some(s) => validate_spec(s, &mut errs),
        }
        errs
    }

    fn validate_immutable(&self, old: &Self) -> ErrorList {
        let mut errs = Vec::new();
        let (new_ip, old_ip) = (
            self.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
            old.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
        );
        // Switching to or from ExternalName releases or takes an IP; otherwise it stays.
        let external =
            |s: &Service| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        if new_ip != old_ip
            && !external(self)
            && !external(old)
            && old_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        {
            errs.push(FieldError::invalid(
                FieldPath::new("spec").child("clusterIPs").index(0),
                new_ip.unwrap_or_default(),
                "may not change once set",
            ));
        }
        errs
    }

    fn validate_status_update(&self, old: &Self) -> ErrorList {
        validate_object_meta_update(&self.metadata, &old.metadata)
    }
}

impl ApplyDefaults for Service {
    fn apply_defaults(&mut self) {
        let Some(s) = self.spec.as_mut() else { return };
        let ty = s.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
        s.session_affinity.get_or_insert_with(|| "None".into());
        for p in s.ports.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "TCP".into());
            p.target_port.get_or_insert(IntOrString::Int(p.port));
        }
        if ty != "ExternalName" {
            s.internal_traffic_policy
                .get_or_insert_with(|| "Cluster".into());
            if s.cluster_ip.as_deref() != Some("None") {
                s.ip_family_policy
                    .get_or_insert_with(|| "SingleStack".into());
                s.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
            }
        }
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
            s.external_traffic_policy
                .get_or_insert_with(|| "Cluster".into());
        }
    }
}

impl Validate for Endpoints {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Subdomain);
        for (i, subset) in self.subsets.iter().flatten().enumerate() {
            let p = FieldPath::new("subsets").index(i);
            for (field, addrs) in [
                ("addresses", &subset.addresses),
                ("notReadyAddresses", &subset.not_ready_addresses),
            ] {
                for (j, a) in addrs.iter().flatten().enumerate() {
                    if a.ip.parse::<IpAddr>().is_err() {
                        errs.push(FieldError::invalid(
                            p.child(field).index(j).child("ip"),
                            &a.ip,
                            "must be a valid IP address",
                        ));
                    }
                }
            }
            for (j, port) in subset.ports.iter().flatten().enumerate() {
                if !(1..=65535).contains(&port.port) {
                    errs.push(FieldError::invalid(
                        p.child("ports").index(j).child("port"),
                        port.port,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        errs
    }
}

impl ApplyDefaults for Endpoints {
    fn apply_defaults(&mut self) {
        for port in self
            .subsets
            .iter_mut()
            .flatten()
            .flat_map(|s| s.ports.iter_mut().flatten())
        {
            port.protocol.get_or_insert_with(|| "TCP".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "svc", "namespace": "default"}, "spec": spec}),
        )
        .expect("a service")
    }

    #[test]
    fn services_are_defaulted_as_kubernetes_does() {
        let mut s = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        s.apply_defaults();
        let spec = s.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            spec.ports.expect("ports")[0].target_port,
            Some(IntOrString::Int(80))
        );
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    }

    #[test]
    fn node_ports_need_the_right_type_and_range() {
        let errs: Vec<String> = service(json!({"ports": [{"port": 80, "nodePort": 30001}]}))
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        let errs = service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}))
            .validate();
        assert_eq!(errs.len(), 1);
        let errs =
            service(json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]})).validate();
        assert_eq!(errs[0].to_string(), "spec.ports[0].name: Required value");
    }

    #[test]
    fn the_cluster_ip_may_not_change() {
        let old = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let new = service(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}));
        let errs = new.validate_update(&old);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().contains("may not change once set"));
    }
}
