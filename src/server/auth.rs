//! Who may call which route: the credentials of `http:` resolved once at
//! start-up ([`Access`]), and the middleware each route group is wrapped in.
//!
//! - [`api`]: the mutating routes (incident decisions, `POST /-/reload`):
//!   `Authorization: Bearer API_TOKEN`.
//! - [`read`]: the read routes (incidents API, status page, job runs): the
//!   read token or the API token, as a bearer token or as a Basic password
//!   (a browser asks for it), unless `open_reads`.
//! - [`intake`]: the Alertmanager webhook: its bearer token or Basic user
//!   and password (what Alertmanager's `http_config` sends), unless `open`;
//!   then `Content-Type: application/json` only (415 otherwise).
//!
//! Every check happens before the body is read, so a refused request costs
//! no more than its headers; a refusal is 401 with the reason and changes
//! nothing. Schemes are case-insensitive (RFC 9110), tokens are compared in
//! constant time, and empty secrets are refused when they are resolved.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use base64::Engine as _;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::config::HttpConfig;
use crate::secret::{Secret, SecretRef};

/// The intake's policy.
#[derive(Clone, Debug, Default)]
pub enum Intake {
    /// No `http.intake`: every delivery is refused.
    #[default]
    Off,
    /// `open: true`: no credentials asked.
    Open,
    /// A bearer token, a Basic user and password, or either.
    Checked {
        bearer: Option<Secret>,
        basic: Option<(String, Secret)>,
    },
}

/// The resolved credentials of every route group. The default refuses
/// everything that needs a credential.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub api_token: Option<Secret>,
    pub read_token: Option<Secret>,
    pub open_reads: bool,
    pub intake: Intake,
}

/// Reads a secret for `field`; an empty (or all-whitespace) one is refused.
fn resolve(r: &SecretRef, field: &str) -> Result<Secret, String> {
    let s = r.resolve().map_err(|e| format!("{field}: {e}"))?;
    if s.expose().trim().is_empty() {
        return Err(format!(
            "{field} is empty: an empty token would let anyone in; set a long random value"
        ));
    }
    Ok(s)
}

impl Access {
    /// Resolves the credentials `http` names (its secrets are read now).
    pub fn from_config(http: &HttpConfig) -> Result<Access, String> {
        let opt = |r: &Option<SecretRef>, f: &str| r.as_ref().map(|r| resolve(r, f)).transpose();
        let intake = match &http.intake {
            None => Intake::Off,
            Some(i) if i.open => Intake::Open,
            Some(i) => Intake::Checked {
                bearer: opt(&i.bearer, "http.intake.bearer")?,
                basic: match &i.basic {
                    Some(b) => Some((
                        b.username.clone(),
                        resolve(&b.password, "http.intake.basic.password")?,
                    )),
                    None => None,
                },
            },
        };
        Ok(Access {
            api_token: opt(&http.api_token, "http.api_token")?,
            read_token: opt(&http.read_token, "http.read_token")?,
            open_reads: http.open_reads,
            intake,
        })
    }
}

/// The credentials the routes check now: re-read from their secret
/// references on every accepted reload (SIGHUP or `POST /-/reload`), so a
/// rotated token takes effect without a restart. A request checks against
/// the set current when it arrived.
#[derive(Debug, Default)]
pub struct Credentials(std::sync::RwLock<Arc<Access>>);

impl Credentials {
    /// The set in force now.
    pub fn current(&self) -> Arc<Access> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `access` in force for every request from now on.
    pub fn replace(&self, access: Access) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(access);
    }
}

impl From<Access> for Credentials {
    fn from(a: Access) -> Self {
        Credentials(std::sync::RwLock::new(Arc::new(a)))
    }
}

/// What an `Authorization` header carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    Bearer(String),
    Basic { user: String, password: String },
}

/// The credential in `headers`: `Bearer TOKEN` or `Basic BASE64(user:pass)`,
/// the scheme in any case. `None` for no header, another scheme, an empty
/// token or malformed Basic.
pub fn credential(headers: &HeaderMap) -> Option<Credential> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    let rest = rest.trim();
    if rest.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credential::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':')?;
        return Some(Credential::Basic {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    None
}

/// Constant-time equality of a given value and a secret.
fn same(given: &str, secret: &Secret) -> bool {
    bool::from(given.as_bytes().ct_eq(secret.expose().as_bytes()))
}

/// Whether `headers` carry `Authorization: Bearer {token}` (any case of
/// `Bearer`).
pub fn bearer_is(headers: &HeaderMap, token: &Secret) -> bool {
    matches!(credential(headers), Some(Credential::Bearer(t)) if same(&t, token))
}

/// A refusal: `code` with `{"error": why}` and, for 401, the scheme to use.
fn refuse(code: StatusCode, why: &str, scheme: &'static str) -> Response {
    let mut r = (code, Json(json!({ "ok": false, "error": why }))).into_response();
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
    }
    r
}

