//! The node's pod network for CRI runtimes: a CNI conflist (bridge + host-local IPAM on
//! the node's `--pod-cidr`, portmap for hostPorts, loopback) written where the runtime
//! reads its CNI configuration, so pods get addresses reachable from the host.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The conflist's file name; CRI runtimes load the first file in name order.
pub const CONFLIST: &str = "10-flotilla.conflist";
/// The bridge the pods' interfaces join.
pub const DEFAULT_BRIDGE: &str = "flotilla0";

/// A bad pod CIDR or an unwritable configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CniError {
    /// The CIDR does not parse or is too small for pods.
    #[error("pod CIDR {cidr:?}: {reason}")]
    Cidr {
        /// What was given.
        cidr: String,
        /// Why it was refused.
        reason: String,
    },
    /// The configuration could not be written.
    #[error("writing {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// An IPv4 subnet for one node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCidr {
    /// The network address.
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl PodCidr {
    /// Parses `10.244.1.0/24`; the address must be the network's own, with room for a
    /// gateway and pods (a prefix of at most /30).
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let bad = |reason: &str| CniError::Cidr {
            cidr: s.to_string(),
            reason: reason.to_string(),
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX, e.g. 10.244.1.0/24"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| bad("the address is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix must be between /8 and /30"));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(network) & !mask != 0 {
            return Err(bad("host bits are set (give the network address)"));
        }
        Ok(PodCidr { network, prefix })
    }

    /// The bridge's address: the subnet's first host.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

impl std::fmt::Display for PodCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The conflist for `cidr` on `bridge`; host-local keeps its leases under `ipam_dir`.
pub fn conflist(cidr: &PodCidr, bridge: &str, ipam_dir: &Path) -> String {
    let doc = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "flotilla",
        "plugins": [
            {
                "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": cidr.to_string(), "gateway": cidr.gateway().to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Writes the conflist into `conf_dir` unless the same one is there already. It is
/// written in place: containerd 1.6 reloads on a write but not on a rename into the
/// directory.
pub fn install(conf_dir: &Path, content: &str) -> Result<PathBuf, CniError> {
    let path = conf_dir.join(CONFLIST);
    let err = |e: std::io::Error| CniError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if std::fs::read_to_string(&path).is_ok_and(|old| old == content) {
        return Ok(path);
    }
    std::fs::create_dir_all(conf_dir).map_err(err)?;
    std::fs::write(&path, content).map_err(err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_parse_and_are_checked() {
        let c = PodCidr::parse("10.244.1.0/24").expect("valid");
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        for (bad, why) in [
            ("10.244.1.0", "ADDRESS/PREFIX"),
            ("10.244.1.5/24", "host bits"),
            ("10.244.1.0/31", "between"),
            ("fd00::/64", "IPv4"),
            ("10.244.1.0/x", "not a number"),
        ] {
            let e = PodCidr::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn the_conflist_is_a_bridge_on_the_node_subnet_with_portmap() {
        let c = PodCidr::parse("10.88.0.0/16").expect("valid");
        let text = conflist(&c, "br9", Path::new("/var/lib/cni"));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let plugins = v["plugins"].as_array().expect("plugins");
        assert_eq!(plugins[0]["bridge"], "br9");
        assert_eq!(plugins[0]["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
        assert_eq!(plugins[0]["ipam"]["ranges"][0][0]["gateway"], "10.88.0.1");
        assert_eq!(plugins[1]["type"], "portmap");
        assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn installing_the_same_conflist_twice_leaves_the_file_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = install(dir.path(), "{}").expect("write");
        let before = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        install(dir.path(), "{}").expect("again");
        let after = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        assert_eq!(before, after);
        install(dir.path(), "{\"x\":1}").expect("changed");
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("{\"x\":1}")
        );
    }
}
