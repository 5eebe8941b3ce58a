//! Pods and pod templates: validation of the spec (containers, ports, env, resources,
//! volumes, probes, tolerations, scheduling fields), the pod update rules, and defaults.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{
    NameRule, check_quantity, dns1123_label, dns1123_subdomain, qualified_name,
    quantity_is_negative, quantity_milli, validate_labels, validate_object_meta,
    validate_object_meta_update,
};
use crate::defaults::ApplyDefaults;
use crate::validation::{ErrorList, FieldError, FieldPath, Validate};

const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
const DNS_POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

/// IANA service names, as container port names must be.
fn iana_svc_name(s: &str) -> Option<&'static str> {
    if s.len() > 15 {
        return Some("must be no more than 15 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if s.contains("--") {
        return Some("must not contain consecutive hyphens");
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must not begin or end with a hyphen");
    }
    None
}

fn port_range(errs: &mut ErrorList, path: FieldPath, port: i32, allow_zero: bool) {
    if !((1..=65535).contains(&port) || (allow_zero && port == 0)) {
        errs.push(FieldError::invalid(
            path,
            port,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

fn validate_env(env: &[EnvVar], path: &FieldPath, errs: &mut ErrorList) {
    for (i, e) in env.iter().enumerate() {
        let p = path.index(i);
        if e.name.is_empty() {
            errs.push(FieldError::required(p.child("name"), ""));
        } else if e.name.contains('=') || !e.name.chars().all(|c| c.is_ascii_graphic()) {
            errs.push(FieldError::invalid(
                p.child("name"),
                &e.name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        if let Some(from) = &e.value_from {
            let sources = [
                from.field_ref.is_some(),
                from.resource_field_ref.is_some(),
                from.config_map_key_ref.is_some(),
                from.secret_key_ref.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if sources != 1 {
                errs.push(FieldError::invalid(
                    p.child("valueFrom"),
                    "",
                    "may not have more than one field specified at a time",
                ));
            }
            if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
                errs.push(FieldError::invalid(
                    p.child("valueFrom"),
                    "",
                    "may not be specified when `value` is not empty",
                ));
            }
        }
    }
}

fn resource_name_ok(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage" | "pods")
        || name.starts_with("hugepages-")
        || (name.contains('/') && qualified_name(name).is_empty())
}

fn validate_resources(r: &ResourceRequirements, path: &FieldPath, errs: &mut ErrorList) {
    for (field, list) in [("limits", &r.limits), ("requests", &r.requests)] {
        for (name, q) in list.iter().flatten() {
            let p = path.child(field).key(name);
            if !resource_name_ok(name) {
                errs.push(FieldError::invalid(
                    p.clone(),
                    name,
                    "must be a standard resource type or fully qualified",
                ));
            }
            if let Err(e) = check_quantity(&q.0) {
                errs.push(FieldError::invalid(p, &q.0, e));
            } else if quantity_is_negative(&q.0) {
                errs.push(FieldError::invalid(
                    p,
                    &q.0,
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
    if let (Some(limits), Some(requests)) = (&r.limits, &r.requests) {
        for (name, req) in requests {
            if let Some(lim) = limits.get(name)
                && let (Some(rq), Some(lm)) = (quantity_milli(&req.0), quantity_milli(&lim.0))
                && rq > lm
            {
                errs.push(FieldError::invalid(
                    path.child("requests").key(name),
                    &req.0,
                    format!("must be less than or equal to {name} limit of {}", lim.0),
                ));
            }
        }
    }
}

fn validate_probe(probe: &Probe, path: FieldPath, errs: &mut ErrorList) {
    let handlers = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ]
    .iter()
    .filter(|h| **h)
    .count();
    if handlers == 0 {
        errs.push(FieldError::required(
            path.clone(),
            "must specify a handler type",
        ));
    } else if handlers > 1 {
        errs.push(FieldError::forbidden(
            path.clone(),
            "may not specify more than 1 handler type",
        ));
    }
    for (field, v, min) in [
        ("initialDelaySeconds", probe.initial_delay_seconds, 0),
        ("timeoutSeconds", probe.timeout_seconds, 1),
        ("periodSeconds", probe.period_seconds, 1),
        ("successThreshold", probe.success_threshold, 1),
        ("failureThreshold", probe.failure_threshold, 1),
    ] {
        if let Some(v) = v
            && v < min
        {
            errs.push(FieldError::invalid(
                path.child(field),
                v,
                format!("must be greater than or equal to {min}"),
            ));
        }
    }
    if let Some(h) = &probe.http_get
        && let IntOrString::Int(p) = h.port
    {
        port_range(errs, path.child("httpGet").child("port"), p, false);
    }
    if let Some(t) = &probe.tcp_socket
        && let IntOrString::Int(p) = t.port
    {
        port_range(errs, path.child("tcpSocket").child("port"), p, false);
    }
}

fn validate_container(
    c: &Container,
    path: &FieldPath,
    volumes: &BTreeSet<&str>,
    errs: &mut ErrorList,
) {
    if c.name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else {
        for e in dns1123_label(&c.name) {
            errs.push(FieldError::invalid(path.child("name"), &c.name, e));
        }
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errs.push(FieldError::required(path.child("image"), ""));
    }
    if let Some(p) = c.image_pull_policy.as_deref()
        && !PULL_POLICIES.contains(&p)
    {
        errs.push(FieldError::not_supported(
            path.child("imagePullPolicy"),
            p,
            &PULL_POLICIES,
        ));
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let p = path.child("ports").index(i);
        port_range(errs, p.child("containerPort"), port.container_port, false);
        if let Some(hp) = port.host_port {
            port_range(errs, p.child("hostPort"), hp, true);
        }
        if let Some(proto) = port.protocol.as_deref()
            && !PROTOCOLS.contains(&proto)
        {
            errs.push(FieldError::not_supported(
                p.child("protocol"),
                proto,
                &PROTOCOLS,
            ));
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            if let Some(e) = iana_svc_name(name) {
                errs.push(FieldError::invalid(p.child("name"), name, e));
            }
            if !port_names.insert(name) {
                errs.push(FieldError::duplicate(p.child("name"), name));
            }
        }
    }
    validate_env(
        c.env.as_deref().unwrap_or_default(),
        &path.child("env"),
        errs,
    );
    if let Some(r) = &c.resources {
        validate_resources(r, &path.child("resources"), errs);
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let p = path.child("volumeMounts").index(i);
        if m.name.is_empty() {
            errs.push(FieldError::required(p.child("name"), ""));
        } else if !volumes.contains(m.name.as_str()) {
            errs.push(FieldError {
                path: p.child("name"),
                kind: crate::validation::FieldErrorKind::NotFound,
                value: Some(format!("{:?}", m.name)),
                detail: String::new(),
            });
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(p.child("mountPath"), ""));
        }
    }
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(probe) = probe {
            validate_probe(probe, path.child(field), errs);
        }
    }
}

fn validate_toleration(t: &Toleration, path: FieldPath, errs: &mut ErrorList) {
    let op = t.operator.as_deref().unwrap_or("Equal");
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
        for e in qualified_name(k) {
            errs.push(FieldError::invalid(path.child("key"), k, e));
        }
    } else if op != "Exists" {
        errs.push(FieldError::invalid(
            path.child("operator"),
            op,
            "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ));
    }
    match op {
        "Equal" => {}
        "Exists" => {
            if t.value.as_deref().is_some_and(|v| !v.is_empty()) {
                errs.push(FieldError::invalid(
                    path.child("operator"),
                    op,
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            path.child("operator"),
            other,
            &["Equal", "Exists"],
        )),
    }
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && !TAINT_EFFECTS.contains(&e)
    {
        errs.push(FieldError::not_supported(
            path.child("effect"),
            e,
            &TAINT_EFFECTS,
        ));
    }
    if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
        errs.push(FieldError::invalid(
            path.child("effect"),
            t.effect.as_deref().unwrap_or_default(),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
}

/// A pod spec's errors, under `path` (`spec`, or `spec.template.spec` in a template).
pub fn validate_pod_spec(spec: &PodSpec, path: &FieldPath) -> ErrorList {
    let mut errs = Vec::new();
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let p = path.child("volumes").index(i);
        for e in dns1123_label(&v.name) {
            errs.push(FieldError::invalid(p.child("name"), &v.name, e));
        }
        if !volumes.insert(v.name.as_str()) {
            errs.push(FieldError::duplicate(p.child("name"), &v.name));
        }
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required(path.child("containers"), ""));
    }
    let mut names = BTreeSet::new();
    for (field, list) in [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", &spec.containers),
    ] {
        for (i, c) in list.iter().enumerate() {
            let p = path.child(field).index(i);
            validate_container(c, &p, &volumes, &mut errs);
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.push(FieldError::duplicate(p.child("name"), &c.name));
            }
        }
    }
    if let Some(rp) = spec.restart_policy.as_deref()
        && !RESTART_POLICIES.contains(&rp)
    {
        errs.push(FieldError::not_supported(
            path.child("restartPolicy"),
            rp,
            &RESTART_POLICIES,
        ));
    }
    if let Some(dp) = spec.dns_policy.as_deref()
        && !DNS_POLICIES.contains(&dp)
    {
        errs.push(FieldError::not_supported(
            path.child("dnsPolicy"),
            dp,
            &DNS_POLICIES,
        ));
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(FieldError::invalid(
            path.child("terminationGracePeriodSeconds"),
            g,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(a) = spec.active_deadline_seconds
        && a <= 0
    {
        errs.push(FieldError::invalid(
            path.child("activeDeadlineSeconds"),
            a,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    if let Some(ns) = &spec.node_selector {
        errs.extend(validate_labels(ns, &path.child("nodeSelector")));
    }
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        for e in dns1123_subdomain(node) {
            errs.push(FieldError::invalid(path.child("nodeName"), node, e));
        }
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        validate_toleration(t, path.child("tolerations").index(i), &mut errs);
    }
    if let Some(na) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        && let Some(req) = &na.required_during_scheduling_ignored_during_execution
    {
        let p = path
            .child("affinity")
            .child("nodeAffinity")
            .child("requiredDuringSchedulingIgnoredDuringExecution");
        if req.node_selector_terms.is_empty() {
            errs.push(FieldError::required(
                p.child("nodeSelectorTerms"),
                "must have at least one node selector term",
            ));
        }
        for (i, term) in req.node_selector_terms.iter().enumerate() {
            for (j, e) in term.match_expressions.iter().flatten().enumerate() {
                let ep = p
                    .child("nodeSelectorTerms")
                    .index(i)
                    .child("matchExpressions")
                    .index(j);
                let n = e.values.as_ref().map_or(0, Vec::len);
                let bad = match e.operator.as_str() {
                    "In" | "NotIn" => {
                        (n == 0).then_some("must be specified when `operator` is 'In' or 'NotIn'")
                    }
                    "Exists" | "DoesNotExist" => (n > 0).then_some(
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ),
                    "Gt" | "Lt" => (n != 1).then_some(
                        "must be specified single value when `operator` is 'Lt' or 'Gt'",
                    ),
                    other => {
                        errs.push(FieldError::not_supported(
                            ep.child("operator"),
                            other,
                            &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
                        ));
                        None
                    }
                };
                if let Some(why) = bad {
                    errs.push(FieldError::invalid(ep.child("values"), n, why));
                }
            }
        }
    }
    errs
}

/// A pod template's errors (its labels and spec).
pub fn validate_template(t: &PodTemplateSpec, path: &FieldPath) -> ErrorList {
    let mut errs = Vec::new();
    if let Some(labels) = t.metadata.as_ref().and_then(|m| m.labels.as_ref()) {
        errs.extend(validate_labels(
            labels,
            &path.child("metadata").child("labels"),
        ));
    }
    match &t.spec {
        Some(spec) => errs.extend(validate_pod_spec(spec, &path.child("spec"))),
        None => errs.push(FieldError::required(path.child("spec"), "")),
    }
    errs
}

impl Validate for Pod {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Subdomain);
        match &self.spec {
            Some(spec) => errs.extend(validate_pod_spec(spec, &FieldPath::new("spec"))),
            None => errs.push(FieldError::required(FieldPath::new("spec"), "")),
        }
        errs
    }

    fn validate_immutable(&self, old: &Self) -> ErrorList {
        let mut errs = Vec::new();
        if let (Some(new), Some(old)) = (&self.spec, &old.spec)
            && !only_mutable_pod_fields_changed(new, old)
        {
            errs.push(FieldError::forbidden(
                FieldPath::new("spec"),
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        errs
    }

    fn validate_status_update(&self, old: &Self) -> ErrorList {
        let mut errs = validate_object_meta_update(&self.metadata, &old.metadata);
        if let Some(phase) = self.status.as_ref().and_then(|s| s.phase.as_deref())
            && !PHASES.contains(&phase)
        {
            errs.push(FieldError::not_supported(
                FieldPath::new("status").child("phase"),
                phase,
                &PHASES,
            ));
        }
        errs
    }
}

/// Kubernetes lets a running pod change only its images, activeDeadlineSeconds (set or
/// lowered), added tolerations and a negative grace period.
fn only_mutable_pod_fields_changed(new: &PodSpec, old: &PodSpec) -> bool {
    let mut a = new.clone();
    let b = old;
    for (na, ob) in a.containers.iter_mut().zip(&b.containers) {
        na.image.clone_from(&ob.image);
    }
    if let (Some(na), Some(ob)) = (a.init_containers.as_mut(), b.init_containers.as_ref()) {
        for (n, o) in na.iter_mut().zip(ob) {
            n.image.clone_from(&o.image);
        }
    }
    let deadline_ok = match (new.active_deadline_seconds, old.active_deadline_seconds) {
        (Some(n), Some(o)) => n <= o,
        (Some(_), None) => true,
        (None, None) => true,
        (None, Some(_)) => false,
    };
    if deadline_ok {
        a.active_deadline_seconds = b.active_deadline_seconds;
    }
    let old_tol = b.tolerations.clone().unwrap_or_default();
    let tol_ok = old_tol
        .iter()
        .all(|t| new.tolerations.iter().flatten().any(|n| n == t));
    if tol_ok {
        a.tolerations.clone_from(&b.tolerations);
    }
    if b.termination_grace_period_seconds.is_some_and(|g| g < 0) {
        a.termination_grace_period_seconds = b.termination_grace_period_seconds;
    }
    a == *b
}

/// The defaults Kubernetes fills into a pod spec.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.is_none() {
        c.image_pull_policy =
            Some(default_pull_policy(c.image.as_deref().unwrap_or_default()).into());
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        probe.timeout_seconds.get_or_insert(1);
        probe.period_seconds.get_or_insert(10);
        probe.success_threshold.get_or_insert(1);
        probe.failure_threshold.get_or_insert(3);
    }
    // A limit without a request requests the limit, as Kubernetes defaults it.
    if let Some(r) = c.resources.as_mut()
        && let Some(limits) = r.limits.clone()
    {
        let requests = r.requests.get_or_insert_with(Default::default);
        for (k, v) in limits {
            requests.entry(k).or_insert(v);
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut())
            && f.api_version.is_none()
        {
            f.api_version = Some("v1".into());
        }
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

impl ApplyDefaults for Pod {
    fn apply_defaults(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            default_pod_spec(spec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec}),
        )
        .expect("a pod")
    }

    fn messages(errs: &ErrorList) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_pod_needs_containers_with_names_and_images() {
        assert_eq!(
            messages(&pod(json!({"containers": []})).validate()),
            vec!["spec.containers: Required value"]
        );
        let errs = pod(json!({"containers": [{"image": "nginx"}, {"name": "a"}]})).validate();
        assert_eq!(
            messages(&errs),
            vec![
                "spec.containers[0].name: Required value",
                "spec.containers[1].image: Required value"
            ]
        );
    }

    #[test]
    fn duplicate_names_ports_and_bad_values_are_named() {
        let errs = messages(
            &pod(json!({"restartPolicy": "Sometimes", "containers": [
                {"name": "a", "image": "x", "ports": [{"containerPort": 70000, "protocol": "ICMP"}]},
                {"name": "a", "image": "x"}
            ]}))
            .validate(),
        );
        assert!(errs.contains(&"spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string()), "{errs:?}");
        assert!(errs.contains(&"spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"".to_string()), "{errs:?}");
        assert!(
            errs.contains(&"spec.containers[1].name: Duplicate value: \"a\"".to_string()),
            "{errs:?}"
        );
        assert!(errs.contains(&"spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".to_string()), "{errs:?}");
    }

    #[test]
    fn requests_may_not_exceed_limits_and_quantities_must_parse() {
        let errs = messages(
            &pod(json!({"containers": [{"name": "a", "image": "x", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2", "memory": "lots"}}}]})).validate(),
        );
        assert!(errs.contains(&"spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1".to_string()), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.starts_with(
                "spec.containers[0].resources.requests[memory]: Invalid value: \"lots\""
            )),
            "{errs:?}"
        );
    }

    #[test]
    fn a_running_pod_may_change_only_its_images() {
        let old = pod(json!({"containers": [{"name": "a", "image": "x:1"}]}));
        let image = pod(json!({"containers": [{"name": "a", "image": "x:2"}]}));
        assert!(image.validate_update(&old).is_empty());
        let command =
            pod(json!({"containers": [{"name": "a", "image": "x:1", "command": ["sh"]}]}));
        let errs = command.validate_update(&old);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .starts_with("spec: Forbidden: pod updates may not change fields")
        );
    }

    #[test]
    fn defaults_follow_kubernetes() {
        let mut p = pod(json!({"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}}},
            {"name": "b", "image": "nginx:1.25"}
        ]}));
        p.apply_defaults();
        let spec = p.spec.expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
        assert_eq!(
            spec.containers[1].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        assert_eq!(
            spec.containers[0].ports.as_ref().expect("ports")[0]
                .protocol
                .as_deref(),
            Some("TCP")
        );
        let requests = spec.containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .expect("requests");
        assert_eq!(requests["cpu"].0, "1");
        assert_eq!(default_pull_policy("registry:5000/app"), "Always");
        assert_eq!(default_pull_policy("app@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn tolerations_follow_kubernetes_rules() {
        let errs = messages(
            &pod(
                json!({"containers": [{"name": "a", "image": "x"}], "tolerations": [
                    {"key": "k", "operator": "Exists", "value": "v"},
                    {"operator": "Equal", "value": "v"},
                    {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}
                ]}),
            )
            .validate(),
        );
        assert!(errs.contains(&"spec.tolerations[0].operator: Invalid value: \"Exists\": value must be empty when `operator` is 'Exists'".to_string()), "{errs:?}");
        assert_eq!(errs.len(), 3, "{errs:?}");
    }
}
