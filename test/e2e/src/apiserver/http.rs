//! The HTTP side of the test API server: routing, the REST verbs, and streaming watches.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::patch::PatchType;
use super::rbac::Attributes;
use super::selector::Selectors;
use super::store::{find_resource, ApiError, Change, ChangeType, ResourceId, Scope, RESOURCES};
use super::Shared;

/// Response body: a whole JSON document or a stream of watch events.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 4 << 20;
/// Watch duration when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// What a request addresses.
#[derive(Debug)]
enum Route {
    Version,
    ApiVersions,
    ApiGroups,
    Resources { group: String, version: String },
    Objects(Target),
}

/// A resource collection or one object in it.
#[derive(Debug)]
struct Target {
    res: ResourceId,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

/// Serves one request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let segments: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let route = route(&segments);
    let attrs = attributes(route.as_ref(), req.method(), req.uri().path(), &query);
    if let Err(e) = shared.authorize(req.headers(), &attrs) {
        return Ok(error_response(&e));
    }
    let response = match route {
        None => Err(not_served()),
        Some(route) => serve(shared, req, route, query).await,
    };
    Ok(response.unwrap_or_else(|e| error_response(&e)))
}

/// The request in the authorizer's terms (the verb as the real server derives it).
fn attributes(
    route: Option<&Route>,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
) -> Attributes {
    let Some(Route::Objects(t)) = route else {
        return Attributes::NonResource {
            verb: method.as_str().to_lowercase(),
            path: path.to_string(),
        };
    };
    let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    let verb = match (method, t.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        (m, _) => {
            return Attributes::NonResource {
                verb: m.as_str().to_lowercase(),
                path: path.to_string(),
            }
        }
    };
    let r = &RESOURCES[t.res];
    Attributes::Resource {
        verb: verb.to_string(),
        group: r.group.to_string(),
        resource: r.plural.to_string(),
        subresource: if t.status {
            "status".into()
        } else {
            String::new()
        },
        namespace: t.namespace.clone().unwrap_or_default(),
        name: t.name.clone().unwrap_or_default(),
    }
}

fn not_served() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn route(segments: &[String]) -> Option<Route> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let route = match s.as_slice() {
        ["version"] => Route::Version,
        ["api"] => Route::ApiVersions,
        ["apis"] => Route::ApiGroups,
        ["api", v] => Route::Resources {
            group: String::new(),
            version: v.to_string(),
        },
        ["apis", g, v] => Route::Resources {
            group: g.to_string(),
            version: v.to_string(),
        },
        ["api", v, rest @ ..] => Route::Objects(target("", v, rest)?),
        ["apis", g, v, rest @ ..] => Route::Objects(target(g, v, rest)?),
        _ => return None,
    };
    Some(route)
}

fn target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(*s)),
        _ => return None,
    };
    let res = find_resource(group, version, plural)?;
    // Cluster-scoped resources have no namespace; a namespaced object needs one.
    let scope_fits = !matches!(
        (RESOURCES[res].namespaced, &namespace, &name),
        (false, Some(_), _) | (true, None, Some(_))
    );
    if !scope_fits || sub.is_some_and(|s| s != "status") {
        return None;
    }
    Some(Target {
        res,
        namespace,
        name,
        status: sub.is_some(),
    })
}

async fn serve(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    route: Route,
    query: HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let t = match route {
        Route::Version => return Ok(json_response(StatusCode::OK, &version())),
        Route::ApiVersions => return Ok(json_response(StatusCode::OK, &api_versions())),
        Route::ApiGroups => return Ok(json_response(StatusCode::OK, &api_groups())),
        Route::Resources { group, version } => {
            return resource_list(&group, &version)
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(not_served)
        }
        Route::Objects(t) => t,
    };
    let r = &RESOURCES[t.res];
    let ns = t.namespace.clone().unwrap_or_default();
    let method = req.method().clone();
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let dry_run = query.contains_key("dryRun");
    match (method, t.name.clone()) {
        (Method::GET, None) if flag("watch") => {
            shared.count("watch", r.plural);
            watch(shared, t, &query)
        }
        (Method::GET, None) => {
            shared.count("list", r.plural);
            let sel = selectors(t.res, &query)?;
            let store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
            let items = store.list(t.res, t.namespace.as_deref(), &sel);
            let list = json!({
                "kind": format!("{}List", r.kind),
                "apiVersion": r.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()},
                "items": items,
            });
            Ok(json_response(StatusCode::OK, &list))
        }
        (Method::GET, Some(name)) => {
            shared.count("get", r.plural);
            let store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
            Ok(json_response(
                StatusCode::OK,
                &store.get(t.res, &ns, &name)?,
            ))
        }
        (Method::POST, None) if !t.status && (t.namespace.is_some() || !r.namespaced) => {
            shared.count("create", r.plural);
            let body = read_json(req).await?;
            let obj = shared.write(dry_run, |s| s.create(t.res, &ns, body))?;
            Ok(json_response(StatusCode::CREATED, &obj))
        }
        (Method::PUT, Some(name)) => {
            shared.count("update", r.plural);
            let body = read_json(req).await?;
            let scope = if t.status { Scope::Status } else { Scope::Main };
            let obj = shared.write(dry_run, |s| s.replace(t.res, &ns, &name, body, scope))?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::PATCH, Some(name)) => {
            shared.count("patch", r.plural);
            let content_type = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let kind = PatchType::from_content_type(&content_type).ok_or_else(|| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"),
                )
            })?;
            let body = read_json(req).await?;
            let scope = if t.status { Scope::Status } else { Scope::Main };
            let obj = shared.write(dry_run, |s| s.patch(t.res, &ns, &name, kind, &body, scope))?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::DELETE, Some(name)) if !t.status => {
            shared.count("delete", r.plural);
            let obj = shared.write(dry_run, |s| s.delete(t.res, &ns, &name))?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (method, _) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )),
    }
}

