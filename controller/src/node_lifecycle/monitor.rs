//! The periodic pass over every node: health (conditions to Unknown after the grace
//! period), the NoSchedule taints, the NoExecute taint's removal or queueing, the zones'
//! disruption states and rates; and the tainting of queued nodes as the rates allow.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::events::Recorder;
use flotilla_client::{Client, ClientError, Patch, Store};
use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::NodeLifecycleConfig;
use super::health::{Health, is_stale, unknown_conditions};
use super::rate_limit::ZoneTainter;
use super::taints::{
    NO_EXECUTE, NOT_READY, UNREACHABLE, condition_status, has_taint, no_execute_key,
    wanted_no_schedule, with_no_execute, with_no_schedule,
};
use super::zones::{
    Plan, ZoneState, counts_for_disruption, eviction_rate, plan, zone_key, zone_state,
};

/// How the controller signs node Events (Kubernetes' name).
const EVENTS: Recorder<'static> = Recorder {
    component: "node-controller",
    host: None,
};

/// How often queued nodes are tried against their zone's rate (Kubernetes'
/// NodeEvictionPeriod).
const TAINT_PERIOD: Duration = Duration::from_millis(100);

pub(super) struct Monitor {
    client: Client,
    cfg: NodeLifecycleConfig,
    nodes: Store<Node>,
    health: Arc<Health>,
    zone_states: BTreeMap<String, ZoneState>,
    tainters: HashMap<String, ZoneTainter>,
    /// Nodes as this controller last wrote them, newer than the cache until it catches up.
    written: HashMap<String, Arc<Node>>,
}

fn name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

impl Monitor {
    pub fn new(
        client: Client,
        cfg: NodeLifecycleConfig,
        nodes: Store<Node>,
        health: Arc<Health>,
    ) -> Self {
        Monitor {
            client,
            cfg,
            nodes,
            health,
            zone_states: BTreeMap::new(),
            tainters: HashMap::new(),
            written: HashMap::new(),
        }
    }

