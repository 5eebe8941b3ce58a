//! An API server for tests, in the test process on ephemeral loopback ports, over one of
//! the three store setups it supports: its embedded etcd-lite, a 3-member etcd-lite
//! cluster (in-process members), or the real etcd (a separate process). Plus a small
//! client that speaks `flotilla.api.v1.Resources` with JSON values.
//!
//! Include it with `#[path = "support/api.rs"] mod api;` (it needs `inproc` and `cluster`
//! included as siblings).

#![allow(dead_code)]

use std::time::Duration;

use apiserver::{Server, ServerConfig};
use flotilla_proto::api::patch_request::PatchType;
use flotilla_proto::api::resources_client::ResourcesClient;
use flotilla_proto::api::{
    BindRequest, CreateRequest, DeleteRequest, GetRequest, ListRequest, PatchRequest, ResourceRef,
    UpdateRequest, WatchEvent, WatchRequest,
};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

use crate::cluster::{ClusterOptions, Flavor, ProcessCluster};
use crate::inproc::InProcCluster;

/// Which store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreSetup {
    /// The embedded single-member etcd-lite.
    Embedded,
    /// Three etcd-lite members (in this process, real gRPC between them).
    EtcdLite3,
    /// The real etcd 3.4 server (Debian's etcd-server).
    RealEtcd,
    /// Three etcd-lite members as separate processes (to SIGKILL them).
    EtcdLite3Processes,
}

/// A server and what it runs on.
pub struct ApiHarness {
    pub server: Option<Server>,
    pub dir: TempDir,
    pub config: ServerConfig,
    pub setup: StoreSetup,
    inproc: Option<InProcCluster>,
    process: Option<ProcessCluster>,
}

impl ApiHarness {
    /// Starts a server on `setup`, with `tweak` applied to its configuration.
    pub async fn start(setup: StoreSetup, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig {
            data_dir: dir.path().join("server"),
            ..Default::default()
        };
        let mut inproc = None;
        let mut process = None;
        match setup {
            StoreSetup::Embedded => {}
            StoreSetup::EtcdLite3 => {
                let c = InProcCluster::start(3).await;
                config.etcd_endpoints = (0..3).map(|i| c.client_url(i)).collect();
                inproc = Some(c);
            }
            StoreSetup::RealEtcd => {
                let etcd = Flavor::system_etcd().unwrap_or_else(|| {
                    panic!("the real etcd is not installed at /usr/bin/etcd or $ETCD_BIN: run .ci/run, which installs it")
                });
                let c = ProcessCluster::start(ClusterOptions::new(1, etcd))
                    .await
                    .expect("the real etcd starts");
                config.etcd_endpoints = c.client_urls();
                process = Some(c);
            }
            StoreSetup::EtcdLite3Processes => {
                let lite = Flavor::EtcdLite(env!("CARGO_BIN_EXE_flotilla").into());
                let c = ProcessCluster::start(ClusterOptions::new(3, lite))
                    .await
                    .expect("etcd-lite members start");
                config.etcd_endpoints = c.client_urls();
                process = Some(c);
            }
        }
        tweak(&mut config);
        let mut h = ApiHarness {
            server: None,
            dir,
            config,
            setup,
            inproc,
            process,
        };
        h.start_server("127.0.0.1:0".parse().expect("addr")).await;
        h
    }

    async fn start_server(&mut self, addr: std::net::SocketAddr) {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let server = Server::start(self.config.clone(), listener)
            .await
            .expect("the API server starts");
        self.server = Some(server);
        let client = self.client().await;
        crate::inproc::wait_until(Duration::from_secs(20), "the API server is ready", || {
            let c = client.clone();
            async move { c.list("v1", "namespaces", "").await.ok() }
        })
        .await;
    }

    /// Stops the server cleanly and starts it again on the same port, data dir and store.
    pub async fn restart(&mut self) {
        let addr = self.addr();
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.start_server(addr).await;
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// The server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server().addr
    }

    /// A client with the admin token.
    pub async fn client(&self) -> Client {
        Client::connect(self.server().addr, Some(self.server().admin_token.clone())).await
    }

