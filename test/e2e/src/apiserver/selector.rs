//! Label and field selectors, as the `labelSelector` and `fieldSelector` query parameters.
//!
//! Label selectors support equality (`k=v`, `k==v`, `k!=v`), existence (`k`, `!k`) and sets
//! (`k in (a,b)`, `k notin (a,b)`). Field selectors support `=`, `==` and `!=` on
//! `metadata.name` and `metadata.namespace` for every resource, plus the fields the real server
//! allows per kind (for Pods `spec.nodeName`, `status.phase`, ...); others are refused with 400.

use serde_json::Value;

use super::store::{ApiError, ResourceId, RESOURCES};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Eq(v), Some(x)) => v == x,
            (Op::NotEq(v), x) => x != Some(v.as_str()),
            (Op::Exists, x) => x.is_some(),
            (Op::NotExists, x) => x.is_none(),
            (Op::In(vs), Some(x)) => vs.iter().any(|v| v == x),
            (Op::NotIn(vs), x) => x.is_none_or(|x| !vs.iter().any(|v| v == x)),
            (Op::Eq(_) | Op::In(_), None) => false,
        }
    }
}

/// Parsed label and field selectors of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Selectors {
    /// Parses the selectors for resource `res`; empty strings select everything.
    pub fn parse(res: ResourceId, labels: &str, fields: &str) -> Result<Self, ApiError> {
        let labels = split_terms(labels)
            .map(parse_label_term)
            .collect::<Result<_, _>>()?;
        let fields = split_terms(fields)
            .map(|t| parse_field_term(res, t))
            .collect::<Result<_, _>>()?;
        Ok(Self { labels, fields })
    }

    /// Whether `obj` (of resource `res`) is selected.
    pub fn matches(&self, res: ResourceId, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.labels
            .iter()
            .all(|r| r.matches(labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str)))
            && self
                .fields
                .iter()
                .all(|r| r.matches(Some(field_value(res, obj, &r.key).as_str())))
    }
}

/// Splits on commas outside parentheses, dropping empty terms.
fn split_terms(s: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0i32;
    let mut start = 0;
    let mut terms = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty())
}

fn invalid(kind: &str, term: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: invalid {kind} selector {term:?}"
    ))
}

fn parse_label_term(term: &str) -> Result<Requirement, ApiError> {
    let set = |key: &str, rest: &str, notin: bool| -> Result<Requirement, ApiError> {
        let values = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| invalid("label", term))?
            .split(',')
            .map(|v| v.trim().to_string())
            .collect();
        let op = if notin {
            Op::NotIn(values)
        } else {
            Op::In(values)
        };
        Ok(Requirement {
            key: key.trim().to_string(),
            op,
        })
    };
    if let Some((k, rest)) = term.split_once(" notin ") {
        return set(k, rest, true);
    }
    if let Some((k, rest)) = term.split_once(" in ") {
        return set(k, rest, false);
    }
    let req = if let Some(key) = term.strip_prefix('!') {
        Requirement {
            key: key.trim().to_string(),
            op: Op::NotExists,
        }
    } else if let Some((k, v)) = split_op(term) {
        k.map(|key| Requirement { key, op: v })
            .ok_or_else(|| invalid("label", term))?
    } else {
        Requirement {
            key: term.to_string(),
            op: Op::Exists,
        }
    };
    if req.key.is_empty() || req.key.contains(char::is_whitespace) {
        return Err(invalid("label", term));
    }
    Ok(req)
}

/// Splits `k!=v`, `k==v` or `k=v`.
fn split_op(term: &str) -> Option<(Option<String>, Op)> {
    let (k, op) = if let Some((k, v)) = term.split_once("!=") {
        (k, Op::NotEq(v.trim().to_string()))
    } else if let Some((k, v)) = term.split_once("==") {
        (k, Op::Eq(v.trim().to_string()))
    } else if let Some((k, v)) = term.split_once('=') {
        (k, Op::Eq(v.trim().to_string()))
    } else {
        return None;
    };
    let k = k.trim();
    Some(((!k.is_empty()).then(|| k.to_string()), op))
}

fn parse_field_term(res: ResourceId, term: &str) -> Result<Requirement, ApiError> {
    let Some((Some(key), op)) = split_op(term) else {
        return Err(invalid("field", term));
    };
    if !field_supported(res, &key) {
        return Err(ApiError::bad_request(format!(
            "field label not supported: {key}"
        )));
    }
    Ok(Requirement { key, op })
}

fn field_supported(res: ResourceId, key: &str) -> bool {
    if matches!(key, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match RESOURCES[res].kind {
        "Pod" => matches!(
            key,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "Node" => key == "spec.unschedulable",
        "Namespace" => key == "status.phase",
        "Event" => {
            key.starts_with("involvedObject.")
                || key.starts_with("regarding.")
                || matches!(
                    key,
                    "reason" | "reportingController" | "reportingComponent" | "source" | "type"
                )
        }
        _ => false,
    }
}

/// A field's value as the real server compares it: missing strings are empty, missing booleans
/// are `false`.
fn field_value(res: ResourceId, obj: &Value, key: &str) -> String {
    let pointer = format!("/{}", key.replace('.', "/"));
    let value = match (RESOURCES[res].kind, key) {
        ("Event", "source") => obj.pointer("/source/component"),
        _ => obj.pointer(&pointer),
    };
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        None if matches!(key, "spec.unschedulable" | "spec.hostNetwork") => "false".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NODES: ResourceId = 0;
    const PODS: ResourceId = 1;

    #[test]
    fn label_selectors() {
        let obj = json!({"metadata": {"name": "n", "labels": {"role": "worker", "zone": "a"}}});
        let yes = [
            "",
            "role=worker",
            "role==worker,zone=a",
            "role!=master",
            "zone",
            "!gpu",
            "zone in (a, b)",
            "zone notin (c)",
            "gpu notin (x)",
        ];
        for s in yes {
            assert!(
                Selectors::parse(NODES, s, "").unwrap().matches(NODES, &obj),
                "{s}"
            );
        }
        for s in [
            "role=master",
            "gpu",
            "!zone",
            "zone in (b,c)",
            "gpu=x",
            "role=worker,zone=b",
        ] {
            assert!(
                !Selectors::parse(NODES, s, "").unwrap().matches(NODES, &obj),
                "{s}"
            );
        }
        for s in ["=x", "zone in a", "a b=c"] {
            assert_eq!(Selectors::parse(NODES, s, "").unwrap_err().code, 400, "{s}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}});
        let sel = |f: &str| Selectors::parse(PODS, "", f).unwrap().matches(PODS, &pod);
        assert!(sel("spec.nodeName=n1"));
        assert!(sel("metadata.name==p,metadata.namespace=ns"));
        assert!(sel("spec.nodeName!=n2"));
        assert!(!sel("spec.nodeName=n2"));
        assert!(sel("status.phase="));
        let err = Selectors::parse(PODS, "", "spec.other=1").unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.other");
        let node = json!({"metadata": {"name": "n"}});
        let s = Selectors::parse(NODES, "", "spec.unschedulable=false").unwrap();
        assert!(s.matches(NODES, &node));
        assert!(Selectors::parse(NODES, "", "spec.nodeName=x").is_err());
    }
}
