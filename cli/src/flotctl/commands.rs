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
}

/// A connection plus what the server serves.
struct Session {
    client: Client,
    namespace: String,
    resources: Vec<ResourceInfo>,
}

impl Session {
    async fn open(g: &Global) -> Result<Self, CommandError> {
        let cfg = Kubeconfig::load(g.kubeconfig.as_deref())
            .map_err(|e| CommandError(format!("error: {e}")))?;
        let resolved = cfg
            .resolve(g.context.as_deref())
            .map_err(|e| CommandError(format!("error: {e}")))?;
        let client = Client::new(&resolved)?;
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
    fn resolve(&self, name: &str) -> Result<&ResourceInfo, CommandError> {
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

    fn namespace_for(&self, info: &ResourceInfo, obj: Option<&Value>) -> String {
        if !info.namespaced {
            return String::new();
        }
        obj.and_then(|o| o["metadata"]["namespace"].as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| self.namespace.clone())
    }
}

/// Runs a command; prints its output; Err carries the message of the last failure.
pub async fn run(g: &Global, cmd: &Command) -> Result<(), CommandError> {
    match cmd {
        Command::Version => {
            println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
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
        Command::Create(a) => create(g, a).await,
        Command::Apply(a) => apply(g, a).await,
        Command::Delete(a) => delete(g, a).await,
    }
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
    let output = a.output.as_deref().unwrap_or("");
    if !["", "wide", "yaml", "json", "name"].contains(&output) {
        return Err(CommandError(format!(
            "error: unable to match a printer suitable for the output format \"{output}\", allowed formats are: json,name,wide,yaml"
        )));
    }
    let targets = targets(&a.args)?;
    let several = targets.len() > 1;
    let mut objects: Vec<Value> = Vec::new();
    let mut failed = None;
    let mut text = String::new();
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
            items = api.list(&p).await?.items;
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
            "json" | "yaml" => objects.extend(items),
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
        "json" | "yaml" => {
            let doc = if objects.len() == 1 && targets.iter().all(|(_, n)| n.len() == 1) {
                objects.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": objects})
            };
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{}", serde_norway::to_string(&doc).unwrap_or_default());
            }
        }
        _ if text.is_empty() && failed.is_none() => {
            let where_ = if a.all_namespaces {
                String::new()
            } else {
                format!(" in {} namespace", s.namespace)
            };
            eprintln!("No resources found{where_}.");
        }
        _ => print!("{text}"),
    }
    failed.map_or(Ok(()), Err)
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

fn reason(e: &ClientError) -> &'static str {
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
        let info = match s.for_kind(
            d.object["apiVersion"].as_str().unwrap_or_default(),
            d.object["kind"].as_str().unwrap_or_default(),
        ) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("{}: {}", d.origin, e.0.trim_start_matches("error: "));
                failed = Some(CommandError(String::new()));
                continue;
            }
        };
        let ns = s.namespace_for(info, Some(&d.object));
        match s
            .client
            .dynamic(&info.api_version, &info.resource, &ns)
            .create(&d.object, dry_run)
            .await
        {
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
        let info = match s.for_kind(
            d.object["apiVersion"].as_str().unwrap_or_default(),
            d.object["kind"].as_str().unwrap_or_default(),
        ) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("{}: {}", d.origin, e.0.trim_start_matches("error: "));
                failed = Some(CommandError(String::new()));
                continue;
            }
        };
        let ns = s.namespace_for(info, Some(&d.object));
        let name = d.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let api = s.client.dynamic(&info.api_version, &info.resource, &ns);
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

async fn delete(g: &Global, a: &DeleteArgs) -> Result<(), CommandError> {
    let s = Session::open(g).await?;
    let params = DeleteParams {
        grace_period_seconds: a.grace_period,
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
        match s
            .client
            .dynamic(&info.api_version, &info.resource, &ns)
            .delete(&name, &params)
            .await
        {
            Ok(_) => println!("{} deleted", qualified_name(&info, &name)),
            Err(e) if e.is_not_found() && a.ignore_not_found => {}
            Err(e) => {
                eprintln!("Error from server ({}): {e}", reason(&e));
                failed = Some(CommandError(String::new()));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}
