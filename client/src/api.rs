//! The client: a connection to the API server, with an untyped [`DynamicApi`] (JSON values,
//! any resource, as flotctl needs) and a typed [`Api`] over it for any k8s-openapi type (as
//! the scheduler, controllers and agents need).

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tonic::transport::Channel;

use flotilla_proto::api::patch_request::PatchType;
use flotilla_proto::api::resources_client::ResourcesClient;
use flotilla_proto::api::watch_event::EventType;
use flotilla_proto::api::{
    BindRequest, CreateRequest, DeleteRequest, DiscoverRequest, ExecRequest, GetRequest,
    ListRequest, LogsRequest, PatchRequest, ResourceInfo, ResourceRef, UpdateRequest, WatchRequest,
};

use crate::error::ClientError;
use crate::kubeconfig::Resolved;

/// Largest response accepted (a big list).
const MAX_RESPONSE: usize = 512 * 1024 * 1024;

/// A connection to the API server.
#[derive(Clone)]
pub struct Client {
    inner: ResourcesClient<Channel>,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    address: String,
    /// Whether the server is reached over TLS (an https:// URL).
    tls: bool,
    /// Whether a client certificate is presented over TLS: the server refusing it can
    /// surface as nothing more than a closed connection.
    presents_certificate: bool,
    /// Whether any call has succeeded (the certificate was accepted), shared by clones.
    answered: Arc<AtomicBool>,
    namespace: String,
}

/// List parameters.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    /// Label selector.
    pub label_selector: String,
    /// Field selector.
    pub field_selector: String,
    /// Page size (0: all).
    pub limit: i64,
    /// The previous page's token.
    pub continue_token: String,
    /// "" (latest), "0" (any recent), or a revision.
    pub resource_version: String,
}

/// Delete parameters.
#[derive(Clone, Debug, Default)]
pub struct DeleteParams {
    /// Check, change nothing.
    pub dry_run: bool,
    /// Pods: seconds to stop.
    pub grace_period_seconds: Option<i64>,
    /// Only if the uid still matches.
    pub precondition_uid: String,
    /// Only if the resourceVersion still matches.
    pub precondition_resource_version: String,
    /// Dependents: "Background" (default), "Foreground" or "Orphan".
    pub propagation_policy: String,
}

/// A patch.
#[derive(Clone, Debug)]
pub enum Patch {
    /// RFC 7386.
    Merge(Value),
    /// RFC 6902.
    Json(Value),
}

/// A page of objects.
#[derive(Clone, Debug)]
pub struct ObjectList<T> {
    /// The objects.
    pub items: Vec<T>,
    /// The revision the list reflects (watch from here).
    pub resource_version: String,
    /// The next page's token ("" on the last page).
    pub continue_token: String,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent<T> {
    /// Appeared (or started matching).
    Added(T),
    /// Changed.
    Modified(T),
    /// Deleted (or stopped matching).
    Deleted(T),
    /// Nothing changed; the watch is current to this resourceVersion.
    Bookmark(String),
}

/// A stream of watch events; ends with an error when the server ends the watch.
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<WatchEvent<T>, ClientError>> + Send>>;

/// A container's log as it arrives.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, ClientError>> + Send>>;

/// Which log, and how much of it (kubectl logs' flags).
#[derive(Clone, Debug, Default)]
pub struct LogParams {
    /// The container (empty: the pod's only one).
    pub container: String,
    /// Keep streaming until the container ends.
    pub follow: bool,
    /// Only the last lines.
    pub tail_lines: Option<i64>,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// Prefix lines with their time.
    pub timestamps: bool,
    /// The instance before the last restart.
    pub previous: bool,
}

/// What to run in a container, and for how long at most (kubectl exec without -i/-t).
#[derive(Clone, Debug, Default)]
pub struct ExecParams {
    /// The container (empty: the pod's first).
    pub container: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// How long it may run (None: the server's default, a minute; at most ten minutes).
    pub timeout: Option<std::time::Duration>,
}

/// What a command run in a container did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// What it wrote to stdout.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr.
    pub stderr: Vec<u8>,
    /// Its exit code.
    pub exit_code: i32,
    /// The container it ran in.
    pub container: String,
}

