//! A real containerd for tests: its own root, state, socket and CNI config under a temp
//! dir (nothing system-wide), the configuration from ../shared/notes/containerd-cri.md,
//! and the test images built by images/build.sh imported into its k8s.io namespace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent::runtime::cri::CriRuntime;

/// The images the tests use (built by images/build.sh).
pub const BUSYBOX: &str = "flotilla.local/busybox:1.36";
/// The sandbox image.
pub const PAUSE: &str = "flotilla.local/pause:3.10";

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

fn conflist(dir: &Path, bridge: &str, subnet: &str, gateway: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "flotilla-test",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": dir.join("cni/ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    })
    .to_string()
}

impl Containerd {
    /// Starts containerd with a CNI bridge `bridge` on `subnet` (gateway `gateway`), and
    /// imports the test images; returns once its CRI answers.
    pub async fn start(bridge: &str, subnet: &str, gateway: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("flotilla-containerd")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("cni/net.d")).expect("cni dir");
        std::fs::write(
            d.join("cni/net.d/10-flotilla.conflist"),
            conflist(d, bridge, subnet, gateway),
        )
        .expect("conflist");
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

    /// Builds the test images (once per checkout; the build is reproducible) and imports
    /// them.
    fn import_images(&self) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = root.join("target/test-images");
        let status = Command::new("sh")
            .arg(root.join("images/build.sh"))
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("images/build.sh runs");
        assert!(status.success(), "images/build.sh failed");
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

    /// What containerd logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Containerd {
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
    /// Stops containerd, kills what it left running, and unmounts what it left under its
    /// directory.
    fn drop(&mut self) {
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
