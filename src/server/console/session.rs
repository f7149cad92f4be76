//! The console's sessions: `POST /console/login` with the API token makes
//! one, a random id (32 bytes from the system's CSPRNG through rustls's
//! provider) kept server-side with its CSRF token, who logged in and an
//! expiry. Sessions live in memory: a restart (or a failover to another
//! replica) logs everyone out. A session is bound to the API token it was
//! made with: rotating `http.api_token` ends every session made before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "medic_session";
/// How long a session lasts from login.
pub const TTL: Duration = Duration::from_secs(8 * 3600);
/// The most sessions kept at once: past it the oldest goes.
pub const MAX: usize = 1000;

/// One logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who logged in (written on the timeline as who decided).
    pub name: String,
    /// What every form of this session must carry back.
    pub csrf: String,
    pub expires: Instant,
    /// The SHA-256 of the API token it was made with.
    token: [u8; 32],
    /// A message for the next page (POST-redirect-GET), taken once.
    pub flash: Option<(bool, String)>,
}

/// Every session, by id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// `n` random bytes as hex, or `None` when the system gives none.
pub fn random_hex(n: usize) -> Option<String> {
    let mut buf = vec![0u8; n];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut buf)
        .ok()?;
    Some(hex::encode(buf))
}

fn digest(token: &Secret) -> [u8; 32] {
    sha2::Sha256::digest(token.expose().as_bytes()).into()
}

/// The session id a request's `Cookie` header carries.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether two texts are equal, in constant time.
pub fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `name`, made with `token`: its id, or `None`
    /// when no random id could be had.
    pub fn create(&self, name: &str, token: &Secret) -> Option<String> {
        let id = random_hex(32)?;
        let csrf = random_hex(32)?;
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, s| s.expires > now);
        while map.len() >= MAX {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                name: name.to_string(),
                csrf,
                expires: now + TTL,
                token: digest(token),
                flash: None,
            },
        );
        Some(id)
    }

    /// The live session `id` names, if it was made with `token` (the API
    /// token now): an expired one, or one of a rotated token, is removed.
    pub fn get(&self, id: &str, token: Option<&Secret>) -> Option<Session> {
        let mut map = self.map();
        let s = map.get(id)?;
        let live = s.expires > Instant::now()
            && token.is_some_and(|t| bool::from(digest(t).ct_eq(&s.token)));
        if !live {
            map.remove(id);
            return None;
        }
        Some(s.clone())
    }

    /// Sets the message the next page of session `id` shows.
    pub fn flash(&self, id: &str, ok: bool, msg: String) {
        if let Some(s) = self.map().get_mut(id) {
            s.flash = Some((ok, msg));
        }
    }

    /// Takes the message of session `id`.
    pub fn take_flash(&self, id: &str) -> Option<(bool, String)> {
        self.map().get_mut(id).and_then(|s| s.flash.take())
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sessions_are_random_bound_to_the_token_and_end() {
        let s = Sessions::default();
        let t = Secret::new("api");
        let a = s.create("ann", &t).unwrap();
        let b = s.create("bob", &t).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let got = s.get(&a, Some(&t)).unwrap();
        assert_eq!(got.name, "ann");
        assert_ne!(got.csrf, s.get(&b, Some(&t)).unwrap().csrf);
        // A rotated token ends the session.
        assert!(s.get(&a, Some(&Secret::new("new"))).is_none());
        assert!(s.get(&a, Some(&t)).is_none());
        s.remove(&b);
        assert!(s.get(&b, Some(&t)).is_none());
        assert!(s.get("nope", Some(&t)).is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; medic_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("medic_sessionx=1"));
        assert_eq!(cookie(&h), None);
        assert_eq!(cookie(&HeaderMap::new()), None);
    }
}
