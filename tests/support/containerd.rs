//! A real containerd for tests: its own root, state, socket and CNI config under a temp
//! dir (nothing system-wide), the configuration from ../shared/notes/containerd-cri.md,
//! and the test images built by images/build.sh imported into its k8s.io namespace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent::runtime::Runtime;
use agent::runtime::cri::CriRuntime;

/// The images the tests use (built by images/build.sh).
pub const BUSYBOX: &str = "flotilla.local/busybox:1.36";
/// The sandbox image.
pub const PAUSE: &str = "flotilla.local/pause:3.10";
/// busybox httpd on :8080.
pub const HTTP: &str = "flotilla.local/http:1";

/// A containerd process.
pub struct Containerd {
    child: Child,
    /// Its directory (config, root, state, socket, logs).
    pub dir: tempfile::TempDir,
    /// Its CRI socket.
    pub socket: PathBuf,
}

/// Is containerd installed? When not, tests skip — unless FLOTILLA_REQUIRE_ROOT_TESTS=1
/// (CI), where its absence is a failure.
pub fn available() -> bool {
    let found = Command::new("containerd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && nix::unistd::geteuid().is_root();
    if !found && std::env::var("FLOTILLA_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!(
            "containerd (and root) are required: .ci/run installs containerd, runc and containernetworking-plugins"
        );
    }
    found
}

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE}"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    max_container_log_line_size = 16384
    netns_mounts_under_state_dir = true
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          Root = "{d}/runc-root"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{d}/cni/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "{d}/certs.d"
"#
    )
}

impl Containerd {
    /// Starts containerd with the agent's CNI conflist for a bridge `bridge` on `cidr`,
    /// and imports the test images; returns once its CRI answers.
    pub async fn start(bridge: &str, cidr: &str) -> Self {
        Self::start_with(Some((bridge, cidr))).await
    }

    /// Starts containerd with no CNI configuration yet (an agent's --pod-cidr writes it).
    pub async fn start_without_network() -> Self {
        Self::start_with(None).await
    }

    async fn start_with(network: Option<(&str, &str)>) -> Self {
        if let Some((bridge, _)) = network {
            remove_link(bridge);
        }
        let dir = tempfile::Builder::new()
            .prefix("flotilla-containerd")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("cni/net.d")).expect("cni dir");
        if let Some((bridge, cidr)) = network {
            let cidr = agent::cni::PodCidr::parse(cidr).expect("cidr");
            let conflist = agent::cni::conflist(&cidr, bridge, &d.join("cni/ipam"));
            agent::cni::install(&d.join("cni/net.d"), &conflist).expect("conflist");
        }
        std::fs::write(d.join("config.toml"), config(d)).expect("config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        let socket = d.join("containerd.sock");
        let c = Containerd { child, dir, socket };
        super::inproc::wait_until(Duration::from_secs(60), "containerd answers on CRI", || {
            let socket = c.socket.clone();
            async move {
                CriRuntime::connect(&socket, "/flotilla-test")
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
        c.import_images();
        c
    }

    /// Imports the test images (see [`images`]).
    fn import_images(&self) {
        let out = images();
        for image in ["busybox", "pause", "http"] {
            let out = Command::new("ctr")
                .arg("--address")
                .arg(&self.socket)
                .args(["-n", "k8s.io", "images", "import", "--all-platforms"])
                .arg(out.join(format!("{image}.tar")))
                .output()
                .expect("ctr runs");
            assert!(
                out.status.success(),
                "importing {image}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Where it reads CNI configuration.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("cni/net.d")
    }

    /// What containerd logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

/// Deletes a network link left by an earlier run: a bridge keeps its address after its
/// pods are gone, and CNI refuses a bridge whose address is not the configured gateway.
pub fn remove_link(name: &str) {
    let _ = Command::new("ip")
        .args(["link", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Builds the test images into target/test-images, once per test process (tests running
/// at once share the build); the build is reproducible, so every run makes the same ones.
pub fn images() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let out = root.join("target/test-images");
            let status = Command::new("sh")
                .arg(root.join("images/build.sh"))
                .arg(&out)
                .stdout(Stdio::null())
                .status()
                .expect("images/build.sh runs");
            assert!(status.success(), "images/build.sh failed");
            out
        })
        .clone()
}

impl Containerd {
    /// Stops and removes every sandbox: containers outlive containerd (their shims keep
    /// them), and a failed test must not leave pods answering on its addresses.
    fn remove_every_sandbox(&self) {
        let socket = self.socket.clone();
        // Drop may run inside the test's runtime, which cannot be blocked on: a thread
        // of its own with its own runtime can.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(cri) = CriRuntime::connect(&socket, "/flotilla-test").await else {
                    return;
                };
                for s in cri.list_pod_sandboxes().await.unwrap_or_default() {
                    let _ = cri.stop_pod_sandbox(&s.id, Duration::ZERO).await;
                    let _ = cri.remove_pod_sandbox(&s.id).await;
                }
            });
        })
        .join();
    }

    /// Kills every container this containerd started and their shims, so that a test
    /// that failed halfway leaves no process behind (a passing one removed them already).
    fn kill_leftovers(&self) {
        let runc_root = self.dir.path().join("runc-root");
        for ns in std::fs::read_dir(&runc_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let root = ns.path();
            let Ok(out) = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output()
            else {
                continue;
            };
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // Shims name the socket of the containerd that started them.
        let socket = self.socket.display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let is_shim = cmdline
                .split(|b| *b == 0)
                .any(|arg| arg.starts_with(socket.as_bytes()));
            if is_shim && pid != std::process::id() as i32 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for Containerd {
    /// Removes its pods, stops containerd, kills what it left running, and unmounts what
    /// it left under its directory.
    fn drop(&mut self) {
        self.remove_every_sandbox();
        self.kill_leftovers();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let dir = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
