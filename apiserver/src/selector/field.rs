//! Field selectors as `k8s.io/apimachinery/pkg/fields` has them (`spec.nodeName=n1,
//! status.phase!=Running`), and the lookup of a selectable field's value in an object.
//!
//! As in Kubernetes, a field an object does not have reads as the empty string, so
//! `spec.nodeName=` selects unscheduled pods. Values escape `\`, `,` and `=` with a backslash;
//! Flotilla also accepts `\!`, which Kubernetes refuses, because a `!` right after a field
//! name would otherwise read as the start of `!=`. Printing escapes only what Kubernetes
//! escapes, so the text is always one Kubernetes accepts too.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::SelectorError;

/// How a field requirement compares the field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One condition on one field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    field: String,
    op: FieldOperator,
    value: String,
}

impl FieldRequirement {
    /// A requirement on `field` (no checks: which fields exist depends on the resource).
    pub fn new(field: impl Into<String>, op: FieldOperator, value: impl Into<String>) -> Self {
        FieldRequirement {
            field: field.into(),
            op,
            value: value.into(),
        }
    }

    /// The field, as a dotted path (`spec.nodeName`).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The operator.
    pub fn op(&self) -> FieldOperator {
        self.op
    }

    /// The value, unescaped.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a field with this value (None: the object lacks it) satisfies the requirement.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let equal = value.unwrap_or_default() == self.value;
        match self.op {
            FieldOperator::Equals => equal,
            FieldOperator::NotEquals => !equal,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// A field selector: every requirement must hold. The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that selects everything.
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// Parses `field=value,field!=value,...` as Kubernetes' `fields.ParseSelector` does.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut terms = split_terms(text);
        // Kubernetes sorts the raw terms, which fixes the order the selector prints in.
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let cannot_understand = || SelectorError::FieldTerm {
                selector: text.to_string(),
                term: term.to_string(),
            };
            let (field, op, raw) = split_term(term).ok_or_else(cannot_understand)?;
            // Kubernetes keeps surrounding blanks in the field name and then fails to find the
            // field; trimming them is friendlier and changes no selector that worked there.
            let field = field.trim();
            if field.is_empty() {
                return Err(cannot_understand());
            }
            requirements.push(FieldRequirement::new(field, op, unescape_value(raw)?));
        }
        Ok(FieldSelector { requirements })
    }

    /// The selector requiring all of `requirements`, in the given order.
    pub fn from_requirements(requirements: impl IntoIterator<Item = FieldRequirement>) -> Self {
        FieldSelector {
            requirements: requirements.into_iter().collect(),
        }
    }

    /// The requirements.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether the selector selects everything (it has no requirements).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Refuses a selector naming a field outside `supported`, with Kubernetes' message.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), SelectorError> {
        match self
            .requirements
            .iter()
            .find(|r| !supported.contains(&r.field.as_str()))
        {
            Some(r) => Err(SelectorError::UnsupportedField {
                field: r.field.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The value `field` must equal, when the selector pins it with `=` (useful for
    /// indexing, e.g. a kubelet's `spec.nodeName=<node>`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }

    /// Whether an object is selected; `get` returns a field's value, None when it has none.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(get(&r.field).as_deref()))
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical text form, which [`FieldSelector::parse`] reads back unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldSelector::parse(s)
    }
}

/// Splits at commas not preceded by a backslash; the escapes stay in the terms.
fn split_terms(text: &str) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

/// Splits a term at its first operator; field names have no escapes, so the first `!=`,
/// `==` or `=` is the operator.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        if let Some(value) = rest.strip_prefix("!=") {
            return Some((&term[..i], FieldOperator::NotEquals, value));
        }
        if let Some(value) = rest.strip_prefix("==") {
            return Some((&term[..i], FieldOperator::Equals, value));
        }
        if let Some(value) = rest.strip_prefix('=') {
            return Some((&term[..i], FieldOperator::Equals, value));
        }
    }
    None
}

/// Kubernetes' `fields.UnescapeValue` (plus `\!`).
fn unescape_value(raw: &str) -> Result<String, SelectorError> {
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=' | '!') {
                return Err(SelectorError::EscapeSequence {
                    sequence: format!("\\{c}"),
                });
            }
            value.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter { character: c }),
            c => value.push(c),
        }
    }
    if escaped {
        return Err(SelectorError::EscapeSequence {
            sequence: "\\".into(),
        });
    }
    Ok(value)
}

