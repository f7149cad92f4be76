//! A fake Kubernetes API server on 127.0.0.1 (no cluster runs here): it
//! serves the JSON the test puts at each path, records every request
//! (method, path with query, Authorization header, body), and writes a
//! kubeconfig pointing at itself with a bearer token.
//!
//! Paths without a response answer 404 with the API's own `Status` shape,
//! as a real API server does for a missing object.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The bearer token in the kubeconfig [`FakeKube::kubeconfig`] writes.
pub const TOKEN: &str = "t0ken-for-tests";

/// One request the fake API server received.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct Inner {
    /// Path (no query) -> status and JSON body.
    responses: HashMap<String, (u16, Value)>,
    seen: Vec<Seen>,
    /// Collections served as a real API server would (see
    /// [`FakeKube::objects`]): collection path -> objects by name.
    collections: HashMap<String, HashMap<String, Value>>,
    /// The last `resourceVersion` handed out.
    version: u64,
}

/// A running fake API server; stops when dropped.
pub struct FakeKube {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        FakeKube { addr, inner, stop }
    }

    /// Serves `body` with status 200 at `path`.
    pub fn put(&self, path: &str, body: Value) {
        self.respond(path, 200, body);
    }

    /// Serves `body` with `status` at `path`.
    pub fn respond(&self, path: &str, status: u16, body: Value) {
        self.inner
            .lock()
            .unwrap()
            .responses
            .insert(path.to_string(), (status, body));
    }

    /// Serves ConfigMap `name` in `namespace` with `data`, as the API
    /// server returns it (`GET /api/v1/namespaces/NS/configmaps/NAME`).
    pub fn config_map(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        self.put(
            &format!("/api/v1/namespaces/{namespace}/configmaps/{name}"),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name, "namespace": namespace,
                    "uid": format!("cm-{name}"), "resourceVersion": "4711",
                    "creationTimestamp": "2026-10-01T08:00:00Z"
                },
                "data": data
            }),
        );
    }

    /// Serves Secret `name` (type Opaque) with `data` base64-encoded, as
    /// the API server returns it.
    pub fn secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        use base64::Engine as _;
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                let b = base64::engine::general_purpose::STANDARD.encode(v.as_bytes());
                (k.to_string(), Value::String(b))
            })
            .collect();
        self.put(
            &format!("/api/v1/namespaces/{namespace}/secrets/{name}"),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name, "namespace": namespace,
                    "uid": format!("secret-{name}"), "resourceVersion": "4712",
                    "creationTimestamp": "2026-10-01T08:00:00Z"
                },
                "type": "Opaque",
                "data": data
            }),
        );
    }

    /// Answers `path` with an API `Status` error (403, 500...).
    pub fn fail(&self, path: &str, code: u16, reason: &str, message: &str) {
        self.respond(path, code, status(code, reason, message));
    }

    /// Serves `collection` (e.g. `/apis/coordination.k8s.io/v1/namespaces/ns/leases`)
    /// statefully: GET an object, POST to create it (409 when it exists),
    /// PUT to replace it, refused with 409 Conflict unless the body carries
    /// the stored `metadata.resourceVersion` (optimistic concurrency, as the
    /// API server does). Every write gets a new resourceVersion.
    pub fn objects(&self, collection: &str) {
        self.inner
            .lock()
            .unwrap()
            .collections
            .insert(collection.to_string(), HashMap::new());
    }

    /// The stored object `name` of a stateful collection.
    pub fn object(&self, collection: &str, name: &str) -> Option<Value> {
        self.inner
            .lock()
            .unwrap()
            .collections
            .get(collection)?
            .get(name)
            .cloned()
    }

    /// Replaces a stored object as another client would (new resourceVersion).
    pub fn set_object(&self, collection: &str, name: &str, mut object: Value) {
        let mut g = self.inner.lock().unwrap();
        g.version += 1;
        object["metadata"]["resourceVersion"] = Value::String(g.version.to_string());
        g.collections
            .get_mut(collection)
            .expect("a stateful collection")
            .insert(name.to_string(), object);
    }

    /// Every request so far, then forgets them.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.inner.lock().unwrap().seen)
    }

    /// Writes a kubeconfig for this server (bearer [`TOKEN`], namespace
    /// `namespace`) into `dir` and returns its path.
    pub fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\n\
                 kind: Config\n\
                 clusters:\n\
                 - name: fake\n  cluster:\n    server: http://{}\n\
                 contexts:\n\
                 - name: fake\n  context:\n    cluster: fake\n    user: medic\n    namespace: {namespace}\n\
                 current-context: fake\n\
                 users:\n\
                 - name: medic\n  user:\n    token: {TOKEN}\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    /// Stops serving; later requests are refused.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The API's error object.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut g = inner.lock().unwrap();
    g.seen.push(Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if let Some(answer) = stateful(&mut g, &method, uri.path(), &body) {
        return answer;
    }
    let (code, body) = g.responses.get(uri.path()).cloned().unwrap_or_else(|| {
        (
            404,
            status(404, "NotFound", &format!("{} not found", uri.path())),
        )
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_answer(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A request on a stateful collection; `None` for other paths.
fn stateful(g: &mut Inner, method: &Method, path: &str, body: &[u8]) -> Option<Response> {
    let (collection, name) = if g.collections.contains_key(path) {
        (path.to_string(), None)
    } else {
        let (c, n) = path.rsplit_once('/')?;
        if !g.collections.contains_key(c) {
            return None;
        }
        (c.to_string(), Some(n.to_string()))
    };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let next = g.version + 1;
    let objects = g.collections.get_mut(&collection)?;
    let answer = match (method.as_str(), name) {
        ("GET", Some(n)) => match objects.get(&n) {
            Some(o) => json_answer(200, o.clone()),
            None => json_answer(404, status(404, "NotFound", &format!("\"{n}\" not found"))),
        },
        ("POST", None) => {
            let Some(mut o) = parsed else {
                return Some(json_answer(
                    400,
                    status(400, "BadRequest", "body is not JSON"),
                ));
            };
            let n = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match objects.entry(n) {
                std::collections::hash_map::Entry::Occupied(e) => json_answer(
                    409,
                    status(
                        409,
                        "AlreadyExists",
                        &format!("\"{}\" already exists", e.key()),
                    ),
                ),
                std::collections::hash_map::Entry::Vacant(e) => {
                    o["metadata"]["resourceVersion"] = Value::String(next.to_string());
                    e.insert(o.clone());
                    g.version = next;
                    json_answer(201, o)
                }
            }
        }
        ("PUT", Some(n)) => {
            let Some(mut o) = parsed else {
                return Some(json_answer(
                    400,
                    status(400, "BadRequest", "body is not JSON"),
                ));
            };
            let stored = objects
                .get(&n)
                .map(|s| s["metadata"]["resourceVersion"].clone());
            match stored {
                None => json_answer(404, status(404, "NotFound", &format!("\"{n}\" not found"))),
                Some(v) if v != o["metadata"]["resourceVersion"] => json_answer(
                    409,
                    status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ),
                ),
                Some(_) => {
                    o["metadata"]["resourceVersion"] = Value::String(next.to_string());
                    objects.insert(n, o.clone());
                    g.version = next;
                    json_answer(200, o)
                }
            }
        }
        _ => json_answer(
            405,
            status(405, "MethodNotAllowed", "not supported by the fake"),
        ),
    };
    Some(answer)
}
