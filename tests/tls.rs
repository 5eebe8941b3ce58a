//! TLS on the API port: `--tls` creates a PKI once and keeps it across restarts; the admin
//! kubeconfig it writes authenticates by client certificate or by token; a client
//! certificate is its CN in its O groups; certificates from another CA and clients that
//! trust the wrong CA are turned away with errors that say so; the operator's own
//! certificate files work too; and the built `flotctl` and the in-process scheduler use it.

#[path = "support/flotctl.rs"]
mod cli;
#[path = "support/inproc.rs"]
mod inproc;

use cli::flotctl;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apiserver::tls::{Pki, TlsMode, files, issue_client_certificate};
use apiserver::{Server, ServerConfig};
use base64::Engine;
use flotilla_client::{Client, ClientError, Kubeconfig, ListParams, PemSource, Resolved};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const READY: Duration = Duration::from_secs(20);

fn tls_config(dir: &Path, tls: TlsMode) -> ServerConfig {
    ServerConfig {
        data_dir: dir.join("server"),
        tls,
        ..Default::default()
    }
}

fn generated() -> TlsMode {
    TlsMode::Generated { client_ca: None }
}

/// Starts a server on an ephemeral loopback port (or `addr`) and waits until admin.yaml's
/// credentials list namespaces through it.
async fn start(config: ServerConfig, addr: &str) -> Server {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let server = Server::start(config, listener)
        .await
        .expect("the API server starts");
    let client = Client::new(&admin(&server)).expect("admin client");
    inproc::wait_until(READY, "the API server is ready over TLS", || {
        let c = client.clone();
        async move {
            c.dynamic("v1", "namespaces", "")
                .list(&ListParams::default())
                .await
                .ok()
        }
    })
    .await;
    server
}

/// admin.yaml, resolved.
fn admin(server: &Server) -> Resolved {
    Kubeconfig::read(&server.kubeconfig)
        .expect("admin.yaml reads")
        .resolve(None)
        .expect("admin.yaml resolves")
}

fn data(field: &'static str, pem: &str) -> Option<PemSource> {
    Some(PemSource::Data {
        field,
        base64: base64::engine::general_purpose::STANDARD.encode(pem),
    })
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}
    })
}

/// Lists namespaces once.
async fn list_namespaces(resolved: &Resolved) -> Result<usize, ClientError> {
    let c = Client::new(resolved)?;
    Ok(c.dynamic("v1", "namespaces", "")
        .list(&ListParams::default())
        .await?
        .items
        .len())
}

