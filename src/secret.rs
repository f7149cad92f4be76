//! Secrets by reference: config and rules name where a secret lives
//! (`{env: NAME}` or `{file: PATH}`), never the secret itself.
//!
//! A resolved [`Secret`] prints as `***` in `Debug` and `Display`, so it cannot
//! leak into logs, errors or the store by accident.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Where a secret comes from. A plain string is rejected on purpose.
///
/// Deserializing is written by hand so a plain string gets an error that
/// says what to write instead ([`PLAIN_SECRET`]), whatever the format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretRef {
    /// The value of an environment variable.
    Env(String),
    /// The contents of a file, with one trailing newline removed.
    File(PathBuf),
}

/// The error for a secret written inline.
pub const PLAIN_SECRET: &str =
    "secrets must reference an environment variable or a file: {env: NAME} or {file: PATH}";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretRefVisitor)
    }
}

struct SecretRefVisitor;

impl SecretRefVisitor {
    fn plain<E: de::Error>(self) -> Result<SecretRef, E> {
        Err(E::custom(PLAIN_SECRET))
    }
}

impl<'de> Visitor<'de> for SecretRefVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{env: NAME} or {file: PATH}")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
        self.plain()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRef, E> {
        self.plain()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
        self.plain()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
        self.plain()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretRef, E> {
        self.plain()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
        let Some(kind) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "empty secret reference: write {env: NAME} or {file: PATH}",
            ));
        };
        let secret = match kind.as_str() {
            "env" => SecretRef::Env(map.next_value()?),
            "file" => SecretRef::File(map.next_value()?),
            other => {
                return Err(de::Error::custom(format!(
                    "unknown secret source {other:?}: write {{env: NAME}} or {{file: PATH}}"
                )));
            }
        };
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom(
                "a secret reference names exactly one source: {env: NAME} or {file: PATH}",
            ));
        }
        Ok(secret)
    }
}

/// Why a secret could not be read. Names the reference, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SecretRef {
    /// Reads the secret now.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| SecretError::MissingEnv(name.clone())),
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.strip_suffix('\n').unwrap_or(&s).to_string()))
                .map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// A resolved secret. Only [`Secret::expose`] shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests, and values read from a reference).
    pub fn new(v: impl Into<String>) -> Self {
        Secret(v.into())
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_secret_strips_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "pa55\n").unwrap();
        assert_eq!(SecretRef::File(p).resolve().unwrap().expose(), "pa55");
    }

    #[test]
    fn plain_string_is_refused_with_a_hint() {
        let e = serde_json::from_str::<SecretRef>(r#""hunter2""#).unwrap_err();
        assert!(e.to_string().starts_with(PLAIN_SECRET), "{e}");
        let ok: SecretRef = serde_json::from_str(r#"{"env": "PGPASSWORD"}"#).unwrap();
        assert_eq!(ok, SecretRef::Env("PGPASSWORD".into()));
        let e = serde_json::from_str::<SecretRef>(r#"{"env": "A", "file": "b"}"#).unwrap_err();
        assert!(e.to_string().contains("exactly one source"), "{e}");
        let e = serde_json::from_str::<SecretRef>(r#"{"vault": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown secret source"), "{e}");
    }

    #[test]
    fn missing_env_names_variable_only() {
        let e = SecretRef::Env("MEDIC_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable MEDIC_TEST_SURELY_UNSET is not set"
        );
    }
}
