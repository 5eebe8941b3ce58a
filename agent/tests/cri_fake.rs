//! The CRI runtime against a fake CRI server on a Unix socket in a temp dir, for what is
//! hard to make a real containerd do on cue: objects vanishing between a List and their
//! Status, a runtime that is down, annotations that cannot be read, every terminal state,
//! and what each request must carry (the full sandbox config on CreateContainer, the
//! label that keeps other tenants' containers out of every List).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::runtime::cri::CriRuntime;
use agent::runtime::{
    ContainerConfig, ContainerState, Runtime, RuntimeError, SandboxConfig, SandboxState,
};
use flotilla_proto::cri as pb;
use flotilla_proto::cri::image_service_server::{ImageService, ImageServiceServer};
use flotilla_proto::cri::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tonic::{Request, Response, Status};

/// What the fake holds and what it was asked.
#[derive(Default)]
struct State {
    sandboxes: HashMap<String, pb::PodSandboxStatus>,
    containers: HashMap<String, pb::ContainerStatus>,
    /// Listed, but NotFound on Status: removed between the two calls.
    vanishing: Vec<String>,
    /// Every call answers this until cleared (a runtime that is down).
    down: Option<tonic::Code>,
    creates: Vec<pb::CreateContainerRequest>,
    list_selectors: Vec<HashMap<String, String>>,
    removed: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self) -> Result<(), Status> {
        match self.state().down {
            Some(code) => Err(Status::new(code, "connection refused by the fake")),
            None => Ok(()),
        }
    }
}

