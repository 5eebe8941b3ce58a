//! The controller manager: every controller runs while this process holds the Lease
//! `kube-system/flotilla-controller-manager`, so that of several managers only one acts;
//! losing the Lease stops them (the next leader starts from the cluster's state).

use flotilla_client::{Client, LeaderConfig, LeaderElector};
use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::watch;

/// The Lease the managers elect a leader on.
pub const LEASE: &str = "flotilla-controller-manager";

/// Runs the controllers while leading, until `shutdown` flips.
pub async fn run(
    client: Client,
    identity: String,
    timing: LeaderConfig,
    shutdown: watch::Receiver<bool>,
) {
    let elector = LeaderElector::new(client.api::<Lease>("kube-system"), LEASE, &identity, timing);
    let mut leading = elector.leading();
    let (stop_election, election_rx) = watch::channel(false);
    let election = tokio::spawn(elector.run(election_rx));
    let mut outer = shutdown.clone();
    let led = tokio::select! {
        _ = outer.wait_for(|s| *s) => false,
        l = leading.wait_for(|l| *l) => l.is_ok(),
    };
    if led {
        tracing::info!(identity = %identity, "leading: controllers running");
        let (stop, stop_rx) = watch::channel(false);
        let controllers = [
            tokio::spawn(crate::replicaset::run(client.clone(), stop_rx.clone())),
            tokio::spawn(crate::garbage_collector::run(
                client.clone(),
                stop_rx.clone(),
            )),
        ];
        tokio::select! {
            _ = outer.wait_for(|s| *s) => {}
            _ = leading.wait_for(|l| !*l) => tracing::warn!("lost leadership: stopping the controllers"),
        }
        stop.send_replace(true);
        for c in controllers {
            let _ = c.await;
        }
    }
    stop_election.send_replace(true);
    let _ = election.await;
}
