//! `flotctl autoscale TYPE/NAME --max N [--min N] [--cpu-percent P]`: a
//! HorizontalPodAutoscaler for a Deployment or ReplicaSet, as kubectl makes one.

use clap::Args;
use serde_json::json;

use super::Global;
use super::commands::{CommandError, Session, one_target};

/// `autoscale` flags.
#[derive(Args, Debug)]
pub struct AutoscaleArgs {
    /// TYPE NAME, or TYPE/NAME (deployments, replicasets).
    #[arg(required = true)]
    pub args: Vec<String>,
    /// The most replicas the autoscaler may set.
    #[arg(long)]
    pub max: i32,
    /// The fewest replicas it may set (-1: the server's default, 1).
    #[arg(long, default_value_t = -1)]
    pub min: i32,
    /// The target average cpu use, in percent of the pods' requests (-1: the server's
    /// default, 80).
    #[arg(long, default_value_t = -1)]
    pub cpu_percent: i32,
    /// The autoscaler's name (default: the target's).
    #[arg(long)]
    pub name: Option<String>,
}

/// Creates the autoscaler.
pub async fn run(g: &Global, a: &AutoscaleArgs) -> Result<(), CommandError> {
    let (ty, target, rest) = one_target(&a.args)?;
    if !rest.is_empty() {
        return Err(CommandError(format!(
            "error: unexpected arguments: {}",
            rest.join(" ")
        )));
    }
    let s = Session::open(g).await?;
    let info = s.resolve(&ty)?;
    let ns = s.namespace_for(info, None);
    // The target must exist: an autoscaler of nothing would only report so.
    s.client
        .dynamic(&info.api_version, &info.resource, &ns)
        .get(&target, "")
        .await?;
    let name = a.name.clone().unwrap_or_else(|| target.clone());
    let mut spec = json!({
        "scaleTargetRef": {"apiVersion": info.api_version, "kind": info.kind, "name": target},
        "maxReplicas": a.max,
    });
    if a.min >= 0 {
        spec["minReplicas"] = json!(a.min);
    }
    if a.cpu_percent >= 0 {
        spec["metrics"] = json!([{
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": a.cpu_percent}}
        }]);
    }
    let hpa = json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    s.client
        .dynamic("autoscaling/v2", "horizontalpodautoscalers", &ns)
        .create(&hpa, false)
        .await?;
    println!("horizontalpodautoscaler.autoscaling/{name} autoscaled");
    Ok(())
}
