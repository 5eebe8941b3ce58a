//! `describe`: the fields a person looks for, laid out as kubectl lays them out, and the
//! object's Events at the bottom.

use std::fmt::Write as _;

use serde_json::Value;

use super::printer::human_age;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

/// A description being written: `Label:  value` lines, labels padded to one column.
struct Doc {
    out: String,
}

impl Doc {
    fn line(&mut self, indent: usize, label: &str, value: impl AsRef<str>) {
        let pad = 14usize.saturating_sub(indent * 2);
        let label = format!("{label}:");
        let _ = writeln!(
            self.out,
            "{:indent$}{label:<pad$}{}",
            "",
            value.as_ref(),
            indent = indent * 2,
            pad = pad.max(label.len() + 1)
        );
    }

    fn heading(&mut self, indent: usize, label: &str) {
        let _ = writeln!(self.out, "{:indent$}{label}:", "", indent = indent * 2);
    }

    /// A map as `k=v` lines, the first on the label's line (kubectl's style).
    fn map(&mut self, label: &str, m: &Value) {
        let pairs: Vec<String> = m
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", s(v)))
            .collect();
        if pairs.is_empty() {
            self.line(0, label, "<none>");
            return;
        }
        for (i, p) in pairs.iter().enumerate() {
            if i == 0 {
                self.line(0, label, p);
            } else {
                let _ = writeln!(self.out, "{:14}{p}", "");
            }
        }
    }
}

fn meta(d: &mut Doc, o: &Value) {
    let m = &o["metadata"];
    d.line(0, "Name", s(&m["name"]));
    if !m["namespace"].is_null() {
        d.line(0, "Namespace", s(&m["namespace"]));
    }
    d.map("Labels", &m["labels"]);
    let ann: serde_json::Map<String, Value> = m["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != super::apply::LAST_APPLIED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    d.map("Annotations", &Value::Object(ann));
    d.line(0, "CreationTimestamp", s(&m["creationTimestamp"]));
}

fn containers(d: &mut Doc, spec: &Value, statuses: &Value, title: &str) {
    let list = spec["containers"].as_array().cloned().unwrap_or_default();
    d.heading(0, title);
    for c in &list {
        let name = s(&c["name"]);
        d.heading(1, &name);
        d.line(2, "Image", s(&c["image"]));
        let ports: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}",
                    s(&p["containerPort"]),
                    p["protocol"].as_str().unwrap_or("TCP")
                )
            })
            .collect();
        d.line(2, "Port", none(ports.join(", ")));
        if let Some(cmd) = c["command"].as_array() {
            d.line(
                2,
                "Command",
                cmd.iter().map(s).collect::<Vec<_>>().join(" "),
            );
        }
        if let Some(st) = statuses
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == c["name"]))
        {
            let (state, reason) = match st["state"].as_object().and_then(|m| m.iter().next()) {
                Some((k, v)) => (k.clone(), s(&v["reason"])),
                None => ("Waiting".into(), String::new()),
            };
            let mut state = state;
            if let Some(first) = state.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            d.line(2, "State", state);
            if !reason.is_empty() {
                d.line(3, "Reason", reason);
            }
            d.line(2, "Ready", s(&st["ready"]));
            d.line(2, "Restart Count", s(&st["restartCount"]));
        }
        for (kind, label) in [("limits", "Limits"), ("requests", "Requests")] {
            if let Some(m) = c["resources"][kind].as_object() {
                d.heading(2, label);
                for (k, v) in m {
                    d.line(3, k, s(v));
                }
            }
        }
        let env: Vec<String> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}={}",
                    s(&e["name"]),
                    if e["value"].is_null() {
                        "<set from a reference>".into()
                    } else {
                        s(&e["value"])
                    }
                )
            })
            .collect();
        d.line(2, "Environment", none(env.join(", ")));
    }
}

fn conditions(d: &mut Doc, conds: &Value) {
    let Some(list) = conds.as_array().filter(|l| !l.is_empty()) else {
        return;
    };
    d.heading(0, "Conditions");
    let _ = writeln!(d.out, "  {:<20}{:<8}Reason", "Type", "Status");
    let _ = writeln!(d.out, "  {:<20}{:<8}------", "----", "------");
    for c in list {
        let _ = writeln!(
            d.out,
            "  {:<20}{:<8}{}",
            s(&c["type"]),
            s(&c["status"]),
            s(&c["reason"])
        );
    }
}

