//! `config`: the backend's configuration is present and as expected (the
//! runbook's "verify configuration" step): environment variables, and on a
//! kubernetes target the ConfigMaps and Secrets it names.
//!
//! - On a `kubernetes` target (a Deployment, StatefulSet or DaemonSet), the
//!   pod template's container (`container`, else the one the
//!   `kubectl.kubernetes.io/default-container` annotation names, else the
//!   first) has each variable of `env`: a plain `value`, or a `valueFrom`
//!   `configMapKeyRef` / `secretKeyRef` (or an `envFrom` source) resolved
//!   by reading that ConfigMap or Secret; each ConfigMap of `config_maps`
//!   and Secret of `secrets` exists and holds the keys named. One GET of
//!   the workload, one per ConfigMap or Secret read.
//! - On a `docker` target, each container's environment (`Config.Env`, the
//!   image's and the container's) has each variable of `env`.
//!
//! A key is expected present, `equals: TEXT`, `matches: REGEX` or
//! `sha256: HEX` (the SHA-256 of the value's bytes, `printf %s VALUE |
//! sha256sum`). A value that comes from a Secret is compared only by its
//! hash, and no value compared by hash is ever written anywhere: a
//! mismatch says "differs from the expected hash". Values compared by
//! `equals` or `matches` are shown in the reason (URL passwords masked).
//!
//! | seen | outcome |
//! | --- | --- |
//! | every key present and as expected | ok |
//! | a variable not set, a ConfigMap or Secret or key missing, a value different | failing (each named) |
//! | the workload or container does not exist | failing |
//! | the API server or Engine unreachable, an error, 401/403 | unknown |
//! | a Secret's value expected by `equals` / `matches`; a `fieldRef` value | unknown (medic does not look) |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use marked_yaml::Node;
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{BuildError, Check};
use crate::config::{Config, TargetConfig};
use crate::connect::docker::{Engine, Selector, name_of};
use crate::features::Feature;
use crate::observe::Outcome;

#[cfg(feature = "kubernetes")]
mod k8s;

/// `check: { config: { target: backend, env: {...}, config_maps: {...},
/// secrets: {...} } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigParams {
    /// A config target of kind `kubernetes` or `docker`.
    pub target: String,
    /// Kubernetes: the pod template's container whose env is read.
    pub container: Option<String>,
    /// Environment variables, by name.
    #[serde(default)]
    pub env: Keys,
    /// Kubernetes: ConfigMaps (in the target's namespace) and their keys.
    #[serde(default)]
    pub config_maps: BTreeMap<String, Keys>,
    /// Kubernetes: Secrets and their keys (values only by `sha256`).
    #[serde(default)]
    pub secrets: BTreeMap<String, Keys>,
}

/// Keys and what each must hold: a list of names (present), or a mapping
/// of name to an [`Expect`] (null: present).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys(pub BTreeMap<String, Expect>);

