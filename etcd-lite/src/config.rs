//! A member's configuration, with etcd's flag semantics, and the IDs derived from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Whether the member bootstraps a new cluster or joins one that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Every member of `initial_cluster` starts together.
    New,
    /// The cluster exists; this member (re)joins it, e.g. after its disk was replaced.
    Existing,
}

/// One entry of `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's name.
    pub name: String,
    /// Its advertised peer URLs.
    pub peer_urls: Vec<String>,
}

/// A member's configuration. Field names follow etcd's flags.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--listen-client-urls`.
    pub listen_client_urls: Vec<String>,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: Vec<String>,
    /// `--listen-peer-urls`.
    pub listen_peer_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--initial-cluster`.
    pub initial_cluster: Vec<InitialMember>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--heartbeat-interval`: one raft tick.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--snapshot-count`: applied entries between state-machine snapshots.
    pub snapshot_count: u64,
    /// Entries kept in the log after a snapshot, so slow followers catch up without one.
    pub snapshot_catchup_entries: u64,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--experimental-watch-progress-notify-interval`.
    pub watch_progress_notify_interval: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            name: "default".into(),
            data_dir: PathBuf::from("default.etcd"),
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster: vec![InitialMember {
                name: "default".into(),
                peer_urls: vec!["http://localhost:2380".into()],
            }],
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5_000,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            watch_progress_notify_interval: Duration::from_secs(600),
        }
    }
}

/// A configuration that cannot work, with the flag at fault.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {reason}")]
pub struct ConfigError {
    /// The flag at fault, without dashes.
    pub flag: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn bad(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        reason: reason.into(),
    }
}

/// Parses `--initial-cluster` (`name=url,name=url,...`; a name may repeat for several URLs).
pub fn parse_initial_cluster(s: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut out: Vec<InitialMember> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| bad("initial-cluster", format!("{part:?} is not name=url")))?;
        if name.is_empty() {
            return Err(bad(
                "initial-cluster",
                format!("{part:?} has an empty name"),
            ));
        }
        parse_url("initial-cluster", url)?;
        match out.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url.to_string()),
            None => out.push(InitialMember {
                name: name.to_string(),
                peer_urls: vec![url.to_string()],
            }),
        }
    }
    if out.is_empty() {
        return Err(bad("initial-cluster", "no members given"));
    }
    Ok(out)
}

/// Parses a comma-separated URL list flag.
pub fn parse_url_list(flag: &'static str, s: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    if urls.is_empty() {
        return Err(bad(flag, "no URLs given"));
    }
    for u in &urls {
        parse_url(flag, u)?;
    }
    Ok(urls)
}

