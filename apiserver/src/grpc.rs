//! The gRPC front end: `flotilla.api.v1.Resources`, translating requests into [`Api`]
//! calls and [`ApiError`]s into gRPC statuses. Every call is authenticated and measured.

use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tonic::codegen::BoxStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

use flotilla_proto::api::patch_request::PatchType as WirePatchType;
use flotilla_proto::api::resources_server::Resources;
use flotilla_proto::api::watch_event::EventType as WireEventType;
use flotilla_proto::api::{
    BindRequest, CreateRequest, DeleteRequest, DiscoverRequest, DiscoverResponse, ExecRequest,
    ExecResponse, GetRequest, ListRequest, ListResponse, LogsChunk, LogsRequest, ObjectResponse,
    PatchRequest, ResourceInfo as WireInfo, ResourceRef, UpdateRequest, WatchEvent, WatchRequest,
};

use crate::api::delete::DeleteOptions;
use crate::api::read::ListOptions;
use crate::api::replace::PatchType;
use crate::api::watch::WatchOptions;
use crate::api::{Api, ObjectRef};
use crate::auth::Tokens;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::watch_cache::EventKind;

/// The service.
pub struct ResourcesService {
    api: Arc<Api>,
    tokens: Arc<Tokens>,
    metrics: Arc<Metrics>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl ResourcesService {
    /// The service over `api`, accepting `tokens`. When `stopping` flips, open streams
    /// (watches, followed logs) end, so that a graceful stop does not wait on clients,
    /// nor on watches that clients re-open while it is under way.
    pub fn new(
        api: Arc<Api>,
        tokens: Arc<Tokens>,
        metrics: Arc<Metrics>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        ResourcesService {
            api,
            tokens,
            metrics,
            stopping,
        }
    }

    /// `stream`, ending when the server stops.
    fn until_stopping<T: Send + 'static>(
        &self,
        stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    ) -> BoxStream<T> {
        let mut stopping = self.stopping.clone();
        Box::pin(stream.take_until(async move {
            let _ = stopping.wait_for(|s| *s).await;
        }))
    }

    /// Authenticates (the verified client certificate in `extensions`, else the bearer
    /// token in `metadata`), runs `call`, records the outcome.
    async fn serve<T>(
        &self,
        verb: &'static str,
        resource: &str,
        metadata: &tonic::metadata::MetadataMap,
        extensions: &tonic::Extensions,
        call: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, Status> {
        let start = Instant::now();
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        // Present only on TLS connections whose client certificate chained to the client
        // CA: the handshake refuses any other certificate.
        let peer_certs = extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs());
        let leaf = peer_certs
            .as_deref()
            .and_then(|c| c.first())
            .map(|c| c.as_ref());
        let result = match self.tokens.authenticate_request(header, leaf) {
            Ok(_) => call.await,
            Err(e) => Err(e),
        };
        let code = match &result {
            Ok(_) => 200,
            Err(e) => e.reason.http_code(),
        };
        self.metrics.request(verb, resource, code, start.elapsed());
        if let Err(e) = &result {
            tracing::debug!(verb, resource, code, error = %e.message, "request failed");
        }
        result.map_err(|e| e.to_grpc())
    }
}

fn object_ref(r: Option<ResourceRef>) -> Result<ObjectRef, Status> {
    let r = r.ok_or_else(|| {
        ApiError::bad_request("the request has no resource reference (`ref`)").to_grpc()
    })?;
    Ok(ObjectRef {
        api_version: r.api_version,
        resource: r.resource,
        namespace: r.namespace,
        name: r.name,
        subresource: r.subresource,
    })
}

fn object_response(v: serde_json::Value) -> Response<ObjectResponse> {
    Response::new(ObjectResponse {
        object: serde_json::to_vec(&v).unwrap_or_default().into(),
    })
}

fn require_name(r: &ObjectRef) -> Result<(), Status> {
    if r.name.is_empty() {
        return Err(ApiError::bad_request("a name is required (`ref.name`)").to_grpc());
    }
    Ok(())
}

