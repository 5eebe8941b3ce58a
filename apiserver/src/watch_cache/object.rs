//! An object as the watch cache holds it: the JSON a client receives (resourceVersion
//! filled in), with the labels and selectable fields pulled out once so that filtering for
//! thousands of watchers never parses JSON.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

use crate::registry::ResourceInfo;
use crate::selector::field::field_value;

/// A decoded stored object, ready to send.
#[derive(Debug, PartialEq, Eq)]
pub struct CachedObject {
    /// The storage key.
    pub key: String,
    /// metadata.namespace ("" for cluster-scoped kinds).
    pub namespace: String,
    /// metadata.name.
    pub name: String,
    /// The revision this state was written (or, for a deleted object, deleted) at.
    pub revision: i64,
    /// The object as JSON, metadata.resourceVersion = `revision`.
    pub json: Bytes,
    /// metadata.labels.
    pub labels: BTreeMap<String, String>,
    /// The values of the resource's selectable fields (absent fields are left out).
    pub fields: Vec<(&'static str, String)>,
}

/// A stored value that is not a JSON object.
#[derive(Debug, thiserror::Error)]
#[error("stored value under {key} is not a JSON object: {reason}")]
pub struct UndecodableValue {
    /// The key.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Sets metadata.resourceVersion, as every object leaving the server carries it.
pub fn set_resource_version(obj: &mut Value, revision: i64) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

/// Decodes a stored value and fills in its resourceVersion.
pub fn decode_stored(key: &str, value: &[u8], revision: i64) -> Result<Value, UndecodableValue> {
    let mut obj: Value = serde_json::from_slice(value).map_err(|e| UndecodableValue {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    if !obj.is_object() {
        return Err(UndecodableValue {
            key: key.to_string(),
            reason: "not an object".into(),
        });
    }
    set_resource_version(&mut obj, revision);
    Ok(obj)
}

impl CachedObject {
    /// The cache entry for an object (its resourceVersion already set).
    pub fn new(info: &ResourceInfo, key: String, revision: i64, obj: &Value) -> Self {
        let meta = &obj["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let labels = meta["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let fields = info
            .fields
            .iter()
            .filter_map(|f| field_value(obj, f).map(|v| (*f, v)))
            .collect();
        CachedObject {
            key,
            namespace: text(&meta["namespace"]),
            name: text(&meta["name"]),
            revision,
            json: serde_json::to_vec(obj).unwrap_or_default().into(),
            labels,
            fields,
        }
    }

    /// Decodes a stored value into a cache entry.
    pub fn from_stored(
        info: &ResourceInfo,
        key: &str,
        value: &[u8],
        revision: i64,
    ) -> Result<Self, UndecodableValue> {
        let obj = decode_stored(key, value, revision)?;
        Ok(Self::new(info, key.to_string(), revision, &obj))
    }

    /// The same object as last seen, stamped with the revision it was deleted at.
    pub fn deleted_at(&self, info: &ResourceInfo, revision: i64) -> Self {
        match serde_json::from_slice::<Value>(&self.json) {
            Ok(mut obj) => {
                set_resource_version(&mut obj, revision);
                Self::new(info, self.key.clone(), revision, &obj)
            }
            Err(_) => CachedObject {
                key: self.key.clone(),
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                revision,
                json: self.json.clone(),
                labels: self.labels.clone(),
                fields: self.fields.clone(),
            },
        }
    }

    /// The value of a selectable field; metadata.name and metadata.namespace are always
    /// known.
    pub fn field(&self, name: &str) -> Option<String> {
        match name {
            "metadata.name" => Some(self.name.clone()),
            "metadata.namespace" => Some(self.namespace.clone()),
            _ => self
                .fields
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, v)| v.clone()),
        }
    }
}