const BEARER: &str = "Bearer realm=\"medic\"";
const BASIC: &str = "Basic realm=\"medic\", charset=\"UTF-8\"";

/// Mutating routes: the API token as a bearer token.
pub async fn api(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let access = st.access.current();
    let Some(token) = &access.api_token else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "mutating API calls are disabled: set http.api_token in the config",
            BEARER,
        );
    };
    if !bearer_is(req.headers(), token) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)",
            BEARER,
        );
    }
    next.run(req).await
}

/// Read routes: open reads, or the read token or the API token (bearer,
/// or the password of Basic auth with any user name).
pub async fn read(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let a = st.access.current();
    if a.open_reads {
        return next.run(req).await;
    }
    let tokens: Vec<&Secret> = [&a.read_token, &a.api_token]
        .into_iter()
        .flatten()
        .collect();
    if tokens.is_empty() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "reads are disabled: set http.read_token (or http.api_token), or http.open_reads: true",
            BASIC,
        );
    }
    let given = match credential(req.headers()) {
        Some(Credential::Bearer(t)) => Some(t),
        Some(Credential::Basic { password, .. }) => Some(password),
        None => None,
    };
    // Every token is compared, so the time taken does not say which matched.
    let ok = given.is_some_and(|g| tokens.iter().fold(false, |ok, t| same(&g, t) | ok));
    if !ok {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong read token (Authorization: Bearer TOKEN, or Basic with the token as password)",
            BASIC,
        );
    }
    next.run(req).await
}

/// The Alertmanager intake: its credentials, then a JSON body.
pub async fn intake(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let access = st.access.current();
    let ok = match &access.intake {
        Intake::Off => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "the Alertmanager intake is off: set http.intake (bearer or basic) in the config",
                BEARER,
            );
        }
        Intake::Open => true,
        Intake::Checked { bearer, basic } => match credential(req.headers()) {
            Some(Credential::Bearer(t)) => bearer.as_ref().is_some_and(|b| same(&t, b)),
            Some(Credential::Basic { user, password }) => {
                basic.as_ref().is_some_and(|(u, p)| {
                    // Both compared, whatever the first gives.
                    same(&user, &Secret::new(u.as_str())) & same(&password, p)
                })
            }
            None => false,
        },
    };
    if !ok {
        tracing::warn!("alertmanager webhook refused: missing or wrong credentials");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong credentials (http.intake: Authorization: Bearer TOKEN or Basic)",
            BEARER,
        );
    }
    json_body(req, next).await
}

/// Whether a `Content-Type` is JSON: `application/json`, any case, with
/// or without parameters (`; charset=utf-8`).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .is_some_and(|t| t.eq_ignore_ascii_case("application/json"))
}

/// Routes that read a JSON body: anything else is 415 (a browser cannot
/// send `application/json` across origins without a preflight medic never
/// answers).
pub async fn json_body(req: Request, next: Next) -> Response {
    if !is_json(req.headers()) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (Content-Type: application/json)",
            BEARER,
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn schemes_are_case_insensitive_and_empty_tokens_are_none() {
        let t = Secret::new("s3cret");
        for ok in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER  s3cret ",
            "BeArEr s3cret",
        ] {
            assert!(bearer_is(&headers(ok), &t), "{ok:?}");
        }
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer s3cre",
            "Token s3cret",
            "s3cret",
            "Bearer s3cret2",
        ] {
            assert!(!bearer_is(&headers(bad), &t), "{bad:?}");
        }
        assert_eq!(credential(&headers("Bearer   ")), None);
        assert_eq!(credential(&HeaderMap::new()), None);
    }

    #[test]
    fn basic_is_decoded() {
        // "alertmanager:pa:ss" (a password may hold a colon).
        let h = headers("basic YWxlcnRtYW5hZ2VyOnBhOnNz");
        assert_eq!(
            credential(&h),
            Some(Credential::Basic {
                user: "alertmanager".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(credential(&headers("Basic !!!")), None);
        // No colon: not a Basic credential.
        assert_eq!(credential(&headers("Basic YWxlcnRtYW5hZ2Vy")), None);
    }

    #[test]
    fn json_content_types() {
        let ct = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            is_json(&h)
        };
        assert!(ct("application/json"));
        assert!(ct("Application/JSON; charset=utf-8"));
        assert!(!ct("text/plain"));
        assert!(!ct("application/x-www-form-urlencoded"));
        assert!(!ct("multipart/form-data; boundary=x"));
        assert!(!ct("application/jsonp"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn empty_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, " \n").unwrap();
        let mut http = HttpConfig::on("127.0.0.1:0".parse().unwrap());
        http.api_token = Some(SecretRef::File(p.clone()));
        let e = Access::from_config(&http).unwrap_err();
        assert!(e.starts_with("http.api_token is empty"), "{e}");
        std::fs::write(&p, "long-random\n").unwrap();
        let a = Access::from_config(&http).unwrap();
        assert_eq!(a.api_token.unwrap().expose(), "long-random");
    }
}
