//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port, storing under a temp dir, optionally behind htpasswd basic auth (the
//! file written here, bcrypt-hashed), with images pushed by `skopeo` from the OCI archives
//! images/build.sh makes. containerd pulls from 127.0.0.1 over plain HTTP without extra
//! configuration.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The registry binary.
const BINARY: &str = "/usr/bin/docker-registry";
/// How many ports to try before giving up (another process may take a port between
/// finding it free and the registry binding it).
const PORT_TRIES: usize = 5;

/// A running registry.
pub struct Registry {
    child: Child,
    /// Its directory (config, htpasswd, storage, log).
    pub dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The user and password it asks for, if any.
    pub credentials: Option<(String, String)>,
}

/// Are docker-registry and skopeo installed? When not, tests skip — unless
/// FLOTILLA_REQUIRE_ROOT_TESTS=1 (CI), where their absence is a failure.
pub fn available() -> bool {
    let found = Path::new(BINARY).exists()
        && Command::new("skopeo")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !found && std::env::var("FLOTILLA_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("docker-registry and skopeo are required: .ci/run installs them");
    }
    found
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn config(dir: &Path, port: u16, auth: bool) -> String {
    let d = dir.display();
    let mut c = format!(
        "version: 0.1\n\
         log:\n  level: info\n\
         storage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: flotilla-test\n"
    );
    if auth {
        c.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: flotilla-test\n    path: {d}/htpasswd\n"
        ));
    }
    c
}

/// The HTTP status of GET /v2/ on 127.0.0.1:`port`, if anything answers.
async fn probe(port: u16) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.ok()?;
    let line = String::from_utf8_lossy(&buf[..n]).to_string();
    line.split(' ').nth(1)?.parse().ok()
}

impl Registry {
    /// Starts a registry; with `credentials` (user, password) every request needs them.
    pub async fn start(credentials: Option<(&str, &str)>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("flotilla-registry")
            .tempdir()
            .expect("tempdir");
        if let Some((user, password)) = credentials {
            // Cost 4, bcrypt's least: the registry checks it on every request.
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n"))
                .expect("htpasswd");
        }
        let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        for _ in 0..PORT_TRIES {
            let port = free_port();
            let cfg = dir.path().join("config.yml");
            std::fs::write(&cfg, config(dir.path(), port, credentials.is_some())).expect("config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
            let mut child = Command::new(BINARY)
                .arg("serve")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("docker-registry starts");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(code) = probe(port).await {
                    let expected = if credentials.is_some() { 401 } else { 200 };
                    assert_eq!(code, expected, "GET /v2/ on the new registry");
                    return Registry {
                        child,
                        dir,
                        port,
                        credentials,
                    };
                }
                // Exited: most likely the port was taken meanwhile; try another.
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "docker-registry did not answer: {}",
                    std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!(
            "docker-registry could not listen on {PORT_TRIES} ports: {}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// `127.0.0.1:PORT`, the host part of its images' names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the OCI archive `archive` as `name` (`repository:tag`); returns the full
    /// image name.
    pub fn push(&self, archive: &Path, name: &str) -> String {
        let image = format!("{}/{name}", self.host());
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.credentials {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{image}"))
            .output()
            .expect("skopeo runs");
        assert!(
            out.status.success(),
            "pushing {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }

    /// What the registry logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
