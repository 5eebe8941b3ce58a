//! Output as kubectl prints it: tables with kubectl's columns per kind, `-o wide`,
//! `name`, `json`, `yaml`, and ages in kubectl's short form.

use serde_json::Value;

use flotilla_proto::api::ResourceInfo;

/// kubectl's short duration: `45s`, `5m30s`, `45m`, `3h20m`, `30h`, `3d4h`, `100d`, `3y`.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        },
        _ if d < 365 * 2 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn age(obj: &Value) -> String {
    obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| human_age(jiff::Timestamp::now().as_second() - t.as_second()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn pod_status(p: &Value) -> String {
    if !p["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating".into();
    }
    for c in p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            return r.into();
        }
        if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            return r.into();
        }
    }
    or_none(s(&p["status"]["phase"]))
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", s(&p["port"])),
                None => format!("{}/{proto}", s(&p["port"])),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn node_status(n: &Value) -> String {
    let ready = n["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| match c["status"].as_str() {
            Some("True") => "Ready",
            Some("False") => "NotReady",
            _ => "Unknown",
        })
        .unwrap_or("Unknown");
    if n["spec"]["unschedulable"] == true {
        format!("{ready},SchedulingDisabled")
    } else {
        ready.into()
    }
}

fn node_roles(n: &Value) -> String {
    let roles: Vec<&str> = n["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    or_none(roles.join(","))
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

/// The columns for a kind (wide adds kubectl's `-o wide` columns).
pub fn columns(resource: &str, wide: bool) -> Vec<&'static str> {
    let mut c = match resource {
        "pods" => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "deployments" => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "replicasets" => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "services" => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        "nodes" => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "namespaces" => vec!["NAME", "STATUS", "AGE"],
        "configmaps" => vec!["NAME", "DATA", "AGE"],
        "secrets" => vec!["NAME", "TYPE", "DATA", "AGE"],
        "endpoints" => vec!["NAME", "ENDPOINTS", "AGE"],
        "events" => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "leases" => vec!["NAME", "HOLDER", "AGE"],
        "horizontalpodautoscalers" => vec![
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE",
        ],
        "poddisruptionbudgets" => vec![
            "NAME",
            "MIN AVAILABLE",
            "MAX UNAVAILABLE",
            "ALLOWED DISRUPTIONS",
            "AGE",
        ],
        _ => vec!["NAME", "AGE"],
    };
    if wide {
        match resource {
            "pods" => c.extend(["IP", "NODE"]),
            "deployments" | "replicasets" => c.extend(["CONTAINERS", "IMAGES", "SELECTOR"]),
            "services" => c.push("SELECTOR"),
            "nodes" => c.extend(["INTERNAL-IP", "OS-IMAGE", "CONTAINER-RUNTIME"]),
            _ => {}
        }
    }
    c
}

fn containers_and_images(o: &Value) -> (String, String) {
    let cs: Vec<&Value> = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    (
        cs.iter()
            .map(|c| s(&c["name"]))
            .collect::<Vec<_>>()
            .join(","),
        cs.iter()
            .map(|c| s(&c["image"]))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn match_labels(v: &Value) -> String {
    let m = if v["matchLabels"].is_object() {
        &v["matchLabels"]
    } else {
        v
    };
    or_none(
        m.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", s(v)))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// One row for an object.
pub fn row(resource: &str, o: &Value, wide: bool) -> Vec<String> {
    let name = s(&o["metadata"]["name"]);
    let st = &o["status"];
    let mut r = match resource {
        "pods" => {
            let statuses: Vec<&Value> = st["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .collect();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            vec![
                name,
                format!("{ready}/{total}"),
                pod_status(o),
                restarts.to_string(),
                age(o),
            ]
        }
        "deployments" => vec![
            name,
            format!(
                "{}/{}",
                st["readyReplicas"].as_i64().unwrap_or(0),
                o["spec"]["replicas"].as_i64().unwrap_or(1)
            ),
            st["updatedReplicas"].as_i64().unwrap_or(0).to_string(),
            st["availableReplicas"].as_i64().unwrap_or(0).to_string(),
            age(o),
        ],
        "horizontalpodautoscalers" => {
            let spec = &o["spec"];
            let current = |resource: &str| {
                st["currentMetrics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| m["resource"]["name"] == resource)
                    .and_then(|m| m["resource"]["current"]["averageUtilization"].as_i64())
                    .map_or("<unknown>".to_string(), |u| format!("{u}%"))
            };
            let targets: Vec<String> = spec["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    let r = m["resource"]["name"].as_str()?;
                    let goal = m["resource"]["target"]["averageUtilization"].as_i64()?;
                    Some(format!("{r}: {}/{goal}%", current(r)))
                })
                .collect();
            vec![
                name,
                format!(
                    "{}/{}",
                    s(&spec["scaleTargetRef"]["kind"]),
                    s(&spec["scaleTargetRef"]["name"])
                ),
                or_none(targets.join(", ")),
                spec["minReplicas"].as_i64().unwrap_or(1).to_string(),
                spec["maxReplicas"].as_i64().unwrap_or(0).to_string(),
                st["currentReplicas"].as_i64().unwrap_or(0).to_string(),
                age(o),
            ]
        }
        "poddisruptionbudgets" => {
            let budget = |f: &str| match &o["spec"][f] {
                Value::Null => "N/A".to_string(),
                Value::String(p) => p.clone(),
                v => v.to_string(),
            };
            vec![
                name,
                budget("minAvailable"),
                budget("maxUnavailable"),
                st["disruptionsAllowed"].as_i64().unwrap_or(0).to_string(),
                age(o),
            ]
        }
        "replicasets" => vec![
            name,
            o["spec"]["replicas"].as_i64().unwrap_or(1).to_string(),
            st["replicas"].as_i64().unwrap_or(0).to_string(),
            st["readyReplicas"].as_i64().unwrap_or(0).to_string(),
            age(o),
        ],
        "services" => {
            let external = o["spec"]["externalIPs"]
                .as_array()
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                .filter(|e| !e.is_empty())
                .or_else(|| o["spec"]["externalName"].as_str().map(str::to_string))
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                s(&o["spec"]["type"]),
                or_none(s(&o["spec"]["clusterIP"])),
                external,
                service_ports(o),
                age(o),
            ]
        }
        "nodes" => vec![
            name,
            node_status(o),
            node_roles(o),
            age(o),
            s(&st["nodeInfo"]["kubeletVersion"]),
        ],
        "namespaces" => vec![name, s(&st["phase"]), age(o)],
        "configmaps" => vec![
            name,
            (count(&o["data"]) + count(&o["binaryData"])).to_string(),
            age(o),
        ],
        "secrets" => vec![name, s(&o["type"]), count(&o["data"]).to_string(), age(o)],
        "endpoints" => {
            let eps: Vec<String> = o["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|sub| {
                    let ports: Vec<String> = sub["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| s(&p["port"]))
                        .collect();
                    sub["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(move |a| {
                            let ip = s(&a["ip"]);
                            if ports.is_empty() {
                                vec![ip]
                            } else {
                                ports.iter().map(|p| format!("{ip}:{p}")).collect()
                            }
                        })
                })
                .collect();
            vec![name, or_none(eps.join(",")), age(o)]
        }
        "events" => {
            let io = &o["involvedObject"];
            vec![
                age(o),
                s(&o["type"]),
                s(&o["reason"]),
                format!("{}/{}", s(&io["kind"]).to_ascii_lowercase(), s(&io["name"])),
                s(&o["message"]),
            ]
        }
        "leases" => vec![name, or_none(s(&o["spec"]["holderIdentity"])), age(o)],
        _ => vec![name, age(o)],
    };
    if wide {
        match resource {
            "pods" => r.extend([or_none(s(&st["podIP"])), or_none(s(&o["spec"]["nodeName"]))]),
            "deployments" | "replicasets" => {
                let (c, i) = containers_and_images(o);
                r.extend([c, i, match_labels(&o["spec"]["selector"])]);
            }
            "services" => r.push(match_labels(&o["spec"]["selector"])),
            "nodes" => {
                let ip = st["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == "InternalIP")
                    .map(|a| s(&a["address"]))
                    .unwrap_or_default();
                r.extend([
                    or_none(ip),
                    s(&st["nodeInfo"]["osImage"]),
                    s(&st["nodeInfo"]["containerRuntimeVersion"]),
                ]);
            }
            _ => {}
        }
    }
    r
}

/// Renders rows under a header, columns padded by three spaces as kubectl does.
pub fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    for line in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == line.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `deployment.apps/web`, as kubectl names an object.
pub fn qualified_name(info: &ResourceInfo, name: &str) -> String {
    let group = info
        .api_version
        .split_once('/')
        .map(|(g, _)| g)
        .unwrap_or("");
    if group.is_empty() {
        format!("{}/{name}", info.singular)
    } else {
        format!("{}.{group}/{name}", info.singular)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        assert_eq!(human_age(45), "45s");
        assert_eq!(human_age(330), "5m30s");
        assert_eq!(human_age(45 * 60), "45m");
        assert_eq!(human_age(3 * 3600 + 20 * 60), "3h20m");
        assert_eq!(human_age(30 * 3600), "30h");
        assert_eq!(human_age(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_age(100 * 86400), "100d");
    }

    #[test]
    fn pod_rows_show_readiness_status_and_restarts() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{}, {}], "nodeName": "n1"}, "status": {"phase": "Running", "podIP": "10.1.0.5", "containerStatuses": [{"ready": true, "restartCount": 2, "state": {"running": {}}}, {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let r = row("pods", &pod, true);
        assert_eq!(r[..4], ["web", "1/2", "CrashLoopBackOff", "3"]);
        assert_eq!(r[5..], ["10.1.0.5", "n1"]);
    }

    #[test]
    fn tables_pad_columns_by_three_spaces() {
        let t = table(
            &["NAME".into(), "AGE".into()],
            &[vec!["web-1".into(), "5s".into()]],
        );
        assert_eq!(t, "NAME    AGE\nweb-1   5s\n");
    }

    #[test]
    fn service_ports_show_node_ports() {
        let svc = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}});
        assert_eq!(service_ports(&svc), "80:30080/TCP,53/UDP");
    }
}
