//! The verbs. Each returns Ok when everything it was asked to do succeeded; errors are
//! printed as they happen so that one bad object does not hide the others.

use std::fmt::Write as _;

use clap::Args;
use flotilla_client::{Client, ClientError, DeleteParams, Kubeconfig, ListParams};
use flotilla_proto::api::ResourceInfo;
use serde_json::Value;

use super::manifest;
use super::printer::{columns, qualified_name, row, table};
use super::{Command, Global};

/// A failed command; the message is what flotctl prints before exiting non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> Self {
        CommandError(format!("error: {e}"))
    }
}

/// `get` flags.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// TYPE[,TYPE…] [NAME…], or TYPE/NAME.
    #[arg(required = true)]
    pub args: Vec<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Output: wide, yaml, json, name.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Show labels as the last column.
    #[arg(long)]
    pub show_labels: bool,
    /// After listing, watch for changes and print each as a row.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// `patch` flags.
#[derive(Args, Debug)]
pub struct PatchArgs {
    /// TYPE NAME, or TYPE/NAME.
    #[arg(required = true)]
    pub args: Vec<String>,
    /// The patch, as JSON (or YAML).
    #[arg(short = 'p', long)]
    pub patch: String,
    /// merge (RFC 7386) or json (RFC 6902).
    #[arg(long = "type", default_value = "merge")]
    pub patch_type: String,
    /// The subresource to patch (status, scale).
    #[arg(long)]
    pub subresource: Option<String>,
}

/// `label` / `annotate` flags.
#[derive(Args, Debug)]
pub struct MetaArgs {
    /// TYPE NAME KEY=VALUE… KEY-…, or TYPE/NAME KEY=VALUE…
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Allow changing a key that already has a value.
    #[arg(long)]
    pub overwrite: bool,
}

/// `scale` flags.
#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// TYPE NAME, or TYPE/NAME (replicasets, deployments).
    #[arg(required = true)]
    pub args: Vec<String>,
    /// The new number of replicas.
    #[arg(long)]
    pub replicas: i32,
    /// Only if the current number of replicas is this (-1: any).
    #[arg(long, default_value_t = -1)]
    pub current_replicas: i32,
}

/// `config` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the merged kubeconfig (tokens redacted unless --raw).
    View {
        /// Show credentials.
        #[arg(long)]
        raw: bool,
    },
    /// Print the current context.
    CurrentContext,
    /// List the contexts.
    GetContexts,
    /// Set the current context in the kubeconfig file.
    UseContext {
        /// The context.
        name: String,
    },
}

/// `-f` flags.
#[derive(Args, Debug)]
pub struct FileArgs {
    /// Files, directories or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Recurse into directories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// `server`: validate on the server without storing.
    #[arg(long)]
    pub dry_run: Option<String>,
}

/// `create` flags: files, or one of the generators.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CreateArgs {
    /// What to create by name.
    #[command(subcommand)]
    pub what: Option<CreateWhat>,
    /// Files, directories or - for stdin.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Recurse into directories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// `server`: validate on the server without storing.
    #[arg(long)]
    pub dry_run: Option<String>,
}

/// `create` generators.
#[derive(clap::Subcommand, Debug)]
pub enum CreateWhat {
    /// A ConfigMap from literals and files.
    #[command(alias = "cm")]
    Configmap(FromArgs),
    /// A Secret.
    #[command(subcommand)]
    Secret(SecretKind),
    /// A Namespace.
    #[command(alias = "ns")]
    Namespace {
        /// Its name.
        name: String,
    },
}

/// `create secret` kinds.
#[derive(clap::Subcommand, Debug)]
pub enum SecretKind {
    /// An Opaque secret from literals and files.
    Generic(FromArgs),
}

/// Where a ConfigMap's or Secret's data comes from.
#[derive(Args, Debug)]
pub struct FromArgs {
    /// The object's name.
    pub name: String,
    /// KEY=VALUE (repeatable).
    #[arg(long)]
    pub from_literal: Vec<String>,
    /// [KEY=]PATH: a file's content under its name (or KEY), or every file of a directory.
    #[arg(long)]
    pub from_file: Vec<String>,
}

/// `describe` flags.
#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// TYPE [NAME…], or TYPE/NAME.
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

/// `logs` flags.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The pod: NAME or pod/NAME.
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep printing new output until the container ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last lines (-1: all).
    #[arg(long, default_value_t = -1)]
    pub tail: i64,
    /// The container's previous instance (before its last restart).
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only lines newer than this (5s, 2m, 3h).
    #[arg(long, value_parser = crate::etcd::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Prefix each line with its time.
    #[arg(long)]
    pub timestamps: bool,
}

/// `edit` flags.
#[derive(Args, Debug)]
pub struct EditArgs {
    /// TYPE NAME, or TYPE/NAME.
    #[arg(required = true)]
    pub args: Vec<String>,
}

/// `apply` flags.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Files, directories or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Recurse into directories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// `client`: only print what would be done; `server`: validate on the server too.
    #[arg(long)]
    pub dry_run: Option<String>,
}

/// `delete` flags.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// TYPE NAME…, or TYPE/NAME.
    pub args: Vec<String>,
    /// Files, directories or - for stdin.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Recurse into directories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Seconds a pod gets to stop (0: at once).
    #[arg(long)]
    pub grace_period: Option<i64>,
    /// Treat "not found" as success.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Wait until the objects are gone (finalizers done, pods stopped).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// What happens to dependents: background (deleted after), foreground (deleted
    /// first) or orphan (kept); true means background, false orphan.
    #[arg(long, default_value = "background", value_parser = parse_cascade)]
    pub cascade: String,
}

