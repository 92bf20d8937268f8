//! The object store behind the test API server: one global resourceVersion counter (like etcd's
//! revision), the objects by key, and a bounded history of changes that watches replay.
//!
//! Everything here is synchronous and pure over JSON values; the HTTP layer and the Rust helpers
//! lock the store, call into it, and wake watchers with the new resourceVersion.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::patch::{self, PatchType};
use super::selector::Selectors;

/// A resource type the server serves.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural name used in paths.
    pub plural: &'static str,
    /// Kind of its objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether it has a status subresource: then updates of the main resource keep the old
    /// status and updates of `/status` change only the status, as on a real server.
    pub has_status: bool,
}

impl Resource {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every resource type served.
pub const RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        has_status: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        has_status: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        has_status: false,
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        has_status: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        has_status: true,
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        namespaced: true,
        has_status: false,
    },
];

/// Index into [`RESOURCES`].
pub type ResourceId = usize;

/// Finds a served resource by group, version and plural.
pub fn find_resource(group: &str, version: &str, plural: &str) -> Option<ResourceId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// A failed request, rendered as a Kubernetes `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (404, 409, 410, ...).
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, `Expired`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.plural),
        )
    }

    pub(crate) fn conflict(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                res.plural
            ),
        )
    }

    pub(crate) fn expired(rv: u64, floor: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({floor})"),
        )
    }

    /// The `Status` object a real server sends for this error.
    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// What a change did, as a watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Object created.
    Added,
    /// Object updated.
    Modified,
    /// Object deleted.
    Deleted,
}

/// One entry of the history: the object before and after a change at resourceVersion `rv`.
#[derive(Debug, Clone)]
pub struct Change {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Resource type of the object.
    pub res: ResourceId,
    /// What happened.
    pub kind: ChangeType,
    /// The object before the change (none for an addition).
    pub old: Option<Value>,
    /// The object after the change; for a deletion its last state with the deletion's version.
    pub new: Value,
}

type Key = (ResourceId, String, String);

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything but the status (of resources with a status subresource).
    Main,
    /// The `/status` subresource: only the status.
    Status,
    /// Everything: the store helpers acting for the kubelet and controllers.
    All,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    history_limit: usize,
    /// A watch may start from any version >= floor: every change after `floor` is in `history`.
    floor: u64,
    uid_seed: u64,
    uid_counter: u64,
}

impl Store {
    /// An empty store keeping at most `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            floor: 1,
            uid_seed: seed,
            uid_counter: 0,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch can still start from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Objects of `res` (in `ns` if given) matching `sel`, in key order.
    pub fn list(&self, res: ResourceId, ns: Option<&str>, sel: &Selectors) -> Vec<Value> {
        self.objects
            .range((res, String::new(), String::new())..)
            .take_while(|((r, _, _), _)| *r == res)
            .filter(|((_, o_ns, _), _)| ns.is_none_or(|ns| ns == o_ns))
            .filter(|(_, obj)| sel.matches(res, obj))
            .map(|(_, obj)| obj.clone())
            .collect()
    }