/// What one key must hold; nothing set: only that it is present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub equals: Option<String>,
    pub matches: Option<String>,
    /// 64 hex digits: the SHA-256 of the value.
    pub sha256: Option<String>,
}

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a list of names, or a mapping of name to { equals | matches | sha256 }",
                )
            }
            fn visit_unit<E>(self) -> Result<Keys, E> {
                Ok(Keys::default())
            }
            fn visit_none<E>(self) -> Result<Keys, E> {
                Ok(Keys::default())
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Keys, E> {
                if matches!(s, "" | "~" | "null") {
                    return Ok(Keys::default());
                }
                Err(E::invalid_type(serde::de::Unexpected::Str(s), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Keys, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = a.next_element::<String>()? {
                    out.insert(name, Expect::default());
                }
                Ok(Keys(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Keys, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = a.next_key::<String>()? {
                    let e: OrNull = a.next_value()?;
                    out.insert(name, e.0);
                }
                Ok(Keys(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// An [`Expect`], or null (`~`, nothing) for "present".
struct OrNull(Expect);

impl<'de> Deserialize<'de> for OrNull {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrNull;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("{ equals | matches | sha256 }, or nothing for present")
            }
            fn visit_unit<E>(self) -> Result<OrNull, E> {
                Ok(OrNull(Expect::default()))
            }
            fn visit_none<E>(self) -> Result<OrNull, E> {
                Ok(OrNull(Expect::default()))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<OrNull, E> {
                if matches!(s, "" | "~" | "null") {
                    return Ok(OrNull(Expect::default()));
                }
                Err(E::invalid_type(serde::de::Unexpected::Str(s), &self))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<OrNull, A::Error> {
                Expect::deserialize(serde::de::value::MapAccessDeserializer::new(a)).map(OrNull)
            }
        }
        d.deserialize_any(V)
    }
}

/// One expectation, compiled.
#[derive(Clone, Debug)]
pub(crate) enum Expected {
    Present,
    Equals(String),
    Matches(Regex),
    /// Lowercase hex.
    Sha256(String),
}

impl Expected {
    fn of(e: &Expect) -> Result<Expected, String> {
        Ok(if let Some(h) = &e.sha256 {
            Expected::Sha256(h.to_ascii_lowercase())
        } else if let Some(r) = &e.matches {
            Expected::Matches(Regex::new(r).map_err(|e| e.to_string())?)
        } else if let Some(s) = &e.equals {
            Expected::Equals(s.clone())
        } else {
            Expected::Present
        })
    }
}

/// What one comparison found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The target is not as expected.
    Failing(String),
    /// medic cannot (or will not) tell.
    Unknown(String),
}

impl Problem {
    /// The problem an API error's outcome is (the Kubernetes part's).
    #[cfg(feature = "kubernetes")]
    pub(crate) fn of(o: Outcome) -> Option<Problem> {
        match o {
            Outcome::Ok => None,
            Outcome::Failing(m) => Some(Problem::Failing(m)),
            Outcome::Unknown(m) | Outcome::Unreachable(m) => Some(Problem::Unknown(m)),
        }
    }
}

/// Compares `value` (of `what`, e.g. "env LOG_LEVEL") with `exp`. A
/// `secret` value is compared only by hash and never shown.
pub(crate) fn compare(what: &str, exp: &Expected, value: &[u8], secret: bool) -> Option<Problem> {
    match exp {
        Expected::Present => None,
        Expected::Sha256(h) => {
            let got = hex(&Sha256::digest(value));
            (got != *h).then(|| Problem::Failing(format!("{what} differs from the expected hash")))
        }
        _ if secret => Some(Problem::Unknown(format!(
            "{what} comes from a Secret: medic compares it only by `sha256`"
        ))),
        Expected::Equals(s) => (value != s.as_bytes()).then(|| {
            Problem::Failing(format!(
                "{what} is {}, expected {}",
                show(value),
                show(s.as_bytes())
            ))
        }),
        Expected::Matches(re) => match std::str::from_utf8(value) {
            Ok(v) if re.is_match(v) => None,
            Ok(_) => Some(Problem::Failing(format!(
                "{what} is {}, which does not match {:?}",
                show(value),
                re.as_str()
            ))),
            Err(_) => Some(Problem::Failing(format!(
                "{what} is not text, so it does not match {:?}",
                re.as_str()
            ))),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value as a reason shows it: quoted, a URL's password masked, at most
/// 80 characters.
fn show(value: &[u8]) -> String {
    static PASSWORD: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)^([a-z][a-z0-9+.-]*://[^:/@]*:)[^@/]*@").expect("a valid regex")
    });
    let text = String::from_utf8_lossy(value);
    let masked = PASSWORD.replace(&text, "${1}***@");
    let mut out: String = masked.chars().take(80).collect();
    if masked.chars().count() > 80 {
        out.push('…');
    }
    format!("{out:?}")
}

/// The outcome of the problems found, each named: failing when any is a
/// fact, else unknown when medic could not tell, else ok.
pub(crate) fn verdict(what: &str, problems: Vec<Problem>) -> Outcome {
    let (mut failing, mut unknown) = (Vec::new(), Vec::new());
    for p in problems {
        match p {
            Problem::Failing(m) => failing.push(m),
            Problem::Unknown(m) => unknown.push(m),
        }
    }
    if !failing.is_empty() {
        Outcome::Failing(format!("{what}: {}", failing.join("; ")))
    } else if !unknown.is_empty() {
        Outcome::Unknown(format!("{what}: {}", unknown.join("; ")))
    } else {
        Outcome::Ok
    }
}

/// Compiled keys and expectations.
pub(crate) type Compiled = Vec<(String, Expected)>;

fn compile(keys: &Keys) -> Result<Compiled, BuildError> {
    keys.0
        .iter()
        .map(|(k, e)| Ok((k.clone(), Expected::of(e).map_err(BuildError::Invalid)?)))
        .collect()
}

/// A runnable `config` check.
pub struct ConfigCheck {
    side: Side,
    env: Compiled,
}

enum Side {
    Docker(Engine),
    #[cfg(feature = "kubernetes")]
    Kubernetes(k8s::KubeSide),
}

impl std::fmt::Debug for ConfigCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ConfigCheck").field("env", &keys).finish()
    }
}

impl ConfigCheck {
    pub fn build(p: &ConfigParams, timeout: Duration, config: &Config) -> Result<Self, BuildError> {
        let env = compile(&p.env)?;
        let side = match config.targets.get(&p.target) {
            Some(TargetConfig::Docker(t)) => {
                Side::Docker(Engine::new(&p.target, t, timeout).map_err(BuildError::Invalid)?)
            }
            #[cfg(feature = "kubernetes")]
            Some(TargetConfig::Kubernetes(t)) => {
                let maps = p
                    .config_maps
                    .iter()
                    .map(|(n, k)| Ok((n.clone(), compile(k)?)))
                    .collect::<Result<_, BuildError>>()?;
                let secrets = p
                    .secrets
                    .iter()
                    .map(|(n, k)| Ok((n.clone(), compile(k)?)))
                    .collect::<Result<_, BuildError>>()?;
                Side::Kubernetes(k8s::KubeSide::build(p, t, timeout, config, maps, secrets)?)
            }
            #[cfg(not(feature = "kubernetes"))]
            Some(TargetConfig::Kubernetes(_)) => {
                return Err(BuildError::Invalid(
                    Feature::Kubernetes.needed_by("a `config` check of a kubernetes target"),
                ));
            }
            _ => {
                return Err(BuildError::Invalid(format!(
                    "target {:?} is not a kubernetes or docker target",
                    p.target
                )));
            }
        };
        Ok(ConfigCheck { side, env })
    }

    async fn docker(&self, engine: &Engine) -> Outcome {
        let what = engine.selector.to_string();
        let containers = match engine.containers().await {
            Ok(cs) => cs,
            Err(e) => return Outcome::Unknown(format!("{what}: {e}")),
        };
        if containers.is_empty() {
            return Outcome::Failing(format!("{what}: no such container"));
        }
        let mut problems = Vec::new();
        for c in &containers {
            let prefix = match &engine.selector {
                Selector::Name(_) => String::new(),
                Selector::Compose { .. } => format!("{} ", name_of(c)),
            };
            let vars: Vec<&String> = c
                .config
                .as_ref()
                .and_then(|c| c.env.as_ref())
                .map(|e| e.iter().collect())
                .unwrap_or_default();
            for (name, exp) in &self.env {
                // The last definition wins, as in the container.
                let value = vars.iter().rev().find_map(|kv| {
                    kv.split_once('=')
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v)
                });
                let key = format!("{prefix}env {name}");
                match value {
                    None => problems.push(Problem::Failing(format!("{key} is not set"))),
                    Some(v) => problems.extend(compare(&key, exp, v.as_bytes(), false)),
                }
            }
        }
        verdict(&what, problems)
    }
}

#[async_trait::async_trait]
impl Check for ConfigCheck {
    async fn run(&self) -> Outcome {
        match &self.side {
            Side::Docker(e) => self.docker(e).await,
            #[cfg(feature = "kubernetes")]
            Side::Kubernetes(k) => k.run(&self.env).await,
        }
    }
}

/// The node at `path` under `p` (mapping keys, or a list's item naming
/// the last step), as deep as it goes.
fn deepest<'n>(p: &'n Node, path: &[&str]) -> &'n Node {
    let mut at = p;
    for step in path {
        let next = match at {
            Node::Mapping(m) => m.get(*step),
            Node::Sequence(s) => s
                .iter()
                .find(|n| matches!(n, Node::Scalar(x) if x.as_str() == *step)),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    at
}

/// Where the key `path`'s last step is written (its key, or its item).
fn key_at(p: &Node, path: &[&str]) -> crate::yaml::Pos {
    let (last, parent) = path.split_last().expect("a path");
    match deepest(p, parent) {
        Node::Mapping(m) => m
            .keys()
            .find(|k| k.as_str() == *last)
            .map_or_else(|| crate::yaml::mapping_pos(m), crate::yaml::key_pos),
        other => crate::yaml::pos(deepest(other, &[last])),
    }
}

impl super::CheckKind for ConfigParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &Node) {
        use crate::yaml::{field_pos, pos};
        v.target(
            p,
            "target",
            &self.target,
            &["kubernetes", "docker"],
            "a config check",
        );
        let kind = v
            .config
            .and_then(|c| c.targets.get(&self.target))
            .map(|t| t.kind());
        match kind {
            Some("kubernetes") => {
                if let Some(why) =
                    Feature::Kubernetes.missing_for("a `config` check of a kubernetes target")
                {
                    v.err(field_pos(p, "target"), why);
                }
            }
            Some("docker") => {
                for (field, given) in [
                    ("config_maps", !self.config_maps.is_empty()),
                    ("secrets", !self.secrets.is_empty()),
                    ("container", self.container.is_some()),
                ] {
                    if given {
                        v.err(
                            key_at(p, &[field]),
                            format!(
                                "`{field}` applies to a kubernetes target; target {:?} is a docker target (its containers' env is checked)",
                                self.target
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
        if self.env.0.is_empty() && self.config_maps.is_empty() && self.secrets.is_empty() {
            v.err(
                pos(p),
                "a config check must test something: env, config_maps or secrets",
            );
        }
        let sections = std::iter::once(("env", None, &self.env))
            .chain(
                self.config_maps
                    .iter()
                    .map(|(n, k)| ("config_maps", Some(n.as_str()), k)),
            )
            .chain(
                self.secrets
                    .iter()
                    .map(|(n, k)| ("secrets", Some(n.as_str()), k)),
            );
        for (section, object, keys) in sections {
            for (key, e) in &keys.0 {
                let mut path = vec![section];
                path.extend(object);
                path.push(key);
                let at_field = |field: &str| {
                    let mut f = path.clone();
                    f.push(field);
                    pos(deepest(p, &f))
                };
                let set: Vec<&str> = [
                    ("equals", e.equals.is_some()),
                    ("matches", e.matches.is_some()),
                    ("sha256", e.sha256.is_some()),
                ]
                .into_iter()
                .filter_map(|(f, on)| on.then_some(f))
                .collect();
                if set.len() > 1 {
                    v.err(
                        key_at(p, &[&path[..], &[set[1]]].concat()),
                        format!(
                            "{key:?}: one of equals, matches or sha256, not {}",
                            set.join(" and ")
                        ),
                    );
                }
                if section == "secrets" && (e.equals.is_some() || e.matches.is_some()) {
                    let f = if e.equals.is_some() {
                        "equals"
                    } else {
                        "matches"
                    };
                    v.err(
                        key_at(p, &[&path[..], &[f]].concat()),
                        format!(
                            "{key:?}: a Secret's value is compared only by `sha256: HEX` (printf %s VALUE | sha256sum), never by `{f}`"
                        ),
                    );
                }
                if let Some(r) = &e.matches
                    && let Err(err) = Regex::new(r)
                {
                    v.err(
                        at_field("matches"),
                        format!("{key:?}: `matches` is not a valid regex: {err}"),
                    );
                }
                if let Some(h) = &e.sha256
                    && !(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    v.err(
                        at_field("sha256"),
                        format!(
                            "{key:?}: `sha256` must be 64 hex digits (printf %s VALUE | sha256sum), found {} characters",
                            h.chars().count()
                        ),
                    );
                }
            }
        }
    }

    fn target(&self) -> Option<&str> {
        Some(&self.target)
    }

    fn build(&self, timeout: Duration, config: &Config) -> Result<Arc<dyn Check>, BuildError> {
        Ok(Arc::new(ConfigCheck::build(self, timeout, config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_name_what_differs_and_never_a_hashed_value() {
        let re = Expected::Matches(Regex::new("^postgres://").unwrap());
        assert_eq!(compare("env U", &re, b"postgres://h/db", false), None);
        assert_eq!(
            compare("env U", &re, b"mysql://app:hunter2@h/db", false),
            Some(Problem::Failing(
                "env U is \"mysql://app:***@h/db\", which does not match \"^postgres://\"".into()
            ))
        );
        let eq = Expected::Equals("info".into());
        assert_eq!(
            compare("env L", &eq, b"debug", false),
            Some(Problem::Failing(
                "env L is \"debug\", expected \"info\"".into()
            ))
        );
        let h = Expected::Sha256(hex(&Sha256::digest(b"s3cret")));
        assert_eq!(compare("key k", &h, b"s3cret", true), None);
        let p = compare("key k", &h, b"changed-s3cret", true).unwrap();
        assert_eq!(
            p,
            Problem::Failing("key k differs from the expected hash".into())
        );
        assert_eq!(
            compare("env A", &eq, b"info", true),
            Some(Problem::Unknown(
                "env A comes from a Secret: medic compares it only by `sha256`".into()
            )),
            "a Secret's value is never compared in the clear"
        );
    }

    #[test]
    fn failing_facts_outweigh_what_medic_could_not_tell() {
        assert_eq!(verdict("w", vec![]), Outcome::Ok);
        assert_eq!(
            verdict(
                "w",
                vec![Problem::Unknown("u".into()), Problem::Failing("f".into())]
            ),
            Outcome::Failing("w: f".into())
        );
        assert_eq!(
            verdict("w", vec![Problem::Unknown("u".into())]),
            Outcome::Unknown("w: u".into())
        );
    }
}