impl Client {
    /// A client for the server and credentials of a resolved kubeconfig context. An
    /// `https://` server is reached over TLS with the context's CA (else the system's root
    /// certificates) and client certificate; its TLS values are read and checked here. The
    /// connection is made on first use.
    pub fn new(resolved: &Resolved) -> Result<Self, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            address: format!("{} (from {})", resolved.server, resolved.source),
            reason,
        };
        let mut endpoint = Channel::from_shared(resolved.server.clone())
            .map_err(|e| unreachable(format!("not a valid URL: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true);
        let tls = endpoint.uri().scheme_str() == Some("https");
        if tls {
            endpoint = crate::tls::configure(endpoint, resolved).map_err(|error| {
                ClientError::TlsConfig {
                    origin: resolved.source.clone(),
                    error,
                }
            })?;
        }
        let channel = endpoint.connect_lazy();
        let token = resolved
            .token
            .as_ref()
            .map(|t| format!("Bearer {t}").parse())
            .transpose()
            .map_err(|_| {
                unreachable("the token holds characters that cannot be sent in a header".into())
            })?;
        Ok(Client {
            inner: ResourcesClient::new(channel)
                .max_decoding_message_size(MAX_RESPONSE)
                .max_encoding_message_size(MAX_RESPONSE),
            token,
            address: format!("{} (from {})", resolved.server, resolved.source),
            namespace: resolved.namespace.clone(),
            tls,
            presents_certificate: tls && resolved.client_certificate.is_some(),
            answered: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The namespace of the kubeconfig context.
    pub fn default_namespace(&self) -> &str {
        &self.namespace
    }

    /// The typed API of `K` in `namespace` (ignored for cluster-scoped kinds).
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: k8s_openapi::Resource,
    {
        Api {
            dynamic: self.dynamic(K::API_VERSION, K::URL_PATH_SEGMENT, namespace),
            _kind: PhantomData,
        }
    }

    /// The untyped API of a resource (`namespace` "" for all namespaces in list/watch).
    pub fn dynamic(&self, api_version: &str, resource: &str, namespace: &str) -> DynamicApi {
        DynamicApi {
            client: self.clone(),
            api_version: api_version.to_string(),
            resource: resource.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// The kinds the server serves.
    pub async fn discover(&self) -> Result<Vec<ResourceInfo>, ClientError> {
        let resp = self
            .inner
            .clone()
            .discover(self.req(DiscoverRequest {}))
            .await;
        Ok(self.check(resp)?.resources)
    }

    /// The server's version.
    pub async fn server_version(&self) -> Result<String, ClientError> {
        let resp = self
            .inner
            .clone()
            .discover(self.req(DiscoverRequest {}))
            .await;
        Ok(self.check(resp)?.server_version)
    }

    /// A container's log, read from its node through the API server.
    pub async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        p: &LogParams,
    ) -> Result<LogStream, ClientError> {
        let resp = self
            .inner
            .clone()
            .logs(self.req(LogsRequest {
                namespace: namespace.into(),
                name: pod.into(),
                container: p.container.clone(),
                follow: p.follow,
                tail_lines: p.tail_lines,
                since_seconds: p.since_seconds,
                timestamps: p.timestamps,
                previous: p.previous,
                pod_uid: String::new(),
            }))
            .await;
        let stream = self.check(resp)?;
        let address = self.address.clone();
        Ok(Box::pin(stream.map(move |item| {
            item.map(|chunk| chunk.data.to_vec())
                .map_err(|s| ClientError::from_status(&s, &address))
        })))
    }

    /// Runs a command in a container of a pod and waits for it; a command that ran is Ok
    /// whatever its exit code.
    pub async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        p: &ExecParams,
    ) -> Result<ExecOutput, ClientError> {
        let timeout_seconds = p
            .timeout
            // A fraction of a second still asks for a timeout, not the default.
            .map(|t| i64::try_from(t.as_secs().max(1)).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let resp = self
            .inner
            .clone()
            .exec(self.req(ExecRequest {
                namespace: namespace.into(),
                name: pod.into(),
                container: p.container.clone(),
                command: p.command.clone(),
                timeout_seconds,
                pod_uid: String::new(),
            }))
            .await;
        let out = self.check(resp)?;
        Ok(ExecOutput {
            stdout: out.stdout.to_vec(),
            stderr: out.stderr.to_vec(),
            exit_code: out.exit_code,
            container: out.container,
        })
    }

    /// Binds a pod to a node.
    pub async fn bind(
        &self,
        namespace: &str,
        pod: &str,
        node: &str,
        pod_uid: &str,
    ) -> Result<Value, ClientError> {
        let resp = self
            .inner
            .clone()
            .bind(self.req(BindRequest {
                namespace: namespace.into(),
                name: pod.into(),
                node_name: node.into(),
                pod_uid: pod_uid.into(),
                dry_run: false,
            }))
            .await;
        decode(&self.check(resp)?.object)
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("authorization", t.clone());
        }
        r
    }

    fn check<T>(&self, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, ClientError> {
        match r {
            Ok(resp) => {
                self.answered.store(true, Ordering::Relaxed);
                Ok(resp.into_inner())
            }
            Err(s) => {
                // A status from the server handler also proves the handshake went through.
                if !s.details().is_empty() {
                    self.answered.store(true, Ordering::Relaxed);
                }
                Err(self
                    .connection_error(&s)
                    .unwrap_or_else(|| ClientError::from_status(&s, &self.address)))
            }
        }
    }

    /// What a failed connection means, when only this client's settings tell: the status
    /// alone reads as a generic transport failure.
    fn connection_error(&self, s: &tonic::Status) -> Option<ClientError> {
        if !s.details().is_empty() {
            return None;
        }
        let causes: Vec<String> = crate::error::causes(s)
            .iter()
            .map(|m| m.to_ascii_lowercase())
            .collect();
        let says = |what: &[&str]| causes.iter().any(|m| what.iter().any(|w| m.contains(w)));
        // In TLS 1.3 the server checks the client certificate after the client thinks the
        // handshake is done, so a refused certificate may show up only as the connection
        // closing under the first request. Once a call has gone through, a closed
        // connection is just that (a server restarting, say), here and below.
        if self.presents_certificate
            && !self.answered.load(Ordering::Relaxed)
            && matches!(s.code(), tonic::Code::Cancelled | tonic::Code::Unknown)
            && says(&["connection closed", "broken pipe", "connection reset"])
        {
            return Some(ClientError::Tls {
                address: self.address.clone(),
                reason: "the server closed the connection; it may have refused the client certificate: is it signed by a CA the server trusts?".into(),
            });
        }
        // A TLS server answers plaintext HTTP/2 with an alert (read as a bad frame) or by
        // hanging up.
        if !self.tls
            && !self.answered.load(Ordering::Relaxed)
            && says(&[
                "frame with invalid size",
                "broken pipe",
                "connection closed",
                "connection reset",
            ])
        {
            let cause = causes.last().cloned().unwrap_or_default();
            return Some(ClientError::Unreachable {
                address: self.address.clone(),
                reason: format!(
                    "the connection failed ({cause}): if the server serves TLS, use its https:// URL and CA"
                ),
            });
        }
        None
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Calls on one resource, with objects as JSON values.
#[derive(Clone)]
pub struct DynamicApi {
    client: Client,
    api_version: String,
    resource: String,
    namespace: String,
}

impl DynamicApi {
    fn rref(&self, name: &str, subresource: &str) -> Option<ResourceRef> {
        Some(ResourceRef {
            api_version: self.api_version.clone(),
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: name.to_string(),
            subresource: subresource.to_string(),
        })
    }

    /// Reads one object ("" reads the latest state; "0" allows the server's cache).
    pub async fn get(&self, name: &str, resource_version: &str) -> Result<Value, ClientError> {
        self.get_sub(name, "", resource_version).await
    }

    /// Reads a subresource ("status", "scale").
    pub async fn get_sub(
        &self,
        name: &str,
        subresource: &str,
        resource_version: &str,
    ) -> Result<Value, ClientError> {
        let c = &self.client;
        let resp = c
            .inner
            .clone()
            .get(c.req(GetRequest {
                r#ref: self.rref(name, subresource),
                resource_version: resource_version.into(),
            }))
            .await;
        decode(&c.check(resp)?.object)
    }

    /// Lists one page.
    pub async fn list(&self, p: &ListParams) -> Result<ObjectList<Value>, ClientError> {
        let c = &self.client;
        let resp = c
            .inner
            .clone()
            .list(c.req(ListRequest {
                r#ref: self.rref("", ""),
                label_selector: p.label_selector.clone(),
                field_selector: p.field_selector.clone(),
                limit: p.limit,
                continue_token: p.continue_token.clone(),
                resource_version: p.resource_version.clone(),
            }))
            .await;
        let resp = c.check(resp)?;
        Ok(ObjectList {
            items: resp
                .items
                .iter()
                .map(|b| decode(b))
                .collect::<Result<_, _>>()?,
            resource_version: resp.resource_version,
            continue_token: resp.continue_token,
        })
    }

    /// Creates an object.
    pub async fn create(&self, obj: &Value, dry_run: bool) -> Result<Value, ClientError> {
        let c = &self.client;
        let resp = c
            .inner
            .clone()
            .create(c.req(CreateRequest {
                r#ref: self.rref("", ""),
                object: obj.to_string().into(),
                dry_run,
            }))
            .await;
        decode(&c.check(resp)?.object)
    }

    /// Creates `obj` through a subresource of object `name` (pods/eviction).
    pub async fn create_subresource(
        &self,
        name: &str,
        subresource: &str,
        obj: &Value,
        dry_run: bool,
    ) -> Result<Value, ClientError> {
        let c = &self.client;
        let resp = c
            .inner
            .clone()
            .create(c.req(CreateRequest {
                r#ref: self.rref(name, subresource),
                object: obj.to_string().into(),
                dry_run,
            }))
            .await;
        decode(&c.check(resp)?.object)
    }

    /// Evicts pod `name` (the pods/eviction subresource): deleted as
    /// [`DynamicApi::delete`] would, unless a PodDisruptionBudget allows no disruption
    /// now ([`ClientError::TooManyRequests`]).
    pub async fn evict(&self, name: &str, p: &DeleteParams) -> Result<(), ClientError> {
        let mut options = serde_json::Map::new();
        if let Some(g) = p.grace_period_seconds {
            options.insert("gracePeriodSeconds".into(), g.into());
        }
        if !p.precondition_uid.is_empty() {
            options.insert(
                "preconditions".into(),
                serde_json::json!({"uid": p.precondition_uid}),
            );
        }
        let eviction = serde_json::json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": self.namespace},
            "deleteOptions": options,
        });
        self.create_subresource(name, "eviction", &eviction, p.dry_run)
            .await
            .map(|_| ())
    }

    /// Replaces an object (or, with `subresource`, its status or scale).
    pub async fn update(
        &self,
        obj: &Value,
        subresource: &str,
        dry_run: bool,
    ) -> Result<Value, ClientError> {
        let c = &self.client;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let req = c.req(UpdateRequest {
            r#ref: self.rref(name, subresource),
            object: obj.to_string().into(),
            dry_run,
        });
        let resp = if subresource == "status" {
            c.inner.clone().update_status(req).await
        } else {
            c.inner.clone().update(req).await
        };
        decode(&c.check(resp)?.object)
    }

    /// Patches an object (or a subresource).
    pub async fn patch(
        &self,
        name: &str,
        subresource: &str,
        patch: &Patch,
        dry_run: bool,
    ) -> Result<Value, ClientError> {
        let c = &self.client;
        let (ty, doc) = match patch {
            Patch::Merge(v) => (PatchType::Merge, v),
            Patch::Json(v) => (PatchType::Json, v),
        };
        let resp = c
            .inner
            .clone()
            .patch(c.req(PatchRequest {
                r#ref: self.rref(name, subresource),
                patch: doc.to_string().into(),
                r#type: ty as i32,
                dry_run,
            }))
            .await;
        decode(&c.check(resp)?.object)
    }

    /// Deletes an object; returns it as deleted or as marked for deletion.
    pub async fn delete(&self, name: &str, p: &DeleteParams) -> Result<Value, ClientError> {
        let c = &self.client;
        let resp = c
            .inner
            .clone()
            .delete(c.req(DeleteRequest {
                r#ref: self.rref(name, ""),
                dry_run: p.dry_run,
                grace_period_seconds: p.grace_period_seconds,
                precondition_uid: p.precondition_uid.clone(),
                precondition_resource_version: p.precondition_resource_version.clone(),
                propagation_policy: p.propagation_policy.clone(),
            }))
            .await;
        decode(&c.check(resp)?.object)
    }

    /// Watches from `resource_version` ("": current state first, then changes).
    pub async fn watch(
        &self,
        p: &ListParams,
        resource_version: &str,
        bookmarks: bool,
    ) -> Result<WatchStream<Value>, ClientError> {
        let c = &self.client;
        let resp = c
            .inner
            .clone()
            .watch(c.req(WatchRequest {
                r#ref: self.rref("", ""),
                label_selector: p.label_selector.clone(),
                field_selector: p.field_selector.clone(),
                resource_version: resource_version.into(),
                allow_bookmarks: bookmarks,
            }))
            .await;
        let stream = c.check(resp)?;
        let address = c.address.clone();
        Ok(Box::pin(stream.map(move |item| {
            let ev = item.map_err(|s| ClientError::from_status(&s, &address))?;
            let obj: Value = decode(&ev.object)?;
            Ok(match EventType::try_from(ev.r#type) {
                Ok(EventType::Added) => WatchEvent::Added(obj),
                Ok(EventType::Modified) => WatchEvent::Modified(obj),
                Ok(EventType::Deleted) => WatchEvent::Deleted(obj),
                Ok(EventType::Bookmark) => WatchEvent::Bookmark(ev.resource_version),
                Err(_) => {
                    return Err(ClientError::Decode(format!(
                        "unknown watch event type {}",
                        ev.r#type
                    )));
                }
            })
        })))
    }
}

/// Calls on one kind, with typed objects.
pub struct Api<K> {
    dynamic: DynamicApi,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            dynamic: self.dynamic.clone(),
            _kind: PhantomData,
        }
    }
}

fn typed<K: DeserializeOwned>(v: Value) -> Result<K, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))
}