fn selectors(res: ResourceId, query: &HashMap<String, String>) -> Result<Selectors, ApiError> {
    let get = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    Selectors::parse(res, get("labelSelector"), get("fieldSelector"))
}

async fn read_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("reading request body: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))
}

/// Where a watch starts.
enum Start {
    /// Synthetic ADDED events for the current objects first (no or zero resourceVersion, or
    /// `sendInitialEvents=true`, which ends them with an `initial-events-end` bookmark).
    Initial { end_bookmark: bool },
    /// Every change after this resourceVersion.
    After(u64),
}

fn watch(
    shared: Arc<Shared>,
    t: Target,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let sel = selectors(t.res, query)?;
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or_default();
    let start = if flag("sendInitialEvents") {
        Start::Initial { end_bookmark: true }
    } else if rv.is_empty() || rv == "0" {
        Start::Initial {
            end_bookmark: false,
        }
    } else {
        Start::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        )
    };
    let timeout = match query.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let bookmarks = flag("allowWatchBookmarks");
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(stream_events(shared, t, sel, start, timeout, bookmarks, tx));
    let mut rx = rx;
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Produces the watch stream until the timeout, a 410, the server's stop, or the client leaving.
async fn stream_events(
    shared: Arc<Shared>,
    t: Target,
    sel: Selectors,
    start: Start,
    timeout: Duration,
    bookmarks: bool,
    tx: mpsc::Sender<Bytes>,
) {
    let r = &RESOURCES[t.res];
    let mut changed = shared.changed.subscribe();
    let deadline = Instant::now() + timeout;
    let interval = shared.bookmark_interval;
    let mut next_bookmark = Instant::now() + interval;
    let (mut pos, initial) = {
        let store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
        match start {
            Start::Initial { end_bookmark } => {
                let objects = store.list(t.res, t.namespace.as_deref(), &sel);
                let mut lines: Vec<Bytes> =
                    objects.into_iter().map(|o| event("ADDED", o)).collect();
                if end_bookmark {
                    lines.push(bookmark(r, store.resource_version(), true));
                }
                (store.resource_version(), lines)
            }
            Start::After(rv) => (rv, Vec::new()),
        }
    };
    for line in initial {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    loop {
        let batch = {
            let store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
            let batch = store.changes_since(pos).map(|changes| {
                changes
                    .filter_map(|c| watch_event(&t, &sel, c))
                    .collect::<Vec<_>>()
            });
            pos = pos.max(store.resource_version());
            batch
        };
        match batch {
            Ok(lines) => {
                for line in lines {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
            Err(expired) => {
                let _ = tx.send(event("ERROR", expired.to_status())).await;
                return;
            }
        }
        tokio::select! {
            res = changed.changed() => if res.is_err() { return },
            () = sleep_until(next_bookmark), if bookmarks => {
                next_bookmark = Instant::now() + interval;
                if tx.send(bookmark(r, pos, false)).await.is_err() {
                    return;
                }
            }
            () = sleep_until(deadline) => return,
            () = tx.closed() => return,
        }
    }
}

/// The watch event a change produces for this watch, if any: objects moving into the selection
/// are ADDED, moving out of it DELETED, as on a real server.
fn watch_event(t: &Target, sel: &Selectors, c: &Change) -> Option<Bytes> {
    if c.res != t.res {
        return None;
    }
    let selected = |o: &Value| {
        let ns = o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        t.namespace.as_deref().is_none_or(|want| want == ns) && sel.matches(t.res, o)
    };
    let before = c.old.as_ref().is_some_and(selected);
    let after = c.kind != ChangeType::Deleted && selected(&c.new);
    let kind = match (before, after) {
        (false, true) => "ADDED",
        (true, true) => "MODIFIED",
        (true, false) => "DELETED",
        (false, false) => return None,
    };
    Some(event(kind, c.new.clone()))
}

fn event(kind: &str, object: Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(r: &super::store::Resource, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event(
        "BOOKMARK",
        json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": metadata}),
    )
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut response = Response::new(BodyExt::boxed_unsync(Full::new(Bytes::from(bytes))));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.to_status())
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "37", "gitVersion": "v1.37.0-weft-test",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "none", "compiler": "rust",
        "platform": "linux/amd64"
    })
}

fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
    })
}

fn api_groups() -> Value {
    let mut groups: Vec<(&str, &str)> = RESOURCES
        .iter()
        .filter(|r| !r.group.is_empty())
        .map(|r| (r.group, r.version))
        .collect();
    groups.dedup();
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| {
            let verbs = ["create", "delete", "get", "list", "patch", "update", "watch"];
            let main = json!({
                "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                "kind": r.kind, "verbs": verbs
            });
            let status = r.has_status.then(|| {
                json!({"name": format!("{}/status", r.plural), "singularName": "",
                       "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]})
            });
            std::iter::once(main).chain(status)
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
