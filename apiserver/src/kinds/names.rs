//! Name, label, annotation and quantity syntax, in Kubernetes' words, and the checks every
//! object's metadata goes through.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::validation::{ErrorList, FieldError, FieldPath};

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Total size of an object's annotations (Kubernetes' limit).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// An RFC 1123 label: the reasons it is not one.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let ok = !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum);
    if !ok {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    errs
}

/// An RFC 1123 subdomain: the reasons it is not one.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| is_lower_alnum(c) || c == '-')
                && part.starts_with(is_lower_alnum)
                && part.ends_with(is_lower_alnum)
        });
    if !ok {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// A DNS-1035 label (Service names): the reasons it is not one.
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let ok = !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(is_lower_alnum);
    if !ok {
        errs.push(DNS1035_LABEL_MSG.to_string());
    }
    errs
}

fn name_part_ok(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// A qualified name (`example.com/name` or `name`), as label and annotation keys and
/// finalizers are: the reasons it is not one.
pub fn qualified_name(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(
                dns1123_subdomain(p)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    } else if !name_part_ok(name) {
        errs.push(QUALIFIED_NAME_MSG.to_string());
    }
    errs
}

/// A label value: the reasons it is not one.
pub fn label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !s.is_empty() && !name_part_ok(&s[..s.len().min(63)]) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// Labels: keys qualified names, values label values.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &FieldPath) -> ErrorList {
    let mut errs = Vec::new();
    for (k, v) in labels {
        for e in qualified_name(k) {
            errs.push(FieldError::invalid(path.clone(), k, e));
        }
        for e in label_value(v) {
            errs.push(FieldError::invalid(path.key(k), v, e));
        }
    }
    errs
}

/// Annotations: keys qualified names, at most 256 KiB in all.
pub fn validate_annotations(annotations: &BTreeMap<String, String>, path: &FieldPath) -> ErrorList {
    let mut errs = Vec::new();
    let mut total = 0;
    for (k, v) in annotations {
        total += k.len() + v.len();
        for e in qualified_name(&k.to_ascii_lowercase()) {
            errs.push(FieldError::invalid(path.clone(), k, e));
        }
    }
    if total > MAX_ANNOTATIONS_BYTES {
        errs.push(FieldError::too_long(path.clone(), MAX_ANNOTATIONS_BYTES));
    }
    errs
}

/// How an object's name is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// RFC 1123 label (Namespaces).
    Label,
    /// DNS-1035 label (Services).
    Dns1035,
    /// Any name usable in a path (Events).
    PathSegment,
}

fn name_errors(name: &str, rule: NameRule) -> Vec<String> {
    match rule {
        NameRule::Subdomain => dns1123_subdomain(name),
        NameRule::Label => dns1123_label(name),
        NameRule::Dns1035 => dns1035_label(name),
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                vec![format!("may not be '{name}'")]
            } else if name.contains('/') || name.contains('%') {
                vec!["may not contain '/' or '%'".into()]
            } else {
                Vec::new()
            }
        }
    }
}

/// The metadata of a new object.
pub fn validate_object_meta(meta: &ObjectMeta, namespaced: bool, rule: NameRule) -> ErrorList {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required(
            path.child("name"),
            "name or generateName is required",
        )),
        Some(name) => {
            for e in name_errors(name, rule) {
                errs.push(FieldError::invalid(path.child("name"), name, e));
            }
        }
    }
    match (namespaced, meta.namespace.as_deref()) {
        (true, None | Some("")) => errs.push(FieldError::required(path.child("namespace"), "")),
        (true, Some(ns)) => {
            for e in dns1123_label(ns) {
                errs.push(FieldError::invalid(path.child("namespace"), ns, e));
            }
        }
        (false, Some(ns)) if !ns.is_empty() => errs.push(FieldError::forbidden(
            path.child("namespace"),
            "not allowed on this type",
        )),
        _ => {}
    }
    if let Some(labels) = &meta.labels {
        errs.extend(validate_labels(labels, &path.child("labels")));
    }
    if let Some(a) = &meta.annotations {
        errs.extend(validate_annotations(a, &path.child("annotations")));
    }
    if let Some(refs) = &meta.owner_references {
        let p = path.child("ownerReferences");
        let mut controllers = 0;
        for (i, r) in refs.iter().enumerate() {
            for (field, value) in [
                ("apiVersion", &r.api_version),
                ("kind", &r.kind),
                ("name", &r.name),
                ("uid", &r.uid),
            ] {
                if value.is_empty() {
                    errs.push(FieldError::invalid(
                        p.index(i).child(field),
                        value,
                        format!("{field} must not be empty"),
                    ));
                }
            }
            if r.controller == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            errs.push(FieldError::invalid(
                p,
                controllers,
                "Only one reference can have Controller set to true",
            ));
        }
    }
    if let Some(f) = &meta.finalizers {
        let p = path.child("finalizers");
        for (i, fin) in f.iter().enumerate() {
            for e in qualified_name(fin) {
                errs.push(FieldError::invalid(p.index(i), fin, e));
            }
        }
    }
    errs
}

