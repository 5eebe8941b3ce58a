//! `-o jsonpath=TEMPLATE`: kubectl's JSONPath templates — text with `{.path}` expressions,
//! `[n]`, `[*]`, `['key']`, `{range …}{end}` and `{"literal"}`.

use serde_json::Value;

/// A template that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("error parsing jsonpath {template}: {reason}")]
pub struct JsonPathError {
    template: String,
    reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Field(String),
    Index(i64),
    All,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Seg>),
    Range(Vec<Seg>, Vec<Node>),
}

fn parse_path(p: &str) -> Result<Vec<Seg>, String> {
    let p = p.trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut segs = Vec::new();
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                match name.as_str() {
                    "" if i >= chars.len() => {}
                    "" => {}
                    "*" => segs.push(Seg::All),
                    _ => segs.push(Seg::Field(name)),
                }
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .ok_or("unclosed [")?
                    + i;
                let inner: String = chars[i + 1..end].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    segs.push(Seg::All);
                } else if let Some(key) =
                    inner.strip_prefix('\'').and_then(|k| k.strip_suffix('\''))
                {
                    segs.push(Seg::Field(key.to_string()));
                } else {
                    segs.push(Seg::Index(
                        inner
                            .parse()
                            .map_err(|_| format!("invalid array index {inner}"))?,
                    ));
                }
                i = end + 1;
            }
            c if c.is_whitespace() => i += 1,
            c => {
                return Err(format!(
                    "unrecognized character in action: U+{:04X} '{c}'",
                    c as u32
                ));
            }
        }
    }
    Ok(segs)
}

fn parse_nodes(t: &str, pos: &mut usize, in_range: bool) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    let bytes: Vec<char> = t.chars().collect();
    let mut text = String::new();
    while *pos < bytes.len() {
        let c = bytes[*pos];
        if c != '{' {
            text.push(c);
            *pos += 1;
            continue;
        }
        if !text.is_empty() {
            nodes.push(Node::Text(std::mem::take(&mut text)));
        }
        let end = bytes[*pos..]
            .iter()
            .position(|c| *c == '}')
            .ok_or("unclosed action")?
            + *pos;
        let action: String = bytes[*pos + 1..end].iter().collect();
        *pos = end + 1;
        let action = action.trim();
        if action == "end" {
            if in_range {
                return Ok(nodes);
            }
            return Err("not in range, nothing to end".into());
        } else if let Some(p) = action.strip_prefix("range") {
            let body = parse_nodes(t, pos, true)?;
            nodes.push(Node::Range(parse_path(p)?, body));
        } else if let Some(lit) = action.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
            nodes.push(Node::Text(lit.replace("\\n", "\n").replace("\\t", "\t")));
        } else {
            nodes.push(Node::Path(parse_path(action)?));
        }
    }
    if in_range {
        return Err("range without end".into());
    }
    if !text.is_empty() {
        nodes.push(Node::Text(text));
    }
    Ok(nodes)
}

fn eval<'a>(v: &'a Value, segs: &[Seg]) -> Vec<&'a Value> {
    let mut cur = vec![v];
    for s in segs {
        let mut next = Vec::new();
        for c in cur {
            match s {
                Seg::Field(f) => next.extend(c.get(f)),
                Seg::Index(i) => {
                    if let Some(a) = c.as_array() {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        next.extend(usize::try_from(idx).ok().and_then(|i| a.get(i)));
                    }
                }
                Seg::All => match c {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
            }
        }
        cur = next;
    }
    cur
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render(nodes: &[Node], v: &Value, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Path(p) => out.push_str(
                &eval(v, p)
                    .into_iter()
                    .map(text_of)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Node::Range(p, body) => {
                for item in eval(v, p) {
                    render(body, item, out);
                }
            }
        }
    }
}

/// Applies a template to a value.
pub fn apply(template: &str, v: &Value) -> Result<String, JsonPathError> {
    let t = template.trim_matches('\'');
    let mut pos = 0;
    let nodes = parse_nodes(t, &mut pos, false).map_err(|reason| JsonPathError {
        template: template.to_string(),
        reason,
    })?;
    let mut out = String::new();
    render(&nodes, v, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_follow_kubectl() {
        let list = json!({"items": [
            {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "x"}}, "spec": {"ports": [{"port": 80}]}},
            {"metadata": {"name": "b"}, "spec": {"ports": [{"port": 443}]}}
        ]});
        assert_eq!(
            apply("{.items[*].metadata.name}", &list).expect("ok"),
            "a b"
        );
        assert_eq!(
            apply("{.items[0].spec.ports[0].port}", &list).expect("ok"),
            "80"
        );
        assert_eq!(
            apply("{range .items[*]}{.metadata.name}{\"\\n\"}{end}", &list).expect("ok"),
            "a\nb\n"
        );
        assert_eq!(
            apply(
                "{.items[0].metadata.labels['app.kubernetes.io/name']}",
                &list
            )
            .expect("ok"),
            "x"
        );
        assert_eq!(
            apply("name: {.items[-1].metadata.name}", &list).expect("ok"),
            "name: b"
        );
        assert!(apply("{.items[*}", &list).is_err());
        assert!(apply("{range .items[*]}{.a}", &list).is_err());
    }
}
