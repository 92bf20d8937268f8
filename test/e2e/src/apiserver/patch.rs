//! The three patch types of the Kubernetes API on JSON values.
//!
//! - JSON merge patch (RFC 7386), `application/merge-patch+json`.
//! - Strategic merge patch, `application/strategic-merge-patch+json`: a merge patch except for the
//!   lists Kubernetes declares with a merge strategy. Simplification: those lists are known by
//!   their path (see [`list_strategy`]) rather than from the OpenAPI schema, which is exact for
//!   the Node, Pod and Event fields this project uses. Supported directives: `$patch: replace` and
//!   `$patch: delete` (maps and keyed list items), `$deleteFromPrimitiveList/<field>`; the
//!   ordering directives `$setElementOrder/<field>` and `$retainKeys` are accepted and ignored.
//! - JSON patch (RFC 6902), `application/json-patch+json`, through the `json-patch` crate.
//!
//! Server-side apply (`application/apply-patch+yaml`) is not supported (415).

use serde_json::{Map, Value};

use super::store::ApiError;

/// A supported patch content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json`
    Json,
}

impl PatchType {
    /// The patch type of a request's content type, if supported.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Applies `patch` of type `kind` to `target`.
pub fn apply(kind: PatchType, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("merge patch is not a JSON object"));
            }
            merge(target, patch);
            Ok(())
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch is not a JSON object",
                ));
            }
            strategic(target, patch, "");
            Ok(())
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid json patch: {e}")))?;
            json_patch::patch(target, &ops)
                .map_err(|e| ApiError::new(422, "Invalid", format!("json patch failed: {e}")))
        }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// How a list is merged by a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced as a whole (the default, as in a merge patch).
    Replace,
    /// A list of maps merged item by item on the given key.
    MergeOnKey(&'static str),
    /// A list of scalars merged as a set union.
    MergePrimitives,
}

