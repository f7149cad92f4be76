//! The OpenAPI 3.1 document of the main listener, `GET /api/v1/openapi.json`
//! (open, like `/metrics`: it describes the routes and holds no data).
//!
//! It is generated from the code that serves the routes: every handler
//! carries a `#[utoipa::path]` (method, path, parameters, body, every
//! answer it gives and the credential it needs) and is registered through
//! [`utoipa_axum::routes!`], which adds the route to the router and the
//! operation to the document in one call ([`super::routes`]). A route added
//! with plain `.route(...)` would be served but missing from the document:
//! [`router_routes`] reads the assembled router's routes back, and a test
//! compares them with the document's paths.
//!
//! Answers every route may give besides its own: 503 from the listener
//! when the route group is at `http.max_in_flight` or the request runs
//! over `http.request_timeout` (`/healthz` and `/readyz` are not counted
//! against the first), and 405 for a method the path does not serve. The
//! public status page ([`super::public`]) is a listener of its own and is
//! not described here.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// An error answer of the read routes and the intake: `{"error": why}`.
#[derive(Serialize, ToSchema)]
pub struct Error {
    /// Why, for humans.
    pub error: String,
}

/// A refusal or error of the mutating routes, the credential checks and
/// the listener: `{"ok": false, "error": why}`.
#[derive(Serialize, ToSchema)]
pub struct Refusal {
    /// Always `false`.
    pub ok: bool,
    /// Why, for humans.
    pub error: String,
}

/// The frame of the document: title, version, security schemes. The paths
/// and schemas come from the routes ([`super::routes`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "medic",
        description = "medic's HTTP API (the main listener, `http.listen`). See docs/api.md."
    ),
    components(schemas(Error, Refusal)),
    modifiers(&Schemes)
)]
pub struct Frame;

/// The security schemes: `bearer` (the API token, the read token, or the
/// intake's token, per route) and `basic` (the read token as the password
/// of any user, or the intake's user and password).
struct Schemes;

impl Modify for Schemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        // Cargo.toml names no licence: no empty one in the document.
        doc.info.license = None;
        let c = doc
            .components
            .get_or_insert_with(utoipa::openapi::Components::new);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "The API token (http.api_token) on mutating routes; the read token or the API \
             token on read routes; http.intake.bearer on the Alertmanager intake."
                .into(),
        );
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description = Some(
            "Read routes: any user, the read token or the API token as password. The \
             Alertmanager intake: http.intake.basic's user and password."
                .into(),
        );
        c.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        c.add_security_scheme("basic", SecurityScheme::Http(basic));
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    super::console::session::COOKIE,
                    "The console's session (POST /console/login with the API token); its forms \
                     also carry the session's CSRF token.",
                ),
            )),
        );
    }
}

/// The document, rendered once when the router is built.
#[derive(Clone)]
pub struct Document(pub Arc<String>);

impl Document {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Document {
        Document(Arc::new(
            doc.to_pretty_json()
                .expect("the OpenAPI document serializes"),
        ))
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this listener.",
            body = Object, content_type = "application/json"),
        (status = 503, description = "Too many requests in flight, or not answered in time.", body = Refusal),
    )
)]
pub async fn document(Extension(doc): Extension<Document>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
}