#[tonic::async_trait]
impl Resources for ResourcesService {
    async fn discover(
        &self,
        req: Request<DiscoverRequest>,
    ) -> Result<Response<DiscoverResponse>, Status> {
        let api = self.api.clone();
        let (meta, ext, _) = req.into_parts();
        self.serve("discover", "", &meta, &ext, async move {
            let resources = api
                .registry()
                .all()
                .iter()
                .map(|i| WireInfo {
                    api_version: i.api_version.clone(),
                    resource: i.plural.to_string(),
                    kind: i.kind.to_string(),
                    singular: i.singular.clone(),
                    short_names: i.short_names.iter().map(|s| s.to_string()).collect(),
                    namespaced: i.namespaced,
                    subresources: i.subresources().into_iter().map(str::to_string).collect(),
                    selectable_fields: i
                        .selectable_fields()
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                })
                .collect();
            Ok(Response::new(DiscoverResponse {
                resources,
                server_version: env!("CARGO_PKG_VERSION").to_string(),
            }))
        })
        .await
    }

    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        let (meta, ext, body) = req.into_parts();
        let r = object_ref(body.r#ref)?;
        self.serve("create", &r.resource, &meta, &ext, async {
            self.api
                .create(&r, &body.object, body.dry_run)
                .await
                .map(object_response)
        })
        .await
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<ObjectResponse>, Status> {
        let (meta, ext, body) = req.into_parts();
        let r = object_ref(body.r#ref)?;
        require_name(&r)?;
        self.serve("get", &r.resource, &meta, &ext, async {
            self.api
                .get(&r, &body.resource_version)
                .await
                .map(object_response)
        })
        .await
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let (meta, ext, body) = req.into_parts();
        let r = object_ref(body.r#ref)?;
        let opts = ListOptions {
            label_selector: body.label_selector,
            field_selector: body.field_selector,
            limit: body.limit,
            continue_token: body.continue_token,
            resource_version: body.resource_version,
        };
        self.serve("list", &r.resource, &meta, &ext, async {
            let page = self.api.list(&r, &opts).await?;
            Ok(Response::new(ListResponse {
                resource_version: page.revision.to_string(),
                items: page.items,
                continue_token: page.continue_token,
                remaining_item_count: page.remaining,
                kind: page.kind,
                api_version: page.api_version,
            }))
        })
        .await
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        let (meta, ext, body) = req.into_parts();
        let r = object_ref(body.r#ref)?;
        self.serve("update", &r.resource, &meta, &ext, async {
            self.api
                .update(&r, &body.object, body.dry_run)
                .await
                .map(object_response)
        })
        .await
    }

    async fn update_status(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        let (meta, ext, body) = req.into_parts();
        let mut r = object_ref(body.r#ref)?;
        r.subresource = "status".into();
        self.serve("update_status", &r.resource, &meta, &ext, async {
            self.api
                .update(&r, &body.object, body.dry_run)
                .await
                .map(object_response)
        })
        .await
    }

    async fn patch(&self, req: Request<PatchRequest>) -> Result<Response<ObjectResponse>, Status> {
        let (meta, ext, body) = req.into_parts();
        let r = object_ref(body.r#ref)?;
        require_name(&r)?;
        let ty = match WirePatchType::try_from(body.r#type) {
            Ok(WirePatchType::Merge) => PatchType::Merge,
            Ok(WirePatchType::Json) => PatchType::Json,
            Err(_) => {
                return Err(
                    ApiError::bad_request(format!("unknown patch type {}", body.r#type)).to_grpc(),
                );
            }
        };
        self.serve("patch", &r.resource, &meta, &ext, async {
            self.api
                .patch(&r, &body.patch, ty, body.dry_run)
                .await
                .map(object_response)
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        let (meta, ext, body) = req.into_parts();
        let r = object_ref(body.r#ref)?;
        require_name(&r)?;
        let opts = DeleteOptions {
            dry_run: body.dry_run,
            grace_period_seconds: body.grace_period_seconds,
            precondition_uid: body.precondition_uid,
            precondition_resource_version: body.precondition_resource_version,
            propagation_policy: body.propagation_policy,
        };
        self.serve("delete", &r.resource, &meta, &ext, async {
            self.api.delete(&r, &opts).await.map(object_response)
        })
        .await
    }

    async fn bind(&self, req: Request<BindRequest>) -> Result<Response<ObjectResponse>, Status> {
        let (meta, ext, b) = req.into_parts();
        self.serve("bind", "pods", &meta, &ext, async {
            self.api
                .bind(&b.namespace, &b.name, &b.node_name, &b.pod_uid, b.dry_run)
                .await
                .map(object_response)
        })
        .await
    }

    async fn logs(
        &self,
        req: Request<LogsRequest>,
    ) -> Result<Response<BoxStream<LogsChunk>>, Status> {
        let (meta, ext, body) = req.into_parts();
        let stream = self
            .serve("get", "pods/log", &meta, &ext, async {
                self.api.logs(body).await
            })
            .await?;
        Ok(Response::new(self.until_stopping(stream)))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let (meta, ext, body) = req.into_parts();
        // Kubernetes authorizes exec as `create` on `pods/exec`.
        self.serve("create", "pods/exec", &meta, &ext, async {
            self.api.exec(body).await.map(Response::new)
        })
        .await
    }

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<BoxStream<WatchEvent>>, Status> {
        let (meta, ext, body) = req.into_parts();
        let r = object_ref(body.r#ref)?;
        let opts = WatchOptions {
            label_selector: body.label_selector,
            field_selector: body.field_selector,
            resource_version: body.resource_version,
            allow_bookmarks: body.allow_bookmarks,
        };
        let watch = self
            .serve("watch", &r.resource, &meta, &ext, async {
                self.api.watch(&r, &opts).await
            })
            .await?;
        Ok(Response::new(self.until_stopping(events(watch))))
    }
}

/// The watch's events as gRPC messages; a cut-off watcher's error ends the stream.
fn events(
    watch: crate::watch_cache::CacheWatch,
) -> impl Stream<Item = Result<WatchEvent, Status>> + Send {
    futures::stream::unfold(Some(watch), |state| async move {
        let mut watch = state?;
        match watch.next().await? {
            Ok(ev) => {
                let ty = match ev.kind {
                    EventKind::Added => WireEventType::Added,
                    EventKind::Modified => WireEventType::Modified,
                    EventKind::Deleted => WireEventType::Deleted,
                    EventKind::Bookmark => WireEventType::Bookmark,
                };
                let msg = WatchEvent {
                    r#type: ty as i32,
                    object: ev.json,
                    resource_version: ev.revision.to_string(),
                };
                Some((Ok(msg), Some(watch)))
            }
            Err(e) => Some((Err(e.to_grpc()), None)),
        }
    })
}
