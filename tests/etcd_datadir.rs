//! A data directory that is not right is refused, never re-initialised. Each case runs the
//! flotilla binary itself, as an operator would, on a directory that belongs to another
//! member or cluster, to a real etcd, or is damaged, and checks that it exits non-zero
//! promptly with a message naming the problem, leaving the directory exactly as it was:
//! the data in it may be the only copy.

#[path = "support/cluster.rs"]
mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::{ClusterOptions, Flavor, ProcessCluster};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{PutRequest, RangeRequest};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

/// A refusal must come at least this fast: it happens before anything is served.
const PROMPTLY: Duration = Duration::from_secs(10);
/// How long a member gets to start serving, or to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);
/// Keys a member holds before its directory is reused.
const KEYS: usize = 300;

// ----- running flotilla by hand ------------------------------------------------------------

/// Ports handed out by this process, never twice: tests run concurrently.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Two free loopback ports, reserved by binding port 0 and releasing the sockets.
fn two_ports() -> (u16, u16) {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 2 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().expect("a bound port").port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        // Kept open until both are chosen, so the kernel cannot hand out one port twice.
        listeners.push(listener);
    }
    (ports[0], ports[1])
}

/// One member's etcd flags.
#[derive(Clone, Debug)]
struct Flags {
    name: String,
    token: String,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Flags {
    fn new(data_dir: &Path, name: &str, token: &str) -> Flags {
        let (client_port, peer_port) = two_ports();
        Flags {
            name: name.into(),
            token: token.into(),
            data_dir: data_dir.to_path_buf(),
            client_port,
            peer_port,
        }
    }

    /// The same member on fresh ports, so that it gets as far as its data directory even
    /// while another process holds the old ports.
    fn on_new_ports(&self) -> Flags {
        Flags::new(&self.data_dir, &self.name, &self.token)
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn command(&self) -> Command {
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        command
            .arg("etcd")
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{}={peer_url}", self.name)])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // ETCD_* variables are flags too; a stray one would change the member.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        command
    }

    async fn kv(&self) -> KvClient<Channel> {
        let endpoint = Endpoint::from_shared(self.client_url())
            .expect("a valid URL")
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5));
        KvClient::new(endpoint.connect_lazy())
    }
}

/// A member started by a test; dropping it kills it.
struct Running {
    child: Child,
    /// Its stderr, kept outside the data directory.
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERMs the member and waits for a clean exit.
    async fn stop(mut self) {
        let pid = self.child.id().expect("a running member has a pid");
        signal::kill(
            Pid::from_raw(i32::try_from(pid).expect("pid")),
            Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the member did not exit within {STOP_TIMEOUT:?}"))
            .expect("waiting for the member");
        assert!(
            status.success(),
            "SIGTERM should stop the member cleanly, got {status}:\n{}",
            self.log()
        );
    }
}

/// Starts a member and waits until it accepts writes.
async fn start(flags: &Flags, logs: &Path) -> Running {
    let log = logs.join(format!("{}-{}.log", flags.name, flags.client_port));
    let stderr = fs::File::create(&log).expect("creating the log file");
    let child = flags
        .command()
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawning flotilla");
    let mut running = Running { child, log };
    let mut kv = flags.kv().await;
    let end = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!(
                "the member exited while starting ({status}):\n{}",
                running.log()
            );
        }
        let probe = PutRequest {
            key: Bytes::from_static(b"probe"),
            ..Default::default()
        };
        if kv.put(probe).await.is_ok() {
            return running;
        }
        assert!(
            Instant::now() < end,
            "the member did not accept a write within {START_TIMEOUT:?}:\n{}",
            running.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// What a refused start left behind.
struct Refusal {
    status: ExitStatus,
    stderr: String,
    took: Duration,
}

/// Runs a member that must refuse to start; fails unless it exits non-zero promptly.
async fn refused(flags: &Flags) -> Refusal {
    let started = Instant::now();
    let output = tokio::time::timeout(
        PROMPTLY,
        flags
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "flotilla did not exit within {PROMPTLY:?} on {}",
            flags.data_dir.display()
        )
    })
    .expect("running flotilla");
    let refusal = Refusal {
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    };
    assert!(
        !refusal.status.success(),
        "flotilla should have refused {}, but exited with {}:\n{}",
        flags.data_dir.display(),
        refusal.status,
        refusal.stderr
    );
    refusal
}

