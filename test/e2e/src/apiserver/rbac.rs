//! Authentication and RBAC authorization for the test API server, as kube-apiserver does them
//! with bearer tokens and the RBAC authorizer:
//!
//! - a bearer token maps to a user (name and groups); no token is `system:anonymous` in
//!   `system:unauthenticated`; an unknown token is 401 Unauthorized;
//! - the group `system:masters` may do anything (the test harness's admin token);
//! - everyone else gets what the ClusterRoles / Roles and their bindings grant, parsed from
//!   Kubernetes manifests (build/yamls/weft.yml by default): verbs, apiGroups, resources with
//!   subresources (`nodes/status`), resourceNames, nonResourceURLs, and `*` wildcards; plus the
//!   bootstrap policy every real cluster has for discovery (`system:discovery`,
//!   `system:public-info-viewer` bound to `system:authenticated`);
//! - anything not granted is 403 Forbidden with the real server's Status message.
//!
//! Simplifications: no aggregated ClusterRoles (aggregationRule), no impersonation; a
//! ServiceAccount token is a random string the test hands out, not a signed JWT.

use std::collections::HashMap;

use serde_json::Value;

/// The group that bypasses authorization, as on a real cluster.
pub const MASTERS: &str = "system:masters";

/// An authenticated (or anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:serviceaccount:NS:NAME`, `system:anonymous`, or the admin's name.
    pub name: String,
    /// Groups, `system:authenticated` / `system:unauthenticated` included.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The user a ServiceAccount's token authenticates as.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    /// A cluster admin (`system:masters`).
    pub fn admin() -> Self {
        Self {
            name: "weft-test-admin".into(),
            groups: vec![MASTERS.into(), "system:authenticated".into()],
        }
    }

    /// A request without credentials.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

/// What a request asks to do, in the authorizer's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    /// A resource request.
    Resource {
        /// get, list, watch, create, update, patch, delete, deletecollection.
        verb: String,
        /// API group, empty for core.
        group: String,
        /// Plural resource name.
        resource: String,
        /// `status` for `/status`, else empty.
        subresource: String,
        /// Namespace, empty for cluster-scoped requests.
        namespace: String,
        /// Object name, empty for collections.
        name: String,
    },
    /// A non-resource request (`/version`, `/api`, ...).
    NonResource {
        /// get, post, ... (the HTTP method, lower-case).
        verb: String,
        /// The path.
        path: String,
    },
}

impl Attributes {
    /// The 403 message kube-apiserver gives for this request.
    pub fn forbidden_message(&self, user: &UserInfo) -> String {
        match self {
            Attributes::Resource {
                verb,
                group,
                resource,
                subresource,
                namespace,
                name,
            } => {
                let mut res = resource.clone();
                if !subresource.is_empty() {
                    res = format!("{res}/{subresource}");
                }
                let named = if name.is_empty() {
                    String::new()
                } else {
                    format!(" {name:?}")
                };
                let scope = if namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace {namespace:?}")
                };
                format!(
                    "{res}{named} is forbidden: User {:?} cannot {verb} resource {resource:?}{} in API group {group:?} {scope}",
                    user.name,
                    if subresource.is_empty() {
                        String::new()
                    } else {
                        format!("/{subresource}")
                    }
                )
            }
            Attributes::NonResource { verb, path } => format!(
                "forbidden: User {:?} cannot {verb} path {path:?}",
                user.name
            ),
        }
    }
}

/// One rule of a (Cluster)Role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    fn allows(&self, a: &Attributes) -> bool {
        let has = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        match a {
            Attributes::Resource {
                verb,
                group,
                resource,
                subresource,
                name,
                ..
            } => {
                let full = if subresource.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}/{subresource}")
                };
                let resource_ok = self.resources.iter().any(|r| {
                    r == "*"
                        || *r == full
                        || (subresource.is_empty() && r == resource)
                        || (!subresource.is_empty() && *r == format!("*/{subresource}"))
                        || (!subresource.is_empty() && *r == format!("{resource}/*"))
                });
                has(&self.verbs, verb)
                    && has(&self.api_groups, group)
                    && resource_ok
                    && (self.resource_names.is_empty()
                        || (!name.is_empty() && self.resource_names.iter().any(|n| n == name)))
            }
            Attributes::NonResource { verb, path } => {
                has(&self.verbs, verb)
                    && self.non_resource_urls.iter().any(|u| {
                        u == "*"
                            || u == path
                            || u.strip_suffix('*')
                                .is_some_and(|prefix| path.starts_with(prefix))
                    })
            }
        }
    }

    fn from_json(v: &Value) -> Self {
        let list = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            verbs: list("verbs"),
            api_groups: list("apiGroups"),
            resources: list("resources"),
            resource_names: list("resourceNames"),
            non_resource_urls: list("nonResourceURLs"),
        }
    }
}