/// Every `(METHOD, path)` `router` serves, read from its `Debug` form (axum
/// has no other way to list them). Panics when that form holds none: a
/// new axum that prints routes otherwise must be taught here, not let the
/// comparison with the document pass on an empty list.
pub fn router_routes<S>(router: &axum::Router<S>) -> BTreeSet<(String, String)> {
    let all = format!("{router:?}");
    // The routes proper, not the fallback's catch-all.
    let text = all
        .split_once("fallback_router:")
        .map_or(all.as_str(), |(routes, _)| routes);
    // `RouteId(3): "/healthz"` (the path table) and `RouteId(3):
    // MethodRouter(MethodRouter { get: BoxedHandler(..), head: None, ...`.
    let paths = regex::Regex::new(r#"RouteId\((\d+)\): "([^"]*)""#).expect("regex");
    let methods =
        regex::Regex::new(r"RouteId\((\d+)\): MethodRouter\(MethodRouter \{ (.*?) fallback:")
            .expect("regex");
    let field = regex::Regex::new(r"(\w+): (None|Route|BoxedHandler)").expect("regex");
    let by_id: std::collections::HashMap<&str, &str> = paths
        .captures_iter(text)
        .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
        .collect();
    let mut out = BTreeSet::new();
    for c in methods.captures_iter(text) {
        let id = c.get(1).unwrap().as_str();
        let path = by_id
            .get(id)
            .unwrap_or_else(|| panic!("route {id} has no path in {text}"));
        for f in field.captures_iter(c.get(2).unwrap().as_str()) {
            if &f[2] != "None" {
                out.insert((f[1].to_uppercase(), path.to_string()));
            }
        }
    }
    assert!(
        !out.is_empty() && out.len() >= by_id.len(),
        "no routes read from the router's Debug form (has axum's changed?): {text}"
    );
    out
}

/// Every `(METHOD, path)` the document describes.
pub fn document_routes(doc: &utoipa::openapi::OpenApi) -> BTreeSet<(String, String)> {
    let v = serde_json::to_value(doc).expect("the document serializes");
    let mut out = BTreeSet::new();
    for (path, item) in v["paths"].as_object().into_iter().flatten() {
        for method in item.as_object().into_iter().flatten().map(|(k, _)| k) {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{AppState, Readiness, routes};

    async fn state() -> AppState {
        let store = crate::store::SqliteStore::open_in_memory().await.unwrap();
        AppState {
            store: Arc::new(store),
            clock: crate::clock::Clock::system(),
            readiness: tokio::sync::watch::channel(Readiness::default()).1,
            reload: None,
            scenarios: tokio::sync::watch::channel(Vec::new()).1,
            pager: tokio::sync::watch::channel(None).1,
            access: Arc::new(crate::server::auth::Access::default().into()),
            alerts: Default::default(),
            jobs: Default::default(),
            console: Default::default(),
        }
    }

    /// Every route the router serves is in the document, with its method,
    /// and the other way round: a route added with a plain `.route(...)`
    /// (served, not documented) fails here.
    #[tokio::test]
    async fn the_document_describes_every_route_of_the_router() {
        let (router, doc) = routes(&state().await).split_for_parts();
        let served = router_routes(&router);
        let described = document_routes(&doc);
        assert!(served.contains(&("GET".into(), PATH.into())), "{served:?}");
        assert_eq!(
            served, described,
            "served (left) and documented (right) routes differ"
        );
        // The comparison sees an undocumented route.
        let extra = router.route("/undocumented", axum::routing::post(|| async {}));
        let served = router_routes(&extra);
        assert!(served.contains(&("POST".into(), "/undocumented".into())));
        assert_ne!(served, described);
    }

    /// Every operation says what it answers and which credential it needs;
    /// every scheme it names exists.
    #[tokio::test]
    async fn operations_name_their_answers_and_schemes() {
        let (_, doc) = routes(&state().await).split_for_parts();
        let v = serde_json::to_value(&doc).unwrap();
        let schemes = v["components"]["securitySchemes"].as_object().unwrap();
        // The names of who decides or writes, and the update's words, are
        // not blank as the handlers judge it.
        let schemas = &v["components"]["schemas"];
        for (schema, field) in [
            ("DecisionBody", "by"),
            ("StatusUpdateBody", "by"),
            ("StatusUpdateBody", "body"),
        ] {
            assert_eq!(
                schemas[schema]["properties"][field]["pattern"],
                crate::page::public::NOT_BLANK,
                "{schema}.{field}"
            );
        }
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["basic"]["scheme"], "basic");
        let open = [
            "/healthz",
            "/readyz",
            "/metrics",
            PATH,
            "/slack/interactions",
            "/console/login",
        ];
        for (path, item) in v["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let codes: Vec<&str> = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                // The listener's 503 (busy, timed out); only /healthz does
                // nothing that could take that long.
                if path != "/healthz" {
                    assert!(codes.contains(&"503"), "{method} {path}: {codes:?}");
                }
                let security = op["security"].as_array();
                if open.contains(&path.as_str()) {
                    assert!(security.is_none(), "{method} {path} is open");
                    continue;
                }
                let security = security.unwrap_or_else(|| panic!("{method} {path}: no security"));
                for req in security {
                    for name in req.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(name), "{method} {path}: {name}");
                    }
                }
                assert!(codes.contains(&"401"), "{method} {path}: {codes:?}");
                if method == "post" && op["requestBody"]["content"]["application/json"].is_object()
                {
                    assert!(codes.contains(&"415"), "{method} {path}: {codes:?}");
                }
            }
        }
    }
}