    /// One object.
    pub fn get(&self, res: ResourceId, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(res, ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&RESOURCES[res], name))
    }

    /// Creates an object: fills kind, apiVersion, namespace, uid, creationTimestamp and
    /// resourceVersion; a name may be generated from `metadata.generateName`.
    pub fn create(&mut self, res: ResourceId, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let r = &RESOURCES[res];
        check_type(r, &obj)?;
        let meta = metadata_mut(&mut obj)?;
        if r.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the provided object ({body_ns}) does not match the \
                         namespace sent on the request ({ns})"
                    )))
                }
                _ => {
                    meta.insert("namespace".into(), ns.into());
                }
            }
        } else {
            meta.remove("namespace");
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if prefix.is_empty() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} is invalid: metadata.name: name or generateName is required",
                        r.kind
                    ),
                ));
            }
            self.uid_counter += 1;
            name = format!("{prefix}{:05x}", self.uid_counter & 0xfffff);
            meta.insert("name".into(), name.clone().into());
        }
        let key = (
            res,
            if r.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name.clone(),
        );
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", r.plural),
            ));
        }
        let uid = self.next_uid();
        let meta = metadata_mut(&mut obj)?;
        meta.insert("uid".into(), uid.into());
        meta.insert("creationTimestamp".into(), now_rfc3339().into());
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        let obj = set_type(r, obj);
        Ok(self.commit(key, ChangeType::Added, None, obj))
    }

    /// Replaces an object (PUT). A non-empty `metadata.resourceVersion` must equal the current one,
    /// or the update is refused with 409 Conflict.
    pub fn replace(
        &mut self,
        res: ResourceId,
        ns: &str,
        name: &str,
        obj: Value,
        scope: Scope,
    ) -> Result<Value, ApiError> {
        let r = &RESOURCES[res];
        let key = (res, ns.to_string(), name.to_string());
        let old = self.get(res, ns, name)?;
        check_type(r, &obj)?;
        check_precondition(r, name, &old, &obj)?;
        let new = self.finish_update(r, name, &old, obj, scope)?;
        Ok(self.commit_update(key, old, new))
    }

    /// Patches an object with one of the supported patch types.
    pub fn patch(
        &mut self,
        res: ResourceId,
        ns: &str,
        name: &str,
        kind: PatchType,
        body: &Value,
        scope: Scope,
    ) -> Result<Value, ApiError> {
        let r = &RESOURCES[res];
        let key = (res, ns.to_string(), name.to_string());
        let old = self.get(res, ns, name)?;
        if kind != PatchType::Json {
            check_precondition(r, name, &old, body)?;
        }
        let mut obj = old.clone();
        patch::apply(kind, &mut obj, body)?;
        if kind == PatchType::Json {
            check_precondition(r, name, &old, &obj)?;
        }
        check_type(r, &obj)?;
        let new = self.finish_update(r, name, &old, obj, scope)?;
        Ok(self.commit_update(key, old, new))
    }

    /// Patches the whole object, status included, with a JSON merge patch: what the store
    /// helpers do on behalf of the kubelet or controllers.
    pub fn patch_all(
        &mut self,
        res: ResourceId,
        ns: &str,
        name: &str,
        merge_patch: &Value,
    ) -> Result<Value, ApiError> {
        let r = &RESOURCES[res];
        let key = (res, ns.to_string(), name.to_string());
        let old = self.get(res, ns, name)?;
        let mut obj = old.clone();
        patch::apply(PatchType::Merge, &mut obj, merge_patch)?;
        let new = self.finish_update(r, name, &old, obj, Scope::All)?;
        Ok(self.commit_update(key, old, new))
    }

    /// Deletes an object at once (no graceful deletion, no finalizers) and returns its last state.
    pub fn delete(&mut self, res: ResourceId, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = (res, ns.to_string(), name.to_string());
        let Some(old) = self.objects.remove(&key) else {
            return Err(ApiError::not_found(&RESOURCES[res], name));
        };
        self.rv += 1;
        let mut last = old.clone();
        set_rv(&mut last, self.rv);
        self.record(Change {
            rv: self.rv,
            res,
            kind: ChangeType::Deleted,
            old: Some(old),
            new: last.clone(),
        });
        Ok(last)
    }

    /// Changes after `since`, or 410 Expired if some of them were already dropped.
    pub fn changes_since(&self, since: u64) -> Result<impl Iterator<Item = &Change>, ApiError> {
        if since < self.floor {
            return Err(ApiError::expired(since, self.floor));
        }
        Ok(self.history.iter().filter(move |c| c.rv > since))
    }

    /// Drops the whole history and moves the floor past every version handed out so far, like an
    /// etcd compaction plus a watch-cache reset: every open watch ends with 410 Expired at its next
    /// wake-up, and resuming from any earlier version gets 410 too, so clients must relist.
    pub fn compact(&mut self) {
        self.history.clear();
        self.rv += 1;
        self.floor = self.rv;
    }

    fn finish_update(
        &self,
        r: &Resource,
        name: &str,
        old: &Value,
        mut obj: Value,
        scope: Scope,
    ) -> Result<Value, ApiError> {
        let new_name = obj.pointer("/metadata/name").and_then(Value::as_str);
        if new_name.is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                new_name.unwrap_or_default()
            )));
        }
        if r.has_status && scope != Scope::All {
            let (from, mut into) = if scope == Scope::Status {
                (&obj, old.clone())
            } else {
                (old, obj.clone())
            };
            match (from.get("status").cloned(), into.as_object_mut()) {
                (Some(status), Some(o)) => {
                    o.insert("status".into(), status);
                }
                (None, Some(o)) => {
                    o.remove("status");
                }
                _ => {}
            }
            obj = into;
        }
        let meta = metadata_mut(&mut obj)?;
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            match old.pointer(&format!("/metadata/{field}")) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        Ok(set_type(r, obj))
    }

    fn commit_update(&mut self, key: Key, old: Value, mut new: Value) -> Value {
        // A no-op update changes nothing and produces no event, as on a real server.
        let old_rv = old.pointer("/metadata/resourceVersion").cloned();
        if let (Some(rv), Some(meta)) = (
            old_rv,
            new.get_mut("metadata").and_then(Value::as_object_mut),
        ) {
            meta.insert("resourceVersion".into(), rv);
        }
        if new == old {
            return old;
        }
        self.commit(key, ChangeType::Modified, Some(old), new)
    }

    fn commit(&mut self, key: Key, kind: ChangeType, old: Option<Value>, mut obj: Value) -> Value {
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        self.objects.insert(key.clone(), obj.clone());
        self.record(Change {
            rv: self.rv,
            res: key.0,
            kind,
            old,
            new: obj.clone(),
        });
        obj
    }

    fn record(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.rv;
            }
        }
    }

    fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        let a = self.uid_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.uid_counter;
        let b = self.uid_counter.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ self.uid_seed;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("object is not a JSON object"))?;
    o.entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata is not a JSON object"))
}

