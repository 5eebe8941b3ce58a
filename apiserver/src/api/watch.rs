//! Watch: served from the resource's watch cache. An empty resourceVersion first sends the
//! current state as of a linearizable read of the store's revision; "0" the cache's state;
//! a revision, every change after it (or Expired when that is older than the history kept).

use crate::error::ApiError;
use crate::meta::parse_resource_version;
use crate::watch_cache::{CacheWatch, WatchStart};

use super::read::build_filter;
use super::{Api, ObjectRef};

/// Watch parameters.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Label selector text.
    pub label_selector: String,
    /// Field selector text.
    pub field_selector: String,
    /// "", "0" or a revision.
    pub resource_version: String,
    /// Send periodic BOOKMARK events.
    pub allow_bookmarks: bool,
}

impl Api {
    /// Starts a watch.
    pub async fn watch(&self, r: &ObjectRef, opts: &WatchOptions) -> Result<CacheWatch, ApiError> {
        let at = self.locate(r, false)?;
        let mut fields = opts.field_selector.clone();
        if !r.name.is_empty() {
            // Watching one object is watching its name.
            if !fields.is_empty() {
                fields.push(',');
            }
            fields.push_str(&format!("metadata.name={}", r.name));
        }
        let filter = build_filter(&at, r.namespace.is_empty(), &opts.label_selector, &fields)?;
        let start = match opts.resource_version.as_str() {
            "" => WatchStart::Initial {
                min_revision: self.store().current_revision().await?,
            },
            "0" => WatchStart::Initial { min_revision: 0 },
            rv => WatchStart::After(parse_resource_version(rv)?.unwrap_or(0)),
        };
        self.cache(&at.info)?
            .watch(filter, start, opts.allow_bookmarks)
            .await
    }
}
