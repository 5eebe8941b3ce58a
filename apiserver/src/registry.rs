//! The kinds the server serves: one entry per kind, mapping api_version + plural resource
//! name to the kind, its short names, scope, subresources, selectable fields and the typed
//! hooks (strict decoding, defaulting, validation) that every write goes through.
//!
//! Adding a kind is one [`ResourceInfo::of`] line in [`Registry::new`] plus its
//! `Validate` and `ApplyDefaults` implementations.

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, NamespaceResourceScope};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::decode::decode_strict;
use crate::defaults::ApplyDefaults;
use crate::error::ApiError;
use crate::validation::{ErrorList, Validate};

/// Which write an object is admitted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A new object.
    Create,
    /// A replacement through the main resource.
    Update,
    /// A replacement through the status subresource.
    Status,
}

/// Why an object was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The object is invalid; one error per field.
    #[error("invalid object")]
    Invalid(ErrorList),
    /// The stored object could not be decoded (the store holds something this server did
    /// not write).
    #[error("stored object cannot be decoded: {0}")]
    Stored(String),
}

/// Fills in the metadata the server owns, given the previous object's metadata on update.
pub type MetaFill<'a> = &'a dyn Fn(&mut ObjectMeta, Option<&ObjectMeta>);

/// The typed hooks of one kind.
pub trait KindOps: Send + Sync {
    /// Strictly decodes `obj`, applies defaults (not for status writes), lets `fill` set
    /// the server-owned metadata, validates against `old` when replacing it, and returns
    /// the object as it will be stored.
    fn admit(
        &self,
        obj: &Value,
        old: Option<&Value>,
        mode: Admission,
        fill: MetaFill<'_>,
    ) -> Result<Value, AdmitError>;
}

/// [`KindOps`] for a k8s-openapi type.
struct Typed<K>(PhantomData<fn() -> K>);

impl<K> KindOps for Typed<K>
where
    K: Metadata<Ty = ObjectMeta> + Validate + ApplyDefaults + Serialize + DeserializeOwned,
{
    fn admit(
        &self,
        obj: &Value,
        old: Option<&Value>,
        mode: Admission,
        fill: MetaFill<'_>,
    ) -> Result<Value, AdmitError> {
        let mut new: K = decode_strict(obj).map_err(AdmitError::Invalid)?;
        if mode != Admission::Status {
            new.apply_defaults();
        }
        let old: Option<K> = old
            .map(|o| K::deserialize(o).map_err(|e| AdmitError::Stored(e.to_string())))
            .transpose()?;
        fill(new.metadata_mut(), old.as_ref().map(|o| o.metadata()));
        let errors = match (&old, mode) {
            (Some(old), Admission::Status) => new.validate_status_update(old),
            (Some(old), _) => new.validate_update(old),
            (None, _) => new.validate(),
        };
        if !errors.is_empty() {
            return Err(AdmitError::Invalid(errors));
        }
        serde_json::to_value(&new).map_err(|e| AdmitError::Stored(e.to_string()))
    }
}

/// Everything the server knows about one kind.
pub struct ResourceInfo {
    /// "apps" ("" for the core group).
    pub group: &'static str,
    /// "v1".
    pub version: &'static str,
    /// "apps/v1" or "v1".
    pub api_version: String,
    /// "Deployment".
    pub kind: &'static str,
    /// "deployments".
    pub plural: &'static str,
    /// "deployment".
    pub singular: String,
    /// kubectl's short names ("deploy").
    pub short_names: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a status subresource: Update ignores status, UpdateStatus changes only it.
    pub status: bool,
    /// Has a scale subresource (spec.replicas, status.replicas, spec.selector).
    pub scale: bool,
    /// metadata.generation is bumped when anything but metadata and status changes.
    pub tracks_generation: bool,
    /// Field selector fields beyond metadata.name and metadata.namespace.
    pub fields: &'static [&'static str],
    /// Decoding, defaulting and validation.
    pub ops: Box<dyn KindOps>,
}

impl ResourceInfo {
    /// The entry for a k8s-openapi type; names and scope come from the type itself.
    pub fn of<K>(short_names: &'static [&'static str]) -> Self
    where
        K: kube_core::Resource<DynamicType = ()>
            + k8s_openapi::Resource
            + Metadata<Ty = ObjectMeta>
            + Validate
            + ApplyDefaults
            + Serialize
            + DeserializeOwned
            + 'static,
    {
        ResourceInfo {
            group: <K as k8s_openapi::Resource>::GROUP,
            version: <K as k8s_openapi::Resource>::VERSION,
            api_version: <K as kube_core::Resource>::api_version(&()).into_owned(),
            kind: <K as k8s_openapi::Resource>::KIND,
            plural: <K as k8s_openapi::Resource>::URL_PATH_SEGMENT,
            singular: <K as k8s_openapi::Resource>::KIND.to_ascii_lowercase(),
            short_names,
            namespaced: TypeId::of::<<K as k8s_openapi::Resource>::Scope>()
                == TypeId::of::<NamespaceResourceScope>(),
            status: false,
            scale: false,
            tracks_generation: false,
            fields: &[],
            ops: Box::new(Typed::<K>(PhantomData)),
        }
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    fn with_scale(mut self) -> Self {
        self.scale = true;
        self
    }

    fn with_generation(mut self) -> Self {
        self.tracks_generation = true;
        self
    }

    fn with_fields(mut self, fields: &'static [&'static str]) -> Self {
        self.fields = fields;
        self
    }

    /// "PodList".
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Every field a field selector may name for this resource.
    pub fn selectable_fields(&self) -> Vec<&'static str> {
        let mut f = vec!["metadata.name", "metadata.namespace"];
        f.extend_from_slice(self.fields);
        f
    }

    /// The subresources served for this kind.
    pub fn subresources(&self) -> Vec<&'static str> {
        let mut s = Vec::new();
        if self.status {
            s.push("status");
        }
        if self.scale {
            s.push("scale");
        }
        if self.plural == "pods" {
            s.extend(["binding", "eviction"]);
        }
        s
    }
}