/// kubectl's --cascade values, as the API's propagation policy.
fn parse_cascade(s: &str) -> Result<String, String> {
    match s {
        "background" | "true" => Ok("Background".into()),
        "foreground" => Ok("Foreground".into()),
        "orphan" | "false" => Ok("Orphan".into()),
        other => Err(format!(
            "invalid --cascade value {other:?}: must be background, foreground or orphan"
        )),
    }
}

/// A connection plus what the server serves.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) resources: Vec<ResourceInfo>,
}

/// A client for the kubeconfig context the global flags name.
pub(super) fn connect(g: &Global) -> Result<Client, CommandError> {
    let cfg = Kubeconfig::load(g.kubeconfig.as_deref())
        .map_err(|e| CommandError(format!("error: {e}")))?;
    let resolved = cfg
        .resolve(g.context.as_deref())
        .map_err(|e| CommandError(format!("error: {e}")))?;
    Ok(Client::new(&resolved)?)
}

impl Session {
    pub(crate) async fn open(g: &Global) -> Result<Self, CommandError> {
        let client = connect(g)?;
        let resources = client.discover().await?;
        Ok(Session {
            namespace: g
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
            client,
            resources,
        })
    }

    /// A resource by plural, singular, short name or kind, as kubectl resolves it.
    pub(crate) fn resolve(&self, name: &str) -> Result<&ResourceInfo, CommandError> {
        let (name, group) = name.split_once('.').unwrap_or((name, ""));
        let lower = name.to_ascii_lowercase();
        self.resources
            .iter()
            .filter(|r| group.is_empty() || r.api_version.starts_with(&format!("{group}/")))
            .find(|r| {
                r.resource == lower
                    || r.singular == lower
                    || r.kind.to_ascii_lowercase() == lower
                    || r.short_names.contains(&lower)
            })
            .ok_or_else(|| {
                CommandError(format!(
                    "error: the server doesn't have a resource type \"{name}\""
                ))
            })
    }

    /// The resource of a manifest's apiVersion and kind.
    fn for_kind(&self, api_version: &str, kind: &str) -> Result<&ResourceInfo, CommandError> {
        self.resources
            .iter()
            .find(|r| r.api_version == api_version && r.kind == kind)
            .ok_or_else(|| CommandError(format!("error: resource mapping not found for kind \"{kind}\" in version \"{api_version}\"")))
    }

    /// A manifest's resource and the API it goes through (its namespace, or the session's).
    fn locate_doc(
        &self,
        d: &manifest::Document,
    ) -> Result<(&ResourceInfo, flotilla_client::DynamicApi), CommandError> {
        let info = self.for_kind(
            d.object["apiVersion"].as_str().unwrap_or_default(),
            d.object["kind"].as_str().unwrap_or_default(),
        )?;
        let ns = self.namespace_for(info, Some(&d.object));
        Ok((
            info,
            self.client.dynamic(&info.api_version, &info.resource, &ns),
        ))
    }

    pub(crate) fn namespace_for(&self, info: &ResourceInfo, obj: Option<&Value>) -> String {
        if !info.namespaced {
            return String::new();
        }
        obj.and_then(|o| o["metadata"]["namespace"].as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| self.namespace.clone())
    }
}

/// Runs a command; prints its output; Ok carries the status flotctl exits with (not 0
/// only when `exec`'s command failed); Err carries the message of the last failure.
pub async fn run(g: &Global, cmd: &Command) -> Result<u8, CommandError> {
    let done = match cmd {
        Command::Exec(a) => return super::exec::run(g, a).await,
        Command::Version => {
            println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
            let s = Session::open(g).await?;
            println!("Server Version: v{}", s.client.server_version().await?);
            Ok(())
        }
        Command::ApiResources => {
            let s = Session::open(g).await?;
            let header: Vec<String> = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
                .map(String::from)
                .to_vec();
            let rows: Vec<Vec<String>> = s
                .resources
                .iter()
                .map(|r| {
                    vec![
                        r.resource.clone(),
                        r.short_names.join(","),
                        r.api_version.clone(),
                        r.namespaced.to_string(),
                        r.kind.clone(),
                    ]
                })
                .collect();
            print!("{}", table(&header, &rows));
            Ok(())
        }
        Command::Get(a) => get(g, a).await,
        Command::Create(a) => match &a.what {
            Some(what) => create_generated(g, what, &a.dry_run).await,
            None if a.files.is_empty() => Err(CommandError("error: must specify one of -f or a resource to create (configmap, secret generic, namespace)".into())),
            None => {
                create(
                    g,
                    &FileArgs {
                        files: a.files.clone(),
                        recursive: a.recursive,
                        dry_run: a.dry_run.clone(),
                    },
                )
                .await
            }
        },
        Command::Edit(a) => edit(g, a).await,
        Command::Logs(a) => logs(g, a).await,
        Command::Scale(a) => scale(g, a).await,
        Command::Autoscale(a) => super::autoscale::run(g, a).await,
        Command::Rollout(c) => super::rollout::run(g, c).await,
        Command::Set(c) => super::set::run(g, c).await,
        Command::Describe(a) => describe(g, a).await,
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut super::Cli::command(), "flotctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Apply(a) => apply(g, a).await,
        Command::Replace(a) => replace(g, a).await,
        Command::Patch(a) => patch(g, a).await,
        Command::Label(a) => set_meta(g, a, "labels", "labeled").await,
        Command::Annotate(a) => set_meta(g, a, "annotations", "annotated").await,
        Command::Config(c) => config(g, c),
        Command::Delete(a) => delete(g, a).await,
        Command::Cordon(a) => super::node::cordon(g, a).await,
        Command::Uncordon(a) => super::node::uncordon(g, a).await,
        Command::Drain(a) => super::node::drain(g, a).await,
    };
    done.map(|()| 0)
}

