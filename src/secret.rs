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

/// A value that is a secret by reference, or (accepted, with a
/// `medic check` warning) written inline: webhook URLs, whose path or
/// query often is the credential. Either way medic treats the value as a
/// secret: [`fmt::Debug`] never shows an inline value, and notifiers keep
/// it out of errors, logs, the outbox and the timeline.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretOrInline {
    /// Written in the config (warned about by `medic check`).
    Inline(String),
    /// `{env: NAME}` or `{file: PATH}`.
    Ref(SecretRef),
}

impl fmt::Debug for SecretOrInline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretOrInline::Inline(_) => f.write_str("Inline(***)"),
            SecretOrInline::Ref(r) => write!(f, "Ref({r:?})"),
        }
    }
}

impl SecretOrInline {
    /// Reads the value now (an inline one is just taken).
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretOrInline::Inline(v) => Ok(Secret(v.clone())),
            SecretOrInline::Ref(r) => r.resolve(),
        }
    }

    /// Whether it is written inline.
    pub fn is_inline(&self) -> bool {
        matches!(self, SecretOrInline::Inline(_))
    }
}

impl<'de> Deserialize<'de> for SecretOrInline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretOrInline;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{env: NAME}, {file: PATH} or a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretOrInline, E> {
                Ok(SecretOrInline::Inline(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretOrInline, A::Error> {
                SecretRefVisitor.visit_map(map).map(SecretOrInline::Ref)
            }
        }
        d.deserialize_any(V)
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
    fn inline_or_reference_never_prints_an_inline_value() {
        let v: SecretOrInline = serde_json::from_str(r#""https://hooks/T0/SEKRET""#).unwrap();
        assert!(v.is_inline());
        assert_eq!(format!("{v:?}"), "Inline(***)");
        assert_eq!(v.resolve().unwrap().expose(), "https://hooks/T0/SEKRET");
        let r: SecretOrInline = serde_json::from_str(r#"{"env": "HOOK_URL"}"#).unwrap();
        assert_eq!(r, SecretOrInline::Ref(SecretRef::Env("HOOK_URL".into())));
        let e = serde_json::from_str::<SecretOrInline>(r#"{"vault": "x"}"#).unwrap_err();
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