/// The metadata of an update: what must not change.
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta) -> ErrorList {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    let immutable = "field is immutable";
    if new.name != old.name {
        errs.push(FieldError::invalid(
            path.child("name"),
            new.name.as_deref().unwrap_or_default(),
            immutable,
        ));
    }
    if new.namespace != old.namespace {
        errs.push(FieldError::invalid(
            path.child("namespace"),
            new.namespace.as_deref().unwrap_or_default(),
            immutable,
        ));
    }
    if new.uid != old.uid {
        errs.push(FieldError::invalid(
            path.child("uid"),
            new.uid.as_deref().unwrap_or_default(),
            immutable,
        ));
    }
    if new.creation_timestamp != old.creation_timestamp {
        errs.push(FieldError::invalid(
            path.child("creationTimestamp"),
            new.creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            immutable,
        ));
    }
    if old.deletion_timestamp.is_some() {
        let before: Vec<&String> = old.finalizers.iter().flatten().collect();
        if new
            .finalizers
            .iter()
            .flatten()
            .any(|f| !before.contains(&f))
        {
            errs.push(FieldError::forbidden(
                path.child("finalizers"),
                "no new finalizers can be added if the object is being deleted",
            ));
        }
    }
    errs
}

/// A Kubernetes quantity (`100m`, `1.5`, `128Mi`, `1e3`): Ok when it parses.
pub fn check_quantity(s: &str) -> Result<(), &'static str> {
    const MSG: &str = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
    let s = s.trim();
    let digits_end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let unsigned = number.trim_start_matches(['+', '-']);
    if unsigned.is_empty() || unsigned == "." || unsigned.matches('.').count() > 1 {
        return Err(MSG);
    }
    let ok_suffix = matches!(
        suffix,
        "" | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
            | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
    ) || (suffix.starts_with(['e', 'E'])
        && suffix.len() > 1
        && suffix[1..]
            .trim_start_matches(['+', '-'])
            .chars()
            .all(|c| c.is_ascii_digit())
        && !suffix[1..].trim_start_matches(['+', '-']).is_empty());
    if ok_suffix { Ok(()) } else { Err(MSG) }
}

/// Is the quantity negative?
pub fn quantity_is_negative(s: &str) -> bool {
    s.trim().starts_with('-')
        && s.trim()
            .trim_start_matches('-')
            .chars()
            .any(|c| c.is_ascii_digit() && c != '0')
}

/// A quantity's value in milli-units, when it can be computed exactly enough to compare
/// requests with limits.
pub fn quantity_milli(s: &str) -> Option<f64> {
    check_quantity(s).ok()?;
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e => 10f64.powi(e[1..].parse().ok()?),
    };
    Some(n * mult * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123_and_dns_1035() {
        assert!(dns1123_subdomain("web.example-1").is_empty());
        assert!(!dns1123_subdomain("Web").is_empty());
        assert!(!dns1123_subdomain("-web").is_empty());
        assert!(dns1123_label("kube-system").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert!(!dns1035_label("1web").is_empty());
        assert!(dns1035_label("web-1").is_empty());
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes() {
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(qualified_name("app").is_empty());
        assert!(!qualified_name("-app").is_empty());
        assert!(!qualified_name("/app").is_empty());
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3").is_empty());
        assert!(!label_value("a b").is_empty());
    }

    #[test]
    fn quantities_parse_as_kubernetes_parses_them() {
        for ok in ["100m", "1", "0.5", "128Mi", "1G", "1e3", "1Ki", "+2", ".5"] {
            assert!(check_quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "abc", "1.2.3", "10 Mi", "1Q", "m"] {
            assert!(check_quantity(bad).is_err(), "{bad}");
        }
        assert_eq!(quantity_milli("250m"), Some(250.0));
        assert_eq!(quantity_milli("1Ki"), Some(1_024_000.0));
        assert!(quantity_is_negative("-1"));
        assert!(!quantity_is_negative("-0"));
    }

    #[test]
    fn metadata_needs_a_valid_name_and_namespace() {
        let meta = ObjectMeta {
            name: Some("Bad_Name".into()),
            namespace: Some("default".into()),
            ..Default::default()
        };
        let errs = validate_object_meta(&meta, true, NameRule::Subdomain);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().starts_with(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ));
        let cluster = ObjectMeta {
            name: Some("n1".into()),
            namespace: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            validate_object_meta(&cluster, false, NameRule::Subdomain)[0].to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
    }
}
