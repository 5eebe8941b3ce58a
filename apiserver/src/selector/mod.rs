//! Label and field selectors, parsed, printed and matched as Kubernetes does
//! (`k8s.io/apimachinery/pkg/labels` and `.../pkg/fields`).
//!
//! Both selectors print in a canonical form that parses back to the same selector, and an
//! empty selector (the empty string) selects everything. The error messages reuse
//! Kubernetes' wording so that a client sees what kube-apiserver would have told it.

pub mod field;
pub mod label;

pub use field::{FieldOperator, FieldRequirement, FieldSelector, field_value};
pub use label::{LabelSelector, Operator, Requirement};

/// Why a selector could not be parsed, built or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A token of a label selector is not one the grammar allows at that point.
    #[error("found '{found}', expected: {expected}")]
    Syntax {
        /// Byte offset of the offending token in the selector text.
        position: usize,
        /// The offending token ('' at the end of the text).
        found: String,
        /// What the grammar allows there.
        expected: &'static str,
    },
    /// A requirement of a label selector could not be parsed; wraps the precise cause.
    #[error("unable to parse requirement: {0}")]
    Requirement(Box<SelectorError>),
    /// A label key is not a qualified name.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Every rule it breaks, joined by "; ".
        reason: String,
    },
    /// A value of a label requirement is not a valid label value.
    #[error("invalid label value: {value:?}: at key: {key:?}: {reason}")]
    InvalidValue {
        /// The requirement's key.
        key: String,
        /// The value.
        value: String,
        /// Every rule it breaks, joined by "; ".
        reason: String,
    },
    /// A label requirement has the wrong number or kind of values for its operator.
    #[error("invalid requirement on key {key:?}: {reason}")]
    InvalidValues {
        /// The requirement's key.
        key: String,
        /// Its operator.
        operator: Operator,
        /// Kubernetes' explanation.
        reason: &'static str,
    },
    /// A `matchExpressions` operator other than In, NotIn, Exists and DoesNotExist.
    #[error("{operator:?} is not a valid label selector operator")]
    UnknownOperator {
        /// The operator as given.
        operator: String,
    },
    /// A term of a field selector has no `=`, `==` or `!=`, or no field name.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm {
        /// The whole selector.
        selector: String,
        /// The term.
        term: String,
    },
    /// A field selector value has a backslash before a character that needs no escaping,
    /// or ends in a lone backslash.
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    EscapeSequence {
        /// The backslash and what follows it.
        sequence: String,
    },
    /// A field selector value has a `,` or `=` that is not escaped.
    #[error("invalid field selector: unescaped character in value: {character:?}")]
    UnescapedCharacter {
        /// The character.
        character: char,
    },
    /// A field selector names a field the resource cannot be selected by.
    #[error("field label not supported: {field}")]
    UnsupportedField {
        /// The field.
        field: String,
    },
}
