//! `cordon`, `uncordon` and `drain`, as kubectl does them.
//!
//! `drain` cordons the node, then removes its pods: mirror pods are skipped; pods of a
//! DaemonSet are refused unless `--ignore-daemonsets` (then skipped: their controller would
//! only recreate them there); pods no controller owns are refused unless `--force` (nothing
//! would recreate them); pods with emptyDir volumes are refused unless
//! `--delete-emptydir-data` (their data goes with them); finished pods always go. A refusal
//! removes nothing. The pods are **evicted** (the pods/eviction subresource) with their own
//! grace period (or `--grace-period`): a PodDisruptionBudget that allows no disruption now
//! refuses, and the eviction is retried every 5 s, as kubectl does, until the budget
//! allows it or `--timeout` passes; `--disable-eviction` deletes instead, bypassing
//! budgets. It then waits until every pod is gone from the API, or `--timeout` passes.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use flotilla_client::{Client, DeleteParams, ListParams, Patch};
use serde_json::{Value, json};

use super::Global;
use super::commands::{CommandError, connect, reason};
use crate::etcd::parse_duration;

/// kubectl's refusals and warnings.
const DAEMONSET_FATAL: &str = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)";
const DAEMONSET_WARNING: &str = "ignoring DaemonSet-managed Pods";
const LOCAL_STORAGE_FATAL: &str =
    "Pods with local storage (use --delete-emptydir-data to override)";
const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";
const UNMANAGED_FATAL: &str = "Pods declare no controller (use --force to override)";
const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";
/// The annotation of a mirror pod (a static pod's copy in the API).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// How often drain looks whether the pods are gone.
const POLL: Duration = Duration::from_millis(500);

/// `cordon` / `uncordon` flags.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The node.
    pub node: String,
}

/// `drain` flags.
#[derive(Args, Debug)]
pub struct DrainArgs {
    /// The node.
    pub node: String,
    /// Skip DaemonSet-managed pods instead of refusing to drain.
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Give up after this long (0: wait for ever), e.g. 5m, 30s.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Seconds each pod gets to stop (negative: the pod's own terminationGracePeriodSeconds).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Also delete pods no controller manages (they will not come back).
    #[arg(long)]
    pub force: bool,
    /// Also delete pods with emptyDir volumes (their data is lost).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Delete the pods instead of evicting them: PodDisruptionBudgets are not consulted.
    #[arg(long)]
    pub disable_eviction: bool,
}

/// What drain does with one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Disposition {
    /// Delete it.
    Delete,
    /// Delete it, with this warning.
    DeleteWarning(&'static str),
    /// Leave it, silently.
    Skip,
    /// Leave it, with this warning.
    SkipWarning(&'static str),
    /// Refuse the drain for this reason.
    Refuse(&'static str),
}

fn controller_kind(pod: &Value) -> Option<&str> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true))?["kind"]
        .as_str()
}

fn is_finished(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// kubectl's filters, in its order: DaemonSet, mirror, local storage, unmanaged.
fn disposition(pod: &Value, a: &DrainArgs) -> Disposition {
    if controller_kind(pod) == Some("DaemonSet") {
        return if a.ignore_daemonsets {
            Disposition::SkipWarning(DAEMONSET_WARNING)
        } else {
            Disposition::Refuse(DAEMONSET_FATAL)
        };
    }
    if pod["metadata"]["annotations"]
        .get(MIRROR_ANNOTATION)
        .is_some()
    {
        return Disposition::Skip;
    }
    if is_finished(pod) {
        return Disposition::Delete;
    }
    let mut warning = None;
    let empty_dir = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v.get("emptyDir").is_some_and(|e| !e.is_null()));
    if empty_dir {
        if !a.delete_emptydir_data {
            return Disposition::Refuse(LOCAL_STORAGE_FATAL);
        }
        warning = Some(LOCAL_STORAGE_WARNING);
    }
    if controller_kind(pod).is_none() {
        if !a.force {
            return Disposition::Refuse(UNMANAGED_FATAL);
        }
        warning = Some(UNMANAGED_WARNING);
    }
    match warning {
        Some(w) => Disposition::DeleteWarning(w),
        None => Disposition::Delete,
    }
}