fn pki_file(server_dir: &Path, name: &str) -> PathBuf {
    server_dir.join("pki").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_client_certificate_alone_creates_and_reads_a_pod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tls_config(dir.path(), generated());
    let server = start(config.clone(), "127.0.0.1:0").await;

    let text = std::fs::read_to_string(&server.kubeconfig).expect("admin.yaml");
    assert!(
        text.contains(&format!("server: https://{}", server.addr)),
        "{text}"
    );
    for field in [
        "certificate-authority-data:",
        "token:",
        "client-certificate-data:",
        "client-key-data:",
    ] {
        assert!(text.contains(field), "admin.yaml has {field}");
    }
    use std::os::unix::fs::PermissionsExt;
    for f in [files::CA_KEY, files::SERVING_KEY, files::ADMIN_KEY] {
        let mode = std::fs::metadata(pki_file(&config.data_dir, f))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    // No token: only the client certificate authenticates.
    let mut cert_only = admin(&server);
    cert_only.token = None;
    let client = Client::new(&cert_only).expect("client");
    let pods = client.dynamic("v1", "pods", "default");
    pods.create(&pod("web"), false).await.expect("create");
    let got = pods.get("web", "").await.expect("get");
    assert_eq!(got["metadata"]["name"], "web");
    assert_eq!(got["spec"]["containers"][0]["image"], "nginx:1.25");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_still_work_over_tls_and_a_wrong_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(tls_config(dir.path(), generated()), "127.0.0.1:0").await;

    let mut token_only = admin(&server);
    token_only.client_certificate = None;
    token_only.client_key = None;
    assert!(list_namespaces(&token_only).await.expect("token user") >= 4);

    token_only.token = Some("not-a-token".into());
    let e = list_namespaces(&token_only).await.expect_err("wrong token");
    assert!(matches!(e, ClientError::Unauthorized(_)), "{e:?}");
    token_only.token = None;
    let e = list_namespaces(&token_only)
        .await
        .expect_err("no credential");
    assert!(matches!(e, ClientError::Unauthorized(_)), "{e:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_its_cn_and_one_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tls_config(dir.path(), generated());
    let server = start(config.clone(), "127.0.0.1:0").await;
    let ca_pem = std::fs::read_to_string(pki_file(&config.data_dir, files::CA_CERT)).expect("ca");
    let ca_key = std::fs::read_to_string(pki_file(&config.data_dir, files::CA_KEY)).expect("key");

    let as_cert = |cert: &str, key: &str| {
        let mut r = admin(&server);
        r.token = None;
        r.client_certificate = data("client-certificate-data", cert);
        r.client_key = data("client-key-data", key);
        r
    };

    // jane in group dev, signed by the cluster CA: let in (every user is an administrator
    // until RBAC exists).
    let (cert, key) =
        issue_client_certificate(&ca_pem, &ca_key, "jane", Some("dev")).expect("jane");
    assert!(list_namespaces(&as_cert(&cert, &key)).await.expect("jane") >= 4);

    // A certificate with no CN names no user.
    let (cert, key) =
        issue_client_certificate(&ca_pem, &ca_key, "", Some("dev")).expect("nameless");
    let e = list_namespaces(&as_cert(&cert, &key))
        .await
        .expect_err("no CN");
    assert!(
        matches!(&e, ClientError::Unauthorized(m) if m.contains("no CN")),
        "{e:?}"
    );

    // The admin certificate of another cluster's CA fails the handshake (or, should the
    // server let the connection through, authentication).
    let other = tempfile::tempdir().expect("tempdir");
    let foreign = Pki::ensure(other.path(), &["127.0.0.1".into()]).expect("other PKI");
    let e = list_namespaces(&as_cert(&foreign.admin_cert_pem, &foreign.admin_key_pem))
        .await
        .expect_err("a foreign certificate");
    let msg = e.to_string();
    assert!(
        matches!(e, ClientError::Tls { .. }) && msg.contains("client certificate"),
        "{e:?}"
    );
    // With a valid token beside it, the foreign certificate still cannot get in: the
    // handshake itself is refused.
    let mut with_token = as_cert(&foreign.admin_cert_pem, &foreign.admin_key_pem);
    with_token.token = admin(&server).token;
    assert!(list_namespaces(&with_token).await.is_err());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_wrong_ca_is_told_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(tls_config(dir.path(), generated()), "127.0.0.1:0").await;
    let other = tempfile::tempdir().expect("tempdir");
    let foreign = Pki::ensure(other.path(), &["127.0.0.1".into()]).expect("other PKI");

    let mut wrong_ca = admin(&server);
    wrong_ca.certificate_authority = data("certificate-authority-data", &foreign.ca_pem);
    let e = list_namespaces(&wrong_ca)
        .await
        .expect_err("untrusted server");
    let msg = e.to_string();
    assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");
    assert!(
        msg.contains("invalid peer certificate")
            && msg.contains("not signed by a CA this client trusts")
            && msg.contains("certificate-authority"),
        "{msg}"
    );

    // Plain HTTP to a TLS port, and a bad CA value, are reported as such.
    let mut plain = admin(&server);
    plain.server = format!("http://{}", server.addr);
    let e = list_namespaces(&plain).await.expect_err("plaintext to TLS");
    assert!(e.to_string().contains("use its https:// URL"), "{e}");
    let mut junk = admin(&server);
    junk.certificate_authority = data("certificate-authority-data", "junk");
    let e = list_namespaces(&junk).await.expect_err("bad PEM");
    assert!(
        e.to_string()
            .contains("certificate-authority-data: no PEM certificate"),
        "{e}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_ca_and_the_old_admin_yaml_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tls_config(dir.path(), generated());
    let server = start(config.clone(), "127.0.0.1:0").await;
    let addr = server.addr;
    let before = admin(&server);
    let ca = std::fs::read(pki_file(&config.data_dir, files::CA_CERT)).expect("ca");
    let serving = std::fs::read(pki_file(&config.data_dir, files::SERVING_CERT)).expect("crt");
    server.shutdown().await;

    let server = start(config.clone(), &addr.to_string()).await;
    assert_eq!(
        ca,
        std::fs::read(pki_file(&config.data_dir, files::CA_CERT)).expect("ca"),
        "the same CA"
    );
    assert_eq!(
        serving,
        std::fs::read(pki_file(&config.data_dir, files::SERVING_CERT)).expect("crt"),
        "the same serving certificate"
    );
    let mut cert_only = before.clone();
    cert_only.token = None;
    assert!(list_namespaces(&cert_only).await.expect("old admin.yaml") >= 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_own_certificate_files_and_client_ca() {
    // A PKI made elsewhere stands for the operator's certificates.
    let dir = tempfile::tempdir().expect("tempdir");
    let theirs = dir.path().join("theirs");
    let pki = Pki::ensure(&theirs, &["127.0.0.1".into(), "localhost".into()]).expect("PKI");
    let (cert, key) = pki.serving();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = ServerConfig {
        advertise: Some(format!("https://localhost:{}", addr.port())),
        ..tls_config(
            dir.path(),
            TlsMode::Files {
                cert,
                key,
                client_ca: Some(theirs.join(files::CA_CERT)),
            },
        )
    };
    let server = Server::start(config.clone(), listener)
        .await
        .expect("starts");
    assert!(server.pki.is_none());
    assert!(!config.data_dir.join("pki").exists(), "no PKI is generated");
    // admin.yaml names no CA (the operator's CA is theirs to hand out): add it, and the
    // token and a client certificate from their CA both work.
    let mut resolved = admin(&server);
    assert_eq!(
        resolved.server,
        format!("https://localhost:{}", addr.port())
    );
    assert!(resolved.certificate_authority.is_none());
    resolved.certificate_authority = data("certificate-authority-data", &pki.ca_pem);
    inproc::wait_until(READY, "the server answers over TLS", || {
        let r = resolved.clone();
        async move { list_namespaces(&r).await.ok() }
    })
    .await;
    resolved.token = None;
    resolved.client_certificate = data("client-certificate-data", &pki.admin_cert_pem);
    resolved.client_key = data("client-key-data", &pki.admin_key_pem);
    assert!(list_namespaces(&resolved).await.expect("client cert") >= 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flotctl_gets_namespaces_over_tls_and_names_a_wrong_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(tls_config(dir.path(), generated()), "127.0.0.1:0").await;

    let out = flotctl(&server.kubeconfig, &["get", "ns"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    for ns in ["default", "kube-system"] {
        assert!(out.stdout.contains(ns), "{}", out.stdout);
    }

    // The same kubeconfig with another cluster's CA.
    let other = tempfile::tempdir().expect("tempdir");
    let foreign = Pki::ensure(other.path(), &["127.0.0.1".into()]).expect("other PKI");
    let text = std::fs::read_to_string(&server.kubeconfig).expect("admin.yaml");
    let mut kc: Kubeconfig = serde_norway::from_str(&text).expect("yaml");
    kc.clusters[0].cluster.certificate_authority_data =
        Some(base64::engine::general_purpose::STANDARD.encode(&foreign.ca_pem));
    let wrong = dir.path().join("wrong-ca.yaml");
    std::fs::write(&wrong, serde_norway::to_string(&kc).expect("yaml")).expect("write");
    let out = flotctl(&wrong, &["get", "ns"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.starts_with("error: TLS handshake with https://")
            && out.stderr.contains("not signed by a CA this client trusts")
            && out.stderr.contains("certificate-authority"),
        "{}",
        out.stderr
    );

    // A CA file that is not there names the field and the file.
    kc.clusters[0].cluster.certificate_authority_data = None;
    kc.clusters[0].cluster.certificate_authority = Some("missing-ca.crt".into());
    std::fs::write(&wrong, serde_norway::to_string(&kc).expect("yaml")).expect("write");
    let out = flotctl(&wrong, &["get", "ns"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    let missing = dir.path().join("missing-ca.crt");
    assert!(
        out.stderr
            .contains(&format!("certificate-authority {}", missing.display())),
        "{}",
        out.stderr
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_scheduler_binds_pods_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tls_config(dir.path(), generated());
    // run_control_plane binds its own listener: port 0, and admin.yaml tells the port.
    let addr = "127.0.0.1:0".parse().expect("addr");
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let plane = tokio::spawn(flotilla_cli::server::run_control_plane(
        config.clone(),
        addr,
        Some(Default::default()),
        None,
        None,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    let kubeconfig = config.data_dir.join("admin.yaml");
    let client = inproc::wait_until(READY, "the control plane answers", || {
        let kubeconfig = kubeconfig.clone();
        async move {
            let r = Kubeconfig::read(&kubeconfig).ok()?.resolve(None).ok()?;
            list_namespaces(&r).await.ok()?;
            Client::new(&r).ok()
        }
    })
    .await;
    client
        .dynamic("v1", "nodes", "")
        .create(
            &json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "status": {
                    "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                    "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]
                }
            }),
            false,
        )
        .await
        .expect("node");
    let pods = client.dynamic("v1", "pods", "default");
    pods.create(&pod("p"), false).await.expect("pod");
    let node = inproc::wait_until(READY, "the pod is bound", || {
        let pods = pods.clone();
        async move {
            pods.get("p", "").await.ok()?["spec"]["nodeName"]
                .as_str()
                .map(str::to_string)
        }
    })
    .await;
    assert_eq!(node, "n1");
    stop.send_replace(true);
    plane
        .await
        .expect("joined")
        .expect("the control plane stops cleanly");
}
