//! The real `etcdctl` 3.4 against a three-member etcd-lite cluster: every everyday command
//! a user of etcd reaches for, with its output checked.

#[path = "support/cluster.rs"]
mod cluster;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster::{ClusterOptions, Flavor, ProcessCluster};

const WAIT: Duration = Duration::from_secs(20);

fn etcdctl_path() -> PathBuf {
    let path = std::env::var_os("ETCDCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"));
    assert!(
        path.is_file(),
        "etcdctl not found at {}: run .ci/run (or apt-get install etcd-client) first",
        path.display()
    );
    path
}

async fn cluster() -> ProcessCluster {
    let lite = Flavor::EtcdLite(env!("CARGO_BIN_EXE_flotilla").into());
    ProcessCluster::start(ClusterOptions::new(3, lite))
        .await
        .expect("etcd-lite cluster starts")
}

/// Runs etcdctl against every member; returns stdout, failing with stderr on error.
fn ctl(c: &ProcessCluster, args: &[&str]) -> String {
    run(c.etcdctl(&etcdctl_path()).args(args))
}

/// Runs etcdctl against member `i` only.
fn ctl_one(c: &ProcessCluster, i: usize, args: &[&str]) -> String {
    let mut cmd = Command::new(etcdctl_path());
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", c.client_url(i)))
        .args(args);
    run(&mut cmd)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("etcdctl runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs etcdctl expecting failure; returns stderr.
fn ctl_fails(c: &ProcessCluster, args: &[&str]) -> String {
    let out = c
        .etcdctl(&etcdctl_path())
        .args(args)
        .output()
        .expect("etcdctl runs");
    assert!(!out.status.success(), "etcdctl {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lease_id(grant_output: &str) -> String {
    // "lease 694d7a8b6a3e0b0c granted with TTL(60s)"
    grant_output
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_key_value_commands_behave_as_against_etcd() {
    let c = cluster().await;
    assert_eq!(ctl(&c, &["put", "fruit/apple", "red"]), "OK\n");
    assert_eq!(ctl(&c, &["put", "fruit/banana", "yellow"]), "OK\n");
    assert_eq!(ctl(&c, &["put", "fruit/apple", "green"]), "OK\n");
    assert_eq!(ctl(&c, &["put", "veg/leek", "white"]), "OK\n");

    assert_eq!(ctl(&c, &["get", "fruit/apple"]), "fruit/apple\ngreen\n");
    assert_eq!(
        ctl(&c, &["get", "fruit/apple", "--rev=2"]),
        "fruit/apple\nred\n"
    );
    assert_eq!(
        ctl(&c, &["get", "fruit/", "--prefix"]),
        "fruit/apple\ngreen\nfruit/banana\nyellow\n"
    );
    assert_eq!(
        ctl(&c, &["get", "", "--prefix", "--keys-only"]),
        "fruit/apple\n\nfruit/banana\n\nveg/leek\n\n"
    );
    assert_eq!(
        ctl(&c, &["get", "", "--prefix", "--limit=1"]),
        "fruit/apple\ngreen\n"
    );
    let json = ctl(&c, &["get", "fruit/apple", "-w", "json"]);
    assert!(
        json.contains("\"create_revision\":2")
            && json.contains("\"mod_revision\":4")
            && json.contains("\"version\":2"),
        "{json}"
    );
    assert!(json.contains("\"revision\":5"), "{json}");

    assert_eq!(ctl(&c, &["del", "fruit/", "--prefix"]), "2\n");
    assert_eq!(ctl(&c, &["get", "fruit/", "--prefix"]), "");
    assert_eq!(ctl(&c, &["del", "nothing-here"]), "0\n");

    // Every member serves the same data.
    for i in 0..3 {
        assert_eq!(
            ctl_one(&c, i, &["get", "veg/leek", "--consistency=s"]),
            "veg/leek\nwhite\n"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_txn_reads_its_script_from_stdin() {
    let c = cluster().await;
    ctl(&c, &["put", "lock", "free"]);
    let txn = |script: &str| {
        let mut child = c
            .etcdctl(&etcdctl_path())
            .args(["txn", "-i"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl txn starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("script written");
        let out = child.wait_with_output().expect("etcdctl txn finishes");
        assert!(
            out.status.success(),
            "txn failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = txn("value(\"lock\") = \"free\"\n\nput lock taken\nget lock\n\nget lock\n\n");
    assert!(out.ends_with("SUCCESS\n\nOK\n\nlock\ntaken\n"), "{out}");
    let out = txn("value(\"lock\") = \"free\"\n\nput lock taken-again\n\nget lock\n\n");
    assert!(out.ends_with("FAILURE\n\nlock\ntaken\n"), "{out}");
    let out = txn("mod(\"lock\") > \"0\"\nversion(\"missing\") = \"0\"\n\nput other x\n\n\n");
    assert!(out.ends_with("SUCCESS\n\nOK\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_replays_history_and_follows_new_writes() {
    let c = cluster().await;
    ctl(&c, &["put", "w/a", "1"]);
    ctl(&c, &["put", "w/b", "2"]);
    let mut watch = c
        .etcdctl(&etcdctl_path())
        .args(["watch", "--prefix", "w/", "--rev=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch starts");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut next = move || lines.next().expect("watch output").expect("readable");
    for expected in ["PUT", "w/a", "1", "PUT", "w/b", "2"] {
        assert_eq!(next(), expected);
    }
    ctl(&c, &["put", "w/c", "3"]);
    ctl(&c, &["del", "w/a"]);
    ctl(&c, &["put", "other", "x"]);
    for expected in ["PUT", "w/c", "3", "DELETE", "w/a"] {
        assert_eq!(next(), expected);
    }
    let _ = watch.kill();
    let _ = watch.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_leases_grant_keep_alive_report_and_revoke() {
    let c = cluster().await;
    let lease = lease_id(&ctl(&c, &["lease", "grant", "60"]));
    assert!(ctl(&c, &["lease", "list"]).contains(&lease));
    assert_eq!(
        ctl(
            &c,
            &["put", "session", "alive", &format!("--lease={lease}")]
        ),
        "OK\n"
    );
    let ttl = ctl(&c, &["lease", "timetolive", &lease, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {lease} granted with TTL(60s), remaining(")),
        "{ttl}"
    );
    assert!(
        ttl.trim_end().ends_with("attached keys([session])"),
        "{ttl}"
    );
    assert_eq!(
        ctl(&c, &["lease", "keep-alive", "--once", &lease]),
        format!("lease {lease} keepalived with TTL(60)\n")
    );
    // Ask a follower too: it forwards to the leader, which owns lease expiry.
    let leader = c.leader().await.expect("a leader");
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let ttl = ctl_one(&c, follower, &["lease", "timetolive", &lease]);
    assert!(
        ttl.starts_with(&format!("lease {lease} granted with TTL(60s)")),
        "{ttl}"
    );
    assert_eq!(
        ctl(&c, &["lease", "revoke", &lease]),
        format!("lease {lease} revoked\n")
    );
    assert_eq!(ctl(&c, &["get", "session"]), "");
    assert!(ctl(&c, &["lease", "timetolive", &lease]).contains("already expired"));
    let err = ctl_fails(&c, &["lease", "revoke", &lease]);
    assert!(err.contains("requested lease not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_deletes_its_keys_on_every_member() {
    let c = cluster().await;
    let lease = lease_id(&ctl(&c, &["lease", "grant", "1"]));
    ctl(&c, &["put", "ephemeral", "x", &format!("--lease={lease}")]);
    c.wait_until(
        WAIT,
        "the expired lease's key to disappear everywhere",
        async || {
            for i in 0..3 {
                if c.get(i, b"ephemeral", true)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Err(format!("m{i} still has the key"));
                }
            }
            Ok(())
        },
    )
    .await
    .expect("lease expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_cluster_and_maintenance_commands_report_the_cluster() {
    let c = cluster().await;
    let members = ctl(&c, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for i in 0..3 {
        let line = members
            .lines()
            .find(|l| l.contains(&format!(", m{i}, ")))
            .unwrap_or_else(|| panic!("m{i} missing from {members}"));
        assert!(line.contains(", started, "), "{line}");
        assert!(
            line.contains(&c.peer_url(i)) && line.contains(&c.client_url(i)),
            "{line}"
        );
    }

    let status = ctl(&c, &["endpoint", "status"]);
    assert_eq!(status.lines().count(), 3, "{status}");
    let leaders = status
        .lines()
        .filter(|l| l.contains(", true, false, "))
        .count();
    assert_eq!(leaders, 1, "exactly one leader expected:\n{status}");

    // etcdctl 3.4 prints health results on stderr.
    let out = c
        .etcdctl(&etcdctl_path())
        .args(["endpoint", "health"])
        .output()
        .expect("etcdctl runs");
    assert!(out.status.success());
    let health =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        health
            .matches("is healthy: successfully committed proposal")
            .count(),
        3,
        "{health}"
    );

    for n in 0..5 {
        ctl(&c, &["put", "k", &n.to_string()]);
    }
    assert_eq!(ctl(&c, &["compaction", "4"]), "compacted revision 4\n");
    let err = ctl_fails(&c, &["get", "k", "--rev=3"]);
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    assert_eq!(ctl(&c, &["get", "k", "--rev=4"]), "k\n2\n");

    let file = c.data_dir(0).with_file_name("backup.db");
    let out = ctl_one(
        &c,
        0,
        &["snapshot", "save", file.to_str().expect("utf-8 path")],
    );
    assert!(out.contains("Snapshot saved at"), "{out}");
    let len = std::fs::metadata(&file).expect("snapshot file").len();
    assert_eq!(
        len % 512,
        32,
        "etcdctl expects a trailing SHA-256 after 512-byte blocks"
    );
}
