//! The member's replicated state behind one lock: the MVCC store, the index of the last
//! applied entry, and the watchers. Keeping watchers under the same lock as the store is
//! what makes watch delivery exact: a watcher is registered, or caught up, at a revision no
//! applied change can slip past.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::mvcc::MvccStore;
use crate::mvcc::backend::AppliedIndex;
use crate::watch::WatcherSet;

/// Everything guarded by the state lock.
#[derive(Default)]
pub struct SmInner {
    /// The key-value state.
    pub store: MvccStore,
    /// The last entry applied to `store`.
    pub applied: AppliedIndex,
    /// Every active watcher.
    pub watchers: WatcherSet,
}

/// The shared state machine.
#[derive(Default)]
pub struct StateMachine {
    inner: RwLock<SmInner>,
}

impl StateMachine {
    /// Wraps loaded state.
    pub fn new(store: MvccStore, applied: AppliedIndex) -> Self {
        StateMachine {
            inner: RwLock::new(SmInner {
                store,
                applied,
                watchers: WatcherSet::default(),
            }),
        }
    }

    /// Shared access for reads. Lock poisoning means a panic mid-apply; the state may be
    /// half-updated, which the applier treats as fatal, so readers just carry on.
    pub fn read(&self) -> RwLockReadGuard<'_, SmInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive access for the applier and watcher registration.
    pub fn write(&self) -> RwLockWriteGuard<'_, SmInner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}
