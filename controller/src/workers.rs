//! The worker loop every controller shares: take a key from the work queue, sync it,
//! then forget it (and look again later if the sync asks), retry it with back-off on
//! failure. Workers and informers live in one [`JoinSet`] per controller, so dropping a
//! controller (a manager losing its Lease, or killed mid-work) stops everything it
//! started instead of leaving workers acting on their own.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::{ClientError, WorkQueue};
use tokio::task::JoinSet;

/// What a sync returns: when to look at the key again, if ever.
pub type SyncResult = Result<Option<Duration>, ClientError>;

/// A sync of one key, borrowing the controller.
pub type SyncFuture<'a> = Pin<Box<dyn Future<Output = SyncResult> + Send + 'a>>;

/// Spawns `n` workers into `tasks` that sync `queue`'s keys with `sync` until the queue
/// is shut down.
pub fn spawn<T, C>(
    tasks: &mut JoinSet<()>,
    n: usize,
    controller: &'static str,
    queue: &Arc<WorkQueue<T>>,
    ctl: &Arc<C>,
    sync: for<'a> fn(&'a C, &'a T) -> SyncFuture<'a>,
) where
    T: Clone + Eq + Hash + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    for _ in 0..n {
        let (queue, ctl) = (queue.clone(), ctl.clone());
        tasks.spawn(async move {
            while let Some(key) = queue.get().await {
                crate::metrics::queue_depth(controller, queue.len());
                let started = std::time::Instant::now();
                let synced = sync(&ctl, &key).await;
                let result = match &synced {
                    Ok(_) => "success",
                    Err(e) if e.is_conflict() => "conflict",
                    Err(_) => "error",
                };
                crate::metrics::sync(controller, result, started.elapsed());
                match synced {
                    Ok(after) => {
                        queue.forget(&key);
                        if let Some(after) = after {
                            queue.add_after(key.clone(), after);
                        }
                    }
                    Err(e) if e.is_conflict() => {
                        // The cache was behind a write; the watch event brings it, and a
                        // short retry covers the case where it already did.
                        tracing::debug!(controller, key = ?key, error = %e, "stale; retrying");
                        queue.add_rate_limited(key.clone());
                    }
                    Err(e) => {
                        tracing::warn!(controller, key = ?key, error = %e, "sync failed; retrying");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
}

/// Waits for `shutdown`, then stops the queue and waits for every task.
pub async fn run_until<T>(
    mut tasks: JoinSet<()>,
    queue: &WorkQueue<T>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    T: Clone + Eq + Hash + Send + 'static,
{
    let _ = shutdown.wait_for(|s| *s).await;
    queue.shut_down();
    while tasks.join_next().await.is_some() {}
}