/// The merge strategy of the list at `path` (dot-separated field names, list items add nothing),
/// for the Node, Pod and Event fields declared with `patchStrategy: merge` in Kubernetes.
pub fn list_strategy(path: &str) -> ListStrategy {
    use ListStrategy::*;
    match path {
        "metadata.ownerReferences" => MergeOnKey("uid"),
        "metadata.finalizers" | "spec.podCIDRs" => MergePrimitives,
        "status.addresses" | "status.conditions" => MergeOnKey("type"),
        "status.podIPs" | "status.hostIPs" | "spec.hostAliases" => MergeOnKey("ip"),
        "spec.containers"
        | "spec.initContainers"
        | "spec.ephemeralContainers"
        | "spec.volumes"
        | "spec.imagePullSecrets"
        | "spec.containers.env"
        | "spec.initContainers.env"
        | "spec.resourceClaims" => MergeOnKey("name"),
        "spec.containers.ports" | "spec.initContainers.ports" => MergeOnKey("containerPort"),
        "spec.containers.volumeMounts" | "spec.initContainers.volumeMounts" => {
            MergeOnKey("mountPath")
        }
        "spec.containers.volumeDevices" | "spec.initContainers.volumeDevices" => {
            MergeOnKey("devicePath")
        }
        _ => Replace,
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Strategic merge of map `patch` into `target` at `path`.
fn strategic(target: &mut Value, patch: &Value, path: &str) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut rest = p.clone();
            rest.remove("$patch");
            *target = Value::Object(rest);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(gone)) = (t.get_mut(field), v.as_array()) {
                items.retain(|i| !gone.contains(i));
            }
            continue;
        }
        let sub = child(path, k);
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                merge_list(slot, items, &sub);
            }
            Value::Object(_) => {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                strategic(slot, v, &sub);
                if slot.is_null() {
                    t.remove(k);
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(target: &mut Value, items: &[Value], path: &str) {
    // A `{"$patch": "replace"}` item replaces the whole list with the other items.
    let replace = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let strategy = if replace {
        ListStrategy::Replace
    } else {
        list_strategy(path)
    };
    let plain: Vec<Value> = items
        .iter()
        .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("replace"))
        .cloned()
        .collect();
    match (strategy, target.as_array_mut()) {
        (ListStrategy::MergePrimitives, Some(existing)) => {
            for item in plain {
                if !existing.contains(&item) {
                    existing.push(item);
                }
            }
        }
        (ListStrategy::MergeOnKey(key), Some(existing)) => {
            for item in plain {
                let id = item.get(key).cloned();
                let pos = id
                    .as_ref()
                    .and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(pos), true) => {
                        existing.remove(pos);
                    }
                    (None, true) => {}
                    (Some(pos), false) => strategic(&mut existing[pos], &item, path),
                    (None, false) => {
                        let mut fresh = Value::Null;
                        strategic(&mut fresh, &item, path);
                        existing.push(fresh);
                    }
                }
            }
        }
        _ => *target = Value::Array(plain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge(&mut t, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_merges_keyed_and_primitive_lists() {
        let mut node = json!({
            "spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "a"}]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.0.2.1"},
                {"type": "Hostname", "address": "n1"}
            ]}
        });
        let patch = json!({
            "spec": {"podCIDRs": ["fd00::/64"], "taints": [{"key": "b"}]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.0.2.9"},
                {"type": "Hostname", "$patch": "delete"},
                {"type": "ExternalIP", "address": "198.51.100.1"}
            ], "$setElementOrder/addresses": [{"type": "InternalIP"}]}
        });
        apply(PatchType::Strategic, &mut node, &patch).unwrap();
        assert_eq!(
            node,
            json!({
                "spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"], "taints": [{"key": "b"}]},
                "status": {"addresses": [
                    {"type": "InternalIP", "address": "192.0.2.9"},
                    {"type": "ExternalIP", "address": "198.51.100.1"}
                ]}
            })
        );
    }

    #[test]
    fn strategic_directives_replace_and_delete() {
        let mut t = json!({"spec": {"podCIDRs": ["a", "b"]}, "metadata": {"labels": {"x": "1"}}});
        let patch = json!({
            "spec": {"podCIDRs": [{"$patch": "replace"}, "c"]},
            "metadata": {"labels": {"$patch": "replace", "y": "2"}}
        });
        apply(PatchType::Strategic, &mut t, &patch).unwrap();
        assert_eq!(
            t,
            json!({"spec": {"podCIDRs": ["c"]}, "metadata": {"labels": {"y": "2"}}})
        );
        let patch = json!({"$deleteFromPrimitiveList/finalizers": ["f1"], "finalizers": null});
        let mut m = json!({"finalizers": ["f1", "f2"]});
        apply(
            PatchType::Strategic,
            &mut m,
            &json!({"$deleteFromPrimitiveList/finalizers": ["f1"]}),
        )
        .unwrap();
        assert_eq!(m, json!({"finalizers": ["f2"]}));
        apply(PatchType::Strategic, &mut m, &patch).unwrap();
        assert_eq!(m, json!({}));
        apply(
            PatchType::Strategic,
            &mut t,
            &json!({"metadata": {"$patch": "delete"}}),
        )
        .unwrap();
        assert_eq!(t, json!({"spec": {"podCIDRs": ["c"]}}));
    }

    #[test]
    fn json_patch_applies_and_reports_failures() {
        let mut t = json!({"metadata": {"annotations": {"a": "1"}}});
        let ops = json!([
            {"op": "add", "path": "/metadata/annotations/b", "value": "2"},
            {"op": "remove", "path": "/metadata/annotations/a"}
        ]);
        apply(PatchType::Json, &mut t, &ops).unwrap();
        assert_eq!(t, json!({"metadata": {"annotations": {"b": "2"}}}));
        let bad = json!([{"op": "test", "path": "/metadata/annotations/b", "value": "3"}]);
        assert_eq!(apply(PatchType::Json, &mut t, &bad).unwrap_err().code, 422);
        assert_eq!(
            apply(PatchType::Json, &mut t, &json!({"op": 1}))
                .unwrap_err()
                .code,
            400
        );
    }
}
