//! A store cluster whose members run inside the test process, on ephemeral loopback ports,
//! talking to each other over the real gRPC peer transport. Members can be cut off from
//! each other (their raft traffic dropped, as in a network partition) and stopped and
//! restarted cleanly. Crash tests that need SIGKILL use the process harness instead.
//!
//! Include it with `#[path = "support/inproc.rs"] mod inproc;`.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etcd_lite::config::{EtcdConfig, InitialMember};
use etcd_lite::{Listeners, Member};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

/// A cluster of in-process members.
pub struct InProcCluster {
    dir: TempDir,
    configs: Vec<EtcdConfig>,
    members: Vec<Option<Member>>,
    client_addrs: Vec<SocketAddr>,
    peer_addrs: Vec<SocketAddr>,
    ids: Vec<u64>,
}

async fn bind_any() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port")
}

impl InProcCluster {
    /// Starts `n` members and waits for a leader.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_| {}).await
    }

    /// Starts `n` members whose configuration `tweak` adjusts, and waits for a leader.
    pub async fn start_with(n: usize, tweak: impl Fn(&mut EtcdConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut client = Vec::new();
        let mut peer = Vec::new();
        for _ in 0..n {
            client.push(bind_any().await);
            peer.push(bind_any().await);
        }
        let client_addrs: Vec<SocketAddr> = client
            .iter()
            .map(|l| l.local_addr().expect("addr"))
            .collect();
        let peer_addrs: Vec<SocketAddr> =
            peer.iter().map(|l| l.local_addr().expect("addr")).collect();
        let initial: Vec<InitialMember> = (0..n)
            .map(|i| InitialMember {
                name: format!("m{i}"),
                peer_urls: vec![format!("http://{}", peer_addrs[i])],
            })
            .collect();
        let configs: Vec<EtcdConfig> = (0..n)
            .map(|i| EtcdConfig {
                name: format!("m{i}"),
                data_dir: dir.path().join(format!("m{i}")),
                listen_client_urls: vec![format!("http://{}", client_addrs[i])],
                advertise_client_urls: vec![format!("http://{}", client_addrs[i])],
                listen_peer_urls: vec![format!("http://{}", peer_addrs[i])],
                initial_advertise_peer_urls: vec![format!("http://{}", peer_addrs[i])],
                initial_cluster: initial.clone(),
                initial_cluster_token: "inproc".into(),
                heartbeat_interval: Duration::from_millis(50),
                election_timeout: Duration::from_millis(500),
                ..Default::default()
            })
            .map(|mut c| {
                tweak(&mut c);
                c
            })
            .collect();
        let ids = configs[0].member_ids();
        let mut members = Vec::new();
        for (i, (c, p)) in client.into_iter().zip(peer).enumerate() {
            let m = Member::start_with(
                configs[i].clone(),
                Listeners {
                    client: vec![c],
                    peer: vec![p],
                },
            )
            .await
            .expect("member starts");
            members.push(Some(m));
        }
        let cluster = InProcCluster {
            dir,
            configs,
            members,
            client_addrs,
            peer_addrs,
            ids,
        };
        cluster
            .wait_for_leader(|_| true, Duration::from_secs(10))
            .await;
        cluster
    }

    /// Member `i`'s ID.
    pub fn id(&self, i: usize) -> u64 {
        self.ids[i]
    }

    /// A KV client for member `i`.
    pub fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i))
    }

    /// A Maintenance client for member `i`.
    pub fn maintenance(&self, i: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel(i))
    }

    /// Member `i`'s client URL.
    pub fn client_url(&self, i: usize) -> String {
        format!("http://{}", self.client_addrs[i])
    }

    /// A lazily connecting channel to member `i`'s client URL.
    pub fn channel(&self, i: usize) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.client_addrs[i]))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy()
    }

    /// The index of the member that leads, as the running members see it, if they agree.
    pub fn leader(&self) -> Option<usize> {
        let mut leader = None;
        for m in self.members.iter().flatten() {
            let s = m.status();
            if s.is_leader {
                leader = self.ids.iter().position(|id| *id == m.id);
            }
        }
        leader
    }

    /// Waits until some member that satisfies `ok` leads.
    pub async fn wait_for_leader(&self, ok: impl Fn(usize) -> bool, within: Duration) -> usize {
        wait_until(within, "a leader is elected", || async {
            self.leader().filter(|l| ok(*l))
        })
        .await
    }

    /// Drops all raft traffic between member `i` and every other member.
    pub fn isolate(&self, i: usize) {
        let others: Vec<u64> = (0..self.ids.len())
            .filter(|j| *j != i)
            .map(|j| self.ids[j])
            .collect();
        for (j, m) in self.members.iter().enumerate() {
            if let Some(m) = m {
                if j == i {
                    m.faults().block(&others);
                } else {
                    m.faults().block(&[self.ids[i]]);
                }
            }
        }
    }

    /// Restores all raft traffic.
    pub fn heal(&self) {
        for m in self.members.iter().flatten() {
            m.faults().heal();
        }
    }

    /// Stops member `i` cleanly.
    pub async fn stop(&mut self, i: usize) {
        if let Some(m) = self.members[i].take() {
            m.shutdown().await;
        }
    }

    /// Restarts a stopped member on its old ports and data.
    pub async fn restart(&mut self, i: usize) {
        let client = TcpListener::bind(self.client_addrs[i])
            .await
            .expect("rebind client port");
        let peer = TcpListener::bind(self.peer_addrs[i])
            .await
            .expect("rebind peer port");
        let m = Member::start_with(
            self.configs[i].clone(),
            Listeners {
                client: vec![client],
                peer: vec![peer],
            },
        )
        .await
        .expect("member restarts");
        self.members[i] = Some(m);
    }

    /// Stops every member.
    pub async fn shutdown(mut self) {
        for i in 0..self.members.len() {
            self.stop(i).await;
        }
        drop(self.dir);
    }
}

/// Polls `check` until it yields a value or `within` passes (then panics naming `what`).
pub async fn wait_until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
