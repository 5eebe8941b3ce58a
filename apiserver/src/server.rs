//! The API server process: the store (embedded or external), the watch caches, the
//! compactor, and one listener serving gRPC and the HTTP endpoints (`/healthz`,
//! `/readyz`, `/metrics`) side by side, over plain HTTP or TLS ([`crate::tls`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;

use etcd_lite::config::{EtcdConfig, InitialMember};
use etcd_lite::{Listeners, Member};
use flotilla_proto::api::resources_server::ResourcesServer;

use crate::alloc::ServiceRanges;
use crate::api::{Api, ApiConfig, MAX_REQUEST_BYTES};
use crate::auth::{Tokens, write_private};
use crate::defaults::toleration_seconds::DefaultTolerationSeconds;
use crate::grpc::ResourcesService;
use crate::metrics::Metrics;
use crate::storage::Store;
use crate::tls::{Pki, TlsMode};
use crate::watch_cache::CacheConfig;

/// How the server is run.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds the embedded store, the token file and admin.yaml.
    pub data_dir: PathBuf,
    /// The address clients reach the API on (written into admin.yaml).
    pub advertise: Option<String>,
    /// External store endpoints; empty runs an embedded single-member etcd-lite.
    pub etcd_endpoints: Vec<String>,
    /// The Service cluster IP range, as a CIDR.
    pub service_cidr: String,
    /// Node ports.
    pub node_ports: std::ops::RangeInclusive<u16>,
    /// How often history is compacted (the history kept is at least this long).
    pub compaction_interval: Duration,
    /// Watch cache sizes and bookmark interval.
    pub cache: CacheConfig,
    /// Store request timeout.
    pub store_timeout: Duration,
    /// How long Events are kept after their last write.
    pub event_ttl: Duration,
    /// Plain HTTP, or TLS with generated or given certificates.
    pub tls: TlsMode,
    /// The tolerationSeconds DefaultTolerationSeconds gives pods
    /// (`--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds`).
    pub default_toleration_seconds: DefaultTolerationSeconds,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("flotilla-data"),
            advertise: None,
            etcd_endpoints: Vec::new(),
            service_cidr: "10.96.0.0/12".into(),
            node_ports: 30000..=32767,
            compaction_interval: Duration::from_secs(300),
            cache: CacheConfig::default(),
            store_timeout: Duration::from_secs(10),
            event_ttl: Duration::from_secs(3600),
            tls: TlsMode::Off,
            default_toleration_seconds: DefaultTolerationSeconds::default(),
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A configuration value is wrong.
    #[error("{0}")]
    Config(String),
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file is unusable.
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokenFileError),
    /// The embedded store failed.
    #[error("embedded store: {0}")]
    Store(#[from] etcd_lite::member::MemberError),
    /// The store could not be reached.
    #[error(transparent)]
    StoreClient(#[from] crate::storage::StoreError),
    /// Bootstrapping the cluster's objects failed.
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] crate::error::ApiError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(String),
}

/// A running API server.
pub struct Server {
    /// The address it serves on.
    pub addr: SocketAddr,
    /// The admin bearer token.
    pub admin_token: String,
    /// Where admin.yaml was written.
    pub kubeconfig: PathBuf,
    /// The URL in-process clients use with admin.yaml's credentials: loopback (http or
    /// https), except with the operator's own serving certificate, which may not name
    /// loopback, where it is the advertised URL.
    pub local_url: String,
    /// The PKI created for `--tls` (None otherwise).
    pub pki: Option<Pki>,
    /// The API (for in-process components).
    pub api: Arc<Api>,
    /// Its metrics, to which in-process components add theirs.
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    embedded: Option<Member>,
}

/// Every `/registry` write path goes through one store client per server.
fn ranges(cfg: &ServerConfig) -> Result<ServiceRanges, ServerError> {
    let (network, prefix_len) = ServiceRanges::parse_cidr(&cfg.service_cidr)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    if cfg.node_ports.is_empty() {
        return Err(ServerError::Config("the node port range is empty".into()));
    }
    Ok(ServiceRanges {
        network,
        prefix_len,
        node_ports: cfg.node_ports.clone(),
    })
}

