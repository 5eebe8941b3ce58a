//! One informer per kind for all the controllers of a process, as Kubernetes'
//! SharedInformerFactory: each controller adds its indexes and handlers, then the informers
//! start once. Without it every controller watched and decoded every Pod on its own, and
//! kept its own copy of each in memory.

use std::any::{Any, TypeId};
use std::collections::HashMap;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{Client, ListParams};
use crate::informer::{Informer, Object};

/// An informer whose kind is known only to whoever registered it.
trait Erased: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    fn run(self: Box<Self>, shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()>;
}

impl<K: Object> Erased for Informer<K> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn run(self: Box<Self>, shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin((*self).run(shutdown))
    }
}

/// Cluster-wide informers, one per kind, created on first use.
pub struct SharedInformers {
    client: Client,
    informers: HashMap<TypeId, Box<dyn Erased>>,
}

impl SharedInformers {
    /// No informers yet.
    pub fn new(client: Client) -> Self {
        SharedInformers {
            client,
            informers: HashMap::new(),
        }
    }

    /// The informer of `K` across all namespaces, to add indexes and handlers to and take
    /// stores from before [`SharedInformers::spawn`].
    pub fn informer<K: Object>(&mut self) -> &mut Informer<K> {
        let client = &self.client;
        self.informers
            .entry(TypeId::of::<K>())
            .or_insert_with(|| Box::new(Informer::<K>::new(client.api(""), ListParams::default())))
            .as_any()
            .downcast_mut()
            .expect("the informers are keyed by their kind's type")
    }

    /// Starts every informer on `tasks`, until `shutdown` flips.
    pub fn spawn(self, tasks: &mut JoinSet<()>, shutdown: &watch::Receiver<bool>) {
        for informer in self.informers.into_values() {
            tasks.spawn(informer.run(shutdown.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::informer::by_owner;
    use crate::kubeconfig::Resolved;
    use k8s_openapi::api::core::v1::{Node, Pod};

    #[tokio::test]
    async fn each_kind_is_informed_once_whoever_asks() {
        let client = Client::new(&Resolved {
            server: "http://127.0.0.1:1".into(),
            source: "test".into(),
            ..Default::default()
        })
        .expect("a lazily connected client");
        let mut shared = SharedInformers::new(client);
        shared
            .informer::<Pod>()
            .add_index("owner", by_owner)
            .add_handler(|_| {});
        shared
            .informer::<Pod>()
            .add_index("owner", by_owner)
            .add_handler(|_| {});
        shared.informer::<Node>();
        assert_eq!(shared.informers.len(), 2);
        let pods = shared.informer::<Pod>();
        assert_eq!(pods.handler_count(), 2);
        assert_eq!(pods.index_names(), ["namespace", "owner"]);
    }
}
