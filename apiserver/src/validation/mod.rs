//! Validation as Kubernetes does it: every error names the field path and the reason, in
//! Kubernetes' own words, so a message reads the same here as from kube-apiserver.

pub mod field;

pub use field::{ErrorList, FieldError, FieldErrorKind, FieldPath};

use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::kinds::names::validate_object_meta_update;

/// Validation of one kind of object.
///
/// The API server calls these after defaulting and after it has filled in the metadata it
/// owns (name from generateName, namespace from the request, uid, timestamps), so an
/// implementation sees the object exactly as it would be stored.
pub trait Validate: Metadata<Ty = ObjectMeta> {
    /// Every problem with a new object (metadata included).
    fn validate(&self) -> ErrorList;

    /// The kind's own fields that may not change (metadata's are checked for every kind).
    fn validate_immutable(&self, _old: &Self) -> ErrorList {
        Vec::new()
    }

    /// Every problem with replacing `old` by `self` through the main resource: the checks
    /// of [`Validate::validate`] plus the fields that may not change.
    fn validate_update(&self, old: &Self) -> ErrorList {
        let mut errs = self.validate();
        errs.extend(validate_object_meta_update(self.metadata(), old.metadata()));
        errs.extend(self.validate_immutable(old));
        errs
    }

    /// Every problem with replacing `old` by `self` through the status subresource.
    fn validate_status_update(&self, old: &Self) -> ErrorList {
        self.validate_update(old)
    }
}
