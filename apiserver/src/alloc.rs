//! Service cluster IPs and node ports, allocated in the store.
//!
//! Each allocated value is a key (`/registry/ranges/serviceips/10.96.0.12`,
//! `/registry/ranges/servicenodeports/30080`) created in the same transaction as the
//! Service, on the condition that it does not exist yet; deleting the Service deletes them
//! in the same transaction. Two Services can never hold one value, even when created at
//! once through two API servers, and nothing leaks when a write fails.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use rand::Rng;
use serde_json::{Value, json};

use crate::storage::keys::ROOT;

/// The cluster IP range and node port range.
#[derive(Clone, Debug)]
pub struct ServiceRanges {
    /// First address of the service CIDR.
    pub network: Ipv4Addr,
    /// Prefix length of the service CIDR.
    pub prefix_len: u8,
    /// Node ports.
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges {
            network: Ipv4Addr::new(10, 96, 0, 0),
            prefix_len: 12,
            node_ports: 30000..=32767,
        }
    }
}

/// A `--service-cluster-ip-range` that is not an IPv4 CIDR.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid service IP range {0:?}: expected an IPv4 CIDR such as 10.96.0.0/12, with room for at least 8 addresses"
)]
pub struct RangeError(pub String);

impl ServiceRanges {
    /// Parses `10.96.0.0/12`.
    pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), RangeError> {
        let err = || RangeError(cidr.to_string());
        let (ip, len) = cidr.split_once('/').ok_or_else(err)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        if len > 29 {
            return Err(err());
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Ok((Ipv4Addr::from(u32::from(ip) & mask), len))
    }

    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix_len))
    }

    /// Is `ip` inside the range (and not its network or broadcast address)?
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let base = u32::from(self.network);
        let v = u32::from(ip);
        v > base && v < base + self.size() - 1
    }

    /// A random usable address; the first one (x.x.x.1) is left for the API's own Service,
    /// as Kubernetes does.
    pub fn random_ip(&self) -> Ipv4Addr {
        let offset = rand::rng().random_range(2..self.size() - 1);
        Ipv4Addr::from(u32::from(self.network) + offset)
    }

    /// A random node port.
    pub fn random_port(&self) -> u16 {
        rand::rng().random_range(self.node_ports.clone())
    }
}

/// The store key that holds a cluster IP.
pub fn ip_key(ip: &str) -> String {
    format!("{ROOT}ranges/serviceips/{ip}")
}

/// The store key that holds a node port.
pub fn port_key(port: i64) -> String {
    format!("{ROOT}ranges/servicenodeports/{port}")
}

/// One value a Service holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Its key.
    pub key: String,
    /// Chosen by the client (a collision is the client's error) or by the server (a
    /// collision means: pick another).
    pub by_client: bool,
    /// The field, for error messages.
    pub field: String,
    /// The value, for error messages.
    pub value: Value,
}

/// Every value a Service object holds.
pub fn held_keys(svc: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(ip) = cluster_ip(svc) {
        keys.push(ip_key(ip));
    }
    for p in ports(svc) {
        if let Some(np) = p["nodePort"].as_i64().filter(|n| *n != 0) {
            keys.push(port_key(np));
        }
    }
    keys
}

