//! Exec end to end: an API server, the scheduler, the controllers and one agent on the
//! process runtime, in this process on ephemeral ports. Commands run in a pod's containers
//! through the API (their stdout, stderr and exit code come back apart, -c picks the
//! container, a timeout stops them), bad requests get precise errors, callers without
//! credentials are refused by the API server and by the agent, and the built flotctl
//! prints what the command wrote and exits with its code.

#[path = "support/api.rs"]
mod api;
#[path = "support/flotctl.rs"]
mod cli;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/http.rs"]
mod http;
#[path = "support/inproc.rs"]
mod inproc;
#[path = "support/process_agent.rs"]
mod process_agent;

use std::path::PathBuf;
use std::time::Duration;

use api::{ApiHarness, StoreSetup};
use flotilla_client::{Client, DeleteParams, ExecOutput, ExecParams};
use flotilla_proto::api::ExecRequest;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};
use tokio::sync::watch;

/// A one-node cluster.
struct Cluster {
    h: ApiHarness,
    client: Client,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    agent_stop: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
        let client = h.admin_client();
        let (stop, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(scheduler::run(
                client.clone(),
                Default::default(),
                stop_rx.clone(),
            )),
            tokio::spawn(controller::manager::run(
                client.clone(),
                "exec-test".into(),
                Default::default(),
                stop_rx,
            )),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let (agent_stop, agent_rx) = watch::channel(false);
        let agent = process_agent::spawn(&client, dir.path(), agent_rx);
        Cluster {
            h,
            client,
            stop,
            tasks,
            agent_stop,
            agent,
            _dir: dir,
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.h.server.as_ref().expect("running").kubeconfig.clone()
    }

    async fn create(&self, api_version: &str, resource: &str, obj: Value) {
        let c = self.h.client().await;
        c.create(api_version, resource, "default", &obj)
            .await
            .expect("created");
    }

    async fn pod_until(&self, name: &str, what: &str, ok: impl Fn(&Pod) -> bool) -> Pod {
        let api = self.client.api::<Pod>("default");
        inproc::wait_until(Duration::from_secs(30), what, || {
            let api = api.clone();
            let ok = &ok;
            async move { api.get_opt(name).await.ok().flatten().filter(|p| ok(p)) }
        })
        .await
    }

    async fn exec(
        &self,
        pod: &str,
        container: &str,
        command: &[&str],
    ) -> Result<ExecOutput, String> {
        let p = ExecParams {
            container: container.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout: None,
        };
        self.client
            .exec("default", pod, &p)
            .await
            .map_err(|e| e.to_string())
    }

    /// The built flotctl with the admin kubeconfig.
    async fn flotctl(&self, args: &[&str]) -> cli::Out {
        cli::flotctl(&self.kubeconfig(), args).await
    }

    /// Deletes every pod and its owners, waits until the agent has stopped them, then stops
    /// everything, so that no process outlives the test.
    async fn shutdown(self) {
        let deployments = self.client.dynamic("apps/v1", "deployments", "default");
        let _ = deployments.delete("web", &DeleteParams::default()).await;
        let pods = self.client.api::<Pod>("default");
        inproc::wait_until(Duration::from_secs(30), "every pod is removed", || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&Default::default()).await.ok()?;
                for p in &list.items {
                    if p.metadata.deletion_timestamp.is_none() {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let _ = pods.delete(&name, &DeleteParams::default()).await;
                    }
                }
                list.items.is_empty().then_some(())
            }
        })
        .await;
        self.agent_stop.send_replace(true);
        self.agent.await.expect("the agent stops");
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.h.shutdown().await;
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// A container that waits (a host process under the process runtime) with `WHO` set to
/// its name, so a command can tell which container it ran in.
fn waiting(name: &str) -> Value {
    json!({
        "name": name,
        "image": "busybox:1.36",
        "command": ["sh", "-c", "sleep 3600"],
        "env": [{"name": "WHO", "value": name}],
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_in_containers_and_their_output_and_exit_codes_come_back() {
    let c = Cluster::start().await;
    c.create(
        "v1",
        "pods",
        json!({
            "metadata": {"name": "two"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [waiting("main"), waiting("side")],
            }
        }),
    )
    .await;
    c.create(
        "v1",
        "pods",
        json!({
            "metadata": {"name": "unplaced"},
            "spec": {
                "nodeSelector": {"no-such-label": "anywhere"},
                "containers": [waiting("main")],
            }
        }),
    )
    .await;
    c.create(
        "v1",
        "pods",
        json!({
            "metadata": {"name": "done"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}],
            }
        }),
    )
    .await;
    c.pod_until("two", "the pod runs", |p| phase(p) == "Running")
        .await;

    // Output comes back; the default container is the first.
    let out = c.exec("two", "", &["echo", "hello"]).await.expect("echo");
    assert_eq!(
        (
            text(&out.stdout).as_str(),
            out.stderr.is_empty(),
            out.exit_code,
            out.container.as_str()
        ),
        ("hello\n", true, 0, "main")
    );
    // stdout and stderr stay apart; a non-zero exit is an answer, not an error.
    let out = c
        .exec("two", "", &["sh", "-c", "echo out; echo err >&2; exit 3"])
        .await
        .expect("exit 3");
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.exit_code, 3);
    // -c picks the container (its environment is the command's).
    let out = c
        .exec("two", "side", &["sh", "-c", "echo $WHO"])
        .await
        .expect("side");
    assert_eq!(
        (text(&out.stdout).as_str(), out.container.as_str()),
        ("side\n", "side")
    );

    // Bad requests say what is wrong.
    let e = c
        .exec("two", "nope", &["true"])
        .await
        .expect_err("unknown container");
    assert!(
        e.contains("container nope is not valid for pod two; its containers: main, side"),
        "{e}"
    );
    let e = c
        .exec("ghost", "", &["true"])
        .await
        .expect_err("unknown pod");
    assert!(e.contains("pods \"ghost\" not found"), "{e}");
    let e = c.exec("two", "", &[]).await.expect_err("no command");
    assert!(e.contains("you must specify at least one command"), "{e}");
    let e = c
        .exec("unplaced", "", &["true"])
        .await
        .expect_err("unscheduled");
    assert!(
        e.contains("pod unplaced does not have a host assigned"),
        "{e}"
    );
    c.pod_until("done", "the pod completes", |p| phase(p) == "Succeeded")
        .await;
    let e = c.exec("done", "", &["true"]).await.expect_err("completed");
    assert!(
        e.contains("cannot exec into a container in a completed pod; current phase is Succeeded"),
        "{e}"
    );
    let e = c
        .exec("two", "", &["no-such-program-here"])
        .await
        .expect_err("no program");
    assert!(e.contains("cannot run the command"), "{e}");

    // A command that outlives its timeout is stopped and reported.
    let slow = ExecParams {
        command: vec!["sleep".into(), "30".into()],
        timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let e = c
        .client
        .exec("default", "two", &slow)
        .await
        .expect_err("timed out")
        .to_string();
    assert!(e.contains("did not finish within 1s"), "{e}");

    // One that writes without end is stopped at exec's output limit, not at its timeout.
    let endless = ExecParams {
        command: vec!["yes".into()],
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let e = c
        .client
        .exec("default", "two", &endless)
        .await
        .expect_err("too much output")
        .to_string();
    assert!(e.contains("more than exec returns"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped after {:?}",
        started.elapsed()
    );

    // No credentials: the API server refuses, and so does the agent itself.
    let anonymous = c.h.client_with(None).await;
    let request = ExecRequest {
        namespace: "default".into(),
        name: "two".into(),
        command: vec!["true".into()],
        ..Default::default()
    };
    let status = anonymous
        .inner
        .clone()
        .exec(anonymous.req(request.clone()))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let node = c
        .client
        .api::<Node>("")
        .get("worker-1")
        .await
        .expect("node");
    let port = node
        .status
        .and_then(|s| s.daemon_endpoints)
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .expect("agent port");
    let mut agent = flotilla_proto::agent::agent_client::AgentClient::connect(format!(
        "http://127.0.0.1:{port}"
    ))
    .await
    .expect("agent reachable");
    let status = agent.exec_sync(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // Execs are counted like every request.
    let metrics = http::get("127.0.0.1", c.h.addr().port(), "/metrics")
        .await
        .expect("the server's metrics");
    for code in ["200", "400", "401", "404"] {
        let series = format!("verb=\"create\",resource=\"pods/exec\",code=\"{code}\"");
        assert!(
            metrics.contains(&series),
            "{series} missing from\n{metrics}"
        );
    }

    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flotctl_exec_prints_the_output_and_exits_with_the_commands_code() {
    let c = Cluster::start().await;
    c.create(
        "v1",
        "pods",
        json!({
            "metadata": {"name": "two"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [waiting("main"), waiting("side")],
            }
        }),
    )
    .await;
    c.create(
        "apps/v1",
        "deployments",
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [waiting("app")]},
                },
            }
        }),
    )
    .await;
    c.pod_until("two", "the pod runs", |p| phase(p) == "Running")
        .await;

    // The command's streams go to flotctl's, its exit code is flotctl's.
    let out = c
        .flotctl(&[
            "exec",
            "two",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .await;
    assert_eq!(out.code, 3);
    assert_eq!(out.stdout, "out\n");
    assert_eq!(
        out.stderr,
        "Defaulted container \"main\" out of: main, side\nerr\ncommand terminated with exit code 3\n"
    );
    let out = c
        .flotctl(&["exec", "two", "-c", "side", "--", "sh", "-c", "echo $WHO"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("side\n", ""));

    // deploy/NAME resolves to one of its pods once it runs.
    let out = inproc::wait_until(Duration::from_secs(30), "the deployment's pod runs", || {
        let c = &c;
        async move {
            let out = c
                .flotctl(&["exec", "deploy/web", "--", "sh", "-c", "echo $WHO"])
                .await;
            (out.code == 0).then_some(out)
        }
    })
    .await;
    assert_eq!(out.stdout, "app\n");

    // Failures: a message naming the problem, and a non-zero status.
    for (args, message) in [
        (
            &["exec", "ghost", "--", "true"][..],
            "pods \"ghost\" not found",
        ),
        (
            &["exec", "two", "-c", "nope", "--", "true"][..],
            "its containers: main, side",
        ),
        (
            &["exec", "two"][..],
            "you must specify at least one command",
        ),
        (&["exec", "-it", "two", "--", "sh"][..], "non-interactive"),
        (
            &["exec", "svc/web", "--", "true"][..],
            "cannot exec into a Service",
        ),
    ] {
        let out = c.flotctl(args).await;
        assert_ne!(out.code, 0, "{args:?} succeeded");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }

    c.shutdown().await;
}