async fn start_embedded_store(dir: PathBuf) -> Result<(Member, String), ServerError> {
    let bind = |what: &'static str| async move {
        TcpListener::bind("127.0.0.1:0").await.map_err(|e| {
            ServerError::Config(format!("binding the embedded store's {what} port: {e}"))
        })
    };
    let client = bind("client").await?;
    let peer = bind("peer").await?;
    let client_url = format!(
        "http://{}",
        client
            .local_addr()
            .map_err(|e| ServerError::Config(e.to_string()))?
    );
    // A single member never talks to peers; its peer URL only names it, so it is fixed
    // and the member keeps its identity across restarts on new ephemeral ports.
    let peer_url = "http://127.0.0.1:2380".to_string();
    let cfg = EtcdConfig {
        name: "flotilla".into(),
        data_dir: dir,
        listen_client_urls: vec![client_url.clone()],
        advertise_client_urls: vec![client_url.clone()],
        listen_peer_urls: vec![peer_url.clone()],
        initial_advertise_peer_urls: vec![peer_url.clone()],
        initial_cluster: vec![InitialMember {
            name: "flotilla".into(),
            peer_urls: vec![peer_url],
        }],
        initial_cluster_token: "flotilla-embedded".into(),
        ..Default::default()
    };
    let member = Member::start_with(
        cfg,
        Listeners {
            client: vec![client],
            peer: vec![peer],
        },
    )
    .await?;
    Ok((member, client_url))
}

/// The admin kubeconfig: one cluster, one user with the admin token, one context. With the
/// generated PKI, the cluster also carries its CA and the user the admin client
/// certificate, so either credential authenticates.
pub fn admin_kubeconfig(server_url: &str, token: &str, pki: Option<&Pki>) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (ca, client) = match pki {
        Some(p) => (
            format!("    certificate-authority-data: {}\n", b64(&p.ca_pem)),
            format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&p.admin_cert_pem),
                b64(&p.admin_key_pem)
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: flotilla\n  cluster:\n    server: {server_url}\n{ca}users:\n- name: admin\n  user:\n    token: {token}\n{client}contexts:\n- name: flotilla\n  context:\n    cluster: flotilla\n    user: admin\n    namespace: default\ncurrent-context: flotilla\n"
    )
}

/// The host of an advertised URL, for the serving certificate.
fn advertised_host(url: &str) -> Result<String, ServerError> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| ServerError::Config(format!("--advertise-url {url:?}: {e}")))?;
    uri.host()
        .map(str::to_string)
        .ok_or_else(|| ServerError::Config(format!("--advertise-url {url:?} names no host")))
}

