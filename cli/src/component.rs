//! What the components that run against an API server (`flotilla scheduler`,
//! `controller`, `agent`, `hollow-nodes`) share: reaching the server through a kubeconfig,
//! and kube-scheduler's leader-election flags.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use flotilla_client::{Client, Kubeconfig, LeaderConfig, Resolved};

use crate::etcd::parse_duration;

/// The context of `kubeconfig` (else $KUBECONFIG, else ~/.flotilla/config).
pub fn resolve(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Resolved, String> {
    Kubeconfig::load(kubeconfig)
        .and_then(|k| k.resolve(context))
        .map_err(|e| e.to_string())
}

/// A client for the context of `kubeconfig`.
pub fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, String> {
    Client::new(&resolve(kubeconfig, context)?).map_err(|e| e.to_string())
}

/// This process's identity in an election: host name and pid.
pub fn identity() -> String {
    format!("{}-{}", crate::server::hostname(), std::process::id())
}

/// Leader-election timings, with kube-scheduler's flag names and defaults.
#[derive(Args, Debug, Clone)]
pub struct LeaderElectArgs {
    /// How long a leader's Lease holds after its last renewal (a standby waits this long
    /// after the leader dies).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
}

impl LeaderElectArgs {
    /// The timings, if they can work (retry < renew deadline < lease duration).
    pub fn to_config(&self) -> Result<LeaderConfig, String> {
        if self.leader_elect_renew_deadline >= self.leader_elect_lease_duration
            || self.leader_elect_retry_period >= self.leader_elect_renew_deadline
        {
            return Err(
                "--leader-elect-retry-period < --leader-elect-renew-deadline < --leader-elect-lease-duration is required"
                    .into(),
            );
        }
        Ok(LeaderConfig {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        })
    }
}
