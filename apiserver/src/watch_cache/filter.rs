//! Which objects a list or watch wants: a namespace, a label selector, a field selector.

use crate::selector::{FieldSelector, LabelSelector};

use super::object::CachedObject;

/// A list's or watch's filter.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only this namespace (None: all).
    pub namespace: Option<String>,
    /// Labels.
    pub labels: LabelSelector,
    /// Fields.
    pub fields: FieldSelector,
}

impl Filter {
    /// Does the object pass?
    pub fn matches(&self, obj: &CachedObject) -> bool {
        if let Some(ns) = &self.namespace
            && *ns != obj.namespace
        {
            return false;
        }
        self.labels.matches(&obj.labels) && self.fields.matches(|f| obj.field(f))
    }
}
