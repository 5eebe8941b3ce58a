//! Images end to end: an API server, the scheduler and an agent on a private containerd
//! in this process, pulling from a real registry that asks for a password. A pod whose
//! imagePullSecret holds the password runs; without it the pod waits with ErrImagePull,
//! then ImagePullBackOff, the registry's refusal in the message; a missing image says
//! "not found" the same way; imagePullPolicy Never with an absent image waits with
//! ErrImageNeverPull. Events tell the story (Pulling, Pulled, Failed, BackOff).

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/containerd.rs"]
mod containerd;
#[path = "support/inproc.rs"]
mod inproc;
#[path = "support/registry.rs"]
mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::run::AgentConfig;
use agent::runtime::cri::CriRuntime;
use api::{ApiHarness, StoreSetup};
use base64::Engine;
use containerd::Containerd;
use flotilla_client::{Client, DeleteParams, ListParams};
use k8s_openapi::api::core::v1::{ContainerStateWaiting, Event, Pod};
use registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

const USER: &str = "flotilla";
const PASSWORD: &str = "s3cret-pa55";

fn pod(name: &str, image: &str, secret: Option<&str>, policy: Option<&str>) -> Value {
    let mut container = json!({
        "name": "main", "image": image,
        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
    });
    if let Some(p) = policy {
        container["imagePullPolicy"] = json!(p);
    }
    let mut spec = json!({"terminationGracePeriodSeconds": 2, "containers": [container]});
    if let Some(s) = secret {
        spec["imagePullSecrets"] = json!([{"name": s}]);
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

fn waiting(p: &Pod) -> Option<ContainerStateWaiting> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .clone()
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

/// Watches `name`'s waiting reasons until it has waited with ErrImagePull and then with
/// ImagePullBackOff; returns every (reason, message) seen, in order.
async fn pull_fails_then_backs_off(client: &Client, name: &str) -> Vec<(String, String)> {
    let api = client.api::<Pod>("default");
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(p) = api.get_opt(name).await.ok().flatten() {
            if let Some(w) = waiting(&p) {
                let entry = (w.reason.unwrap_or_default(), w.message.unwrap_or_default());
                if seen.last() != Some(&entry) {
                    seen.push(entry);
                }
            }
            last = p.status;
        }
        if let Some(first_error) = seen.iter().position(|(r, _)| r == "ErrImagePull")
            && seen[first_error..]
                .iter()
                .any(|(r, _)| r == "ImagePullBackOff")
        {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{name} did not wait with ErrImagePull, then ImagePullBackOff; saw {seen:#?}; its status: {last:#?}; events: {:#?}",
        events_of(client, name).await
    );
}

async fn events_of(client: &Client, pod: &str) -> Vec<(String, String)> {
    client
        .api::<Event>("default")
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_with_secrets_and_failures_back_off() {
    if !containerd::available() || !registry::available() {
        eprintln!("skipped: containerd, docker-registry or skopeo is not installed (or not root)");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    let cd = Containerd::start("flotimg0", "10.244.254.0/24").await;
    let reg = Registry::start(Some((USER, PASSWORD))).await;
    let private = reg.push(
        &containerd::images().join("busybox.tar"),
        "private/busybox:1",
    );

    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let client = h.admin_client();
    let (stop, stop_rx) = watch::channel(false);
    let scheduler = tokio::spawn(scheduler::run(
        client.clone(),
        Default::default(),
        stop_rx.clone(),
    ));
    let runtime = CriRuntime::connect(&cd.socket, "/flotilla-test-images")
        .await
        .expect("connect");
    let data = cd.dir.path().join("agent");
    std::fs::create_dir_all(&data).expect("agent dir");
    let cfg = AgentConfig {
        node_name: "images-1".into(),
        host_ip: "127.0.0.1".into(),
        data_dir: data,
        // The test images must stay whatever the disk's fill: collection off.
        image_gc: agent::image_gc::ImageGcPolicy::with_thresholds(100, 99).expect("policy"),
        heartbeat_interval: Duration::from_secs(1),
        listen: "127.0.0.1:0".parse().expect("address"),
        ..Default::default()
    };
    let agent = tokio::spawn({
        let client = client.clone();
        async move {
            agent::run::run(client, Arc::new(runtime), cfg, stop_rx)
                .await
                .expect("the agent runs");
        }
    });

    let raw = h.client().await;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let config = json!({"auths": {reg.host(): {"auth": auth}}}).to_string();
    raw.create(
        "v1",
        "secrets",
        "default",
        &json!({
            "metadata": {"name": "regcred"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)},
        }),
    )
    .await
    .expect("secret");
    let missing = format!("{}/private/nothing:1", reg.host());
    let absent = format!("{}/private/absent:1", reg.host());
    for p in [
        pod("with-secret", &private, Some("regcred"), None),
        // Always: the image may be on the node already (the pod above), and IfNotPresent
        // would run it without asking the registry, as in Kubernetes.
        pod("no-secret", &private, None, Some("Always")),
        pod("missing", &missing, Some("regcred"), None),
        pod("never", &absent, None, Some("Never")),
    ] {
        raw.create("v1", "pods", "default", &p).await.expect("pod");
    }

    // (a) The secret's credentials open the registry.
    let api = client.api::<Pod>("default");
    inproc::wait_until(
        Duration::from_secs(90),
        "the pod with the pull secret runs",
        || {
            let api = api.clone();
            async move {
                api.get_opt("with-secret")
                    .await
                    .ok()
                    .flatten()
                    .filter(running)
                    .map(|_| ())
            }
        },
    )
    .await;

    // (b) Without them the registry refuses, and the agent says so, then backs off.
    let seen = pull_fails_then_backs_off(&client, "no-secret").await;
    let refused = |m: &str| {
        let m = m.to_lowercase();
        m.contains("401") || m.contains("unauthorized")
    };
    for (reason, message) in &seen {
        assert!(
            refused(message),
            "{reason}: the registry's refusal in {message:?} (registry log: {})",
            reg.log()
        );
    }

    // (c) An image the registry does not have.
    let seen = pull_fails_then_backs_off(&client, "missing").await;
    for (reason, message) in &seen {
        assert!(message.contains("not found"), "{reason}: {message:?}");
    }

    // (d) Never pull, and the image is absent.
    let w = inproc::wait_until(
        Duration::from_secs(30),
        "the Never pod waits with ErrImageNeverPull",
        || {
            let api = api.clone();
            async move {
                let p = api.get_opt("never").await.ok().flatten()?;
                waiting(&p).filter(|w| w.reason.as_deref() == Some("ErrImageNeverPull"))
            }
        },
    )
    .await;
    assert_eq!(
        w.message.as_deref(),
        Some(
            format!("Container image {absent:?} is not present with pull policy of Never").as_str()
        )
    );

    // Events as the kubelet records them.
    let events = events_of(&client, "with-secret").await;
    let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    assert!(
        reasons.contains(&"Pulling") && reasons.contains(&"Pulled"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(r, m)| r == "Pulled"
            && m.starts_with(&format!("Successfully pulled image {private:?} in "))),
        "{events:?}"
    );
    let events = events_of(&client, "no-secret").await;
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Failed" && m.starts_with("Failed to pull image") && refused(m)),
        "{events:?}"
    );
    assert!(events.iter().any(|(r, _)| r == "BackOff"), "{events:?}");
    let events = events_of(&client, "never").await;
    assert!(
        events.iter().any(|(r, _)| r == "ErrImageNeverPull"),
        "{events:?}"
    );

    // Everything stops and goes before containerd does.
    for name in ["with-secret", "no-secret", "missing", "never"] {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    inproc::wait_until(
        Duration::from_secs(60),
        "every pod is stopped and removed",
        || {
            let api = api.clone();
            async move {
                api.list(&ListParams::default())
                    .await
                    .ok()
                    .filter(|l| l.items.is_empty())
                    .map(|_| ())
            }
        },
    )
    .await;
    stop.send_replace(true);
    agent.await.expect("the agent stops");
    let _ = scheduler.await;
    h.shutdown().await;
    drop(reg);
    drop(cd);
}
