//! Leader election on a coordination.k8s.io/v1 Lease, as client-go does it: the holder
//! renews the lease every retry period; another candidate takes it over once it has seen
//! no renewal for a whole lease duration (timed on its own clock, so clock skew between
//! machines does not matter); every write is a compare-and-swap on the lease's
//! resourceVersion, so two candidates never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::Api;
use crate::error::ClientError;

/// Timings of an election.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// How long a lease stays valid without renewal (client-go: 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down (client-go: 10 s).
    pub renew_deadline: Duration,
    /// How often candidates and the leader act (client-go: 2 s).
    pub retry_period: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate in an election.
pub struct LeaderElector {
    api: Api<Lease>,
    lease: String,
    identity: String,
    config: LeaderConfig,
    leading: watch::Sender<bool>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl LeaderElector {
    /// A candidate `identity` for the lease `name` (in `api`'s namespace).
    pub fn new(api: Api<Lease>, name: &str, identity: &str, config: LeaderConfig) -> Self {
        LeaderElector {
            api,
            lease: name.to_string(),
            identity: identity.to_string(),
            config,
            leading: watch::channel(false).0,
        }
    }

    /// True while this candidate leads.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Campaigns until `shutdown` flips, and once elected runs `work` until leadership is
    /// lost or `shutdown` flips; `work` is told to stop through the receiver it is given and
    /// waited for. Returns then — after a loss, as kube-scheduler and
    /// kube-controller-manager exit, so that a restart rejoins the election cleanly.
    pub async fn run_while_leading<F, Fut>(self, shutdown: watch::Receiver<bool>, work: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (lease, identity) = (self.lease.clone(), self.identity.clone());
        let mut leading = self.leading();
        let (stop_election, election_rx) = watch::channel(false);
        let election = tokio::spawn(self.run(election_rx));
        let mut outer = shutdown.clone();
        let elected = tokio::select! {
            _ = outer.wait_for(|s| *s) => false,
            l = leading.wait_for(|l| *l) => l.is_ok(),
        };
        if elected {
            tracing::info!(lease = %lease, identity = %identity, "leading");
            let (stop_work, work_rx) = watch::channel(false);
            let task = tokio::spawn(work(work_rx));
            tokio::select! {
                _ = outer.wait_for(|s| *s) => {}
                _ = leading.wait_for(|l| !*l) => {
                    tracing::warn!(lease = %lease, identity = %identity, "lost leadership: stopping");
                }
            }
            stop_work.send_replace(true);
            let _ = task.await;
        }
        stop_election.send_replace(true);
        let _ = election.await;
    }

    /// Campaigns and renews until `shutdown` flips; a leader then releases the lease so the
    /// next one need not wait for it to expire.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // The last lease record seen, and when it was first seen (on this clock).
        let mut observed: Option<(String, Instant)> = None;
        let mut last_renewal = Instant::now();
        let mut tick = tokio::time::interval(self.config.retry_period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            match self.try_acquire_or_renew(&mut observed).await {
                Ok(true) => {
                    last_renewal = Instant::now();
                    if !*self.leading.borrow() {
                        tracing::info!(lease = %self.lease, identity = %self.identity, "became leader");
                        self.leading.send_replace(true);
                    }
                }
                Ok(false) => self.step_down("another candidate holds the lease"),
                Err(e) => {
                    tracing::warn!(lease = %self.lease, error = %e, "lease update failed");
                    if last_renewal.elapsed() > self.config.renew_deadline {
                        self.step_down("could not renew the lease within the renew deadline");
                    }
                }
            }
        }
        if *self.leading.borrow() {
            self.release().await;
        }
        self.leading.send_replace(false);
    }

    fn step_down(&self, why: &str) {
        if *self.leading.borrow() {
            tracing::warn!(lease = %self.lease, identity = %self.identity, why, "lost leadership");
            self.leading.send_replace(false);
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or_else(now)),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One round: Ok(true) if this candidate holds the lease afterwards.
    async fn try_acquire_or_renew(
        &self,
        observed: &mut Option<(String, Instant)>,
    ) -> Result<bool, ClientError> {
        let Some(current) = self.api.get_opt(&self.lease).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&lease).await {
                Ok(_) => Ok(true),
                Err(e) if e.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record_changed = observed.as_ref().is_none_or(|(seen, _)| *seen != rv);
        if record_changed {
            *observed = Some((rv.clone(), Instant::now()));
        }
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let expired = holder.is_empty()
            || observed
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() > duration);
        let mine = holder == self.identity;
        if !mine && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut next = current;
        next.spec = Some(self.spec(transitions, acquired));
        match self.api.update(&next).await {
            Ok(updated) => {
                *observed = Some((
                    updated.metadata.resource_version.unwrap_or_default(),
                    Instant::now(),
                ));
                Ok(true)
            }
            // Someone else wrote the lease first: look again next round.
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (empty holder), so a successor takes over at once.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.lease).await else {
            return;
        };
        if lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            != Some(self.identity.as_str())
        {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        if let Err(e) = self.api.update(&lease).await {
            tracing::warn!(lease = %self.lease, error = %e, "could not release the lease");
        }
    }
}