/// A subject of a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

impl Subject {
    fn matches(&self, user: &UserInfo, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => self.name == user.name,
            "Group" => user.groups.contains(&self.name),
            "ServiceAccount" => {
                // A RoleBinding's ServiceAccount subject without a namespace means its own.
                let ns = if self.namespace.is_empty() {
                    binding_namespace
                } else {
                    &self.namespace
                };
                user.name == format!("system:serviceaccount:{ns}:{}", self.name)
            }
            _ => false,
        }
    }
}

/// A ClusterRoleBinding or RoleBinding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    /// Empty for a ClusterRoleBinding.
    namespace: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

/// Errors reading RBAC objects from manifests.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    #[error("cannot parse manifest document {index}: {source}")]
    Yaml {
        index: usize,
        source: serde_yaml::Error,
    },
    #[error("{kind} {name:?} has no {field}")]
    Missing {
        kind: String,
        name: String,
        field: &'static str,
    },
}

/// The roles and bindings a server authorizes with.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    bindings: Vec<Binding>,
}

/// The project's manifest, read at build time.
pub const WEFT_MANIFEST: &str = include_str!("../../../../build/yamls/weft.yml");

/// The ServiceAccount (namespace, name) the DaemonSet in build/yamls/weft.yml runs the agent
/// as: its `serviceAccountName` in its namespace.
pub fn weft_agent_service_account() -> (String, String) {
    use serde::Deserialize;
    for doc in serde_yaml::Deserializer::from_str(WEFT_MANIFEST) {
        let Ok(v) = Value::deserialize(doc) else {
            continue;
        };
        if v["kind"] == "DaemonSet" {
            let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
            if let (Some(ns), Some(sa)) = (
                text("/metadata/namespace"),
                text("/spec/template/spec/serviceAccountName"),
            ) {
                return (ns, sa);
            }
        }
    }
    panic!("build/yamls/weft.yml has no DaemonSet with a serviceAccountName")
}