    /// A client with another token (or none).
    pub async fn client_with(&self, token: Option<String>) -> Client {
        Client::connect(self.server().addr, token).await
    }

    /// Compacts the store's history up to its current revision.
    pub async fn compact_store(&self) -> i64 {
        let store = self.server().api.store();
        let rev = store.current_revision().await.expect("revision");
        store.compact(rev).await.expect("compaction");
        rev
    }

    /// The store processes (setups RealEtcd and EtcdLite3Processes).
    pub fn processes(&mut self) -> &mut ProcessCluster {
        self.process.as_mut().expect("a process-based store")
    }

    /// A typed client with the admin credentials of the server's admin.yaml.
    pub fn admin_client(&self) -> flotilla_client::Client {
        let kubeconfig = &self.server.as_ref().expect("running").kubeconfig;
        let resolved = flotilla_client::Kubeconfig::read(kubeconfig)
            .expect("admin.yaml reads")
            .resolve(None)
            .expect("admin.yaml resolves");
        flotilla_client::Client::new(&resolved).expect("client")
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        if let Some(c) = self.inproc.take() {
            c.shutdown().await;
        }
        drop(self.process.take());
    }
}

/// A client for `flotilla.api.v1.Resources` that speaks JSON values.
#[derive(Clone)]
pub struct Client {
    pub inner: ResourcesClient<Channel>,
    token: Option<String>,
}

/// A reference to a resource.
pub fn rref(api_version: &str, resource: &str, namespace: &str, name: &str) -> ResourceRef {
    ResourceRef {
        api_version: api_version.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        subresource: String::new(),
    }
}

fn decode(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("the server returns JSON")
}

