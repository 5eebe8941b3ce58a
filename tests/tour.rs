//! The README's five-minute tour, step by step, against `flotilla server --local-agent` as
//! a user starts it, driven with the built `flotctl`: apply examples/web.yaml (a ConfigMap
//! read as environment, a Deployment of three replicas, a Service), see the pods run,
//! scale to five, change the image and watch the rolling update, roll back, read logs,
//! see the Service's endpoints, and delete everything.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/http.rs"]
mod http;
#[path = "support/inproc.rs"]
mod inproc;
#[path = "support/server_process.rs"]
mod server_process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use server_process::ServerProcess;

struct Tour {
    kubeconfig: PathBuf,
}

impl Tour {
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args(args)
            .output()
            .expect("flotctl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "flotctl {}: {err}{out}", args.join(" "));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("json")
    }

    /// The images of the Deployment's live pods.
    fn pod_images(&self) -> Vec<String> {
        let pods = self.json(&["get", "pods", "-l", "app=web"]);
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    async fn until<T>(&self, what: &str, f: impl Fn() -> Option<T>) -> T {
        inproc::wait_until(Duration::from_secs(60), what, || {
            let r = f();
            async move { r }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_five_minute_tour() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The tour's image names are only names to the process runtime; pinned, so that a
    // containerd running on the test machine (which could not pull them offline) is not
    // picked.
    let server = ServerProcess::start(
        dir.path(),
        &[],
        &["--local-agent", "--local-agent-runtime", "process"],
    )
    .await;
    let t = Tour {
        kubeconfig: dir.path().join("admin.yaml"),
    };
    t.until("the local agent registers its node", || {
        let out = t.run(&["get", "nodes"]).1;
        out.contains(" Ready ").then_some(())
    })
    .await;

    // Apply: the three objects are created.
    let out = t.ok(&["apply", "-f", "examples/web.yaml"]);
    assert_eq!(
        out,
        "configmap/web-config created\ndeployment.apps/web created\nservice/web created\n"
    );
    let out = t.ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    // The in-process scheduler's metrics come with the API server's.
    let metrics = http::get("127.0.0.1", server.addr.port(), "/metrics")
        .await
        .expect("the server's metrics");
    assert!(
        http::sample(
            &metrics,
            "scheduler_schedule_attempts_total",
            &["result=\"scheduled\""]
        )
        .is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    assert!(metrics.contains("apiserver_request_total"), "{metrics}");
    assert_eq!(metrics.matches("# EOF").count(), 1, "one exposition");
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    let pods = t.ok(&["get", "pods", "-l", "app=web"]);
    assert_eq!(pods.matches(" Running ").count(), 3, "{pods}");

    // Scale to five.
    assert_eq!(
        t.ok(&["scale", "deployment/web", "--replicas", "5"]),
        "deployment.apps/web scaled\n"
    );
    t.ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    let deploy = t.json(&["get", "deployment", "web"]);
    assert_eq!(deploy["status"]["availableReplicas"], 5);

    // A new image tag rolls out.
    assert_eq!(
        t.ok(&["set", "image", "deployment/web", "web=busybox:1.37"]),
        "deployment.apps/web image updated\n"
    );
    let out = t.ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    t.until("every pod runs the new image", || {
        let images = t.pod_images();
        (images.len() == 5 && images.iter().all(|i| i == "busybox:1.37")).then_some(())
    })
    .await;
    let history = t.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );

    // Roll back.
    assert_eq!(
        t.ok(&["rollout", "undo", "deployment/web"]),
        "deployment.apps/web rolled back\n"
    );
    t.ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]);
    t.until("every pod runs the old image again", || {
        let images = t.pod_images();
        (images.len() == 5 && images.iter().all(|i| i == "busybox:1.36")).then_some(())
    })
    .await;

    // Logs carry the ConfigMap's greeting, read from the environment.
    let logs = t
        .until("a pod has written its greeting", || {
            let (ok, out, _) = t.run(&["logs", "deploy/web"]);
            (ok && out.contains("hello from flotilla, from web-")).then_some(out)
        })
        .await;
    assert!(
        logs.lines().all(|l| l.starts_with("hello from flotilla")),
        "{logs}"
    );

    // The Service's endpoints: every ready pod, on the container port named http.
    t.until("the Service's endpoints list the five pods", || {
        let ep = t.json(&["get", "endpoints", "web"]);
        let subset = &ep["subsets"][0];
        let ready = subset["addresses"].as_array().map_or(0, Vec::len);
        (ready == 5 && subset["ports"][0]["port"] == 8080).then_some(())
    })
    .await;

    // Delete everything: the Deployment takes its ReplicaSets and pods along.
    let out = t.ok(&["delete", "-f", "examples/web.yaml"]);
    assert!(out.contains("deployment.apps/web deleted"), "{out}");
    t.until("every pod is stopped and gone", || {
        let pods = t.json(&["get", "pods"]);
        let rs = t.json(&["get", "replicasets"]);
        let ep = t.run(&["get", "endpoints", "web"]);
        (pods["items"].as_array().is_some_and(Vec::is_empty)
            && rs["items"].as_array().is_some_and(Vec::is_empty)
            && !ep.0)
            .then_some(())
    })
    .await;
    server.stop();
}
