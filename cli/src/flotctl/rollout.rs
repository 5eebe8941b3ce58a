//! `flotctl rollout status|history|undo|restart|pause|resume` for Deployments, with
//! kubectl's output. Undo is done as kubectl does it, client-side: the chosen revision's
//! pod template (and its annotations) is written back into the Deployment, and the
//! controller rolls to it like to any other change.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use controller::deployment::revisions::{self, CHANGE_CAUSE};
use controller::deployment::status::TIMED_OUT;
use flotilla_client::{Api, ListParams, Patch, WatchEvent};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use serde_json::json;

use super::Global;
use super::commands::{CommandError, Session, one_target};

/// The rollout verbs.
#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Watch a rollout until it finishes (or fails).
    Status(StatusArgs),
    /// List a Deployment's revisions, or show one.
    History(HistoryArgs),
    /// Roll back to the previous revision (or --to-revision).
    Undo(UndoArgs),
    /// Replace every pod, one rollout step at a time.
    Restart(Target),
    /// Stop rolling out changes until resumed.
    Pause(Target),
    /// Roll out changes made while paused.
    Resume(Target),
}

/// TYPE NAME or TYPE/NAME.
#[derive(Args, Debug)]
pub struct Target {
    /// deployment/NAME, or deployment NAME.
    #[arg(required = true)]
    pub args: Vec<String>,
}

/// `rollout status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Keep watching until the rollout finishes (false: print the state once).
    #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set)]
    watch: bool,
    /// Give up after this long (0s: never).
    #[arg(long, default_value = "0s", value_parser = crate::etcd::parse_duration)]
    timeout: Duration,
}

/// `rollout history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    target: Target,
    /// Show this revision's pod template.
    #[arg(long, default_value_t = 0)]
    revision: i64,
}

/// `rollout undo`.
#[derive(Args, Debug)]
pub struct UndoArgs {
    #[command(flatten)]
    target: Target,
    /// The revision to roll back to (0: the previous one).
    #[arg(long, default_value_t = 0)]
    to_revision: i64,
}

/// Runs a rollout verb.
pub async fn run(g: &Global, c: &RolloutCommand) -> Result<(), CommandError> {
    let target = match c {
        RolloutCommand::Status(a) => &a.target,
        RolloutCommand::History(a) => &a.target,
        RolloutCommand::Undo(a) => &a.target,
        RolloutCommand::Restart(t) | RolloutCommand::Pause(t) | RolloutCommand::Resume(t) => t,
    };
    let (ty, name, rest) = one_target(&target.args)?;
    if !rest.is_empty() {
        return Err(CommandError(format!(
            "error: unexpected arguments: {}",
            rest.join(" ")
        )));
    }
    let s = Session::open(g).await?;
    let info = s.resolve(&ty)?;
    if info.kind != "Deployment" {
        return Err(CommandError(format!(
            "error: no rollout support has been implemented for {:?} (only Deployments)",
            info.kind
        )));
    }
    let ns = s.namespace_for(info, None);
    let deployments = s.client.api::<Deployment>(&ns);
    let sets = s.client.api::<ReplicaSet>(&ns);
    let shown = super::printer::qualified_name(info, &name);
    match c {
        RolloutCommand::Status(a) => status(&deployments, &name, a).await,
        RolloutCommand::History(a) => history(&deployments, &sets, &name, &shown, a.revision).await,
        RolloutCommand::Undo(a) => undo(&deployments, &sets, &name, &shown, a.to_revision).await,
        RolloutCommand::Restart(_) => {
            let d = deployments.get(&name).await?;
            if d.spec.paused == Some(true) {
                return Err(CommandError(format!(
                    "error: {shown} can't restart paused deployment (run rollout resume first)"
                )));
            }
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": now}}}}});
            deployments.patch(&name, &Patch::Merge(patch)).await?;
            println!("{shown} restarted");
            Ok(())
        }
        RolloutCommand::Pause(_) | RolloutCommand::Resume(_) => {
            let pause = matches!(c, RolloutCommand::Pause(_));
            let d = deployments.get(&name).await?;
            if (d.spec.paused == Some(true)) == pause {
                let state = if pause {
                    "is already paused"
                } else {
                    "is not paused"
                };
                return Err(CommandError(format!(
                    "error: deployments.apps \"{name}\" {state}"
                )));
            }
            let patch = json!({"metadata": {"resourceVersion": d.metadata.resource_version},
                               "spec": {"paused": pause}});
            deployments.patch(&name, &Patch::Merge(patch)).await?;
            println!("{shown} {}", if pause { "paused" } else { "resumed" });
            Ok(())
        }
    }
}