/// Every file and directory under `dir` with its contents (`None` for a directory).
fn contents(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.insert(rel, Some(bytes));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Which entries differ between two listings, for a readable failure.
fn changed(
    before: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    after: &BTreeMap<PathBuf, Option<Vec<u8>>>,
) -> Vec<String> {
    let paths: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths
        .into_iter()
        .filter_map(|p| match (before.get(p), after.get(p)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(_), Some(_)) => Some(format!("changed: {}", p.display())),
            (Some(_), None) => Some(format!("removed: {}", p.display())),
            (None, _) => Some(format!("created: {}", p.display())),
        })
        .collect()
}

/// Starts `flags` expecting a refusal whose message has every one of `expected`, and
/// checks that the data directory was not touched.
async fn assert_refused_untouched(flags: &Flags, expected: &[&str]) -> Refusal {
    let before = contents(&flags.data_dir);
    let refusal = refused(flags).await;
    for text in expected {
        assert!(
            refusal.stderr.contains(text),
            "the refusal should say {text:?}; stderr was:\n{}",
            refusal.stderr
        );
    }
    let after = contents(&flags.data_dir);
    let differences = changed(&before, &after);
    assert!(
        differences.is_empty(),
        "refusing to start must leave {} as it was:\n{}\nstderr was:\n{}",
        flags.data_dir.display(),
        differences.join("\n"),
        refusal.stderr
    );
    refusal
}

// ----- data -------------------------------------------------------------------------------

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key/{i:04}"))
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value {i} {}", "x".repeat(i % 97)))
}

async fn write_keys(flags: &Flags) {
    write_range(flags, 0..KEYS).await;
}

