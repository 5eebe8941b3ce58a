//! The Endpoints controller: for every Service with a selector, an Endpoints object of the
//! same name listing the matching pods' IPs — ready ones as addresses, others as
//! notReadyAddresses — with the Service's ports resolved per pod (a named targetPort is
//! looked up in the pod's container ports, so pods may differ), grouped into subsets of
//! pods that share a port list, as Kubernetes does. Services without a selector keep
//! the Endpoints their users write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::informer::key_of;
use flotilla_client::{Change, Client, DeleteParams, SharedInformers, Store, WorkQueue};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::pod_state::is_ready;
use crate::workers;

/// Workers syncing Services at once.
pub const WORKERS: usize = 2;

struct Controller {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
}

fn selects(svc: &Service, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Service's ports as this pod serves them; a named targetPort the pod does not
/// declare leaves that port out for this pod.
fn ports_for(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let declared = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten());
    let declared: Vec<_> = declared.collect();
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let port = match &p.target_port {
                None => p.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => declared
                    .iter()
                    .find(|c| {
                        c.name.as_deref() == Some(name.as_str())
                            && c.protocol.as_deref().unwrap_or("TCP") == protocol
                    })
                    .map(|c| c.container_port)?,
            };
            Some(EndpointPort {
                name: p.name.clone(),
                port,
                protocol: Some(protocol),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// Pods that serve the same resolved ports.
struct Group {
    ports: Vec<EndpointPort>,
    ready: Vec<EndpointAddress>,
    not_ready: Vec<EndpointAddress>,
}

/// The subsets a Service's pods add up to: pods grouped by their resolved port list,
/// addresses sorted, pods without an IP or being deleted left out.
pub fn subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for p in pods {
        let Some(ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if p.metadata.deletion_timestamp.is_some() && !publish_not_ready {
            continue;
        }
        let ports = ports_for(svc, p);
        let wanted = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .is_some_and(|p| !p.is_empty());
        if wanted && ports.is_empty() {
            // It serves none of the Service's ports.
            continue;
        }
        let group_key = serde_json::to_string(&ports).unwrap_or_default();
        let address = EndpointAddress {
            ip,
            hostname: None,
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: p.metadata.namespace.clone(),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let group = groups.entry(group_key).or_insert_with(|| Group {
            ports,
            ready: Vec::new(),
            not_ready: Vec::new(),
        });
        if publish_not_ready || is_ready(p) {
            group.ready.push(address);
        } else {
            group.not_ready.push(address);
        }
    }
    let order = |a: &EndpointAddress, b: &EndpointAddress| {
        a.ip.cmp(&b.ip).then_with(|| {
            let name = |x: &EndpointAddress| x.target_ref.as_ref().and_then(|t| t.name.clone());
            name(a).cmp(&name(b))
        })
    };
    groups
        .into_values()
        .map(
            |Group {
                 ports,
                 mut ready,
                 mut not_ready,
             }| {
                ready.sort_by(order);
                not_ready.sort_by(order);
                EndpointSubset {
                    addresses: (!ready.is_empty()).then_some(ready),
                    not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                    ports: (!ports.is_empty()).then_some(ports),
                }
            },
        )
        .collect()
}

/// Registers the controller on the shared informers; the future it returns runs the
/// controller once they have started, until `shutdown` flips.
pub fn start(
    client: Client,
    informers: &mut SharedInformers,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + use<> {
    let queue = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(300));
    let services = {
        let q = queue.clone();
        informers
            .informer::<Service>()
            .add_handler(move |c| {
                let s = c.latest();
                q.add(key_of(&s.metadata));
            })
            .store()
    };
    let pods = {
        let (q, services) = (queue.clone(), services.clone());
        informers
            .informer::<Pod>()
            .add_handler(move |c| {
                let enqueue = |p: &Pod| {
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    for svc in services.by_index("namespace", &ns) {
                        if selects(&svc, p.metadata.labels.as_ref()) {
                            q.add(key_of(&svc.metadata));
                        }
                    }
                };
                match c {
                    Change::Added(p) | Change::Deleted(p) => enqueue(p),
                    Change::Updated { old, new } => {
                        enqueue(new);
                        if old.metadata.labels != new.metadata.labels {
                            enqueue(old);
                        }
                    }
                }
            })
            .store()
    };
    let endpoints = {
        let q = queue.clone();
        // An Endpoints changed or deleted by someone else is put back.
        informers
            .informer::<Endpoints>()
            .add_handler(move |c| {
                if let Change::Updated { new: e, .. } | Change::Deleted(e) = c {
                    q.add(key_of(&e.metadata));
                }
            })
            .store()
    };
    async move {
        let mut tasks = JoinSet::new();
        services.wait_until_ready().await;
        pods.wait_until_ready().await;
        endpoints.wait_until_ready().await;
        let ctl = Arc::new(Controller {
            client,
            services,
            pods,
            endpoints,
        });
        workers::spawn(&mut tasks, WORKERS, "endpoints", &queue, &ctl, |c, k| {
            Box::pin(c.sync(k))
        });
        workers::run_until(tasks, &queue, shutdown).await;
    }
}

impl Controller {
    async fn sync(&self, key: &str) -> workers::SyncResult {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let api = self.client.api::<Endpoints>(ns);
        let current = self.endpoints.get(key);
        let Some(svc) = self.services.get(key) else {
            // The Service is gone: so is its Endpoints (if this controller made it).
            if current.is_some() {
                match api.delete(name, &DeleteParams::default()).await {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
            }
            return Ok(None);
        };
        if svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_none_or(BTreeMap::is_empty)
        {
            return Ok(None);
        }
        let mine: Vec<Arc<Pod>> = self
            .pods
            .by_index("namespace", ns)
            .into_iter()
            .filter(|p| selects(&svc, p.metadata.labels.as_ref()))
            .collect();
        let refs: Vec<&Pod> = mine.iter().map(Arc::as_ref).collect();
        let subsets = subsets(&svc, &refs);
        let subsets = (!subsets.is_empty()).then_some(subsets);
        let labels = svc.metadata.labels.clone();
        let outcome = match current {
            Some(e) if e.subsets == subsets && e.metadata.labels == labels => return Ok(None),
            Some(e) => {
                let mut e = Endpoints::clone(&e);
                e.subsets = subsets;
                e.metadata.labels = labels;
                api.update(&e).await.map(|_| ())
            }
            None => {
                let e = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some(ns.into()),
                        labels,
                        ..Default::default()
                    },
                    subsets,
                };
                match api.create(&e).await {
                    // Made a moment ago and not yet in the cache.
                    Err(err) if err.is_already_exists() => {
                        let mut cur = api.get(name).await?;
                        cur.subsets = e.subsets;
                        cur.metadata.labels = e.metadata.labels;
                        api.update(&cur).await.map(|_| ())
                    }
                    other => other.map(|_| ()),
                }
            }
        };
        outcome.map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": ports},
        }))
        .expect("service")
    }

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
                "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .expect("pod")
    }

    #[test]
    fn ready_and_not_ready_pods_are_listed_apart() {
        let s = svc(serde_json::json!([{"name": "http", "port": 80, "targetPort": 8080}]));
        let (a, b, c) = (
            pod("a", "10.0.0.2", true, "http", 1),
            pod("b", "10.0.0.1", true, "http", 1),
            pod("c", "10.0.0.3", false, "http", 1),
        );
        let out = subsets(&s, &[&a, &b, &c]);
        assert_eq!(out.len(), 1);
        let ips = |v: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            v.iter().flatten().map(|a| a.ip.clone()).collect()
        };
        assert_eq!(ips(&out[0].addresses), ["10.0.0.1", "10.0.0.2"], "sorted");
        assert_eq!(ips(&out[0].not_ready_addresses), ["10.0.0.3"]);
        let port = &out[0].ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.port, port.name.as_deref(), port.protocol.as_deref()),
            (8080, Some("http"), Some("TCP"))
        );
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let s = svc(serde_json::json!([{"name": "http", "port": 80, "targetPort": "web"}]));
        let (a, b, c) = (
            pod("a", "10.0.0.1", true, "web", 8080),
            pod("b", "10.0.0.2", true, "web", 9090),
            pod("c", "10.0.0.3", true, "other", 1),
        );
        let out = subsets(&s, &[&a, &b, &c]);
        let mut by_port: Vec<(i32, String)> = out
            .iter()
            .flat_map(|s| {
                let port = s.ports.as_ref().map_or(0, |p| p[0].port);
                s.addresses
                    .iter()
                    .flatten()
                    .map(move |a| (port, a.ip.clone()))
            })
            .collect();
        by_port.sort();
        assert_eq!(
            by_port,
            [
                (8080, "10.0.0.1".to_string()),
                (9090, "10.0.0.2".to_string())
            ],
            "c declares no port named web"
        );
    }

    #[test]
    fn pods_without_an_ip_or_being_deleted_are_left_out() {
        let s = svc(serde_json::json!([{"port": 80}]));
        let mut gone = pod("a", "10.0.0.1", true, "x", 1);
        gone.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let no_ip = pod("b", "", false, "x", 1);
        assert!(subsets(&s, &[&gone, &no_ip]).is_empty());
    }
}