/// kubectl's reading of a Deployment's rollout: a line to print, and whether it is done.
pub fn rollout_state(d: &Deployment) -> Result<(String, bool), CommandError> {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let s = d.status.clone().unwrap_or_default();
    if d.metadata.generation > s.observed_generation {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    if controller::deployment::status::condition(&s, "Progressing")
        .and_then(|c| c.reason.as_deref())
        == Some(TIMED_OUT)
    {
        return Err(CommandError(format!(
            "error: deployment \"{name}\" exceeded its progress deadline"
        )));
    }
    let replicas = d.spec.replicas.unwrap_or(1);
    let (total, updated, available) = (
        s.replicas.unwrap_or(0),
        s.updated_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    );
    let wait = |m: String| {
        Ok((
            format!("Waiting for deployment \"{name}\" rollout to finish: {m}"),
            false,
        ))
    };
    if updated < replicas {
        return wait(format!(
            "{updated} out of {replicas} new replicas have been updated..."
        ));
    }
    if total > updated {
        return wait(format!(
            "{} old replicas are pending termination...",
            total - updated
        ));
    }
    if available < updated {
        return wait(format!(
            "{available} of {updated} updated replicas are available..."
        ));
    }
    Ok((
        format!("deployment \"{name}\" successfully rolled out"),
        true,
    ))
}

async fn status(api: &Api<Deployment>, name: &str, a: &StatusArgs) -> Result<(), CommandError> {
    let deadline = (!a.timeout.is_zero()).then(|| tokio::time::Instant::now() + a.timeout);
    let params = ListParams {
        field_selector: format!("metadata.name={name}"),
        ..Default::default()
    };
    let mut last = String::new();
    let mut show = |line: String| {
        if line != last {
            println!("{line}");
            last = line;
        }
    };
    loop {
        let list = within(deadline, api.list(&params)).await??;
        let Some(d) = list.items.into_iter().next() else {
            return Err(CommandError(format!(
                "error: deployments.apps \"{name}\" not found"
            )));
        };
        let (line, done) = rollout_state(&d)?;
        show(line);
        if done || !a.watch {
            return Ok(());
        }
        let mut events = within(deadline, api.watch(&params, &list.resource_version)).await??;
        // Follow the watch; when the server ends it, list again and carry on.
        while let Some(ev) = within(deadline, events.next()).await? {
            match ev {
                Ok(WatchEvent::Added(d) | WatchEvent::Modified(d)) => {
                    let (line, done) = rollout_state(&d)?;
                    show(line);
                    if done {
                        return Ok(());
                    }
                }
                Ok(WatchEvent::Deleted(_)) => {
                    return Err(CommandError(format!(
                        "error: deployment \"{name}\" was deleted"
                    )));
                }
                Ok(WatchEvent::Bookmark(_)) => {}
                Err(_) => break,
            }
        }
    }
}

/// Awaits `fut`, unless `deadline` comes first.
async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    fut: impl Future<Output = T>,
) -> Result<T, CommandError> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, fut)
            .await
            .map_err(|_| CommandError("error: timed out waiting for the condition".into())),
        None => Ok(fut.await),
    }
}

/// The Deployment's ReplicaSets (those it controls), by revision.
async fn revisions_of(
    d: &Deployment,
    sets: &Api<ReplicaSet>,
) -> Result<BTreeMap<i64, ReplicaSet>, CommandError> {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let all = sets.list(&ListParams::default()).await?.items;
    Ok(all
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .map(|rs| (revisions::rs_revision(&rs), rs))
        .collect())
}

async fn history(
    deployments: &Api<Deployment>,
    sets: &Api<ReplicaSet>,
    name: &str,
    shown: &str,
    revision: i64,
) -> Result<(), CommandError> {
    let d = deployments.get(name).await?;
    let revs = revisions_of(&d, sets).await?;
    if revision > 0 {
        let rs = revs.get(&revision).ok_or_else(|| {
            CommandError(format!(
                "error: unable to find the specified revision {revision}"
            ))
        })?;
        let template = serde_norway::to_string(&rs.spec.template)
            .map_err(|e| CommandError(format!("error: {e}")))?;
        println!("{shown} with revision #{revision}\nPod Template:");
        for line in template.lines() {
            println!("  {line}");
        }
        return Ok(());
    }
    println!("{shown} \nREVISION  CHANGE-CAUSE");
    for (rev, rs) in &revs {
        let cause = rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CHANGE_CAUSE))
            .map_or("<none>", String::as_str);
        println!("{rev:<9} {cause}");
    }
    println!();
    Ok(())
}

async fn undo(
    deployments: &Api<Deployment>,
    sets: &Api<ReplicaSet>,
    name: &str,
    shown: &str,
    to_revision: i64,
) -> Result<(), CommandError> {
    let d = deployments.get(name).await?;
    if d.spec.paused == Some(true) {
        return Err(CommandError(format!(
            "error: you cannot rollback a paused deployment; resume it first with 'flotctl rollout resume {shown}' and try again"
        )));
    }
    let revs = revisions_of(&d, sets).await?;
    let rs = if to_revision == 0 {
        if revs.len() < 2 {
            return Err(CommandError(format!(
                "error: no rollout history found for deployment \"{name}\""
            )));
        }
        revs.values().rev().nth(1)
    } else {
        revs.get(&to_revision)
    };
    let Some(rs) = rs else {
        return Err(CommandError(format!(
            "error: unable to find specified revision {to_revision} in history"
        )));
    };
    let revision = revisions::rs_revision(rs);
    if revisions::same_template(rs, &d) {
        println!("{shown} skipped rollback (current template already matches revision {revision})");
        return Ok(());
    }
    let template = revisions::without_hash(&rs.spec.template.clone().unwrap_or_default());
    // The revision's own annotations come back with its template (change-cause above all).
    let mut annotations = d.metadata.annotations.clone().unwrap_or_default();
    for (k, v) in rs.metadata.annotations.iter().flatten() {
        if !revisions::is_own_annotation(k) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let patch = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": d.metadata.resource_version},
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ]);
    deployments.patch(name, &Patch::Json(patch)).await?;
    println!("{shown} rolled back");
    Ok(())
}