impl Server {
    /// Starts the server on `listener`.
    pub async fn start(cfg: ServerConfig, listener: TcpListener) -> Result<Self, ServerError> {
        let ranges = ranges(&cfg)?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ServerError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let (tokens, created) = Tokens::load_or_create(&cfg.data_dir.join("tokens.csv"))?;
        if created.is_some() {
            tracing::info!(path = %cfg.data_dir.join("tokens.csv").display(), "created the admin token");
        }
        let admin_token = tokens
            .token_of("admin")
            .ok_or_else(|| ServerError::Config("tokens.csv has no token for user admin".into()))?
            .to_string();

        let (embedded, endpoints) = if cfg.etcd_endpoints.is_empty() {
            let (member, url) = start_embedded_store(cfg.data_dir.join("etcd")).await?;
            tracing::info!(endpoint = %url, "embedded store started");
            (Some(member), vec![url])
        } else {
            (None, cfg.etcd_endpoints.clone())
        };
        let metrics = Arc::new(Metrics::default());
        let store = Store::connect(&endpoints, cfg.store_timeout)?
            .with_metrics(metrics.store_seconds.clone());
        let api = Api::new(
            store.clone(),
            ApiConfig {
                service_ranges: ranges,
                cache: cfg.cache.clone(),
                event_ttl: cfg.event_ttl,
                default_toleration_seconds: cfg.default_toleration_seconds,
            },
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for cache in api.caches() {
            tasks.push(tokio::spawn(cache.clone().run(shutdown_rx.clone())));
        }
        api.ensure_system_namespaces().await?;
        api.agent_proxy_token().await?;
        api.resume_namespace_deletions().await?;
        tasks.push(tokio::spawn(crate::compaction::run(
            store,
            cfg.compaction_interval,
            shutdown_rx.clone(),
        )));

        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Serve(e.to_string()))?;
        let scheme = if cfg.tls == TlsMode::Off {
            "http"
        } else {
            "https"
        };
        let server_url = cfg
            .advertise
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        // A wildcard listen address is reached over loopback.
        let local_addr = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        let mut local_url = format!("{scheme}://{local_addr}");
        let tls = if cfg.tls == TlsMode::Off {
            None
        } else {
            if server_url.starts_with("http://") {
                return Err(ServerError::Config(format!(
                    "--advertise-url {server_url} is http:// but the server serves TLS: use https://"
                )));
            }
            let advertised = cfg.advertise.as_deref().map(advertised_host).transpose()?;
            let hosts = crate::tls::serving_hosts(addr.ip(), advertised.as_deref());
            let tls = crate::tls::load(&cfg.tls, &cfg.data_dir, &hosts)?;
            if matches!(cfg.tls, TlsMode::Files { .. }) {
                local_url = server_url.clone();
            }
            tls
        };
        let pki = tls.as_ref().and_then(|t| t.pki.clone());
        let kubeconfig = cfg.data_dir.join("admin.yaml");
        write_private(
            &kubeconfig,
            &admin_kubeconfig(&server_url, &admin_token, pki.as_ref()),
        )?;

        let service = ResourcesService::new(
            api.clone(),
            Arc::new(tokens),
            metrics.clone(),
            shutdown_rx.clone(),
        );
        tasks.push(serve(
            listener,
            tls.map(|t| t.config),
            service,
            api.clone(),
            metrics.clone(),
            shutdown_rx,
        )?);
        tracing::info!(%addr, url = %server_url, kubeconfig = %kubeconfig.display(), "API server listening");
        Ok(Server {
            addr,
            admin_token,
            kubeconfig,
            local_url,
            pki,
            api,
            metrics,
            shutdown,
            tasks,
            embedded,
        })
    }

    /// Stops serving, stops the background tasks and the embedded store.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(m) = self.embedded {
            m.shutdown().await;
        }
    }
}

/// Runs the server until `shutdown` completes.
pub async fn run(
    cfg: ServerConfig,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| ServerError::Config(format!("--listen {listen}: {e}")))?;
    let server = Server::start(cfg, listener).await?;
    shutdown.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

#[derive(Clone)]
struct HttpState {
    api: Arc<Api>,
    metrics: Arc<Metrics>,
}

fn serve(
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    service: ResourcesService,
    api: Arc<Api>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServerError> {
    let grpc = ResourcesServer::new(service)
        .max_decoding_message_size(MAX_REQUEST_BYTES + 64 * 1024)
        .max_encoding_message_size(usize::MAX);
    let http = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(HttpState { api, metrics });
    let router = Routes::new(grpc).into_axum_router().merge(http);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServerError::Serve(crate::tls::error_chain(&e)))?;
    }
    Ok(tokio::spawn(async move {
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            let conn = conn?;
            // Small latency-bound messages: no Nagle delay.
            conn.set_nodelay(true)?;
            Ok::<_, std::io::Error>(conn)
        });
        let result = builder
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_routes(Routes::from(router))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "API server stopped serving");
        }
    }))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready once every watch cache has loaded and the store answers.
async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    if !s.api.ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "watch caches are loading\n".into(),
        );
    }
    match s.api.store().current_revision().await {
        Ok(_) => (StatusCode::OK, "ok\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
    }
}

async fn render_metrics(State(s): State<HttpState>) -> String {
    for cache in s.api.caches() {
        s.metrics
            .set_watchers(cache.resource(), cache.watcher_count());
    }
    s.metrics.render()
}