fn cluster_ip(svc: &Value) -> Option<&str> {
    svc["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

fn ports(svc: &Value) -> Vec<&Value> {
    svc["spec"]["ports"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(
        svc["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    )
}

fn wants_cluster_ip(svc: &Value) -> bool {
    svc["spec"]["type"].as_str() != Some("ExternalName")
}

/// Carries allocated values of the stored Service into an update that left them out:
/// the cluster IP, and each port's node port (matched by name, or by port and protocol).
pub fn keep_allocated(new: &mut Value, old: &Value) {
    if new["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
        && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
    {
        if let Some(ip) = old["spec"]["clusterIP"].as_str() {
            spec.insert("clusterIP".into(), json!(ip));
        }
        if spec.get("clusterIPs").is_none_or(Value::is_null) && !old["spec"]["clusterIPs"].is_null()
        {
            spec.insert("clusterIPs".into(), old["spec"]["clusterIPs"].clone());
        }
    }
    let old_ports = ports(old);
    if let Some(new_ports) = new["spec"]["ports"].as_array_mut() {
        for p in new_ports {
            if p["nodePort"].as_i64().unwrap_or(0) != 0 {
                continue;
            }
            let same = old_ports.iter().find(|o| {
                let named = p["name"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty() && o["name"].as_str() == Some(n));
                named || (o["port"] == p["port"] && o["protocol"] == p["protocol"])
            });
            if let (Some(o), Some(obj)) = (same, p.as_object_mut())
                && let Some(np) = o["nodePort"].as_i64()
            {
                obj.insert("nodePort".into(), json!(np));
            }
        }
    }
}

/// Fills the values a (defaulted, validated) Service still lacks and lists what it must
/// newly hold: every value not in `already` (the keys the stored version holds).
pub fn allocate(svc: &mut Value, ranges: &ServiceRanges, already: &[String]) -> Vec<Claim> {
    let mut claims = Vec::new();
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return claims;
    };
    let view = Value::Object(spec.clone());
    let wrapped = json!({"spec": view});
    if wants_cluster_ip(&wrapped) {
        match cluster_ip(&wrapped) {
            Some(ip) if !already.contains(&ip_key(ip)) => {
                claims.push(Claim {
                    key: ip_key(ip),
                    by_client: true,
                    field: "spec.clusterIPs".into(),
                    value: json!([ip]),
                });
            }
            Some(_) => {}
            None if wrapped["spec"]["clusterIP"].as_str() != Some("None") => {
                let ip = ranges.random_ip().to_string();
                spec.insert("clusterIP".into(), json!(ip));
                spec.insert("clusterIPs".into(), json!([ip]));
                claims.push(Claim {
                    key: ip_key(&ip),
                    by_client: false,
                    field: "spec.clusterIPs".into(),
                    value: json!([ip]),
                });
            }
            None => {}
        }
    }
    let node_ports = wants_node_ports(&wrapped);
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let field = format!("spec.ports[{i}].nodePort");
            let Some(obj) = p.as_object_mut() else {
                continue;
            };
            match obj
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
            {
                Some(np) if !already.contains(&port_key(np)) => claims.push(Claim {
                    key: port_key(np),
                    by_client: true,
                    field,
                    value: json!(np),
                }),
                Some(_) => {}
                None if node_ports => {
                    let np = i64::from(ranges.random_port());
                    obj.insert("nodePort".into(), json!(np));
                    claims.push(Claim {
                        key: port_key(np),
                        by_client: false,
                        field,
                        value: json!(np),
                    });
                }
                None => {}
            }
        }
    }
    claims
}

/// Undoes server-chosen values (after a collision), so the next [`allocate`] picks again.
pub fn forget(svc: &mut Value, claims: &[Claim]) {
    for c in claims.iter().filter(|c| !c.by_client) {
        if c.field == "spec.clusterIPs"
            && let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        } else if let Some(port) = svc.pointer_mut(&field_pointer(&c.field))
            && let Some(obj) = port.as_object_mut()
        {
            obj.remove("nodePort");
        }
    }
}

/// `spec.ports[2].nodePort` → the JSON pointer of the port object, `/spec/ports/2`.
fn field_pointer(field: &str) -> String {
    let inner = field
        .trim_end_matches(".nodePort")
        .replace('[', "/")
        .replace(']', "")
        .replace('.', "/");
    format!("/{inner}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_port_service_gets_an_ip_and_a_port_per_port() {
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443, "nodePort": 30443}]}});
        let claims = allocate(&mut svc, &ServiceRanges::default(), &[]);
        assert_eq!(claims.len(), 3);
        let ip: Ipv4Addr = svc["spec"]["clusterIP"]
            .as_str()
            .expect("ip")
            .parse()
            .expect("valid");
        assert!(ServiceRanges::default().contains(ip));
        let np = svc["spec"]["ports"][0]["nodePort"].as_i64().expect("port");
        assert!((30000..=32767).contains(&np));
        assert!(claims[2].by_client);
        forget(&mut svc, &claims);
        assert!(svc["spec"]["clusterIP"].is_null());
        assert!(svc["spec"]["ports"][0]["nodePort"].is_null());
        assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30443);
    }

    #[test]
    fn headless_and_external_name_services_hold_no_ip() {
        let mut headless = json!({"spec": {"clusterIP": "None", "ports": []}});
        assert!(allocate(&mut headless, &ServiceRanges::default(), &[]).is_empty());
        let mut ext = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert!(allocate(&mut ext, &ServiceRanges::default(), &[]).is_empty());
    }

    #[test]
    fn an_update_keeps_the_values_it_left_out() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"], "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}});
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 8080}]}});
        keep_allocated(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        let claims = allocate(&mut new, &ServiceRanges::default(), &held_keys(&old));
        assert!(claims.is_empty());
    }

    #[test]
    fn cidrs_parse_to_their_network() {
        assert_eq!(
            ServiceRanges::parse_cidr("10.96.3.4/12").expect("valid"),
            (Ipv4Addr::new(10, 96, 0, 0), 12)
        );
        assert!(ServiceRanges::parse_cidr("10.96.0.0").is_err());
        assert!(ServiceRanges::parse_cidr("10.96.0.0/31").is_err());
    }
}