fn selected(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[tonic::async_trait]
impl RuntimeService for Fake {
    async fn version(
        &self,
        _: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        self.check()?;
        Ok(Response::new(pb::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "9.9".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<pb::RunPodSandboxRequest>,
    ) -> Result<Response<pb::RunPodSandboxResponse>, Status> {
        self.check()?;
        let config = r.into_inner().config.unwrap_or_default();
        let mut st = self.state();
        let id = format!("sb-{}", st.sandboxes.len());
        st.sandboxes.insert(
            id.clone(),
            pb::PodSandboxStatus {
                id: id.clone(),
                metadata: config.metadata,
                state: pb::PodSandboxState::SandboxReady as i32,
                network: Some(pb::PodSandboxNetworkStatus {
                    ip: "10.1.0.2".into(),
                    ..Default::default()
                }),
                labels: config.labels,
                annotations: config.annotations,
                ..Default::default()
            },
        );
        Ok(Response::new(pb::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<pb::RemovePodSandboxRequest>,
    ) -> Result<Response<pb::RemovePodSandboxResponse>, Status> {
        self.check()?;
        let id = r.into_inner().pod_sandbox_id;
        let mut st = self.state();
        st.removed.push(id.clone());
        match st.sandboxes.remove(&id) {
            Some(_) => Ok(Response::new(pb::RemovePodSandboxResponse {})),
            None => Err(Status::not_found(format!("sandbox {id}"))),
        }
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<pb::PodSandboxStatusRequest>,
    ) -> Result<Response<pb::PodSandboxStatusResponse>, Status> {
        self.check()?;
        let id = r.into_inner().pod_sandbox_id;
        let st = self.state();
        match st.sandboxes.get(&id) {
            Some(s) if !st.vanishing.contains(&id) => {
                Ok(Response::new(pb::PodSandboxStatusResponse {
                    status: Some(s.clone()),
                    ..Default::default()
                }))
            }
            _ => Err(Status::not_found(format!("sandbox {id}"))),
        }
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<pb::ListPodSandboxRequest>,
    ) -> Result<Response<pb::ListPodSandboxResponse>, Status> {
        self.check()?;
        let selector = r
            .into_inner()
            .filter
            .map(|f| f.label_selector)
            .unwrap_or_default();
        let mut st = self.state();
        st.list_selectors.push(selector.clone());
        let items = st
            .sandboxes
            .values()
            .filter(|s| selected(&s.labels, &selector))
            .map(|s| pb::PodSandbox {
                id: s.id.clone(),
                metadata: s.metadata.clone(),
                state: s.state,
                labels: s.labels.clone(),
                annotations: s.annotations.clone(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        r: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        self.check()?;
        let r = r.into_inner();
        let mut st = self.state();
        st.creates.push(r.clone());
        let config = r.config.unwrap_or_default();
        let id = format!("c-{}", st.containers.len());
        st.containers.insert(
            id.clone(),
            pb::ContainerStatus {
                id: id.clone(),
                metadata: config.metadata,
                state: pb::ContainerState::ContainerCreated as i32,
                image: config.image,
                labels: config.labels,
                annotations: config.annotations,
                ..Default::default()
            },
        );
        Ok(Response::new(pb::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn stop_container(
        &self,
        r: Request<pb::StopContainerRequest>,
    ) -> Result<Response<pb::StopContainerResponse>, Status> {
        self.check()?;
        let id = r.into_inner().container_id;
        match self.state().containers.get_mut(&id) {
            Some(c) => {
                c.state = pb::ContainerState::ContainerExited as i32;
                Ok(Response::new(pb::StopContainerResponse {}))
            }
            None => Err(Status::not_found(format!("container {id}"))),
        }
    }

    async fn remove_container(
        &self,
        r: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::RemoveContainerResponse>, Status> {
        self.check()?;
        let id = r.into_inner().container_id;
        match self.state().containers.remove(&id) {
            Some(_) => Ok(Response::new(pb::RemoveContainerResponse {})),
            None => Err(Status::not_found(format!("container {id}"))),
        }
    }

    async fn list_containers(
        &self,
        r: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        self.check()?;
        let selector = r
            .into_inner()
            .filter
            .map(|f| f.label_selector)
            .unwrap_or_default();
        let mut st = self.state();
        st.list_selectors.push(selector.clone());
        let containers = st
            .containers
            .values()
            .filter(|c| selected(&c.labels, &selector))
            .map(|c| pb::Container {
                id: c.id.clone(),
                metadata: c.metadata.clone(),
                state: c.state,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        r: Request<pb::ContainerStatusRequest>,
    ) -> Result<Response<pb::ContainerStatusResponse>, Status> {
        self.check()?;
        let id = r.into_inner().container_id;
        let st = self.state();
        match st.containers.get(&id) {
            Some(c) if !st.vanishing.contains(&id) => {
                Ok(Response::new(pb::ContainerStatusResponse {
                    status: Some(c.clone()),
                    ..Default::default()
                }))
            }
            _ => Err(Status::not_found(format!("container {id}"))),
        }
    }
}

#[tonic::async_trait]
impl ImageService for Fake {
    /// Every image is present: pulling is not what these tests are about.
    async fn image_status(
        &self,
        r: Request<pb::ImageStatusRequest>,
    ) -> Result<Response<pb::ImageStatusResponse>, Status> {
        self.check()?;
        let image = r.into_inner().image.unwrap_or_default().image;
        Ok(Response::new(pb::ImageStatusResponse {
            image: Some(pb::Image {
                id: format!("sha256:{image}"),
                repo_tags: vec![image],
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

/// Serves the fake on a socket in a temp dir and connects the CRI runtime to it.
async fn serve() -> (Fake, CriRuntime, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket: PathBuf = dir.path().join("cri.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    let fake = Fake::default();
    let (runtime, images) = (fake.clone(), fake.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::new(runtime))
            .add_service(ImageServiceServer::new(images))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await;
    });
    let rt = CriRuntime::connect(&socket, "/flotilla-fake-test")
        .await
        .expect("connect");
    (fake, rt, dir)
}

fn sandbox(name: &str) -> SandboxConfig {
    SandboxConfig {
        name: name.into(),
        namespace: "default".into(),
        uid: format!("uid-{name}"),
        hostname: name.into(),
        log_directory: format!("/var/log/pods/{name}").into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_runtime_reports_its_version_for_node_info() {
    let (_fake, rt, _dir) = serve().await;
    assert_eq!(rt.version(), "fake://9.9");
}

#[tokio::test]
async fn objects_gone_between_list_and_status_are_left_out() {
    let (fake, rt, _dir) = serve().await;
    let a = rt.run_pod_sandbox(&sandbox("a")).await.expect("a");
    let b = rt.run_pod_sandbox(&sandbox("b")).await.expect("b");
    let c1 = rt
        .create_container(
            &a,
            &ContainerConfig {
                name: "one".into(),
                image: "img:1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let c2 = rt
        .create_container(
            &a,
            &ContainerConfig {
                name: "two".into(),
                image: "img:1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    fake.state().vanishing = vec![b.clone(), c2.clone()];
    let sandboxes = rt.list_pod_sandboxes().await.expect("list");
    assert_eq!(
        sandboxes.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [a.as_str()]
    );
    let containers = rt.list_containers(Some(&a)).await.expect("list");
    assert_eq!(
        containers.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [c1.as_str()]
    );
    // Stopping or removing what is already gone is done, not an error.
    fake.state().containers.clear();
    rt.stop_container(&c1, Duration::from_secs(1))
        .await
        .expect("stop a gone container");
    rt.remove_container(&c1).await.expect("remove a gone one");
    rt.remove_pod_sandbox("sb-nonexistent")
        .await
        .expect("remove a gone sandbox");
}

#[tokio::test]
async fn only_this_agents_objects_are_listed() {
    let (fake, rt, _dir) = serve().await;
    rt.run_pod_sandbox(&sandbox("mine")).await.expect("mine");
    // Someone else's pod on the same containerd (another kubelet, crictl, nerdctl).
    fake.state().sandboxes.insert(
        "foreign".into(),
        pb::PodSandboxStatus {
            id: "foreign".into(),
            state: pb::PodSandboxState::SandboxReady as i32,
            labels: HashMap::from([("app".into(), "theirs".into())]),
            ..Default::default()
        },
    );
    let listed = rt.list_pod_sandboxes().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].config.name, "mine");
    rt.list_containers(None).await.expect("list");
    for selector in &fake.state().list_selectors {
        assert_eq!(
            selector.get("io.flotilla.managed").map(String::as_str),
            Some("true"),
            "every List asks only for this agent's objects: {selector:?}"
        );
    }
}

#[tokio::test]
async fn every_create_carries_the_full_sandbox_config() {
    let (fake, rt, _dir) = serve().await;
    let cfg = SandboxConfig {
        port_mappings: vec![agent::runtime::PortMapping {
            protocol: "TCP".into(),
            container_port: 8080,
            host_port: 30080,
            host_ip: String::new(),
        }],
        ..sandbox("web")
    };
    let sb = rt.run_pod_sandbox(&cfg).await.expect("sandbox");
    rt.create_container(
        &sb,
        &ContainerConfig {
            name: "http".into(),
            image: "img:1".into(),
            log_path: "http/0.log".into(),
            ..Default::default()
        },
    )
    .await
    .expect("create");
    let st = fake.state();
    let create = st.creates.last().expect("a create");
    // containerd 1.6 crashes on a CreateContainer without it, and without the full one the
    // container lands outside the pod's cgroup and gets no log.
    let sent = create.sandbox_config.as_ref().expect("sandbox config sent");
    assert_eq!(sent.log_directory, "/var/log/pods/web");
    assert_eq!(
        sent.linux.as_ref().map(|l| l.cgroup_parent.as_str()),
        Some("/flotilla-fake-test/poduid-web")
    );
    assert_eq!(sent.port_mappings.len(), 1);
    assert_eq!(sent.port_mappings[0].host_port, 30080);
    assert_eq!(
        create.config.as_ref().map(|c| c.log_path.as_str()),
        Some("http/0.log")
    );
}

#[tokio::test]
async fn terminal_states_map_as_the_kubelet_reads_them() {
    let (fake, rt, _dir) = serve().await;
    let sb = rt.run_pod_sandbox(&sandbox("p")).await.expect("sandbox");
    let id = rt
        .create_container(
            &sb,
            &ContainerConfig {
                name: "c".into(),
                image: "img:1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    for (state, exit, reason, want) in [
        (
            pb::ContainerState::ContainerRunning,
            0,
            "",
            ContainerState::Running,
        ),
        (
            pb::ContainerState::ContainerCreated,
            0,
            "",
            ContainerState::Created,
        ),
        (
            pb::ContainerState::ContainerExited,
            137,
            "OOMKilled",
            ContainerState::Exited,
        ),
        (
            pb::ContainerState::ContainerExited,
            3,
            "Error",
            ContainerState::Exited,
        ),
        // A container containerd lost track of is over: the policy decides a restart.
        (
            pb::ContainerState::ContainerUnknown,
            0,
            "",
            ContainerState::Exited,
        ),
    ] {
        {
            let mut st = fake.state();
            let c = st.containers.get_mut(&id).expect("container");
            c.state = state as i32;
            c.exit_code = exit;
            c.reason = reason.into();
            c.finished_at = 1_700_000_000_000_000_000;
        }
        let s = rt.container_status(&id).await.expect("status");
        assert_eq!(
            (s.state, s.exit_code, s.reason.as_str()),
            (want, exit, reason)
        );
        assert_eq!(s.config.name, "c", "the config comes back");
    }
    let s = rt.container_status(&id).await.expect("status");
    assert!(
        s.finished_at.starts_with("2023-11-14T22:13:20"),
        "{}",
        s.finished_at
    );
}

#[tokio::test]
async fn unreadable_annotations_fall_back_to_cri_metadata() {
    let (fake, rt, _dir) = serve().await;
    let sb = rt.run_pod_sandbox(&sandbox("p")).await.expect("sandbox");
    let id = rt
        .create_container(
            &sb,
            &ContainerConfig {
                name: "c".into(),
                image: "img:1".into(),
                attempt: 2,
                ..Default::default()
            },
        )
        .await
        .expect("create");
    {
        let mut st = fake.state();
        for s in st.sandboxes.values_mut() {
            s.annotations
                .insert("io.flotilla.sandbox-config".into(), "{not json".into());
        }
        for c in st.containers.values_mut() {
            c.annotations.remove("io.flotilla.container-config");
        }
    }
    // Still this pod's sandbox (never an orphan to remove), still container c's attempt 2.
    let s = rt.pod_sandbox_status(&sb).await.expect("status");
    assert_eq!(
        (s.config.uid.as_str(), s.config.name.as_str()),
        ("uid-p", "p")
    );
    assert_eq!(s.state, SandboxState::Ready);
    let c = rt.container_status(&id).await.expect("status");
    assert_eq!((c.config.name.as_str(), c.config.attempt), ("c", 2));
    assert_eq!(c.config.image, "img:1");
}

#[tokio::test]
async fn a_runtime_that_is_down_is_an_error_naming_it() {
    let (fake, rt, _dir) = serve().await;
    fake.state().down = Some(tonic::Code::Unavailable);
    match rt.list_pod_sandboxes().await {
        Err(RuntimeError::Io(m)) => assert!(m.contains("Unavailable"), "{m}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    match rt.container_status("c-0").await {
        Err(RuntimeError::Io(m)) => assert!(m.contains("connection refused"), "{m}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    fake.state().down = None;
    assert!(rt.list_pod_sandboxes().await.expect("back").is_empty());
}

#[tokio::test]
async fn a_pods_sandboxes_are_found_by_its_uid_alone() {
    let (fake, rt, _dir) = serve().await;
    let a = rt.run_pod_sandbox(&sandbox("a")).await.expect("a");
    rt.run_pod_sandbox(&sandbox("b")).await.expect("b");
    let found = rt.pod_sandboxes("uid-a").await.expect("find");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, a);
    // One List asking for the pod's label: not every sandbox's status in turn.
    let st = fake.state();
    let last = st.list_selectors.last().expect("a list");
    assert_eq!(
        last.get("io.kubernetes.pod.uid").map(String::as_str),
        Some("uid-a")
    );
}