/// Every kind the server serves.
pub struct Registry {
    resources: Vec<Arc<ResourceInfo>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The kinds of this release.
    pub fn new() -> Self {
        use k8s_openapi::api::apps::v1 as apps;
        use k8s_openapi::api::autoscaling::v2 as autoscaling;
        use k8s_openapi::api::coordination::v1 as coordination;
        use k8s_openapi::api::core::v1 as core;
        use k8s_openapi::api::policy::v1 as policy;
        let resources = vec![
            ResourceInfo::of::<core::Namespace>(&["ns"])
                .with_status()
                .with_fields(&["status.phase"]),
            ResourceInfo::of::<core::Node>(&["no"])
                .with_status()
                .with_fields(&["spec.unschedulable"]),
            ResourceInfo::of::<core::Pod>(&["po"])
                .with_status()
                .with_generation()
                .with_fields(&[
                    "spec.nodeName",
                    "spec.restartPolicy",
                    "spec.schedulerName",
                    "spec.serviceAccountName",
                    "status.phase",
                    "status.podIP",
                    "status.nominatedNodeName",
                ]),
            ResourceInfo::of::<apps::ReplicaSet>(&["rs"])
                .with_status()
                .with_scale()
                .with_generation()
                .with_fields(&["status.replicas"]),
            ResourceInfo::of::<apps::Deployment>(&["deploy"])
                .with_status()
                .with_scale()
                .with_generation(),
            ResourceInfo::of::<core::Service>(&["svc"]).with_status(),
            ResourceInfo::of::<core::Endpoints>(&["ep"]),
            ResourceInfo::of::<core::ConfigMap>(&["cm"]),
            ResourceInfo::of::<core::Secret>(&[]).with_fields(&["type"]),
            ResourceInfo::of::<core::Event>(&["ev"]).with_fields(&[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ]),
            ResourceInfo::of::<coordination::Lease>(&[]),
            ResourceInfo::of::<autoscaling::HorizontalPodAutoscaler>(&["hpa"])
                .with_status()
                .with_generation(),
            ResourceInfo::of::<policy::PodDisruptionBudget>(&["pdb"])
                .with_status()
                .with_generation(),
        ];
        Registry {
            resources: resources.into_iter().map(Arc::new).collect(),
        }
    }

    /// Every kind.
    pub fn all(&self) -> &[Arc<ResourceInfo>] {
        &self.resources
    }

    /// The kind served as `api_version` + `resource` (an empty api_version matches any
    /// version, for clients that only know the plural).
    pub fn lookup(&self, api_version: &str, resource: &str) -> Result<Arc<ResourceInfo>, ApiError> {
        self.resources
            .iter()
            .find(|r| {
                r.plural == resource && (api_version.is_empty() || r.api_version == api_version)
            })
            .cloned()
            .ok_or_else(|| ApiError::not_found_resource(api_version, resource))
    }

    /// The kind a resource name, singular, kind or short name refers to, as kubectl
    /// resolves `po`, `pod`, `pods` and `Pod`.
    pub fn resolve(&self, name: &str) -> Option<Arc<ResourceInfo>> {
        let lower = name.to_ascii_lowercase();
        self.resources
            .iter()
            .find(|r| {
                r.plural == lower || r.singular == lower || r.short_names.contains(&lower.as_str())
            })
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_scope_come_from_the_types() {
        let reg = Registry::new();
        let d = reg
            .lookup("apps/v1", "deployments")
            .expect("deployments served");
        assert_eq!(d.kind, "Deployment");
        assert_eq!(d.group, "apps");
        assert!(d.namespaced);
        let n = reg.lookup("v1", "nodes").expect("nodes served");
        assert!(!n.namespaced);
        let l = reg
            .lookup("coordination.k8s.io/v1", "leases")
            .expect("leases served");
        assert_eq!(l.kind, "Lease");
        assert!(reg.lookup("v1", "deployments").is_err());
        assert_eq!(reg.resolve("deploy").map(|r| r.plural), Some("deployments"));
        assert_eq!(reg.resolve("Pod").map(|r| r.plural), Some("pods"));
    }
}