impl Rbac {
    /// The bootstrap discovery policy alone (every authenticated user may read `/version`,
    /// `/api`, `/apis` and discovery documents; everyone may read `/version` and health).
    pub fn bootstrap() -> Self {
        let mut rbac = Self::default();
        let rule = |verbs: &[&str], urls: &[&str]| PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            non_resource_urls: urls.iter().map(|s| s.to_string()).collect(),
            ..PolicyRule::default()
        };
        rbac.cluster_roles.insert(
            "system:discovery".into(),
            vec![rule(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        );
        rbac.cluster_roles.insert(
            "system:public-info-viewer".into(),
            vec![rule(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        );
        for (role, group) in [
            ("system:discovery", "system:authenticated"),
            ("system:public-info-viewer", "system:authenticated"),
            ("system:public-info-viewer", "system:unauthenticated"),
        ] {
            rbac.bindings.push(Binding {
                namespace: String::new(),
                role_kind: "ClusterRole".into(),
                role_name: role.into(),
                subjects: vec![Subject {
                    kind: "Group".into(),
                    name: group.into(),
                    namespace: String::new(),
                }],
            });
        }
        rbac
    }

    /// The bootstrap policy plus the ClusterRoles, Roles and bindings in build/yamls/weft.yml.
    pub fn weft_manifest() -> Self {
        let mut rbac = Self::bootstrap();
        rbac.add_manifests(WEFT_MANIFEST)
            .expect("build/yamls/weft.yml holds valid RBAC objects");
        rbac
    }

    /// Adds the RBAC objects of a multi-document YAML manifest (other kinds are skipped).
    pub fn add_manifests(&mut self, yaml: &str) -> Result<(), RbacError> {
        use serde::Deserialize;
        for (index, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            let v = Value::deserialize(doc).map_err(|source| RbacError::Yaml { index, source })?;
            self.add_object(&v)?;
        }
        Ok(())
    }

    /// Adds one RBAC object (other kinds are skipped).
    pub fn add_object(&mut self, v: &Value) -> Result<(), RbacError> {
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
        let text = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let name = text("/metadata/name");
        let namespace = text("/metadata/namespace");
        let missing = |field| RbacError::Missing {
            kind: kind.to_string(),
            name: name.clone(),
            field,
        };
        match kind {
            "ClusterRole" | "Role" => {
                let rules = v
                    .get("rules")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(PolicyRule::from_json).collect())
                    .unwrap_or_default();
                if kind == "ClusterRole" {
                    self.cluster_roles.insert(name, rules);
                } else {
                    self.roles.insert((namespace, name), rules);
                }
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                let role_kind = text("/roleRef/kind");
                let role_name = text("/roleRef/name");
                if role_kind.is_empty() || role_name.is_empty() {
                    return Err(missing("roleRef"));
                }
                let subjects = v
                    .get("subjects")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|s| Subject {
                                kind: s["kind"].as_str().unwrap_or_default().into(),
                                name: s["name"].as_str().unwrap_or_default().into(),
                                namespace: s["namespace"].as_str().unwrap_or_default().into(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.bindings.push(Binding {
                    namespace: if kind == "RoleBinding" {
                        namespace
                    } else {
                        String::new()
                    },
                    role_kind,
                    role_name,
                    subjects,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether `user` may do `attrs`.
    pub fn allows(&self, user: &UserInfo, attrs: &Attributes) -> bool {
        if user.groups.iter().any(|g| g == MASTERS) {
            return true;
        }
        let request_ns = match attrs {
            Attributes::Resource { namespace, .. } => namespace.as_str(),
            Attributes::NonResource { .. } => "",
        };
        self.bindings.iter().any(|b| {
            // A RoleBinding grants only inside its namespace, and never non-resource URLs.
            if !b.namespace.is_empty()
                && (b.namespace != request_ns || matches!(attrs, Attributes::NonResource { .. }))
            {
                return false;
            }
            if !b.subjects.iter().any(|s| s.matches(user, &b.namespace)) {
                return false;
            }
            let rules = match b.role_kind.as_str() {
                "ClusterRole" => self.cluster_roles.get(&b.role_name),
                "Role" => self.roles.get(&(b.namespace.clone(), b.role_name.clone())),
                _ => None,
            };
            rules.is_some_and(|rules| rules.iter().any(|r| r.allows(attrs)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_agent_gets_what_weft_yml_grants_and_nothing_else() {
        let rbac = Rbac::weft_manifest();
        let (ns, sa) = weft_agent_service_account();
        assert_eq!((ns.as_str(), sa.as_str()), ("weft-system", "weft-agent"));
        let agent = UserInfo::service_account(&ns, &sa);
        for ok in [
            res("list", "", "nodes", "", "", ""),
            res("watch", "", "nodes", "", "", ""),
            res("patch", "", "nodes", "", "", "node-1"),
            res("create", "events.k8s.io", "events", "", "default", ""),
        ] {
            assert!(rbac.allows(&agent, &ok), "{ok:?} should be allowed");
        }
        for denied in [
            res("delete", "", "nodes", "", "", "node-1"),
            res("patch", "", "nodes", "status", "", "node-1"),
            res("create", "", "events", "", "default", ""),
            res("get", "", "secrets", "", "kube-system", "x"),
            res("update", "", "nodes", "", "", "node-1"),
        ] {
            assert!(!rbac.allows(&agent, &denied), "{denied:?} should be denied");
        }
        let discovery = Attributes::NonResource {
            verb: "get".into(),
            path: "/apis/events.k8s.io/v1".into(),
        };
        assert!(rbac.allows(&agent, &discovery));
        assert!(!rbac.allows(&UserInfo::anonymous(), &discovery));
        assert!(!rbac.allows(
            &UserInfo::service_account("default", "weft-agent"),
            &res("list", "", "nodes", "", "", "")
        ));
        assert!(rbac.allows(&UserInfo::admin(), &res("delete", "", "nodes", "", "", "n")));
    }

    #[test]
    fn rules_match_subresources_resource_names_and_role_bindings_by_namespace() {
        let mut rbac = Rbac::default();
        rbac.add_manifests(
            r#"
kind: Role
metadata: {name: r, namespace: ns1}
rules:
  - apiGroups: [""]
    resources: ["nodes/status", "pods"]
    resourceNames: ["a"]
    verbs: ["get", "patch"]
---
kind: RoleBinding
metadata: {name: rb, namespace: ns1}
roleRef: {kind: Role, name: r}
subjects: [{kind: ServiceAccount, name: sa}]
"#,
        )
        .unwrap();
        let sa = UserInfo::service_account("ns1", "sa");
        assert!(rbac.allows(&sa, &res("get", "", "pods", "", "ns1", "a")));
        assert!(!rbac.allows(&sa, &res("get", "", "pods", "", "ns1", "b")));
        assert!(!rbac.allows(&sa, &res("list", "", "pods", "", "ns1", "")));
        assert!(!rbac.allows(&sa, &res("get", "", "pods", "", "ns2", "a")));
        assert!(rbac.allows(&sa, &res("patch", "", "nodes", "status", "ns1", "a")));
        assert!(!rbac.allows(&sa, &res("patch", "", "nodes", "", "ns1", "a")));
    }
}