fn untyped<K: Serialize>(k: &K) -> Result<Value, ClientError> {
    serde_json::to_value(k).map_err(|e| ClientError::Decode(e.to_string()))
}

impl<K> Api<K>
where
    K: k8s_openapi::Resource + Serialize + DeserializeOwned + Send + 'static,
{
    /// The untyped API underneath.
    pub fn dynamic(&self) -> &DynamicApi {
        &self.dynamic
    }

    /// Reads one object (latest state).
    pub async fn get(&self, name: &str) -> Result<K, ClientError> {
        typed(self.dynamic.get(name, "").await?)
    }

    /// Reads one object, or None when it does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>, ClientError> {
        match self.get(name).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists one page.
    pub async fn list(&self, p: &ListParams) -> Result<ObjectList<K>, ClientError> {
        let page = self.dynamic.list(p).await?;
        Ok(ObjectList {
            items: page
                .items
                .into_iter()
                .map(typed)
                .collect::<Result<_, _>>()?,
            resource_version: page.resource_version,
            continue_token: page.continue_token,
        })
    }

    /// Creates an object.
    pub async fn create(&self, obj: &K) -> Result<K, ClientError> {
        typed(self.dynamic.create(&untyped(obj)?, false).await?)
    }

    /// Replaces an object (Conflict when its resourceVersion is stale).
    pub async fn update(&self, obj: &K) -> Result<K, ClientError> {
        typed(self.dynamic.update(&untyped(obj)?, "", false).await?)
    }

    /// Replaces an object's status.
    pub async fn update_status(&self, obj: &K) -> Result<K, ClientError> {
        typed(self.dynamic.update(&untyped(obj)?, "status", false).await?)
    }

    /// Patches an object.
    pub async fn patch(&self, name: &str, patch: &Patch) -> Result<K, ClientError> {
        typed(self.dynamic.patch(name, "", patch, false).await?)
    }

    /// Patches an object's status.
    pub async fn patch_status(&self, name: &str, patch: &Patch) -> Result<K, ClientError> {
        typed(self.dynamic.patch(name, "status", patch, false).await?)
    }

    /// Deletes an object.
    pub async fn delete(&self, name: &str, p: &DeleteParams) -> Result<K, ClientError> {
        typed(self.dynamic.delete(name, p).await?)
    }

    /// Watches from `resource_version`.
    pub async fn watch(
        &self,
        p: &ListParams,
        resource_version: &str,
    ) -> Result<WatchStream<K>, ClientError> {
        let stream = self.dynamic.watch(p, resource_version, true).await?;
        Ok(Box::pin(stream.map(|ev| {
            Ok(match ev? {
                WatchEvent::Added(v) => WatchEvent::Added(typed(v)?),
                WatchEvent::Modified(v) => WatchEvent::Modified(typed(v)?),
                WatchEvent::Deleted(v) => WatchEvent::Deleted(typed(v)?),
                WatchEvent::Bookmark(rv) => WatchEvent::Bookmark(rv),
            })
        })))
    }
}
