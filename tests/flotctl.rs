//! The built `flotctl` binary against an in-process API server: output shapes, exit codes
//! and error messages as a kubectl user expects them.

#[path = "support/api.rs"]
mod api;
#[path = "support/flotctl.rs"]
mod cli;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/inproc.rs"]
mod inproc;

use cli::flotctl;
use std::path::{Path, PathBuf};

use api::{ApiHarness, StoreSetup};

const APP: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: \"nginx:1.25\", ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: broken}
spec:
  containers: [{name: c}]
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_and_delete_as_kubectl_does() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kc = h.server.as_ref().expect("running").kubeconfig.clone();
    let app = write(h.dir.path(), "app.yaml", APP);
    let app = app.to_str().expect("utf-8 path");

    // One invalid document: the others are created, the invalid one reported, exit 1.
    let out = flotctl(&kc, &["create", "-f", app]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "deployment.apps/web created\nservice/web created\n"
    );
    assert!(
        out.stderr.contains("Error from server (Invalid)")
            && out
                .stderr
                .contains("spec.containers[0].image: Required value"),
        "{}",
        out.stderr
    );

    let out = flotctl(&kc, &["get", "deploy,svc"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY   UP-TO-DATE   AVAILABLE   AGE"),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].starts_with("deployment.apps/web   0/2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("TYPE       CLUSTER-IP")
            && out.stdout.contains("service/web   NodePort"),
        "{}",
        out.stdout
    );

    let out = flotctl(&kc, &["get", "svc", "web", "-o", "json"]).await;
    let svc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON output");
    assert_eq!(svc["kind"], "Service");
    let out = flotctl(
        &kc,
        &[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.type} {.spec.ports[0].port}",
        ],
    )
    .await;
    assert_eq!(out.stdout, "NodePort 80", "{}", out.stderr);
    let out = flotctl(
        &kc,
        &[
            "get",
            "deploy,svc",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}{\"\\n\"}{end}",
        ],
    )
    .await;
    assert_eq!(
        out.stdout, "Deployment/web\nService/web\n",
        "{}",
        out.stderr
    );
    let out = flotctl(&kc, &["get", "deployments", "-o", "yaml"]).await;
    assert!(
        out.stdout.starts_with("apiVersion: v1\nitems:") && out.stdout.contains("kind: List"),
        "{}",
        out.stdout
    );
    let out = flotctl(&kc, &["get", "all-the-things"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        "error: the server doesn't have a resource type \"all-the-things\""
    );
    let out = flotctl(&kc, &["get", "po", "missing"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        "Error from server (NotFound): pods \"missing\" not found"
    );
    let out = flotctl(&kc, &["get", "ns", "-o", "name"]).await;
    assert!(
        out.stdout.contains("namespace/default\n")
            && out.stdout.contains("namespace/kube-system\n"),
        "{}",
        out.stdout
    );
    let out = flotctl(&kc, &["get", "svc", "-l", "app=web", "--show-labels", "-A"]).await;
    assert!(
        out.stdout.starts_with("NAMESPACE   NAME") && out.stdout.contains("app=web"),
        "{}",
        out.stdout
    );
    let out = flotctl(&kc, &["get", "pods"]).await;
    assert_eq!(
        (out.code, out.stderr.trim()),
        (0, "No resources found in default namespace.")
    );

    let out = flotctl(&kc, &["delete", "deployment", "web"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "deployment.apps/web deleted\n"),
        "{}",
        out.stderr
    );
    let out = flotctl(&kc, &["delete", "-f", app]).await;
    assert_eq!(
        out.code, 1,
        "the deployment is already gone and the pod was never created"
    );
    assert!(out.stdout.contains("service/web deleted"), "{}", out.stdout);
    let held = write(
        h.dir.path(),
        "held.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [example.com/keep]}\n",
    );
    assert_eq!(
        flotctl(&kc, &["create", "-f", held.to_str().expect("utf-8")])
            .await
            .code,
        0
    );
    let out = flotctl(&kc, &["delete", "cm", "held", "--wait", "--timeout", "1"]).await;
    assert_eq!(out.code, 1, "a finalizer holds it");
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
    let out = flotctl(
        &kc,
        &[
            "patch",
            "cm",
            "held",
            "-p",
            "{\"metadata\":{\"finalizers\":null}}",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = flotctl(&kc, &["delete", "-f", app, "--ignore-not-found"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_and_unreachable_servers_are_named() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kc = h.server.as_ref().expect("running").kubeconfig.clone();
    let bad = write(
        h.dir.path(),
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\ndata: {}\n",
    );
    let out = flotctl(&kc, &["create", "-f", bad.to_str().expect("utf-8")]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("bad.yaml")
            && out.stderr.contains("line")
            && out.stderr.contains("column"),
        "{}",
        out.stderr
    );
    let out = flotctl(&kc, &["get", "cm", "x"]).await;
    assert_eq!(out.code, 1, "nothing was created");

    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let text = std::fs::read_to_string(&kc)
        .expect("kubeconfig")
        .replace(&format!("http://{}", h.addr()), &format!("http://{down}"));
    let other = write(h.dir.path(), "down.yaml", &text);
    let out = flotctl(&other, &["get", "pods"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&down.to_string()) && out.stderr.contains("down.yaml"),
        "{}",
        out.stderr
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_configures_and_leaves_unchanged() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kc = h.server.as_ref().expect("running").kubeconfig.clone();
    let v1 = APP.replace("---\napiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec:\n  containers: [{name: c}]\n", "")
        .replace("metadata:\n  name: web\n  labels: {app: web}", "metadata:\n  name: web\n  labels: {app: web, tier: front}");
    let path = write(h.dir.path(), "app.yaml", &v1);
    let file = path.to_str().expect("utf-8");

    let out = flotctl(&kc, &["apply", "-f", file]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "deployment.apps/web created\nservice/web created\n"),
        "{}",
        out.stderr
    );
    let svc = flotctl(&kc, &["get", "svc", "web", "-o", "json"]).await;
    let ip =
        serde_json::from_str::<serde_json::Value>(&svc.stdout).expect("json")["spec"]["clusterIP"]
            .clone();

    let out = flotctl(&kc, &["apply", "-f", file]).await;
    assert_eq!(
        out.stdout, "deployment.apps/web unchanged\nservice/web unchanged\n",
        "{}",
        out.stderr
    );

    // Drop a label and change the replica count: the label goes, the count changes, and
    // what the server set (defaults, the Service's clusterIP) stays.
    std::fs::write(
        &path,
        v1.replace("labels: {app: web, tier: front}", "labels: {app: web}")
            .replace("replicas: 2", "replicas: 4"),
    )
    .expect("rewrite");
    let out = flotctl(&kc, &["apply", "-f", file, "--dry-run=server"]).await;
    assert_eq!(
        out.stdout,
        "deployment.apps/web configured (server dry run)\nservice/web unchanged (server dry run)\n",
        "{}",
        out.stderr
    );
    let out = flotctl(&kc, &["apply", "-f", file]).await;
    assert_eq!(
        out.stdout, "deployment.apps/web configured\nservice/web unchanged\n",
        "{}",
        out.stderr
    );
    let d: serde_json::Value = serde_json::from_str(
        &flotctl(&kc, &["get", "deploy", "web", "-o", "json"])
            .await
            .stdout,
    )
    .expect("json");
    assert_eq!(d["spec"]["replicas"], 4);
    assert!(
        d["metadata"]["labels"]["tier"].is_null(),
        "{}",
        d["metadata"]["labels"]
    );
    assert_eq!(
        d["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults stay"
    );
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let svc: serde_json::Value = serde_json::from_str(
        &flotctl(&kc, &["get", "svc", "web", "-o", "json"])
            .await
            .stdout,
    )
    .expect("json");
    assert_eq!(svc["spec"]["clusterIP"], ip, "the allocated IP stays");

    let broken = write(h.dir.path(), "broken.yaml", APP);
    let out = flotctl(&kc, &["apply", "-f", broken.to_str().expect("utf-8")]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("service/web") && out.stderr.contains("spec.containers[0].image"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_annotate_patch_replace_config_and_watch() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kc = h.server.as_ref().expect("running").kubeconfig.clone();
    let cm = write(
        h.dir.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, labels: {app: a}}\ndata: {k: v}\n",
    );
    let cm = cm.to_str().expect("utf-8");
    assert_eq!(flotctl(&kc, &["apply", "-f", cm]).await.code, 0);

    let out = flotctl(&kc, &["label", "cm", "cfg", "tier=web"]).await;
    assert_eq!(out.stdout, "configmap/cfg labeled\n", "{}", out.stderr);
    let out = flotctl(&kc, &["label", "cm/cfg", "tier=db"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        "error: 'tier' already has a value (web), and --overwrite is false"
    );
    assert_eq!(
        flotctl(&kc, &["label", "cm/cfg", "tier=db", "--overwrite"])
            .await
            .stdout,
        "configmap/cfg labeled\n"
    );
    assert_eq!(
        flotctl(&kc, &["label", "cm/cfg", "tier-"]).await.stdout,
        "configmap/cfg labeled\n"
    );
    assert_eq!(
        flotctl(&kc, &["label", "cm/cfg", "tier-"]).await.stdout,
        "configmap/cfg not labeled\n"
    );
    assert_eq!(
        flotctl(&kc, &["annotate", "cm", "cfg", "note=hi"])
            .await
            .stdout,
        "configmap/cfg annotated\n"
    );

    let out = flotctl(
        &kc,
        &["patch", "cm", "cfg", "-p", "{\"data\":{\"k\":\"w\"}}"],
    )
    .await;
    assert_eq!(out.stdout, "configmap/cfg patched\n", "{}", out.stderr);
    let out = flotctl(
        &kc,
        &[
            "patch",
            "cm",
            "cfg",
            "--type",
            "json",
            "-p",
            "[{\"op\":\"add\",\"path\":\"/data/x\",\"value\":\"1\"}]",
        ],
    )
    .await;
    assert_eq!(out.stdout, "configmap/cfg patched\n", "{}", out.stderr);
    let got: serde_json::Value = serde_json::from_str(
        &flotctl(&kc, &["get", "cm", "cfg", "-o", "json"])
            .await
            .stdout,
    )
    .expect("json");
    assert_eq!(
        (got["data"]["k"].as_str(), got["data"]["x"].as_str()),
        (Some("w"), Some("1"))
    );
    assert!(
        got["metadata"]["labels"]["tier"].is_null()
            && got["metadata"]["annotations"]["note"] == "hi"
    );

    // replace honours the resourceVersion in the file: a stale one is a conflict.
    let stale = write(
        h.dir.path(),
        "stale.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, resourceVersion: \"2\"}\ndata: {k: z}\n",
    );
    let out = flotctl(&kc, &["replace", "-f", stale.to_str().expect("utf-8")]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("the object has been modified"),
        "{}",
        out.stderr
    );
    let fresh = write(
        h.dir.path(),
        "fresh.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {k: z}\n",
    );
    let out = flotctl(&kc, &["replace", "-f", fresh.to_str().expect("utf-8")]).await;
    assert_eq!(out.stdout, "configmap/cfg replaced\n", "{}", out.stderr);

    assert_eq!(
        flotctl(&kc, &["config", "current-context"]).await.stdout,
        "flotilla\n"
    );
    let view = flotctl(&kc, &["config", "view"]).await.stdout;
    assert!(
        view.contains("token: REDACTED")
            && !view.contains(&h.server.as_ref().expect("running").admin_token),
        "{view}"
    );
    assert!(
        flotctl(&kc, &["config", "get-contexts"])
            .await
            .stdout
            .contains("*         flotilla")
    );

    // get -w prints the current rows, then one row per change.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "cm", "-w"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("flotctl get -w");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert!(next_line(&mut lines).await.starts_with("NAME"));
    assert!(next_line(&mut lines).await.starts_with("cfg "));
    let other = write(
        h.dir.path(),
        "other.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n",
    );
    assert_eq!(
        flotctl(&kc, &["apply", "-f", other.to_str().expect("utf-8")])
            .await
            .code,
        0
    );
    assert!(next_line(&mut lines).await.starts_with("other "));
    // The watch resumes on its own after the server restarts.
    h.restart().await;
    let third = write(
        h.dir.path(),
        "third.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: third}\n",
    );
    assert_eq!(
        flotctl(&kc, &["apply", "-f", third.to_str().expect("utf-8")])
            .await
            .code,
        0
    );
    let mut line = next_line(&mut lines).await;
    while !line.starts_with("third ") {
        line = next_line(&mut lines).await;
    }
    child.kill().await.expect("stop the watch");
    h.shutdown().await;
}

async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generators_edit_and_completion() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kc = h.server.as_ref().expect("running").kubeconfig.clone();
    let f = write(h.dir.path(), "app.properties", "color=blue\n");
    let from_file = format!("--from-file={}", f.to_str().expect("utf-8"));
    let out = flotctl(
        &kc,
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
            &from_file,
        ],
    )
    .await;
    assert_eq!(out.stdout, "configmap/settings created\n", "{}", out.stderr);
    let cm: serde_json::Value = serde_json::from_str(
        &flotctl(&kc, &["get", "cm", "settings", "-o", "json"])
            .await
            .stdout,
    )
    .expect("json");
    assert_eq!(cm["data"]["mode"], "fast");
    assert_eq!(cm["data"]["app.properties"], "color=blue\n");
    let out = flotctl(
        &kc,
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=s3cret",
        ],
    )
    .await;
    assert_eq!(out.stdout, "secret/creds created\n", "{}", out.stderr);
    let secret: serde_json::Value = serde_json::from_str(
        &flotctl(&kc, &["get", "secret", "creds", "-o", "json"])
            .await
            .stdout,
    )
    .expect("json");
    assert_eq!(secret["data"]["password"], "czNjcmV0");
    let out = flotctl(
        &kc,
        &[
            "create",
            "configmap",
            "dup",
            "--from-literal=a=1",
            "--from-literal=a=2",
        ],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot add key a"), "{}", out.stderr);
    assert_eq!(
        flotctl(&kc, &["create", "namespace", "team-a"])
            .await
            .stdout,
        "namespace/team-a created\n"
    );

    // edit: the editor's change is saved.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["edit", "cm/settings"])
        .env("EDITOR", "sed -i s/mode:\\ fast/mode:\\ slow/")
        .output()
        .await
        .expect("flotctl edit");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configmap/settings edited\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm: serde_json::Value = serde_json::from_str(
        &flotctl(&kc, &["get", "cm", "settings", "-o", "json"])
            .await
            .stdout,
    )
    .expect("json");
    assert_eq!(cm["data"]["mode"], "slow");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["edit", "cm", "settings"])
        .env("EDITOR", "true")
        .output()
        .await
        .expect("flotctl edit");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Edit cancelled, no changes made.\n"
    );

    let out = flotctl(&kc, &["version"]).await;
    assert!(
        out.stdout.starts_with("Client Version: v") && out.stdout.contains("\nServer Version: v"),
        "{}",
        out.stdout
    );
    let out = flotctl(&kc, &["completion", "bash"]).await;
    assert!(
        out.code == 0 && out.stdout.contains("flotctl"),
        "{}",
        out.stderr
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_details_and_events() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kc = h.server.as_ref().expect("running").kubeconfig.clone();
    let app = write(h.dir.path(), "app.yaml", &APP.replace("---\napiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec:\n  containers: [{name: c}]\n", ""));
    assert_eq!(
        flotctl(&kc, &["apply", "-f", app.to_str().expect("utf-8")])
            .await
            .code,
        0
    );
    let c = h.client().await;
    c.create(
        "v1",
        "events",
        "default",
        &serde_json::json!({
            "metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Deployment", "namespace": "default", "name": "web", "apiVersion": "apps/v1"},
            "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-abc to 2", "type": "Normal",
            "source": {"component": "deployment-controller"}
        }),
    )
    .await
    .expect("event");
    let out = flotctl(&kc, &["describe", "deploy", "web"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for want in [
        "Name:         web",
        "Selector:     app=web",
        "StrategyType:",
        "25% max unavailable, 25% max surge",
        "Image:    nginx:1.25",
        "Events:",
        "ScalingReplicaSet",
        "Scaled up replica set web-abc to 2",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?} in\n{}",
            out.stdout
        );
    }
    let out = flotctl(&kc, &["describe", "svc/web"]).await;
    assert!(
        out.stdout.contains("Type:         NodePort") && out.stdout.contains("Events:  <none>"),
        "{}",
        out.stdout
    );
    let out = flotctl(&kc, &["describe", "pod", "missing"]).await;
    assert_eq!(out.code, 1);
    h.shutdown().await;
}
