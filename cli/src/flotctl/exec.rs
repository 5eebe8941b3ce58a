//! `exec POD [-c CONTAINER] -- COMMAND [ARGS…]`: runs a command in a container of a pod
//! (NAME, pod/NAME, or TYPE/NAME for one of a workload's pods) and passes on what it did,
//! as `kubectl exec` without -i/-t: its stdout to stdout, its stderr to stderr, and its
//! exit code as flotctl's, with `command terminated with exit code N` on stderr.

use std::io::Write as _;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::Pod;

use super::Global;
use super::commands::{CommandError, Session, pod_named};

/// The annotation naming the container kubectl picks when none is given.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// `exec` flags.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The pod: NAME, pod/NAME, or TYPE/NAME (deploy/web: one of its pods).
    pub pod: String,
    /// The container (default: the one the pod's kubectl.kubernetes.io/default-container
    /// annotation names, else its first).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// How long the command may run (default 1m, at most 10m).
    #[arg(long, value_parser = crate::etcd::parse_duration)]
    pub timeout: Option<Duration>,
    /// Print only the command's output (no notice of the container picked).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Pass stdin to the command: not supported (flotctl exec is non-interactive).
    #[arg(short = 'i', long, hide = true)]
    pub stdin: bool,
    /// Give the command a terminal: not supported.
    #[arg(short = 't', long, hide = true)]
    pub tty: bool,
    /// Words between the pod and `--`: kubectl's old form without `--`, refused with
    /// the way to write it.
    #[arg(hide = true, allow_hyphen_values = true)]
    pub without_dashes: Vec<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Refuses what flotctl exec cannot do before anything is asked of the server.
fn check(a: &ExecArgs) -> Result<(), CommandError> {
    if a.stdin || a.tty {
        return Err(CommandError(
            "error: flotctl exec is non-interactive: -i/--stdin and -t/--tty are not supported; run the command with its input in its arguments (sh -c '…')".into(),
        ));
    }
    if !a.without_dashes.is_empty() {
        return Err(CommandError(format!(
            "error: flotctl exec POD COMMAND is not supported: put the command after -- (flotctl exec {} -- {})",
            a.pod,
            a.without_dashes.join(" ")
        )));
    }
    if a.command.first().is_none_or(String::is_empty) {
        return Err(CommandError(
            "error: you must specify at least one command for the container (flotctl exec POD -- COMMAND [ARGS…])".into(),
        ));
    }
    if a.timeout.is_some_and(|t| t.is_zero()) {
        return Err(CommandError("error: --timeout must be more than 0".into()));
    }
    Ok(())
}

/// The container to use when none is named, and the notice kubectl prints when it picked
/// one of several without the pod saying which.
fn default_container(pod: &Pod) -> Result<(String, Option<String>), CommandError> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let containers: Vec<&str> = spec
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        .filter(|c| containers.contains(&c.as_str()));
    if let Some(c) = annotated {
        return Ok((c.clone(), None));
    }
    let Some(first) = containers.first() else {
        return Err(CommandError(format!("error: pod {name} has no containers")));
    };
    if containers.len() == 1 {
        return Ok((first.to_string(), None));
    }
    let mut all: Vec<String> = containers.iter().map(|c| c.to_string()).collect();
    all.extend(
        spec.and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
            .map(|c| format!("{} (init)", c.name)),
    );
    Ok((
        first.to_string(),
        Some(format!(
            "Defaulted container \"{first}\" out of: {}",
            all.join(", ")
        )),
    ))
}

