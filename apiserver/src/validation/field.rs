//! Field paths and field errors, shaped like Kubernetes' `field.Path` and `field.Error`.

use std::fmt;

/// A path to a field, rendered as Kubernetes renders it: `spec.containers[0].ports[1].name`,
/// `metadata.labels[app]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at a top-level field.
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_string())
    }

    /// The path to a named child field.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    /// The path to an element of a list.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// The path to an entry of a map.
    pub fn key(&self, k: &str) -> Self {
        FieldPath(format!("{}[{k}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with a field; the names and messages are Kubernetes' (`field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required field is missing.
    Required,
    /// The value is not valid.
    Invalid,
    /// The value repeats one that must be unique.
    Duplicate,
    /// The value is not one of the supported ones.
    NotSupported,
    /// The field may not be set or changed.
    Forbidden,
    /// The value is too long.
    TooLong,
    /// A list has too many items.
    TooMany,
    /// The field is not known.
    NotFound,
}

impl FieldErrorKind {
    /// Kubernetes' phrase for the kind, as it appears in messages.
    pub fn phrase(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::NotFound => "Not found",
        }
    }

    /// The `reason` of a status cause (`metav1.CauseType`).
    pub fn cause_reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::NotFound => "FieldValueNotFound",
        }
    }
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where.
    pub path: FieldPath,
    /// What kind of problem.
    pub kind: FieldErrorKind,
    /// The offending value, rendered as Kubernetes renders it (strings quoted), if any.
    pub value: Option<String>,
    /// Why, in words.
    pub detail: String,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(path: FieldPath, detail: impl Into<String>) -> Self {
        FieldError {
            path,
            kind: FieldErrorKind::Required,
            value: None,
            detail: detail.into(),
        }
    }

    /// An invalid value; `value` is rendered with Debug (so strings come out quoted).
    pub fn invalid(path: FieldPath, value: impl fmt::Debug, detail: impl Into<String>) -> Self {
        FieldError {
            path,
            kind: FieldErrorKind::Invalid,
            value: Some(format!("{value:?}")),
            detail: detail.into(),
        }
    }

    /// A value that must be unique appears again.
    pub fn duplicate(path: FieldPath, value: impl fmt::Debug) -> Self {
        FieldError {
            path,
            kind: FieldErrorKind::Duplicate,
            value: Some(format!("{value:?}")),
            detail: String::new(),
        }
    }

    /// A value outside the supported set, listing the supported ones.
    pub fn not_supported(path: FieldPath, value: impl fmt::Debug, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            path,
            kind: FieldErrorKind::NotSupported,
            value: Some(format!("{value:?}")),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    /// A field that may not be set or changed.
    pub fn forbidden(path: FieldPath, detail: impl Into<String>) -> Self {
        FieldError {
            path,
            kind: FieldErrorKind::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }

    /// A value longer than allowed.
    pub fn too_long(path: FieldPath, max: usize) -> Self {
        FieldError {
            path,
            kind: FieldErrorKind::TooLong,
            value: None,
            detail: format!("must have at most {max} bytes"),
        }
    }

    /// A field that is not known (strict decoding).
    pub fn unknown(path: FieldPath) -> Self {
        FieldError {
            path,
            kind: FieldErrorKind::NotFound,
            value: None,
            detail: "unknown field".into(),
        }
    }
}

impl fmt::Display for FieldError {
    /// `spec.replicas: Invalid value: -1: must be greater than or equal to 0`, as Kubernetes
    /// prints a field error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.kind.phrase())?;
        if let Some(v) = &self.value {
            write!(f, ": {v}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every problem found with an object.
pub type ErrorList = Vec<FieldError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_errors_render_as_kubernetes_renders_them() {
        let p = FieldPath::new("spec")
            .child("containers")
            .index(0)
            .child("name");
        assert_eq!(p.as_str(), "spec.containers[0].name");
        assert_eq!(
            FieldError::required(p, "").to_string(),
            "spec.containers[0].name: Required value"
        );
        let labels = FieldPath::new("metadata").child("labels").key("app");
        let e = FieldError::invalid(labels, "-x", "must start with an alphanumeric character");
        assert_eq!(
            e.to_string(),
            "metadata.labels[app]: Invalid value: \"-x\": must start with an alphanumeric character"
        );
        let e = FieldError::not_supported(
            FieldPath::new("spec").child("restartPolicy"),
            "Sometimes",
            &["Always", "Never"],
        );
        assert_eq!(
            e.to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\""
        );
    }
}