/// Resolves an `http://host:port` URL to a socket address.
pub fn parse_url(flag: &'static str, url: &str) -> Result<SocketAddr, ConfigError> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") || url.starts_with("unixs://") {
        return Err(bad(
            flag,
            format!("{url}: TLS is not supported yet; use http://"),
        ));
    } else {
        return Err(bad(flag, format!("{url}: expected http://host:port")));
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err(bad(flag, format!("{url}: a URL here may not have a path")));
    }
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| bad(flag, format!("{url}: missing port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad(flag, format!("{url}: port {port:?} is not a number")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
        h => h.parse().map_err(|_| {
            bad(
                flag,
                format!("{url}: host {h:?} must be an IP address or localhost"),
            )
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// A member's ID: a hash of its sorted peer URLs and the cluster token, as etcd derives it,
/// so every member computes the same IDs from the same `--initial-cluster`.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha256::new();
    for u in &urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    let d = h.finalize();
    let id = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
    id.max(1)
}

/// The cluster's ID: a hash of its members' IDs.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().unwrap_or_default()).max(1)
}

impl EtcdConfig {
    /// Checks the configuration the way etcd does before it touches the disk.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(bad("name", "must not be empty"));
        }
        for (flag, urls) in [
            ("listen-client-urls", &self.listen_client_urls),
            ("advertise-client-urls", &self.advertise_client_urls),
            ("listen-peer-urls", &self.listen_peer_urls),
            (
                "initial-advertise-peer-urls",
                &self.initial_advertise_peer_urls,
            ),
        ] {
            if urls.is_empty() {
                return Err(bad(flag, "no URLs given"));
            }
            for u in urls {
                parse_url(flag, u)?;
            }
        }
        let me = self
            .initial_cluster
            .iter()
            .find(|m| m.name == self.name)
            .ok_or_else(|| {
                bad(
                    "initial-cluster",
                    format!("has no member named {:?} (--name)", self.name),
                )
            })?;
        let mut mine = me.peer_urls.clone();
        let mut advertised = self.initial_advertise_peer_urls.clone();
        mine.sort();
        advertised.sort();
        if mine != advertised {
            return Err(bad(
                "initial-cluster",
                format!(
                    "lists {} for {:?} but --initial-advertise-peer-urls is {}",
                    mine.join(","),
                    self.name,
                    advertised.join(",")
                ),
            ));
        }
        let ids: Vec<u64> = self.member_ids();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != ids.len() {
            return Err(bad(
                "initial-cluster",
                "two members share the same peer URLs",
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(bad("heartbeat-interval", "must be positive"));
        }
        if self.election_timeout < self.heartbeat_interval * 5 {
            return Err(bad(
                "election-timeout",
                format!(
                    "{:?} must be at least 5 heartbeat intervals ({:?})",
                    self.election_timeout, self.heartbeat_interval
                ),
            ));
        }
        if self.snapshot_count == 0 {
            return Err(bad("snapshot-count", "must be positive"));
        }
        if self.max_txn_ops == 0 {
            return Err(bad("max-txn-ops", "must be positive"));
        }
        Ok(())
    }

    /// This member's ID.
    pub fn my_id(&self) -> u64 {
        member_id(
            &self.initial_advertise_peer_urls,
            &self.initial_cluster_token,
        )
    }

    /// The IDs of every initial member, in `--initial-cluster` order.
    pub fn member_ids(&self) -> Vec<u64> {
        self.initial_cluster
            .iter()
            .map(|m| member_id(&m.peer_urls, &self.initial_cluster_token))
            .collect()
    }

    /// The cluster ID the initial members agree on.
    pub fn cluster_id(&self) -> u64 {
        cluster_id(&self.member_ids())
    }

    /// Raft ticks in an election timeout.
    pub fn election_ticks(&self) -> usize {
        (self.election_timeout.as_millis() / self.heartbeat_interval.as_millis().max(1)).max(2)
            as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_groups_urls_by_name() {
        let m =
            parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2,a=http://127.0.0.1:3")
                .expect("parses");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].peer_urls.len(), 2);
    }

    #[test]
    fn malformed_urls_name_the_flag_and_the_reason() {
        let err = parse_url("listen-client-urls", "127.0.0.1:2379").expect_err("no scheme");
        assert!(err.to_string().starts_with("--listen-client-urls: "));
        let err = parse_url("listen-peer-urls", "https://127.0.0.1:2380").expect_err("tls");
        assert!(err.to_string().contains("TLS"));
        assert!(parse_url("x", "http://localhost:2379").is_ok());
    }

    #[test]
    fn a_name_missing_from_the_initial_cluster_is_refused() {
        let cfg = EtcdConfig {
            name: "nope".into(),
            ..Default::default()
        };
        assert!(
            cfg.validate()
                .expect_err("refused")
                .to_string()
                .contains("nope")
        );
    }

    #[test]
    fn ids_depend_on_urls_and_token_only() {
        let a = member_id(&["http://x:1".into(), "http://x:2".into()], "t");
        let b = member_id(&["http://x:2".into(), "http://x:1".into()], "t");
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://x:1".into()], "t"));
        assert_ne!(
            a,
            member_id(&["http://x:1".into(), "http://x:2".into()], "u")
        );
    }
}