/// The description of one object.
pub fn describe(resource: &str, o: &Value) -> String {
    let mut d = Doc { out: String::new() };
    meta(&mut d, o);
    let spec = &o["spec"];
    let st = &o["status"];
    match resource {
        "pods" => {
            d.line(0, "Node", none(s(&spec["nodeName"])));
            let status = if o["metadata"]["deletionTimestamp"].is_null() {
                s(&st["phase"])
            } else {
                "Terminating".into()
            };
            d.line(0, "Status", status);
            d.line(0, "IP", s(&st["podIP"]));
            d.line(0, "QoS Class", s(&st["qosClass"]));
            containers(&mut d, spec, &st["containerStatuses"], "Containers");
            conditions(&mut d, &st["conditions"]);
            d.map("Node-Selectors", &spec["nodeSelector"]);
            let tol: Vec<String> = spec["tolerations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    // kubectl's form: key[=value][:effect][ op=Exists][ for Ns].
                    let mut out = s(&t["key"]);
                    if let Some(v) = t["value"].as_str().filter(|v| !v.is_empty()) {
                        out.push_str(&format!("={v}"));
                    }
                    if let Some(e) = t["effect"].as_str().filter(|e| !e.is_empty()) {
                        out.push_str(&format!(":{e}"));
                    }
                    if t["operator"].as_str() == Some("Exists") {
                        out.push_str(" op=Exists");
                    }
                    if let Some(secs) = t["tolerationSeconds"].as_i64() {
                        out.push_str(&format!(" for {secs}s"));
                    }
                    out
                })
                .collect();
            d.line(0, "Tolerations", none(tol.join(", ")));
        }
        "deployments" | "replicasets" => {
            d.line(0, "Selector", none(selector(&spec["selector"])));
            let replicas = format!(
                "{} desired | {} updated | {} total | {} available | {} unavailable",
                spec["replicas"].as_i64().unwrap_or(1),
                st["updatedReplicas"].as_i64().unwrap_or(0),
                st["replicas"].as_i64().unwrap_or(0),
                st["availableReplicas"].as_i64().unwrap_or(0),
                st["unavailableReplicas"].as_i64().unwrap_or(0)
            );
            d.line(0, "Replicas", replicas);
            if resource == "deployments" {
                d.line(0, "StrategyType", s(&spec["strategy"]["type"]));
                let ru = &spec["strategy"]["rollingUpdate"];
                if !ru.is_null() {
                    d.line(
                        0,
                        "RollingUpdateStrategy",
                        format!(
                            "{} max unavailable, {} max surge",
                            s(&ru["maxUnavailable"]),
                            s(&ru["maxSurge"])
                        ),
                    );
                }
            }
            d.heading(0, "Pod Template");
            let _ = writeln!(
                d.out,
                "  Labels:  {}",
                none(pairs(&spec["template"]["metadata"]["labels"]))
            );
            containers(
                &mut d,
                &spec["template"]["spec"],
                &Value::Null,
                "  Containers",
            );
            conditions(&mut d, &st["conditions"]);
        }
        "services" => {
            d.map("Selector", &spec["selector"]);
            d.line(0, "Type", s(&spec["type"]));
            d.line(0, "IP", none(s(&spec["clusterIP"])));
            for p in spec["ports"].as_array().into_iter().flatten() {
                let name = p["name"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("<unset>");
                d.line(
                    0,
                    "Port",
                    format!(
                        "{name}  {}/{}",
                        s(&p["port"]),
                        p["protocol"].as_str().unwrap_or("TCP")
                    ),
                );
                d.line(
                    0,
                    "TargetPort",
                    format!(
                        "{}/{}",
                        s(&p["targetPort"]),
                        p["protocol"].as_str().unwrap_or("TCP")
                    ),
                );
                if let Some(np) = p["nodePort"].as_i64() {
                    d.line(
                        0,
                        "NodePort",
                        format!("{name}  {np}/{}", p["protocol"].as_str().unwrap_or("TCP")),
                    );
                }
            }
            d.line(0, "Session Affinity", s(&spec["sessionAffinity"]));
        }
        "nodes" => {
            d.line(
                0,
                "Unschedulable",
                spec["unschedulable"].as_bool().unwrap_or(false).to_string(),
            );
            let taints: Vec<String> = spec["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!(
                        "{}{}:{}",
                        s(&t["key"]),
                        t["value"]
                            .as_str()
                            .map(|v| format!("={v}"))
                            .unwrap_or_default(),
                        s(&t["effect"])
                    )
                })
                .collect();
            d.line(0, "Taints", none(taints.join(", ")));
            conditions(&mut d, &st["conditions"]);
            for (field, label) in [("capacity", "Capacity"), ("allocatable", "Allocatable")] {
                if let Some(m) = st[field].as_object() {
                    d.heading(0, label);
                    for (k, v) in m {
                        d.line(1, k, s(v));
                    }
                }
            }
            let addrs: Vec<String> = st["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| format!("{}: {}", s(&a["type"]), s(&a["address"])))
                .collect();
            d.line(0, "Addresses", none(addrs.join(", ")));
        }
        _ => {
            // Kinds without a describer of their own show their spec and status as YAML
            // (an autoscaler's or a disruption budget's status is most of what matters).
            for (title, part) in [("Spec", spec), ("Status", &o["status"])] {
                if !part.is_null() {
                    d.heading(0, title);
                    for line in serde_norway::to_string(part).unwrap_or_default().lines() {
                        let _ = writeln!(d.out, "  {line}");
                    }
                }
            }
        }
    }
    d.out
}