/// The keys under `key/` and the store's revision.
async fn read_keys(flags: &Flags) -> (BTreeMap<Bytes, Bytes>, i64) {
    let mut kv = flags.kv().await;
    let resp = kv
        .range(RangeRequest {
            key: Bytes::from_static(b"key/"),
            range_end: Bytes::from_static(b"key0"),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let revision = resp.header.map_or(0, |h| h.revision);
    let keys = resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    (keys, revision)
}

fn written() -> BTreeMap<Bytes, Bytes> {
    (0..KEYS).map(|i| (key(i), value(i))).collect()
}

/// A stopped member's data directory holding `KEYS` keys, and its flags.
async fn member_with_data(tmp: &TempDir, name: &str, token: &str) -> Flags {
    let flags = Flags::new(&tmp.path().join("data"), name, token);
    let running = start(&flags, tmp.path()).await;
    write_keys(&flags).await;
    running.stop().await;
    flags
}

fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("flotilla-datadir-")
        .tempdir()
        .expect("a temporary directory")
}

// ----- the cases --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_and_restart_keeps_every_key() {
    let tmp = tempdir();
    let flags = member_with_data(&tmp, "m1", "cluster-a").await;
    let running = start(&flags, tmp.path()).await;
    let (keys, revision) = read_keys(&flags).await;
    assert_eq!(keys, written(), "the keys after a restart");
    // The probe write of each start, then one revision per key.
    assert_eq!(
        revision,
        1 + 1 + KEYS as i64 + 1,
        "the revision after a restart"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_members_data_directory_is_refused() {
    let tmp = tempdir();
    let flags = member_with_data(&tmp, "m1", "cluster-a").await;
    let other = Flags {
        name: "m2".into(),
        ..flags.on_new_ports()
    };
    assert_refused_untouched(&other, &["belongs to member \"m1\"", "--name \"m2\""]).await;
    // Refusing did not hurt it: its own member still starts with everything.
    let running = start(&flags, tmp.path()).await;
    assert_eq!(read_keys(&flags).await.0, written());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_data_directory_is_refused() {
    let tmp = tempdir();
    let flags = member_with_data(&tmp, "m1", "cluster-a").await;
    let other = Flags {
        token: "cluster-b".into(),
        ..flags.on_new_ports()
    };
    assert_refused_untouched(
        &other,
        &[
            "token \"cluster-a\"",
            "--initial-cluster-token \"cluster-b\"",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_etcds_data_directory_is_refused() {
    let etcd = Flavor::system_etcd().unwrap_or_else(|| {
        panic!("the real etcd is not installed at /usr/bin/etcd or $ETCD_BIN: run .ci/run")
    });
    let mut real = ProcessCluster::start(ClusterOptions::new(1, etcd))
        .await
        .expect("the real etcd starts");
    real.put(0, b"owned-by", b"etcd").await.expect("a put");
    real.terminate(0);
    let data_dir = real.data_dir(0);
    assert!(data_dir.join("member/wal").is_dir(), "etcd wrote its WAL");
    let flags = Flags::new(&data_dir, &real.name(0), "etcd-cluster");
    assert_refused_untouched(&flags, &["etcd server's data", "refusing to start"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_missing_identity_file_is_refused() {
    let tmp = tempdir();
    let flags = member_with_data(&tmp, "m1", "cluster-a").await;
    let identity = flags.data_dir.join("member/IDENTITY");
    let mut raw = fs::read(&identity).expect("the identity file");
    let middle = raw.len() / 2;
    raw[middle] ^= 0x01;
    fs::write(&identity, &raw).expect("damaging the identity file");
    assert_refused_untouched(&flags, &["data is corrupt", "fails its checksum"]).await;
    fs::write(&identity, []).expect("truncating the identity file");
    assert_refused_untouched(&flags, &["data is corrupt", "truncated"]).await;
    fs::remove_file(&identity).expect("removing the identity file");
    assert_refused_untouched(&flags, &["data is corrupt", "identity file is missing"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_data_format_is_refused() {
    let tmp = tempdir();
    let flags = member_with_data(&tmp, "m1", "cluster-a").await;
    let format = flags.data_dir.join("member/FORMAT");
    fs::write(&format, "etcd-lite data directory, format 99\n").expect("writing FORMAT");
    assert_refused_untouched(&flags, &["unknown data format", "format 99"]).await;
    fs::remove_file(&format).expect("removing FORMAT");
    assert_refused_untouched(&flags, &["not an etcd-lite data directory"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_on_a_data_directory_in_use_is_refused() {
    let tmp = tempdir();
    let flags = Flags::new(&tmp.path().join("data"), "m1", "cluster-a");
    let running = start(&flags, tmp.path()).await;
    write_keys(&flags).await;
    // Fresh ports, so the second process gets past binding to the data directory.
    let refusal = refused(&flags.on_new_ports()).await;
    assert!(
        refusal
            .stderr
            .contains("is another member running on this data directory?"),
        "stderr was:\n{}",
        refusal.stderr
    );
    assert!(refusal.took < PROMPTLY);
    // The first member did not notice.
    assert_eq!(read_keys(&flags).await.0, written());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_that_lost_a_database_is_refused() {
    for database in ["raft", "state"] {
        let tmp = tempdir();
        let flags = member_with_data(&tmp, "m1", "cluster-a").await;
        fs::remove_dir_all(flags.data_dir.join("member").join(database))
            .expect("removing a database");
        // sled would create an empty database in its place, and without its log (or its
        // state and log together) the member would start as if new.
        let missing = format!("the {database} database (member/{database}/db) is missing");
        assert_refused_untouched(&flags, &["data is corrupt", &missing]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_settings_file_is_refused_as_corrupt() {
    let tmp = tempdir();
    let flags = member_with_data(&tmp, "m1", "cluster-a").await;
    flip_middle(&flags.data_dir.join("member/raft/conf"));
    let refusal = assert_refused_untouched(&flags, &["data is corrupt", "member/raft"]).await;
    // Not the hint for a lock held by another process, which would send the operator
    // looking for a process that does not exist.
    assert!(
        !refusal.stderr.contains("another member"),
        "{}",
        refusal.stderr
    );
}

/// Inverts 64 bytes in the middle of a file.
fn flip_middle(path: &Path) {
    let mut raw = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = raw.len() / 2;
    flip_at(path, &mut raw, at);
}

/// Inverts 64 bytes of the raft log's record of the write of key `i` (the middle of a
/// sled file may be space it has not used yet, where damage changes nothing).
fn damage_raft_entry(data_dir: &Path, i: usize) {
    let log = data_dir.join("member/raft/db");
    let mut raw = fs::read(&log).expect("the raft database");
    let needle = key(i);
    let at = raw
        .windows(needle.len())
        .rposition(|w| w == needle.as_ref())
        .expect("the key's raft entry is in the log");
    flip_at(&log, &mut raw, at);
}

fn flip_at(path: &Path, raw: &mut [u8], at: usize) {
    let end = (at + 64).min(raw.len());
    for byte in &mut raw[at..end] {
        *byte ^= 0xff;
    }
    fs::write(path, raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Damage in the middle of the raft log after a clean stop: sled reads a record that fails
/// its checksum as the torn end of its log and recovers only what came before, but the
/// state machine, which had applied all of it, shows the log is short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_raft_database_is_refused() {
    let tmp = tempdir();
    let flags = member_with_data(&tmp, "m1", "cluster-a").await;
    damage_raft_entry(&flags.data_dir, KEYS / 2);
    let refusal = refused(&flags).await;
    assert!(
        refusal.stderr.contains("corrupt raft log")
            && refusal.stderr.contains("the state machine applied entry"),
        "stderr was:\n{}",
        refusal.stderr
    );
}

/// The state machine's database is flushed lazily, so after a power failure it may be
/// behind the log (here: an older copy of it, as a power failure can leave) and cannot
/// show that the log is short. Damage in the log past that point makes sled cut the log
/// there without a word; the commit mark kept outside sled shows the log once reached
/// further, so the member refuses to start rather than run without writes it had
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_log_damaged_past_the_applied_state_is_refused_not_cut_short() {
    let tmp = tempdir();
    let flags = Flags::new(&tmp.path().join("data"), "m1", "cluster-a");
    let running = start(&flags, tmp.path()).await;
    write_range(&flags, 0..KEYS / 2).await;
    running.stop().await;
    let old_state = tmp.path().join("old-state");
    copy_dir(&flags.data_dir.join("member/state"), &old_state);
    let running = start(&flags, tmp.path()).await;
    write_range(&flags, KEYS / 2..KEYS).await;
    running.stop().await;
    let state = flags.data_dir.join("member/state");
    fs::remove_dir_all(&state).expect("removing the state database");
    copy_dir(&old_state, &state);
    // Damage the raft log's record of a write the old state has not seen.
    damage_raft_entry(&flags.data_dir, KEYS * 2 / 3);

    let mut child = flags
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning flotilla");
    let mut kv = flags.kv().await;
    let end = Instant::now() + PROMPTLY;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!status.success(), "a refusal exits non-zero");
            return;
        }
        if let Ok(resp) = kv
            .range(RangeRequest {
                key: Bytes::from_static(b"key/"),
                range_end: Bytes::from_static(b"key0"),
                count_only: true,
                ..Default::default()
            })
            .await
        {
            let count = resp.into_inner().count;
            panic!(
                "the member started on a damaged raft log and serves {count} of the {KEYS} \
                 keys it had acknowledged; it should have refused to start"
            );
        }
        assert!(
            Instant::now() < end,
            "the member neither refused nor served within {PROMPTLY:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn write_range(flags: &Flags, keys: std::ops::Range<usize>) {
    let mut kv = flags.kv().await;
    for i in keys {
        let put = PutRequest {
            key: key(i),
            value: value(i),
            ..Default::default()
        };
        kv.put(put).await.expect("put");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("creating a directory");
    for entry in fs::read_dir(from).expect("listing a directory") {
        let path = entry.expect("a directory entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).expect("copying a file");
        }
    }
}
