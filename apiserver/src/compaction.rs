//! Periodic compaction of the store's history, as kube-apiserver does it: at every tick,
//! compact up to the revision seen at the previous tick, so at least one interval of
//! history stays for watchers to resume from. Several API servers share one store: each
//! compaction is claimed by a conditional write on one key, so only one of them compacts
//! per interval.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::storage::keys::ROOT;
use crate::storage::{Commit, Cond, Op, Store, StoreError};

/// The key whose revision records the last compaction claim.
pub fn compact_key() -> String {
    format!("{ROOT}compact_rev_key")
}

/// Compacts every `interval` until `shutdown` flips.
pub async fn run(store: Store, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut previous: Option<(i64, Option<i64>)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match compact_once(&store, previous).await {
            Ok(seen) => previous = Some(seen),
            Err(e) => tracing::warn!(error = %e, "compaction failed"),
        }
    }
}

/// One tick: compacts to the revision of the previous tick if nobody else has claimed a
/// compaction since; returns this tick's revision and the claim key's state.
async fn compact_once(
    store: &Store,
    previous: Option<(i64, Option<i64>)>,
) -> Result<(i64, Option<i64>), StoreError> {
    let key = compact_key();
    let (kv, revision) = store.get(&key, 0).await?;
    let claim_rev = kv.as_ref().map(|kv| kv.mod_revision);
    let Some((target, seen_claim)) = previous else {
        return Ok((revision, claim_rev));
    };
    if seen_claim != claim_rev {
        // Another API server compacted during the interval: start counting again.
        return Ok((revision, claim_rev));
    }
    let cond = match claim_rev {
        None => Cond::Absent(key.clone()),
        Some(r) => Cond::ModRevision(key.clone(), r),
    };
    match store
        .commit(
            &[cond],
            vec![Op::Put(key.clone(), Bytes::from(target.to_string()))],
        )
        .await?
    {
        Commit::Done(claimed) => {
            store.compact(target).await?;
            tracing::info!(revision = target, "compacted store history");
            Ok((revision.max(claimed), Some(claimed)))
        }
        Commit::Failed(states) => Ok((
            revision,
            states
                .first()
                .and_then(|s| s.1.as_ref())
                .map(|kv| kv.mod_revision),
        )),
    }
}