fn pairs(m: &Value) -> String {
    m.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn selector(sel: &Value) -> String {
    let mut parts = vec![pairs(&sel["matchLabels"])];
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let values: Vec<String> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        parts.push(format!(
            "{} {} ({})",
            s(&e["key"]),
            s(&e["operator"]).to_lowercase(),
            values.join(",")
        ));
    }
    parts.retain(|p| !p.is_empty());
    parts.join(",")
}

/// The Events section: `Type Reason Age From Message`, oldest first.
pub fn events(list: &[Value]) -> String {
    if list.is_empty() {
        return "Events:  <none>\n".into();
    }
    let mut sorted: Vec<&Value> = list.iter().collect();
    sorted.sort_by_key(|e| s(&e["lastTimestamp"]));
    let header: Vec<String> = ["Type", "Reason", "Age", "From", "Message"]
        .map(String::from)
        .to_vec();
    let dashes: Vec<String> = header.iter().map(|h| "-".repeat(h.len())).collect();
    let mut rows = vec![dashes];
    for e in sorted {
        let at = e["lastTimestamp"]
            .as_str()
            .or(e["metadata"]["creationTimestamp"].as_str())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let age = at
            .map(|t| human_age(jiff::Timestamp::now().as_second() - t.as_second()))
            .unwrap_or_default();
        let from = e["source"]["component"]
            .as_str()
            .or(e["reportingComponent"].as_str())
            .unwrap_or_default()
            .to_string();
        rows.push(vec![
            s(&e["type"]),
            s(&e["reason"]),
            age,
            from,
            s(&e["message"]),
        ]);
    }
    let table = super::printer::table(&header, &rows);
    let mut out = String::from("Events:\n");
    for line in table.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_description_has_the_fields_people_look_for() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": "10.1.0.4", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 1, "state": {"running": {}}}]}});
        let text = describe("pods", &pod);
        for want in [
            "Name:         web",
            "Namespace:    default",
            "Labels:       app=web",
            "Node:         n1",
            "Status:       Running",
            "    Image:    nginx:1.25",
            "    State:    Running",
            "    Restart Count: 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn events_are_listed_under_a_header() {
        let e = json!({"type": "Normal", "reason": "Scheduled", "message": "assigned", "source": {"component": "scheduler"}});
        let text = events(&[e]);
        assert!(
            text.starts_with("Events:\n  Type     Reason      Age   From        Message\n  ----"),
            "{text}"
        );
        assert_eq!(events(&[]), "Events:  <none>\n");
    }
}
