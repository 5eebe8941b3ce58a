//! Get and List. An empty resourceVersion reads the store (linearizable); "0" or a
//! revision reads the watch cache once it is at least that current. A limited list reads
//! every page at the revision of the first one, so the pages form one consistent snapshot.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde_json::Value;

use crate::error::ApiError;
use crate::meta::parse_resource_version;
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::StoreError;
use crate::storage::keys::{key_after, namespace_prefix, resource_prefix};
use crate::watch_cache::{CachedObject, Filter};

use super::{Api, Located, ObjectRef};

/// List parameters.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Label selector text.
    pub label_selector: String,
    /// Field selector text.
    pub field_selector: String,
    /// Page size (0: everything).
    pub limit: i64,
    /// The previous page's token.
    pub continue_token: String,
    /// "", "0" or a revision.
    pub resource_version: String,
}

/// A page of a list.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// The kind of the list ("PodList").
    pub kind: String,
    /// Its apiVersion.
    pub api_version: String,
    /// Each object's JSON.
    pub items: Vec<Bytes>,
    /// The revision the list reflects.
    pub revision: i64,
    /// The next page's token ("" when this is the last page).
    pub continue_token: String,
    /// Objects after this page, when known (no selectors).
    pub remaining: Option<i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: u32,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: &[u8]) -> String {
    let token = ContinueToken {
        v: 1,
        rv,
        start: URL_SAFE_NO_PAD.encode(start),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(i64, Vec<u8>), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = URL_SAFE_NO_PAD.decode(&t.start).map_err(|_| bad())?;
    if t.v != 1 || t.rv <= 0 || !start.starts_with(prefix.as_bytes()) {
        return Err(bad());
    }
    Ok((t.rv, start))
}

/// Parses selectors into a filter for the resource.
pub(crate) fn build_filter(
    at: &Located,
    all_namespaces: bool,
    labels: &str,
    fields: &str,
) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(labels)
        .map_err(|e| ApiError::bad_request(format!("unable to parse label selector: {e}")))?;
    let fields = FieldSelector::parse(fields)
        .map_err(|e| ApiError::bad_request(format!("unable to parse field selector: {e}")))?;
    fields
        .check_supported(&at.info.selectable_fields())
        .map_err(|e| ApiError::bad_request(format!("{e}")))?;
    Ok(Filter {
        namespace: (at.info.namespaced && !all_namespaces).then(|| at.namespace.clone()),
        labels,
        fields,
    })
}

impl Api {
    /// Reads one object (or its status or scale).
    pub async fn get(&self, r: &ObjectRef, resource_version: &str) -> Result<Value, ApiError> {
        let at = self.locate(r, true)?;
        let obj = match parse_resource_version(resource_version)? {
            None => self.current(&at, &r.name).await?.0,
            Some(rv) => {
                let cache = self.cache(&at.info)?;
                cache.wait_for(rv).await?;
                let o = cache
                    .get(&at.key(&r.name))
                    .ok_or_else(|| ApiError::not_found(at.info.plural, at.info.group, &r.name))?;
                serde_json::from_slice(&o.json).map_err(|e| ApiError::internal(e.to_string()))?
            }
        };
        match r.subresource.as_str() {
            "" => Ok(obj),
            "status" if at.info.status => Ok(obj),
            "scale" if at.info.scale => super::scale::scale_of(&obj),
            other => Err(ApiError::not_found_resource(
                &at.info.api_version,
                &format!("{}/{other}", at.info.plural),
            )),
        }
    }

    /// Lists objects.
    pub async fn list(&self, r: &ObjectRef, opts: &ListOptions) -> Result<ListPage, ApiError> {
        let at = self.locate(r, false)?;
        let all = r.namespace.is_empty();
        let filter = build_filter(&at, all, &opts.label_selector, &opts.field_selector)?;
        if opts.limit < 0 {
            return Err(ApiError::bad_request("limit must not be negative"));
        }
        let mut page = if !opts.continue_token.is_empty() {
            if !opts.resource_version.is_empty() && opts.resource_version != "0" {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let prefix = list_prefix(&at, all);
            let (rv, start) = decode_continue(&opts.continue_token, &prefix)?;
            self.list_store(&at, all, &filter, opts.limit, rv, start)
                .await?
        } else {
            match parse_resource_version(&opts.resource_version)? {
                None => {
                    let prefix = list_prefix(&at, all);
                    let start = prefix.clone().into_bytes();
                    self.list_store(&at, all, &filter, opts.limit, 0, start)
                        .await?
                }
                Some(rv) => {
                    // Served whole from the cache, as Kubernetes serves resourceVersion=0.
                    let cache = self.cache(&at.info)?;
                    cache.wait_for(rv).await?;
                    let (objs, revision) = cache.list(&filter);
                    ListPage {
                        items: objs.iter().map(|o| o.json.clone()).collect(),
                        revision,
                        ..Default::default()
                    }
                }
            }
        };
        page.kind = at.info.list_kind();
        page.api_version = at.info.api_version.clone();
        Ok(page)
    }

    async fn list_store(
        &self,
        at: &Located,
        all: bool,
        filter: &Filter,
        limit: i64,
        mut revision: i64,
        mut start: Vec<u8>,
    ) -> Result<ListPage, ApiError> {
        let prefix = list_prefix(at, all);
        let unfiltered = filter.labels.is_empty() && filter.fields.is_empty();
        let fetch = if limit > 0 { limit.max(100) } else { 0 };
        let mut out = ListPage::default();
        loop {
            let page = self
                .store
                .range(&prefix, &start, fetch, revision)
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                    other => other.into(),
                })?;
            // A read at a past revision is answered with the store's current revision in
            // its header: the snapshot's revision is the one asked for.
            if revision == 0 {
                revision = page.revision;
            }
            for (i, kv) in page.kvs.iter().enumerate() {
                let key = String::from_utf8_lossy(&kv.key);
                let obj = CachedObject::from_stored(&at.info, &key, &kv.value, kv.mod_revision)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                if !filter.matches(&obj) {
                    continue;
                }
                out.items.push(obj.json);
                if limit > 0 && out.items.len() as i64 == limit {
                    let rest = page.count - (i as i64 + 1);
                    if rest > 0 {
                        out.continue_token = encode_continue(revision, &key_after(&kv.key));
                        out.remaining = unfiltered.then_some(rest);
                    }
                    out.revision = revision;
                    return Ok(out);
                }
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => start = key_after(&last.key),
                _ => break,
            }
        }
        out.revision = revision;
        Ok(out)
    }
}

fn list_prefix(at: &Located, all: bool) -> String {
    if at.info.namespaced && !all {
        namespace_prefix(at.info.plural, &at.namespace)
    } else {
        resource_prefix(at.info.plural)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_stay_inside_their_prefix() {
        let t = encode_continue(42, b"/registry/pods/default/web-2");
        let (rv, start) = decode_continue(&t, "/registry/pods/default/").expect("valid");
        assert_eq!(rv, 42);
        assert_eq!(start, b"/registry/pods/default/web-2");
        assert!(decode_continue(&t, "/registry/secrets/").is_err());
        assert!(decode_continue("garbage", "/registry/pods/").is_err());
    }
}