fn check_type(r: &Resource, obj: &Value) -> Result<(), ApiError> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(r.kind);
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| r.api_version());
    if kind != r.kind || api_version != r.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) and kind ({kind}) do not match the \
             resource {}",
            r.plural
        )));
    }
    Ok(())
}

fn check_precondition(r: &Resource, name: &str, old: &Value, obj: &Value) -> Result<(), ApiError> {
    let wanted = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    let current = old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    match wanted {
        Some(w) if !w.is_empty() && Some(w) != current => Err(ApiError::conflict(r, name)),
        _ => Ok(()),
    }
}

fn set_type(r: &Resource, mut obj: Value) -> Value {
    if let Some(o) = obj.as_object_mut() {
        o.insert("kind".into(), r.kind.into());
        o.insert("apiVersion".into(), r.api_version().into());
    }
    obj
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), rv.to_string().into());
    }
}

/// The current UTC time as RFC 3339 with second precision, as Kubernetes timestamps are.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for every date after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: ResourceId = 0;

    fn node(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"a": "b"}}, "spec": {}})
    }

    #[test]
    fn versions_grow_and_history_replays_changes() {
        let mut s = Store::new(10);
        let start = s.resource_version();
        let a = s.create(NODES, "", node("a")).unwrap();
        assert_eq!(a["kind"], "Node");
        assert_eq!(a["apiVersion"], "v1");
        assert!(a["metadata"]["uid"].as_str().unwrap().len() == 36);
        s.patch(
            NODES,
            "",
            "a",
            PatchType::Merge,
            &json!({"spec": {"podCIDR": "10.0.0.0/24"}}),
            Scope::Main,
        )
        .unwrap();
        s.delete(NODES, "", "a").unwrap();
        let kinds: Vec<_> = s.changes_since(start).unwrap().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [ChangeType::Added, ChangeType::Modified, ChangeType::Deleted]
        );
        assert_eq!(s.resource_version(), start + 3);
    }

    #[test]
    fn bounded_history_expires_old_versions() {
        let mut s = Store::new(2);
        let start = s.resource_version();
        for n in ["a", "b", "c"] {
            s.create(NODES, "", node(n)).unwrap();
        }
        assert_eq!(s.changes_since(start).err().unwrap().code, 410);
        assert_eq!(s.changes_since(start + 1).unwrap().count(), 2);
        s.compact();
        assert_eq!(s.changes_since(start + 3).err().unwrap().code, 410);
        assert_eq!(s.changes_since(s.resource_version()).unwrap().count(), 0);
    }

    #[test]
    fn stale_update_conflicts_and_no_op_keeps_version() {
        let mut s = Store::new(10);
        let a = s.create(NODES, "", node("a")).unwrap();
        let mut stale = a.clone();
        s.patch(
            NODES,
            "",
            "a",
            PatchType::Merge,
            &json!({"metadata": {"labels": {"x": "y"}}}),
            Scope::Main,
        )
        .unwrap();
        stale["spec"]["podCIDR"] = "10.0.0.0/24".into();
        assert_eq!(
            s.replace(NODES, "", "a", stale, Scope::Main)
                .unwrap_err()
                .code,
            409
        );
        let rv = s.resource_version();
        let same = s.get(NODES, "", "a").unwrap();
        assert_eq!(
            s.replace(NODES, "", "a", same, Scope::Main).unwrap()["metadata"]["resourceVersion"],
            rv.to_string()
        );
        assert_eq!(s.resource_version(), rv);
    }

    #[test]
    fn status_subresource_splits_updates() {
        let mut s = Store::new(10);
        let mut n = node("a");
        n["status"] = json!({"addresses": []});
        s.create(NODES, "", n).unwrap();
        let main = json!({"spec": {"unschedulable": true}, "status": {"phase": "x"}});
        let got = s
            .patch(NODES, "", "a", PatchType::Merge, &main, Scope::Main)
            .unwrap();
        assert_eq!(got["spec"]["unschedulable"], true);
        assert_eq!(got["status"], json!({"addresses": []}));
        let status = json!({"spec": {"unschedulable": false}, "status": {"phase": "x"}});
        let got = s
            .patch(NODES, "", "a", PatchType::Merge, &status, Scope::Status)
            .unwrap();
        assert_eq!(got["spec"]["unschedulable"], true);
        assert_eq!(got["status"]["phase"], "x");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
