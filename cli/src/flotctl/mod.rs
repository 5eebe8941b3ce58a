//! `flotctl`: the command line a kubectl user already knows, over the client library.
//!
//! - [`apply`]: client-side apply's record and three-way merge
//! - [`describe`]: `describe`'s layout per kind, with Events
//! - [`exec`]: `exec`, a command run in a container, its output and exit code passed on
//! - [`jsonpath`]: `-o jsonpath=…` templates
//! - [`manifest`]: reading `-f` files, directories and stdin
//! - [`printer`]: tables with kubectl's columns, names, ages
//! - [`rollout`]: `rollout status|history|undo|restart|pause|resume`
//! - [`set`]: `set image`
//! - [`commands`]: one function per verb
//! - [`node`]: `cordon`, `uncordon`, `drain`

pub mod apply;
pub mod autoscale;
pub mod commands;
pub mod describe;
pub mod exec;
pub mod jsonpath;
pub mod manifest;
pub mod node;
pub mod printer;
pub mod rollout;
pub mod set;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// flotctl controls a Flotilla cluster.
#[derive(Parser, Debug)]
#[command(name = "flotctl", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, as kubectl names them.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Path to the kubeconfig file (else $KUBECONFIG, else ~/.flotilla/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// The verbs.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the details of resources, with their Events.
    Describe(commands::DescribeArgs),
    /// Create or update resources from files or stdin (client-side apply).
    Apply(commands::ApplyArgs),
    /// Display one or many resources.
    Get(commands::GetArgs),
    /// Create resources from files or stdin, or a ConfigMap, Secret or Namespace.
    Create(commands::CreateArgs),
    /// Edit a resource in $EDITOR and save it back (a concurrent change is a conflict).
    Edit(commands::EditArgs),
    /// Print a container's log (-f to follow it).
    Logs(commands::LogsArgs),
    /// Run a command in a container: `exec POD [-c CONTAINER] -- COMMAND [ARGS…]`.
    Exec(exec::ExecArgs),
    /// Set the number of replicas of a ReplicaSet or Deployment.
    Scale(commands::ScaleArgs),
    /// Create a HorizontalPodAutoscaler for a Deployment or ReplicaSet.
    Autoscale(autoscale::AutoscaleArgs),
    /// Manage a Deployment's rollout: status, history, undo, restart, pause, resume.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Change parts of objects in place: `set image`.
    #[command(subcommand)]
    Set(set::SetCommand),
    /// Delete resources by file, by name or by label selector.
    Delete(commands::DeleteArgs),
    /// Replace resources from files (a stale resourceVersion is a conflict).
    Replace(commands::FileArgs),
    /// Patch a resource with a JSON merge patch or a JSON patch.
    Patch(commands::PatchArgs),
    /// Add, change (--overwrite) or remove (key-) labels.
    Label(commands::MetaArgs),
    /// Add, change (--overwrite) or remove (key-) annotations.
    Annotate(commands::MetaArgs),
    /// Mark a node unschedulable: no new pod is placed there.
    Cordon(node::NodeArgs),
    /// Mark a node schedulable again.
    Uncordon(node::NodeArgs),
    /// Cordon a node and remove its pods (for maintenance).
    Drain(node::DrainArgs),
    /// Show and change kubeconfig settings.
    #[command(subcommand)]
    Config(commands::ConfigCommand),
    /// Print the resource types the server serves.
    ApiResources,
    /// Print the client and server versions.
    Version,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}