/// Kubernetes' `fields.EscapeValue`.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The value of a selectable field of an object, as text: the JSON leaf at the dotted path
/// (strings as they are, numbers and booleans printed), None when the object lacks it or it
/// is not a leaf.
///
/// Kubernetes computes these from typed objects, where an unset boolean is `false`; so
/// `spec.unschedulable` (Nodes) and `spec.hostNetwork` (Pods) read `"false"` when absent,
/// and `status.podIP` falls back to the first of `status.podIPs`. An Event's `source` is
/// its `source.component`, as Kubernetes defines that field.
pub fn field_value(obj: &Value, field: &str) -> Option<String> {
    let path = match field {
        "source" => "source.component",
        other => other,
    };
    let leaf = path.split('.').try_fold(obj, |v, name| v.get(name));
    let text = match leaf {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    text.or_else(|| match field {
        "spec.unschedulable" | "spec.hostNetwork" => Some("false".to_string()),
        "status.podIP" => obj
            .pointer("/status/podIPs/0/ip")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> FieldSelector {
        match FieldSelector::parse(text) {
            Ok(s) => s,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match FieldSelector::parse(text) {
            Ok(s) => panic!("{text:?} should not parse, got {s}"),
            Err(e) => e.to_string(),
        }
    }

    fn getter(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        |f| {
            pairs
                .iter()
                .find(|(k, _)| *k == f)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn every_operator_parses_and_double_equals_prints_as_equals() {
        let s = parse("status.phase!=Running,spec.nodeName==n1,metadata.name=web");
        let ops: Vec<_> = s.requirements().iter().map(FieldRequirement::op).collect();
        assert_eq!(
            ops,
            [
                FieldOperator::Equals,
                FieldOperator::Equals,
                FieldOperator::NotEquals
            ]
        );
        assert_eq!(
            s.to_string(),
            "metadata.name=web,spec.nodeName=n1,status.phase!=Running"
        );
    }

    #[test]
    fn the_empty_string_selects_everything() {
        let s = parse("");
        assert!(s.is_empty());
        assert!(s.matches(|_| None));
        assert_eq!(s.to_string(), "");
    }

    #[test]
    fn a_missing_field_reads_as_the_empty_string() {
        let unbound = parse("spec.nodeName=");
        assert!(unbound.matches(getter(&[])));
        assert!(!unbound.matches(getter(&[("spec.nodeName", "n1")])));
        let bound = parse("spec.nodeName!=");
        assert!(bound.matches(getter(&[("spec.nodeName", "n1")])));
        assert!(!bound.matches(getter(&[])));
    }

    #[test]
    fn every_requirement_must_hold() {
        let s = parse("metadata.name=web,status.phase!=Failed");
        assert!(s.matches(getter(&[
            ("metadata.name", "web"),
            ("status.phase", "Running")
        ])));
        assert!(!s.matches(getter(&[
            ("metadata.name", "web"),
            ("status.phase", "Failed")
        ])));
        assert!(!s.matches(getter(&[("metadata.name", "db")])));
    }

    #[test]
    fn escaped_separators_belong_to_the_value() {
        let s = parse(r"metadata.name=a\,b\=c\\d\!e,status.phase=x");
        assert_eq!(s.requirements()[0].value(), r"a,b=c\d!e");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d!e,status.phase=x");
        assert_eq!(parse(&s.to_string()), s);
    }

    #[test]
    fn the_first_operator_splits_the_term() {
        let s = parse("a==b");
        assert_eq!(s.requirements()[0].value(), "b");
        let s = parse("a!=b!c");
        assert_eq!(s.requirements()[0].op(), FieldOperator::NotEquals);
        assert_eq!(s.requirements()[0].value(), "b!c");
    }

    #[test]
    fn bad_terms_and_escapes_are_refused_with_kubernetes_messages() {
        assert_eq!(
            parse_error("spec.nodeName"),
            "invalid selector: 'spec.nodeName'; can't understand 'spec.nodeName'"
        );
        assert_eq!(
            parse_error("a=b,=c"),
            "invalid selector: 'a=b,=c'; can't understand '=c'"
        );
        assert_eq!(
            parse_error(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            parse_error(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            parse_error("a=b=c"),
            "invalid field selector: unescaped character in value: '='"
        );
    }

    #[test]
    fn unsupported_fields_are_named() {
        let s = parse("metadata.name=a,spec.foo=b");
        assert_eq!(
            s.check_supported(&["metadata.name", "metadata.namespace"]),
            Err(SelectorError::UnsupportedField {
                field: "spec.foo".into()
            })
        );
        assert_eq!(
            s.check_supported(&["metadata.name"])
                .map_err(|e| e.to_string()),
            Err("field label not supported: spec.foo".to_string())
        );
        assert_eq!(s.check_supported(&["metadata.name", "spec.foo"]), Ok(()));
    }

    #[test]
    fn blanks_around_field_names_are_ignored() {
        let s = parse("metadata.name=a, spec.nodeName=b");
        assert_eq!(s.requirements()[0].field(), "spec.nodeName");
    }

    #[test]
    fn an_exact_match_can_be_read_back() {
        let s = parse("spec.nodeName=n1,status.phase!=Failed");
        assert_eq!(s.requires_exact_match("spec.nodeName"), Some("n1"));
        assert_eq!(s.requires_exact_match("status.phase"), None);
    }

    #[test]
    fn field_values_are_read_from_json_leaves() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "schedulerName": "default-scheduler", "priority": 7},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]},
        });
        assert_eq!(field_value(&pod, "metadata.name").as_deref(), Some("web"));
        assert_eq!(field_value(&pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(field_value(&pod, "spec.priority").as_deref(), Some("7"));
        assert_eq!(
            field_value(&pod, "status.podIP").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            field_value(&pod, "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert_eq!(field_value(&pod, "spec"), None);
        assert_eq!(field_value(&pod, "spec.missing"), None);
    }

    #[test]
    fn node_unschedulable_reads_as_a_boolean_even_when_unset() {
        let cordoned = json!({"spec": {"unschedulable": true}});
        assert_eq!(
            field_value(&cordoned, "spec.unschedulable").as_deref(),
            Some("true")
        );
        assert_eq!(
            field_value(&json!({}), "spec.unschedulable").as_deref(),
            Some("false")
        );
    }

    #[test]
    fn event_and_secret_fields_are_read() {
        let event = json!({
            "type": "Warning",
            "reason": "FailedScheduling",
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"},
            "source": {"component": "scheduler"},
        });
        let selector = parse(
            "involvedObject.kind=Pod,involvedObject.uid=u1,reason=FailedScheduling,type=Warning,source=scheduler",
        );
        assert!(selector.matches(|f| field_value(&event, f)));
        let secret = json!({"type": "kubernetes.io/tls"});
        assert_eq!(
            field_value(&secret, "type").as_deref(),
            Some("kubernetes.io/tls")
        );
    }
}