/// The status flotctl exits with for the command's exit code: the code itself where a
/// process can exit with it, else 1 (a failure must not read as success).
fn exit_status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// Runs `exec`; Ok carries the status to exit with.
pub async fn run(g: &Global, a: &ExecArgs) -> Result<u8, CommandError> {
    check(a)?;
    let s = Session::open(g).await?;
    let ns = g
        .namespace
        .clone()
        .unwrap_or_else(|| s.client.default_namespace().to_string());
    let name = pod_named(&s, &ns, &a.pod, "exec into").await?;
    let container = match &a.container {
        Some(c) => c.clone(),
        None => {
            let pod = s.client.api::<Pod>(&ns).get(&name).await?;
            let (c, notice) = default_container(&pod)?;
            if let Some(n) = notice.filter(|_| !a.quiet) {
                eprintln!("{n}");
            }
            c
        }
    };
    let params = flotilla_client::ExecParams {
        container,
        command: a.command.clone(),
        timeout: a.timeout,
    };
    let out = s.client.exec(&ns, &name, &params).await?;
    // A closed pipe on either side is the reader's choice, as with logs; the exit code
    // still tells what the command did.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out.stdout).and_then(|()| stdout.flush());
    drop(stdout);
    let _ = std::io::stderr().lock().write_all(&out.stderr);
    if out.exit_code != 0 {
        eprintln!("command terminated with exit code {}", out.exit_code);
    }
    Ok(exit_status(out.exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> ExecArgs {
        let mut all = vec!["flotctl", "exec"];
        all.extend(args);
        match super::super::Cli::try_parse_from(all)
            .expect("parses")
            .command
        {
            super::super::Command::Exec(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn pod(containers: &[&str], init: &[&str], annotation: Option<&str>) -> Pod {
        let names = |n: &[&str]| -> Vec<serde_json::Value> {
            n.iter().map(|c| serde_json::json!({"name": c})).collect()
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web",
                "annotations": annotation.map(|a| serde_json::json!({DEFAULT_CONTAINER_ANNOTATION: a})),
            },
            "spec": {"containers": names(containers), "initContainers": names(init)},
        }))
        .expect("pod")
    }

    #[test]
    fn the_command_follows_the_double_dash() {
        let a = parse(&["web", "-c", "side", "--", "sh", "-c", "echo hi"]);
        assert_eq!(a.pod, "web");
        assert_eq!(a.container.as_deref(), Some("side"));
        assert_eq!(a.command, vec!["sh", "-c", "echo hi"]);
        assert!(check(&a).is_ok());
        let a = parse(&["deploy/web", "--timeout", "5s", "--", "ls"]);
        assert_eq!(a.timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn no_command_or_an_interactive_flag_is_refused_with_a_reason() {
        let e = check(&parse(&["web"])).expect_err("no command");
        assert!(e.0.contains("at least one command"), "{}", e.0);
        let e = check(&parse(&["-it", "web", "--", "sh"])).expect_err("interactive");
        assert!(e.0.contains("non-interactive"), "{}", e.0);
        let e = check(&parse(&["web", "ls", "-l"])).expect_err("no --");
        assert!(
            e.0.ends_with("put the command after -- (flotctl exec web -- ls -l)"),
            "{}",
            e.0
        );
        let e = check(&parse(&["web", "--timeout", "0", "--", "ls"])).expect_err("zero");
        assert!(e.0.contains("--timeout"), "{}", e.0);
    }

    #[test]
    fn the_default_container_is_annotated_or_first_with_a_notice_when_there_are_several() {
        assert_eq!(
            default_container(&pod(&["main"], &[], None)).expect("one"),
            ("main".to_string(), None)
        );
        let (c, notice) =
            default_container(&pod(&["main", "side"], &["setup"], None)).expect("several");
        assert_eq!(c, "main");
        assert_eq!(
            notice.as_deref(),
            Some("Defaulted container \"main\" out of: main, side, setup (init)")
        );
        assert_eq!(
            default_container(&pod(&["main", "side"], &[], Some("side"))).expect("annotated"),
            ("side".to_string(), None)
        );
        let (c, notice) =
            default_container(&pod(&["main", "side"], &[], Some("gone"))).expect("stale");
        assert_eq!(c, "main");
        assert!(notice.is_some());
        assert!(default_container(&pod(&[], &[], None)).is_err());
    }

    #[test]
    fn the_exit_status_is_the_commands_where_it_fits() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(3), 3);
        assert_eq!(exit_status(137), 137);
        assert_eq!(exit_status(-1), 1);
        assert_eq!(exit_status(256), 1);
    }
}