fn ns_name(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or_default(),
        pod["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Groups pods under messages, as kubectl prints them: `msg: ns/a, ns/b`.
fn grouped<'a>(items: impl Iterator<Item = (&'static str, &'a Value)>) -> Vec<String> {
    let mut by: Vec<(&'static str, Vec<String>)> = Vec::new();
    for (msg, pod) in items {
        match by.iter_mut().find(|(m, _)| *m == msg) {
            Some((_, pods)) => pods.push(ns_name(pod)),
            None => by.push((msg, vec![ns_name(pod)])),
        }
    }
    by.into_iter()
        .map(|(m, pods)| format!("{m}: {}", pods.join(", ")))
        .collect()
}

/// Go's rendering of a duration (`2s`, `1m30s`, `500ms`), as kubectl prints its timeout.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (d.as_secs() / 3600, d.as_secs() / 60 % 60);
    let s = d.as_secs_f64() % 60.0;
    let s = if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{}s", format!("{s:.3}").trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

async fn get_node(client: &Client, node: &str) -> Result<Value, CommandError> {
    client
        .dynamic("v1", "nodes", "")
        .get(node, "")
        .await
        .map_err(|e| CommandError(format!("Error from server ({}): {e}", reason(&e))))
}

/// Sets spec.unschedulable; prints kubectl's line.
async fn set_unschedulable(client: &Client, node: &str, on: bool) -> Result<(), CommandError> {
    let current = get_node(client, node).await?;
    let (verb, already) = if on {
        (
            "cordoned",
            current["spec"]["unschedulable"].as_bool() == Some(true),
        )
    } else {
        (
            "uncordoned",
            current["spec"]["unschedulable"].as_bool() != Some(true),
        )
    };
    if already {
        println!("node/{node} already {verb}");
        return Ok(());
    }
    let value = if on { json!(true) } else { Value::Null };
    client
        .dynamic("v1", "nodes", "")
        .patch(
            node,
            "",
            &Patch::Merge(json!({"spec": {"unschedulable": value}})),
            false,
        )
        .await?;
    println!("node/{node} {verb}");
    Ok(())
}

/// `cordon NODE`: the scheduler places no new pod there.
pub async fn cordon(g: &Global, a: &NodeArgs) -> Result<(), CommandError> {
    set_unschedulable(&connect(g)?, &a.node, true).await
}

/// `uncordon NODE`: the node takes new pods again.
pub async fn uncordon(g: &Global, a: &NodeArgs) -> Result<(), CommandError> {
    set_unschedulable(&connect(g)?, &a.node, false).await
}

/// Prints kubectl's account of a failed drain; returns the error to exit with.
fn drain_failed(node: &str, message: String) -> CommandError {
    eprintln!(
        "error: unable to drain node {node:?} due to error: {message}, continuing command..."
    );
    eprintln!("There are pending nodes to be drained:\n {node}");
    CommandError(format!("error: {message}"))
}

/// `drain NODE`: cordon it, then remove its pods (see the module doc).
pub async fn drain(g: &Global, a: &DrainArgs) -> Result<(), CommandError> {
    let client = connect(g)?;
    set_unschedulable(&client, &a.node, true).await?;
    let pods_api = client.dynamic("v1", "pods", "");
    let on_node = ListParams {
        field_selector: format!("spec.nodeName={}", a.node),
        ..Default::default()
    };
    let mut pods = pods_api.list(&on_node).await?.items;
    pods.sort_by_key(ns_name);
    let decided: Vec<(Disposition, &Value)> = pods.iter().map(|p| (disposition(p, a), p)).collect();
    let refusals = grouped(decided.iter().filter_map(|(d, p)| match d {
        Disposition::Refuse(m) => Some((*m, *p)),
        _ => None,
    }));
    if !refusals.is_empty() {
        let errors: Vec<String> = refusals
            .iter()
            .map(|r| format!("cannot delete {r}"))
            .collect();
        let message = match errors.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        return Err(drain_failed(&a.node, message));
    }
    let warnings = grouped(decided.iter().filter_map(|(d, p)| match d {
        Disposition::SkipWarning(m) | Disposition::DeleteWarning(m) => Some((*m, *p)),
        _ => None,
    }));
    if !warnings.is_empty() {
        eprintln!("Warning: {}", warnings.join("; "));
    }
    let doomed: Vec<&Value> = decided
        .iter()
        .filter(|(d, _)| matches!(d, Disposition::Delete | Disposition::DeleteWarning(_)))
        .map(|(_, p)| *p)
        .collect();
    let field = |p: &Value, f: &str| p["metadata"][f].as_str().unwrap_or_default().to_string();
    // (namespace, name, uid) of each pod still to evict: refused by a budget for now.
    let mut to_evict: Vec<(String, String, String)> = doomed
        .iter()
        .map(|p| (field(p, "namespace"), field(p, "name"), field(p, "uid")))
        .collect();
    // (namespace, name) → uid of each pod being removed, until it is gone.
    let mut pending: BTreeMap<(String, String), String> = BTreeMap::new();
    let deadline = (!a.timeout.is_zero()).then(|| tokio::time::Instant::now() + a.timeout);
    let mut tick = tokio::time::interval(POLL);
    let mut retry_at = tokio::time::Instant::now();
    loop {
        if !to_evict.is_empty() && tokio::time::Instant::now() >= retry_at {
            let mut refused = Vec::new();
            for (ns, name, uid) in to_evict.drain(..) {
                println!("evicting pod {ns}/{name}");
                match remove(&client, a, &ns, &name, &uid).await {
                    Ok(()) => {
                        pending.insert((ns, name), uid);
                    }
                    // Gone already, or replaced by a pod of the same name: nothing left to
                    // wait for.
                    Err(e) if e.is_not_found() || e.is_conflict() => {
                        println!("pod/{name} evicted");
                    }
                    Err(e) if e.is_too_many_requests() => {
                        eprintln!(
                            "error when evicting pods/{name:?} -n {ns:?} (will retry after {}): {e}",
                            go_duration(EVICTION_RETRY)
                        );
                        refused.push((ns, name, uid));
                    }
                    Err(e) => {
                        return Err(drain_failed(
                            &a.node,
                            format!("error when evicting pods/{name:?} -n {ns:?}: {e}"),
                        ));
                    }
                }
            }
            to_evict = refused;
            retry_at = tokio::time::Instant::now() + EVICTION_RETRY;
        }
        if to_evict.is_empty() && pending.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(drain_failed(
                &a.node,
                format!("drain did not complete within {}", go_duration(a.timeout)),
            ));
        }
        tick.tick().await;
        let left = pods_api.list(&on_node).await?.items;
        let still: std::collections::HashSet<&str> = left
            .iter()
            .filter_map(|p| p["metadata"]["uid"].as_str())
            .collect();
        pending.retain(|(_, name), uid| {
            let here = still.contains(uid.as_str());
            if !here {
                println!("pod/{name} evicted");
            }
            here
        });
    }
    println!("node/{} drained", a.node);
    Ok(())
}

/// How long a pod whose eviction a budget refused waits before it is asked for again
/// (kubectl's 5 s).
const EVICTION_RETRY: Duration = Duration::from_secs(5);

/// Evicts one pod, or deletes it with --disable-eviction.
async fn remove(
    client: &Client,
    a: &DrainArgs,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<(), flotilla_client::ClientError> {
    let params = DeleteParams {
        grace_period_seconds: (a.grace_period >= 0).then_some(a.grace_period),
        precondition_uid: uid.to_string(),
        ..Default::default()
    };
    let pods = client.dynamic("v1", "pods", ns);
    if a.disable_eviction {
        pods.delete(name, &params).await.map(|_| ())
    } else {
        pods.evict(name, &params).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> DrainArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            drain: DrainArgs,
        }
        Cli::try_parse_from(["drain", "n1"].iter().chain(extra))
            .expect("flags")
            .drain
    }

    fn pod(v: Value) -> Value {
        v
    }

    #[test]
    fn drain_refuses_and_skips_as_kubectl_does() {
        let managed = pod(
            json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "controller": true}]}}),
        );
        let daemon = pod(
            json!({"metadata": {"ownerReferences": [{"kind": "DaemonSet", "controller": true}]}}),
        );
        let mirror = pod(json!({"metadata": {"annotations": {MIRROR_ANNOTATION: "x"}}}));
        let lonely = pod(json!({"metadata": {}}));
        let scratch = pod(
            json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "controller": true}]},
            "spec": {"volumes": [{"name": "tmp", "emptyDir": {}}]}}),
        );
        let done = pod(
            json!({"metadata": {}, "spec": {"volumes": [{"name": "tmp", "emptyDir": {}}]},
            "status": {"phase": "Succeeded"}}),
        );
        let plain = args(&[]);
        assert_eq!(disposition(&managed, &plain), Disposition::Delete);
        assert_eq!(
            disposition(&daemon, &plain),
            Disposition::Refuse(DAEMONSET_FATAL)
        );
        assert_eq!(disposition(&mirror, &plain), Disposition::Skip);
        assert_eq!(
            disposition(&lonely, &plain),
            Disposition::Refuse(UNMANAGED_FATAL)
        );
        assert_eq!(
            disposition(&scratch, &plain),
            Disposition::Refuse(LOCAL_STORAGE_FATAL)
        );
        assert_eq!(
            disposition(&done, &plain),
            Disposition::Delete,
            "finished pods always go"
        );
        let all = args(&["--ignore-daemonsets", "--force", "--delete-emptydir-data"]);
        assert_eq!(
            disposition(&daemon, &all),
            Disposition::SkipWarning(DAEMONSET_WARNING)
        );
        assert_eq!(
            disposition(&lonely, &all),
            Disposition::DeleteWarning(UNMANAGED_WARNING)
        );
        assert_eq!(
            disposition(&scratch, &all),
            Disposition::DeleteWarning(LOCAL_STORAGE_WARNING)
        );
    }

    #[test]
    fn drain_flags_and_durations_read_as_kubectls() {
        let a = args(&["--timeout", "1m30s", "--grace-period", "5"]);
        assert_eq!(a.timeout, Duration::from_secs(90));
        assert_eq!(a.grace_period, 5);
        assert_eq!(args(&[]).grace_period, -1);
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn messages_group_pods_under_their_reason() {
        let a = json!({"metadata": {"namespace": "default", "name": "a"}});
        let b = json!({"metadata": {"namespace": "kube-system", "name": "b"}});
        assert_eq!(
            grouped(
                [
                    (UNMANAGED_FATAL, &a),
                    (UNMANAGED_FATAL, &b),
                    (DAEMONSET_FATAL, &a)
                ]
                .into_iter()
            ),
            vec![
                format!("{UNMANAGED_FATAL}: default/a, kube-system/b"),
                format!("{DAEMONSET_FATAL}: default/a"),
            ]
        );
    }
}