    /// Runs the passes until `shutdown` flips.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut monitor = tokio::time::interval(self.cfg.node_monitor_period);
        monitor.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut taint = tokio::time::interval(TAINT_PERIOD);
        taint.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // The select only picks; the work runs outside it, holding nothing of the
            // shutdown channel across its awaits.
            let full_pass = tokio::select! {
                _ = monitor.tick() => true,
                _ = taint.tick() => false,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            if full_pass {
                self.pass().await;
            } else {
                self.taint_queued().await;
            }
        }
    }

    /// The freshest known state of a node: this controller's last write if the cache has
    /// not caught up with it yet.
    fn node(&mut self, name: &str) -> Option<Arc<Node>> {
        let cached = self.nodes.get(name);
        let rv = |n: &Node| {
            n.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        match (cached, self.written.get(name)) {
            (None, _) => {
                self.written.remove(name);
                None
            }
            (Some(c), Some(w)) if rv(w) > rv(&c) => Some(w.clone()),
            (Some(c), _) => {
                self.written.remove(name);
                Some(c)
            }
        }
    }

    async fn pass(&mut self) {
        let now = Instant::now();
        let mut names: Vec<String> = self
            .nodes
            .list()
            .iter()
            .map(|n| name(n).to_string())
            .collect();
        names.sort();
        let mut zones: BTreeMap<String, Vec<bool>> = BTreeMap::new();
        for n in &names {
            let Some(node) = self.node(n) else { continue };
            let node = match self.check_health(&node, now).await {
                Ok(updated) => updated,
                Err(e) => {
                    tracing::warn!(node = %n, error = %e, "updating node health; retrying next pass");
                    continue;
                }
            };
            let zone = zone_key(&node);
            if counts_for_disruption(&node) {
                zones
                    .entry(zone.clone())
                    .or_default()
                    .push(condition_status(&node, "Ready") == Some("True"));
            }
            if let Err(e) = self.reconcile_taints(&node, &zone, now).await {
                tracing::warn!(node = %n, error = %e, "updating node taints; retrying next pass");
            }
        }
        self.handle_disruption(&zones, now).await;
    }

    /// Sets a silent node's conditions to Unknown; returns the node as it now is.
    async fn check_health(
        &mut self,
        node: &Arc<Node>,
        now: Instant,
    ) -> Result<Arc<Node>, ClientError> {
        let last = self.health.observe(node, now);
        let has_ready = condition_status(node, "Ready").is_some();
        let grace = if has_ready {
            self.cfg.node_monitor_grace_period
        } else {
            self.cfg.node_startup_grace_period
        };
        if !is_stale(last, now, grace) {
            return Ok(node.clone());
        }
        let Some(conditions) = unknown_conditions(node, jiff::Timestamp::now()) else {
            return Ok(node.clone());
        };
        let n = name(node).to_string();
        tracing::warn!(node = %n, silent = ?now.saturating_duration_since(last), "node stopped posting status; its conditions are now Unknown");
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "status": {"conditions": conditions},
        }));
        let updated = Arc::new(self.client.api::<Node>("").patch_status(&n, &patch).await?);
        self.written.insert(n.clone(), updated.clone());
        EVENTS
            .record(
                &self.client,
                updated.as_ref(),
                "Normal",
                "NodeNotReady",
                &format!("Node {n} status is now: NodeNotReady"),
            )
            .await;
        Ok(updated)
    }

    /// Brings the NoSchedule taints in line with the conditions, removes the NoExecute
    /// readiness taint from a Ready node, swaps not-ready and unreachable at once when the
    /// node already has the other, and queues a node newly not ready for its NoExecute
    /// taint.
    async fn reconcile_taints(
        &mut self,
        node: &Arc<Node>,
        zone: &str,
        now: Instant,
    ) -> Result<(), ClientError> {
        let n = name(node).to_string();
        let mut working: Node = node.as_ref().clone();
        let mut changed = false;
        if let Some(t) = with_no_schedule(&working, &wanted_no_schedule(&working)) {
            set_taints(&mut working, t);
            changed = true;
        }
        let ready = condition_status(&working, "Ready").map(str::to_string);
        let wanted = no_execute_key(ready.as_deref());
        let tainter = self
            .tainters
            .entry(zone.to_string())
            .or_insert_with(|| ZoneTainter::new(self.cfg.rates.node_eviction_rate, now));
        match wanted {
            None if ready.as_deref() == Some("True") => {
                tainter.remove(&n);
                if let Some(t) = with_no_execute(&working, None, jiff::Timestamp::now()) {
                    tracing::info!(node = %n, "node is Ready again: removing its NoExecute taint");
                    set_taints(&mut working, t);
                    changed = true;
                }
            }
            // No Ready condition yet: nothing to say.
            None => {}
            Some(key) => {
                let other = if key == NOT_READY {
                    UNREACHABLE
                } else {
                    NOT_READY
                };
                if has_taint(&working, other, NO_EXECUTE) {
                    // Already being evicted: only the reason changes, no new eviction.
                    if let Some(t) = with_no_execute(&working, Some(key), jiff::Timestamp::now()) {
                        set_taints(&mut working, t);
                        changed = true;
                    }
                } else if !has_taint(&working, key, NO_EXECUTE) && !tainter.contains(&n) {
                    tracing::info!(node = %n, taint = key, "node is not ready: queued for its NoExecute taint");
                    tainter.add(&n);
                }
            }
        }
        if changed {
            self.write_taints(&working).await?;
        }
        Ok(())
    }

    async fn write_taints(&mut self, node: &Node) -> Result<(), ClientError> {
        let n = name(node).to_string();
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        // The resourceVersion makes it a compare-and-swap: a cordon or taint written
        // meanwhile is never overwritten.
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": taints},
        }));
        let updated = self.client.api::<Node>("").patch(&n, &patch).await?;
        self.written.insert(n, Arc::new(updated));
        Ok(())
    }

    /// Sets the zones' rates from their new states (see [`super::zones`]).
    async fn handle_disruption(&mut self, zones: &BTreeMap<String, Vec<bool>>, now: Instant) {
        let rates = self.cfg.rates;
        let new: BTreeMap<String, ZoneState> = zones
            .iter()
            .map(|(z, ready)| (z.clone(), zone_state(ready, rates.unhealthy_zone_threshold)))
            .collect();
        let rate_of = |zone: &str, state: ZoneState| {
            // A zone's size counts the nodes its disruption state counts.
            eviction_rate(state, zones.get(zone).map_or(0, Vec::len), &rates)
        };
        match plan(&self.zone_states, &new) {
            Plan::StayInClusterDisruption => {
                // A zone that appeared meanwhile starts at the normal rate: hold it too.
                for t in self.tainters.values_mut() {
                    t.set_rate(0.0, now);
                }
            }
            Plan::EnterClusterDisruption => {
                tracing::warn!(
                    "no node is ready in any zone: stopping evictions (a network problem is likelier than every machine failing)"
                );
                for t in self.tainters.values_mut() {
                    t.set_rate(0.0, now);
                }
                let mut names: Vec<String> = self
                    .nodes
                    .list()
                    .iter()
                    .map(|n| name(n).to_string())
                    .collect();
                names.sort();
                for n in names {
                    let Some(node) = self.node(&n) else { continue };
                    if let Some(t) = with_no_execute(&node, None, jiff::Timestamp::now()) {
                        let mut working = node.as_ref().clone();
                        set_taints(&mut working, t);
                        if let Err(e) = self.write_taints(&working).await {
                            tracing::warn!(node = %n, error = %e, "removing the NoExecute taint");
                        }
                    }
                }
            }
            Plan::LeaveClusterDisruption => {
                tracing::info!(
                    "some node is ready again: resuming evictions, with a fresh grace period for every node"
                );
                self.health.reset_all(now);
                for (zone, state) in &new {
                    let rate = rate_of(zone, *state);
                    self.tainter(zone, now).set_rate(rate, now);
                }
            }
            Plan::Update(changed) => {
                for zone in changed {
                    let Some(state) = new.get(&zone).copied() else {
                        continue;
                    };
                    let rate = rate_of(&zone, state);
                    if self.zone_states.contains_key(&zone) {
                        tracing::info!(zone = %zone, state = ?state, rate, "zone changed state");
                    }
                    self.tainter(&zone, now).set_rate(rate, now);
                }
            }
        }
        self.zone_states = new;
    }

    fn tainter(&mut self, zone: &str, now: Instant) -> &mut ZoneTainter {
        let rate = self.cfg.rates.node_eviction_rate;
        self.tainters
            .entry(zone.to_string())
            .or_insert_with(|| ZoneTainter::new(rate, now))
    }

    /// Taints the queued nodes their zones' rates allow now.
    async fn taint_queued(&mut self) {
        let now = Instant::now();
        let zones: Vec<String> = self.tainters.keys().cloned().collect();
        for zone in zones {
            while let Some(n) = self.tainter(&zone, now).next(now) {
                let Some(node) = self.node(&n) else { continue };
                // Ready again meanwhile: the token is spent, as in Kubernetes.
                let Some(key) = no_execute_key(condition_status(&node, "Ready")) else {
                    continue;
                };
                let Some(t) = with_no_execute(&node, Some(key), jiff::Timestamp::now()) else {
                    continue;
                };
                let mut working = node.as_ref().clone();
                set_taints(&mut working, t);
                match self.write_taints(&working).await {
                    Ok(()) => {
                        tracing::warn!(node = %n, taint = key, "tainted NoExecute: pods that do not tolerate it will be evicted");
                    }
                    Err(e) => {
                        tracing::warn!(node = %n, error = %e, "tainting the node; retrying");
                        self.tainter(&zone, now).add(&n);
                        break;
                    }
                }
            }
        }
    }
}

fn set_taints(node: &mut Node, taints: Vec<Taint>) {
    node.spec.get_or_insert_with(Default::default).taints = Some(taints);
}