/// Splits `get`/`delete` arguments into (resource, names) pairs: `TYPE[,TYPE] [NAME…]` or
/// `TYPE/NAME…`.
fn targets(args: &[String]) -> Result<Vec<(String, Vec<String>)>, CommandError> {
    if args.iter().any(|a| a.contains('/')) {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for a in args {
            let (t, n) = a
                .split_once('/')
                .ok_or_else(|| CommandError(format!("error: there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'flotctl get resource/<resource_name>' instead of 'flotctl get resource resource/<resource_name>'): {a}")))?;
            match out.iter_mut().find(|(ty, _)| ty == t) {
                Some((_, names)) => names.push(n.to_string()),
                None => out.push((t.to_string(), vec![n.to_string()])),
            }
        }
        return Ok(out);
    }
    let Some((types, names)) = args.split_first() else {
        return Err(CommandError(
            "error: you must specify the type of resource".into(),
        ));
    };
    Ok(types
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| (t.to_string(), names.to_vec()))
        .collect())
}

async fn get(g: &Global, a: &GetArgs) -> Result<(), CommandError> {
    let s = Session::open(g).await?;
    let (output, template) = match a.output.as_deref().unwrap_or("") {
        o if o.starts_with("jsonpath=") => {
            ("jsonpath", o.trim_start_matches("jsonpath=").to_string())
        }
        o => (o, String::new()),
    };
    if !["", "wide", "yaml", "json", "name", "jsonpath"].contains(&output) {
        return Err(CommandError(format!(
            "error: unable to match a printer suitable for the output format \"{output}\", allowed formats are: json,jsonpath,name,wide,yaml"
        )));
    }
    let targets = targets(&a.args)?;
    let several = targets.len() > 1;
    let mut objects: Vec<Value> = Vec::new();
    let mut failed = None;
    let mut text = String::new();
    let mut list_rv = String::new();
    if a.watch && targets.len() > 1 {
        return Err(CommandError(
            "error: you may only specify a single resource type when watching".into(),
        ));
    }
    for (ty, names) in &targets {
        let info = s.resolve(ty)?;
        let ns = if a.all_namespaces || !info.namespaced {
            String::new()
        } else {
            s.namespace.clone()
        };
        let api = s.client.dynamic(&info.api_version, &info.resource, &ns);
        let mut items = Vec::new();
        if names.is_empty() {
            let p = ListParams {
                label_selector: a.selector.clone().unwrap_or_default(),
                field_selector: a.field_selector.clone().unwrap_or_default(),
                ..Default::default()
            };
            let page = api.list(&p).await?;
            list_rv = page.resource_version;
            items = page.items;
        } else {
            for n in names {
                match api.get(n, "").await {
                    Ok(o) => items.push(o),
                    Err(e) => {
                        eprintln!("Error from server ({}): {e}", reason(&e));
                        failed = Some(CommandError(String::new()));
                    }
                }
            }
        }
        match output {
            "json" | "yaml" | "jsonpath" => objects.extend(items),
            "name" => {
                for o in &items {
                    let _ = writeln!(
                        text,
                        "{}",
                        qualified_name(info, o["metadata"]["name"].as_str().unwrap_or_default())
                    );
                }
            }
            _ => {
                if items.is_empty() {
                    continue;
                }
                let wide = output == "wide";
                let mut header: Vec<String> = columns(&info.resource, wide)
                    .into_iter()
                    .map(String::from)
                    .collect();
                let ns_column = a.all_namespaces && info.namespaced;
                if ns_column {
                    header.insert(0, "NAMESPACE".into());
                }
                if a.show_labels {
                    header.push("LABELS".into());
                }
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|o| {
                        let mut r = row(&info.resource, o, wide);
                        if several {
                            r[0] = qualified_name(info, &r[0]);
                        }
                        if ns_column {
                            r.insert(
                                0,
                                o["metadata"]["namespace"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                            );
                        }
                        if a.show_labels {
                            r.push(labels(o));
                        }
                        r
                    })
                    .collect();
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&table(&header, &rows));
            }
        }
    }
    match output {
        "json" | "yaml" | "jsonpath" => {
            let doc = if objects.len() == 1 && targets.iter().all(|(_, n)| n.len() == 1) {
                objects.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": objects})
            };
            if output == "jsonpath" {
                print!(
                    "{}",
                    super::jsonpath::apply(&template, &doc)
                        .map_err(|e| CommandError(format!("error: {e}")))?
                );
            } else if output == "json" {
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{}", serde_norway::to_string(&doc).unwrap_or_default());
            }
        }
        _ if text.is_empty() && failed.is_none() && !a.watch => {
            let where_ = if a.all_namespaces {
                String::new()
            } else {
                format!(" in {} namespace", s.namespace)
            };
            eprintln!("No resources found{where_}.");
        }
        _ => print!("{text}"),
    }
    if a.watch {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if let Some((ty, names)) = targets.first() {
            return watch_rows(&s, a, s.resolve(ty)?, names, list_rv, text.is_empty()).await;
        }
    }
    failed.map_or(Ok(()), Err)
}