/// A page of a list.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    pub resource_version: String,
    pub continue_token: String,
    pub remaining: Option<i64>,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr, token: Option<String>) -> Self {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect to the API server");
        Self::from_channel(channel, token)
    }

    pub fn from_channel(channel: Channel, token: Option<String>) -> Self {
        Client {
            inner: ResourcesClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(16 << 20),
            token,
        }
    }

    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("ascii"),
            );
        }
        r
    }

    pub async fn create_raw(
        &self,
        r: ResourceRef,
        body: Vec<u8>,
        dry_run: bool,
    ) -> Result<Value, Status> {
        let resp = self
            .inner
            .clone()
            .create(self.req(CreateRequest {
                r#ref: Some(r),
                object: body.into(),
                dry_run,
            }))
            .await?;
        Ok(decode(&resp.into_inner().object))
    }

    pub async fn create(
        &self,
        api_version: &str,
        resource: &str,
        ns: &str,
        obj: &Value,
    ) -> Result<Value, Status> {
        self.create_raw(
            rref(api_version, resource, ns, ""),
            obj.to_string().into_bytes(),
            false,
        )
        .await
    }

    pub async fn get(
        &self,
        api_version: &str,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> Result<Value, Status> {
        self.get_at(rref(api_version, resource, ns, name), "").await
    }

    pub async fn get_at(&self, r: ResourceRef, rv: &str) -> Result<Value, Status> {
        let resp = self
            .inner
            .clone()
            .get(self.req(GetRequest {
                r#ref: Some(r),
                resource_version: rv.into(),
            }))
            .await?;
        Ok(decode(&resp.into_inner().object))
    }

    pub async fn list(&self, api_version: &str, resource: &str, ns: &str) -> Result<Page, Status> {
        self.list_with(rref(api_version, resource, ns, ""), ListRequest::default())
            .await
    }

    pub async fn list_with(&self, r: ResourceRef, mut req: ListRequest) -> Result<Page, Status> {
        req.r#ref = Some(r);
        let resp = self.inner.clone().list(self.req(req)).await?.into_inner();
        Ok(Page {
            items: resp.items.iter().map(|b| decode(b)).collect(),
            resource_version: resp.resource_version,
            continue_token: resp.continue_token,
            remaining: resp.remaining_item_count,
        })
    }

    pub async fn update(&self, r: ResourceRef, obj: &Value) -> Result<Value, Status> {
        let resp = self
            .inner
            .clone()
            .update(self.req(UpdateRequest {
                r#ref: Some(r),
                object: obj.to_string().into(),
                dry_run: false,
            }))
            .await?;
        Ok(decode(&resp.into_inner().object))
    }

    pub async fn update_status(&self, r: ResourceRef, obj: &Value) -> Result<Value, Status> {
        let resp = self
            .inner
            .clone()
            .update_status(self.req(UpdateRequest {
                r#ref: Some(r),
                object: obj.to_string().into(),
                dry_run: false,
            }))
            .await?;
        Ok(decode(&resp.into_inner().object))
    }

    pub async fn patch(
        &self,
        r: ResourceRef,
        ty: PatchType,
        patch: &Value,
    ) -> Result<Value, Status> {
        let resp = self
            .inner
            .clone()
            .patch(self.req(PatchRequest {
                r#ref: Some(r),
                patch: patch.to_string().into(),
                r#type: ty as i32,
                dry_run: false,
            }))
            .await?;
        Ok(decode(&resp.into_inner().object))
    }

    pub async fn delete(&self, r: ResourceRef, grace: Option<i64>) -> Result<Value, Status> {
        let resp = self
            .inner
            .clone()
            .delete(self.req(DeleteRequest {
                r#ref: Some(r),
                grace_period_seconds: grace,
                ..Default::default()
            }))
            .await?;
        Ok(decode(&resp.into_inner().object))
    }

    pub async fn bind(&self, ns: &str, pod: &str, node: &str) -> Result<Value, Status> {
        let resp = self
            .inner
            .clone()
            .bind(self.req(BindRequest {
                namespace: ns.into(),
                name: pod.into(),
                node_name: node.into(),
                ..Default::default()
            }))
            .await?;
        Ok(decode(&resp.into_inner().object))
    }

    pub async fn watch(&self, r: ResourceRef, mut req: WatchRequest) -> Result<Watch, Status> {
        req.r#ref = Some(r);
        let stream = self.inner.clone().watch(self.req(req)).await?.into_inner();
        Ok(Watch { stream })
    }

    /// Watches `r`'s objects matching `field_selector` from the current resourceVersion:
    /// only what happens from now on.
    pub async fn watch_from_now(&self, r: ResourceRef, field_selector: &str) -> Watch {
        let rv = self
            .list_with(
                r.clone(),
                ListRequest {
                    limit: 1,
                    ..Default::default()
                },
            )
            .await
            .expect("list")
            .resource_version;
        self.watch(
            r,
            WatchRequest {
                resource_version: rv,
                field_selector: field_selector.into(),
                ..Default::default()
            },
        )
        .await
        .expect("watch")
    }
}

/// A watch stream.
pub struct Watch {
    pub stream: Streaming<WatchEvent>,
}

/// One event, decoded: (type name, object).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub object: Value,
    pub resource_version: String,
}

impl Watch {
    /// The next event within `within` (panics on timeout; Err on a stream error).
    pub async fn next(&mut self, within: Duration) -> Result<Option<Event>, Status> {
        let msg = tokio::time::timeout(within, self.stream.message())
            .await
            .expect("a watch event in time")?;
        Ok(msg.map(|m| Event {
            kind: match m.r#type {
                0 => "ADDED",
                1 => "MODIFIED",
                2 => "DELETED",
                _ => "BOOKMARK",
            },
            object: decode(&m.object),
            resource_version: m.resource_version,
        }))
    }

    /// The next event that is not a bookmark.
    pub async fn next_change(&mut self, within: Duration) -> Event {
        loop {
            let ev = self
                .next(within)
                .await
                .expect("no watch error")
                .expect("the watch is open");
            if ev.kind != "BOOKMARK" {
                return ev;
            }
        }
    }
}

/// The Kubernetes reason in a failed call's details.
pub fn reason(s: &Status) -> String {
    serde_json::from_slice::<Value>(s.details())
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The Kubernetes Status in a failed call's details.
pub fn status_of(s: &Status) -> Value {
    serde_json::from_slice(s.details()).unwrap_or(Value::Null)
}
