//! `flotctl set image`: change container images of a workload's pod template (or a pod),
//! as kubectl does, without writing the whole manifest.

use clap::{Args, Subcommand};
use flotilla_client::Patch;
use serde_json::{Value, json};

use super::Global;
use super::commands::{CommandError, Session, one_target};

/// The `set` verbs.
#[derive(Subcommand, Debug)]
pub enum SetCommand {
    /// Set container images: TYPE/NAME CONTAINER=IMAGE… (`*` for every container).
    Image(ImageArgs),
}

/// `set image`.
#[derive(Args, Debug)]
pub struct ImageArgs {
    /// TYPE/NAME (or TYPE NAME), then CONTAINER=IMAGE pairs.
    #[arg(required = true)]
    pub args: Vec<String>,
}

/// Where a kind keeps its containers.
fn containers_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => {
            Some("/spec/template/spec")
        }
        _ => None,
    }
}

/// Runs a `set` verb.
pub async fn run(g: &Global, c: &SetCommand) -> Result<(), CommandError> {
    let SetCommand::Image(a) = c;
    let (ty, name, pairs) = one_target(&a.args)?;
    if pairs.is_empty() {
        return Err(CommandError(
            "error: at least one image update is required (CONTAINER=IMAGE)".into(),
        ));
    }
    let mut images = Vec::new();
    for p in &pairs {
        match p.split_once('=') {
            Some((c, i)) if !c.is_empty() && !i.is_empty() => images.push((c, i)),
            _ => {
                return Err(CommandError(format!(
                    "error: {p:?} is not a valid image update: use CONTAINER=IMAGE"
                )));
            }
        }
    }
    let s = Session::open(g).await?;
    let info = s.resolve(&ty)?;
    let Some(path) = containers_path(&info.kind) else {
        return Err(CommandError(format!(
            "error: {} has no pod template whose images could be set",
            info.kind
        )));
    };
    let api = s.client.dynamic(
        &info.api_version,
        &info.resource,
        &s.namespace_for(info, None),
    );
    let obj = api.get(&name, "").await?;
    let spec = obj.pointer(path).cloned().unwrap_or(Value::Null);
    let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion",
                               "value": obj["metadata"]["resourceVersion"]})];
    for (container, image) in &images {
        let mut found = false;
        for list in ["initContainers", "containers"] {
            for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
                if *container == "*" || c["name"] == *container {
                    found = true;
                    ops.push(json!({"op": "replace", "path": format!("{path}/{list}/{i}/image"), "value": image}));
                }
            }
        }
        if !found {
            return Err(CommandError(format!(
                "error: unable to find container named \"{container}\""
            )));
        }
    }
    api.patch(&name, "", &Patch::Json(Value::Array(ops)), false)
        .await?;
    println!(
        "{} image updated",
        super::printer::qualified_name(info, &name)
    );
    Ok(())
}