/// `get -w`: prints every change as a row, resuming on disconnect and re-listing when the
/// resourceVersion is too old; runs until interrupted.
async fn watch_rows(
    s: &Session,
    a: &GetArgs,
    info: &ResourceInfo,
    names: &[String],
    mut rv: String,
    mut need_header: bool,
) -> Result<(), CommandError> {
    use futures::StreamExt;
    use std::io::Write as _;
    let ns = if a.all_namespaces || !info.namespaced {
        String::new()
    } else {
        s.namespace.clone()
    };
    let api = s.client.dynamic(&info.api_version, &info.resource, &ns);
    let p = ListParams {
        label_selector: a.selector.clone().unwrap_or_default(),
        field_selector: a.field_selector.clone().unwrap_or_default(),
        ..Default::default()
    };
    let wide = a.output.as_deref() == Some("wide");
    let mut widths: Vec<usize> = Vec::new();
    loop {
        let mut stream = match api.watch(&p, &rv, true).await {
            Ok(st) => st,
            Err(e) if e.is_expired() => {
                rv = api.list(&p).await?.resource_version;
                continue;
            }
            Err(e @ (ClientError::Unavailable(_) | ClientError::Unreachable { .. })) => {
                eprintln!("warning: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(ev) = stream.next().await {
            let obj = match ev {
                Ok(flotilla_client::WatchEvent::Bookmark(r)) => {
                    rv = r;
                    continue;
                }
                Ok(
                    flotilla_client::WatchEvent::Added(o)
                    | flotilla_client::WatchEvent::Modified(o)
                    | flotilla_client::WatchEvent::Deleted(o),
                ) => o,
                Err(e) if e.is_expired() => {
                    rv = api.list(&p).await?.resource_version;
                    break;
                }
                Err(_) => break,
            };
            rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            if !names.is_empty() && !names.iter().any(|n| n == name) {
                continue;
            }
            let mut header: Vec<String> = columns(&info.resource, wide)
                .into_iter()
                .map(String::from)
                .collect();
            let mut r = row(&info.resource, &obj, wide);
            if a.all_namespaces && info.namespaced {
                header.insert(0, "NAMESPACE".into());
                r.insert(
                    0,
                    obj["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            if widths.is_empty() {
                widths = header.iter().map(|h| h.len().max(20)).collect();
            }
            let fmt = |cells: &[String]| -> String {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
                    .collect::<Vec<_>>()
                    .join("   ")
                    .trim_end()
                    .to_string()
            };
            if need_header {
                println!("{}", fmt(&header));
                need_header = false;
            }
            println!("{}", fmt(&r));
            let _ = std::io::stdout().flush();
        }
    }
}

fn labels(o: &Value) -> String {
    let l: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if l.is_empty() {
        "<none>".into()
    } else {
        l.join(",")
    }
}

/// kubectl's name for a server status, as in `Error from server (NotFound)`.
pub(super) fn reason(e: &ClientError) -> &'static str {
    match e {
        ClientError::NotFound(_) => "NotFound",
        ClientError::AlreadyExists(_) => "AlreadyExists",
        ClientError::Conflict(_) => "Conflict",
        ClientError::Invalid { .. } => "Invalid",
        ClientError::BadRequest(_) => "BadRequest",
        ClientError::Expired(_) => "Expired",
        ClientError::TooLarge(_) => "RequestEntityTooLarge",
        ClientError::Unauthorized(_) => "Unauthorized",
        ClientError::Forbidden(_) => "Forbidden",
        _ => "InternalError",
    }
}

fn dry_run_flag(v: &Option<String>) -> Result<bool, CommandError> {
    match v.as_deref() {
        None | Some("none") => Ok(false),
        Some("server") => Ok(true),
        Some(other) => Err(CommandError(format!(
            "error: invalid dry-run value ({other}); must be \"none\" or \"server\""
        ))),
    }
}

async fn create(g: &Global, a: &FileArgs) -> Result<(), CommandError> {
    let dry_run = dry_run_flag(&a.dry_run)?;
    let docs = manifest::read_all(&a.files, a.recursive)
        .map_err(|e| CommandError(format!("error: {e}")))?;
    let s = Session::open(g).await?;
    let mut failed = None;
    for d in docs {
        let (info, api) = match s.locate_doc(&d) {
            Ok(found) => found,
            Err(e) => {
                eprintln!("{}: {}", d.origin, e.0.trim_start_matches("error: "));
                failed = Some(CommandError(String::new()));
                continue;
            }
        };
        match api.create(&d.object, dry_run).await {
            Ok(created) => {
                let suffix = if dry_run { " (server dry run)" } else { "" };
                println!(
                    "{} created{suffix}",
                    qualified_name(
                        info,
                        created["metadata"]["name"].as_str().unwrap_or_default()
                    )
                );
            }
            Err(e) => {
                eprintln!(
                    "Error from server ({}): error when creating \"{}\": {e}",
                    reason(&e),
                    d.origin
                );
                failed = Some(CommandError(String::new()));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

async fn apply(g: &Global, a: &ApplyArgs) -> Result<(), CommandError> {
    let (client_only, server_dry) = match a.dry_run.as_deref() {
        None | Some("none") => (false, false),
        Some("client") => (true, false),
        Some("server") => (false, true),
        Some(other) => {
            return Err(CommandError(format!(
                "error: invalid dry-run value ({other}); must be \"none\", \"server\", or \"client\""
            )));
        }
    };
    let suffix = match (client_only, server_dry) {
        (true, _) => " (dry run)",
        (_, true) => " (server dry run)",
        _ => "",
    };
    let docs = manifest::read_all(&a.files, a.recursive)
        .map_err(|e| CommandError(format!("error: {e}")))?;
    let s = Session::open(g).await?;
    let mut failed = None;
    for d in docs {
        let (info, api) = match s.locate_doc(&d) {
            Ok(found) => found,
            Err(e) => {
                eprintln!("{}: {}", d.origin, e.0.trim_start_matches("error: "));
                failed = Some(CommandError(String::new()));
                continue;
            }
        };
        let name = d.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let sent = super::apply::with_record(&d.object);
        let outcome = match api.get(&name, "").await {
            Err(e) if e.is_not_found() => {
                if client_only {
                    Ok("created")
                } else {
                    api.create(&sent, server_dry).await.map(|_| "created")
                }
            }
            Err(e) => Err(e),
            Ok(live) => {
                let original = super::apply::recorded(&live);
                let patch = super::apply::three_way_merge_patch(&original, &sent, &live);
                if super::apply::is_empty(&patch) {
                    Ok("unchanged")
                } else if client_only {
                    Ok("configured")
                } else {
                    api.patch(&name, "", &flotilla_client::Patch::Merge(patch), server_dry)
                        .await
                        .map(|_| "configured")
                }
            }
        };
        match outcome {
            Ok(what) => println!("{} {what}{suffix}", qualified_name(info, &name)),
            Err(e) => {
                eprintln!(
                    "Error from server ({}): error when applying \"{}\": {e}",
                    reason(&e),
                    d.origin
                );
                failed = Some(CommandError(String::new()));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

async fn replace(g: &Global, a: &FileArgs) -> Result<(), CommandError> {
    let dry_run = dry_run_flag(&a.dry_run)?;
    let docs = manifest::read_all(&a.files, a.recursive)
        .map_err(|e| CommandError(format!("error: {e}")))?;
    let s = Session::open(g).await?;
    let mut failed = None;
    for d in docs {
        let result = async {
            let info = s.for_kind(
                d.object["apiVersion"].as_str().unwrap_or_default(),
                d.object["kind"].as_str().unwrap_or_default(),
            )?;
            let ns = s.namespace_for(info, Some(&d.object));
            let out = s
                .client
                .dynamic(&info.api_version, &info.resource, &ns)
                .update(&d.object, "", dry_run)
                .await?;
            println!(
                "{} replaced",
                qualified_name(info, out["metadata"]["name"].as_str().unwrap_or_default())
            );
            Ok::<(), CommandError>(())
        };
        if let Err(e) = result.await {
            eprintln!("{}: {}", d.origin, e.0.trim_start_matches("error: "));
            failed = Some(CommandError(String::new()));
        }
    }
    failed.map_or(Ok(()), Err)
}

/// `TYPE NAME rest…` or `TYPE/NAME rest…` → (type, name, rest).
pub(crate) fn one_target(args: &[String]) -> Result<(String, String, Vec<String>), CommandError> {
    match args {
        [first, rest @ ..] if first.contains('/') => {
            let (t, n) = first.split_once('/').unwrap_or_default();
            Ok((t.to_string(), n.to_string(), rest.to_vec()))
        }
        [t, n, rest @ ..] => Ok((t.clone(), n.clone(), rest.to_vec())),
        _ => Err(CommandError(
            "error: you must specify the type and name of a resource".into(),
        )),
    }
}

async fn scale(g: &Global, a: &ScaleArgs) -> Result<(), CommandError> {
    let (ty, name, rest) = one_target(&a.args)?;
    if !rest.is_empty() {
        return Err(CommandError(format!(
            "error: unexpected arguments: {}",
            rest.join(" ")
        )));
    }
    if a.replicas < 0 {
        return Err(CommandError(
            "error: The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0".into(),
        ));
    }
    let s = Session::open(g).await?;
    let info = s.resolve(&ty)?;
    let api = s.client.dynamic(
        &info.api_version,
        &info.resource,
        &s.namespace_for(info, None),
    );
    let current = api.get_sub(&name, "scale", "").await?;
    if a.current_replicas >= 0
        && current["spec"]["replicas"].as_i64() != Some(i64::from(a.current_replicas))
    {
        return Err(CommandError(format!(
            "error: Expected replicas to be {}, was {}",
            a.current_replicas,
            current["spec"]["replicas"].as_i64().unwrap_or(0)
        )));
    }
    let mut scale = current;
    scale["spec"]["replicas"] = serde_json::json!(a.replicas);
    // Replacing the scale carries its resourceVersion: a concurrent change is a conflict.
    api.update(&scale, "scale", false).await?;
    println!("{} scaled", super::printer::qualified_name(info, &name));
    Ok(())
}

async fn patch(g: &Global, a: &PatchArgs) -> Result<(), CommandError> {
    let (ty, name, rest) = one_target(&a.args)?;
    if !rest.is_empty() {
        return Err(CommandError(format!(
            "error: unexpected arguments: {}",
            rest.join(" ")
        )));
    }
    let doc: Value = serde_norway::from_str(&a.patch)
        .map_err(|e| CommandError(format!("error: unable to parse \"{}\": {e}", a.patch)))?;
    let p =
        match a.patch_type.as_str() {
            "merge" => flotilla_client::Patch::Merge(doc),
            "json" => flotilla_client::Patch::Json(doc),
            "strategic" => return Err(CommandError(
                "error: strategic merge patch is not supported; use --type merge or --type json"
                    .into(),
            )),
            other => {
                return Err(CommandError(format!(
                    "error: --type must be one of [json merge], not \"{other}\""
                )));
            }
        };
    let s = Session::open(g).await?;
    let info = s.resolve(&ty)?;
    let api = s.client.dynamic(
        &info.api_version,
        &info.resource,
        &s.namespace_for(info, None),
    );
    let sub = a.subresource.clone().unwrap_or_default();
    let before = api.get_sub(&name, &sub, "").await?;
    let after = api.patch(&name, &sub, &p, false).await?;
    let same = before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"];
    println!(
        "{} patched{}",
        qualified_name(info, &name),
        if same { " (no change)" } else { "" }
    );
    Ok(())
}

async fn set_meta(g: &Global, a: &MetaArgs, field: &str, verb: &str) -> Result<(), CommandError> {
    let (ty, name, changes) = one_target(&a.args)?;
    if changes.is_empty() {
        return Err(CommandError(format!(
            "error: at least one {} update is required",
            &field[..field.len() - 1]
        )));
    }
    let s = Session::open(g).await?;
    let info = s.resolve(&ty)?;
    let api = s.client.dynamic(
        &info.api_version,
        &info.resource,
        &s.namespace_for(info, None),
    );
    let live = api.get(&name, "").await?;
    let current = &live["metadata"][field];
    let mut patch = serde_json::Map::new();
    for c in &changes {
        if let Some(key) = c.strip_suffix('-') {
            if !current[key].is_null() {
                patch.insert(key.to_string(), Value::Null);
            }
            continue;
        }
        let (k, v) = c.split_once('=').ok_or_else(|| {
            CommandError(format!(
                "error: invalid {} format: {c} (expected KEY=VALUE or KEY-)",
                &field[..field.len() - 1]
            ))
        })?;
        match current[k].as_str() {
            Some(old) if old == v => {}
            Some(old) if !a.overwrite => {
                return Err(CommandError(format!(
                    "error: '{k}' already has a value ({old}), and --overwrite is false"
                )));
            }
            _ => {
                patch.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
    }
    if patch.is_empty() {
        println!("{} not {verb}", qualified_name(info, &name));
        return Ok(());
    }
    let body = serde_json::json!({"metadata": {field: patch, "resourceVersion": live["metadata"]["resourceVersion"]}});
    api.patch(&name, "", &flotilla_client::Patch::Merge(body), false)
        .await?;
    println!("{} {verb}", qualified_name(info, &name));
    Ok(())
}

fn config(g: &Global, c: &ConfigCommand) -> Result<(), CommandError> {
    let err = |e: flotilla_client::kubeconfig::KubeconfigError| CommandError(format!("error: {e}"));
    let cfg = Kubeconfig::load(g.kubeconfig.as_deref()).map_err(err)?;
    match c {
        ConfigCommand::View { raw } => {
            let mut shown = cfg.clone();
            if !raw {
                for u in &mut shown.users {
                    for secret in [&mut u.user.token, &mut u.user.client_key_data] {
                        if secret.is_some() {
                            *secret = Some("REDACTED".into());
                        }
                    }
                }
            }
            print!(
                "{}",
                serde_norway::to_string(&shown).map_err(|e| CommandError(format!("error: {e}")))?
            );
        }
        ConfigCommand::CurrentContext => {
            match cfg.current_context.as_deref().filter(|c| !c.is_empty()) {
                Some(c) => println!("{c}"),
                None => return Err(CommandError("error: current-context is not set".into())),
            }
        }
        ConfigCommand::GetContexts => {
            let header: Vec<String> = ["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"]
                .map(String::from)
                .to_vec();
            let rows: Vec<Vec<String>> = cfg
                .contexts
                .iter()
                .map(|c| {
                    let current = if cfg.current_context.as_deref() == Some(c.name.as_str()) {
                        "*"
                    } else {
                        ""
                    };
                    vec![
                        current.into(),
                        c.name.clone(),
                        c.context.cluster.clone(),
                        c.context.user.clone(),
                        c.context.namespace.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!("{}", table(&header, &rows));
        }
        ConfigCommand::UseContext { name } => {
            cfg.resolve(Some(name)).map_err(err)?;
            let path = cfg
                .sources
                .first()
                .cloned()
                .ok_or_else(|| CommandError("error: no kubeconfig file to write".into()))?;
            let mut file = Kubeconfig::read(&path).map_err(err)?;
            file.current_context = Some(name.clone());
            let text =
                serde_norway::to_string(&file).map_err(|e| CommandError(format!("error: {e}")))?;
            std::fs::write(&path, text)
                .map_err(|e| CommandError(format!("error: writing {}: {e}", path.display())))?;
            println!("Switched to context \"{name}\".");
        }
    }
    Ok(())
}

/// Polls until the object is gone (the server answers NotFound) or `timeout` passes.
async fn wait_gone(
    api: &flotilla_client::DynamicApi,
    name: &str,
    timeout: std::time::Duration,
) -> Result<(), CommandError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.get(name, "").await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) if tokio::time::Instant::now() >= deadline => {
                return Err(CommandError(format!(
                    "error: timed out after {timeout:?} waiting for {name} to be deleted"
                )));
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// The data of `--from-literal` and `--from-file`, with kubectl's rules (a directory
/// contributes each regular file; a key may appear once).
fn gather_data(a: &FromArgs) -> Result<Vec<(String, Vec<u8>)>, CommandError> {
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |k: String, v: Vec<u8>| -> Result<(), CommandError> {
        if data.iter().any(|(x, _)| *x == k) {
            return Err(CommandError(format!(
                "error: cannot add key {k}, another key by that name already exists"
            )));
        }
        data.push((k, v));
        Ok(())
    };
    for l in &a.from_literal {
        let (k, v) = l.split_once('=').ok_or_else(|| {
            CommandError(format!(
                "error: invalid literal source {l}, expected key=value"
            ))
        })?;
        add(k.to_string(), v.as_bytes().to_vec())?;
    }
    for f in &a.from_file {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => (Some(k.to_string()), std::path::PathBuf::from(p)),
            None => (None, std::path::PathBuf::from(f)),
        };
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| CommandError(format!("error: reading {}: {e}", p.display())))
        };
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .map_err(|e| CommandError(format!("error: reading {}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            for p in entries {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                add(name, read(&p)?)?;
            }
        } else {
            let name = key.unwrap_or_else(|| {
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            add(name, read(&path)?)?;
        }
    }
    Ok(data)
}

async fn create_generated(
    g: &Global,
    what: &CreateWhat,
    dry_run: &Option<String>,
) -> Result<(), CommandError> {
    use base64::Engine;
    let dry = dry_run_flag(dry_run)?;
    let obj = match what {
        CreateWhat::Namespace { name } => {
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        }
        CreateWhat::Configmap(a) => {
            let mut data = serde_json::Map::new();
            let mut binary = serde_json::Map::new();
            for (k, v) in gather_data(a)? {
                match String::from_utf8(v) {
                    Ok(text) => data.insert(k, Value::String(text)),
                    Err(e) => binary.insert(
                        k,
                        Value::String(
                            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                        ),
                    ),
                };
            }
            let mut o = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": a.name}, "data": data});
            if !binary.is_empty() {
                o["binaryData"] = Value::Object(binary);
            }
            o
        }
        CreateWhat::Secret(SecretKind::Generic(a)) => {
            let data: serde_json::Map<String, Value> = gather_data(a)?
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                    )
                })
                .collect();
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": a.name}, "data": data})
        }
    };
    let s = Session::open(g).await?;
    let info = s.for_kind(
        obj["apiVersion"].as_str().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default(),
    )?;
    let ns = s.namespace_for(info, None);
    let created = s
        .client
        .dynamic(&info.api_version, &info.resource, &ns)
        .create(&obj, dry)
        .await
        .map_err(|e| CommandError(format!("error: failed to create {}: {e}", info.singular)))?;
    let suffix = if dry { " (server dry run)" } else { "" };
    println!(
        "{} created{suffix}",
        qualified_name(
            info,
            created["metadata"]["name"].as_str().unwrap_or_default()
        )
    );
    Ok(())
}

/// One pod of a workload, for `logs TYPE/NAME` and `exec TYPE/NAME`: a running one if
/// there is one, the newest first, as kubectl picks (and says which on stderr). `doing`
/// completes the refusal of kinds without pods ("cannot {doing} a Service").
async fn pod_of(
    s: &Session,
    ns: &str,
    kind: &str,
    name: &str,
    doing: &str,
) -> Result<String, CommandError> {
    let info = s.resolve(kind)?;
    if !matches!(
        info.kind.as_str(),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job"
    ) {
        return Err(CommandError(format!(
            "error: cannot {doing} a {}",
            info.kind
        )));
    }
    let obj = s
        .client
        .dynamic(&info.api_version, &info.resource, ns)
        .get(name, "")
        .await?;
    let labels = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let selector: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let params = flotilla_client::ListParams {
        label_selector: selector.join(","),
        ..Default::default()
    };
    let mut pods = s
        .client
        .api::<k8s_openapi::api::core::v1::Pod>(ns)
        .list(&params)
        .await?
        .items;
    pods.sort_by_key(|p| {
        let running = p.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Running");
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (!running, std::cmp::Reverse(created))
    });
    let Some(pod) = pods.first().and_then(|p| p.metadata.name.clone()) else {
        return Err(CommandError(format!(
            "error: no pods found for {} {name}",
            info.singular
        )));
    };
    if pods.len() > 1 {
        eprintln!("Found {} pods, using pod/{pod}", pods.len());
    }
    Ok(pod)
}

/// The pod an argument names: NAME, pod/NAME, or TYPE/NAME for one of a workload's pods
/// (see [`pod_of`] for `doing`).
pub(crate) async fn pod_named(
    s: &Session,
    ns: &str,
    arg: &str,
    doing: &str,
) -> Result<String, CommandError> {
    match arg.split_once('/') {
        Some(("pod" | "pods" | "po", n)) => Ok(n.to_string()),
        Some((kind, n)) => pod_of(s, ns, kind, n, doing).await,
        None => Ok(arg.to_string()),
    }
}

async fn logs(g: &Global, a: &LogsArgs) -> Result<(), CommandError> {
    use std::io::Write as _;
    let s = Session::open(g).await?;
    let ns = g
        .namespace
        .clone()
        .unwrap_or_else(|| s.client.default_namespace().to_string());
    let name = pod_named(&s, &ns, &a.pod, "get the logs of").await?;
    let name = name.as_str();
    let params = flotilla_client::LogParams {
        container: a.container.clone().unwrap_or_default(),
        follow: a.follow,
        tail_lines: (a.tail >= 0).then_some(a.tail),
        since_seconds: a.since.map(|d| d.as_secs() as i64),
        timestamps: a.timestamps,
        previous: a.previous,
    };
    let mut stream = s.client.logs(&ns, name, &params).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk?;
        if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
            // The reader went away (a closed pipe): stop quietly, as kubectl does.
            return Ok(());
        }
    }
    Ok(())
}

async fn describe(g: &Global, a: &DescribeArgs) -> Result<(), CommandError> {
    let s = Session::open(g).await?;
    let mut first = true;
    let mut failed = None;
    for (ty, names) in targets(&a.args)? {
        let info = s.resolve(&ty)?;
        let ns = s.namespace_for(info, None);
        let api = s.client.dynamic(&info.api_version, &info.resource, &ns);
        let objects = if names.is_empty() {
            let p = ListParams {
                label_selector: a.selector.clone().unwrap_or_default(),
                ..Default::default()
            };
            api.list(&p).await?.items
        } else {
            let mut v = Vec::new();
            for n in &names {
                match api.get(n, "").await {
                    Ok(o) => v.push(o),
                    Err(e) => {
                        eprintln!("Error from server ({}): {e}", reason(&e));
                        failed = Some(CommandError(String::new()));
                    }
                }
            }
            v
        };
        for o in objects {
            if !first {
                println!();
            }
            first = false;
            print!("{}", super::describe::describe(&info.resource, &o));
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let events_ns = if info.namespaced {
                ns.clone()
            } else {
                "default".into()
            };
            let p = ListParams {
                field_selector: format!(
                    "involvedObject.name={name},involvedObject.kind={}",
                    info.kind
                ),
                ..Default::default()
            };
            let events = s
                .client
                .dynamic("v1", "events", &events_ns)
                .list(&p)
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            print!("{}", super::describe::events(&events));
        }
    }
    failed.map_or(Ok(()), Err)
}

async fn edit(g: &Global, a: &EditArgs) -> Result<(), CommandError> {
    let (ty, name, rest) = one_target(&a.args)?;
    if !rest.is_empty() {
        return Err(CommandError(format!(
            "error: unexpected arguments: {}",
            rest.join(" ")
        )));
    }
    let s = Session::open(g).await?;
    let info = s.resolve(&ty)?;
    let api = s.client.dynamic(
        &info.api_version,
        &info.resource,
        &s.namespace_for(info, None),
    );
    let live = api.get(&name, "").await?;
    let before = serde_norway::to_string(&live).map_err(|e| CommandError(format!("error: {e}")))?;
    let dir = std::env::temp_dir().join(format!("flotctl-edit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| CommandError(format!("error: {e}")))?;
    let file = dir.join(format!("{}-{name}.yaml", info.singular));
    let header = "# Please edit the object below. Lines beginning with a '#' will be ignored,\n# and an empty file will abort the edit.\n#\n";
    std::fs::write(&file, format!("{header}{before}"))
        .map_err(|e| CommandError(format!("error: {e}")))?;
    let editor = std::env::var("KUBE_EDITOR")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    // The editor may be a command with arguments ("code --wait"), as kubectl allows.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .map_err(|e| CommandError(format!("error: running the editor {editor:?}: {e}")))?;
    let edited = std::fs::read_to_string(&file).map_err(|e| CommandError(format!("error: {e}")));
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        return Err(CommandError(format!(
            "error: the editor {editor:?} exited with {status}"
        )));
    }
    let text: String = edited?
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    if text.trim().is_empty() {
        println!("Edit cancelled, no changes made.");
        return Ok(());
    }
    let obj: Value = serde_norway::from_str(&text)
        .map_err(|e| CommandError(format!("error: the edited file is not valid YAML: {e}")))?;
    if obj == live {
        println!("Edit cancelled, no changes made.");
        return Ok(());
    }
    // The resourceVersion read before editing makes a concurrent change a conflict.
    api.update(&obj, "", false).await?;
    println!("{} edited", qualified_name(info, &name));
    Ok(())
}

async fn delete(g: &Global, a: &DeleteArgs) -> Result<(), CommandError> {
    let s = Session::open(g).await?;
    let params = DeleteParams {
        grace_period_seconds: a.grace_period,
        propagation_policy: a.cascade.clone(),
        ..Default::default()
    };
    // (resource, namespace, name) to delete.
    let mut victims: Vec<(ResourceInfo, String, String)> = Vec::new();
    if !a.files.is_empty() {
        for d in manifest::read_all(&a.files, a.recursive)
            .map_err(|e| CommandError(format!("error: {e}")))?
        {
            let info = s.for_kind(
                d.object["apiVersion"].as_str().unwrap_or_default(),
                d.object["kind"].as_str().unwrap_or_default(),
            )?;
            let name = d.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            victims.push((info.clone(), s.namespace_for(info, Some(&d.object)), name));
        }
    } else {
        for (ty, names) in targets(&a.args)? {
            let info = s.resolve(&ty)?.clone();
            let ns = s.namespace_for(&info, None);
            if names.is_empty() {
                if !a.all && a.selector.is_none() {
                    return Err(CommandError(
                        "error: resource(s) were provided, but no name was specified".into(),
                    ));
                }
                let p = ListParams {
                    label_selector: a.selector.clone().unwrap_or_default(),
                    ..Default::default()
                };
                for o in s
                    .client
                    .dynamic(&info.api_version, &info.resource, &ns)
                    .list(&p)
                    .await?
                    .items
                {
                    victims.push((
                        info.clone(),
                        ns.clone(),
                        o["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ));
                }
            } else {
                victims.extend(names.into_iter().map(|n| (info.clone(), ns.clone(), n)));
            }
        }
    }
    let mut failed = None;
    for (info, ns, name) in victims {
        let api = s.client.dynamic(&info.api_version, &info.resource, &ns);
        match api.delete(&name, &params).await {
            Ok(_) => {
                println!("{} deleted", qualified_name(&info, &name));
                if a.wait {
                    wait_gone(&api, &name, std::time::Duration::from_secs(a.timeout)).await?;
                }
            }
            Err(e) if e.is_not_found() && a.ignore_not_found => {}
            Err(e) => {
                eprintln!("Error from server ({}): {e}", reason(&e));
                failed = Some(CommandError(String::new()));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}
