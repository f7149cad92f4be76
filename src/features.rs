//! Cargo features: the optional parts of medic, and the one refusal a
//! build without one gives.
//!
//! `aws` brings the `route53.failover` action and S3 backup storage;
//! `kubernetes` the `kubernetes` check (and `source` and `config` checks of a kubernetes
//! target), the `k8s.*` actions and the Lease leadership. Both are on by
//! default. A build without one still parses every config and rule file
//! (they stay one language); it refuses, where the file uses it, what it
//! cannot run.

/// An optional part of medic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Aws,
    Kubernetes,
}

impl Feature {
    /// Its name in Cargo.toml.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Aws => "aws",
            Feature::Kubernetes => "kubernetes",
        }
    }

    /// Whether this build of medic has it.
    pub fn enabled(self) -> bool {
        match self {
            Feature::Aws => cfg!(feature = "aws"),
            Feature::Kubernetes => cfg!(feature = "kubernetes"),
        }
    }

    /// The refusal of `what` (e.g. "action `route53.failover`"), which
    /// needs this feature.
    pub fn needed_by(self, what: &str) -> String {
        let f = self.name();
        format!("{what} needs medic built with the `{f}` feature (cargo build --features {f})")
    }

    /// `Some(refusal)` when this build lacks the feature `what` needs.
    pub fn missing_for(self, what: &str) -> Option<String> {
        (!self.enabled()).then(|| self.needed_by(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_the_feature_and_how_to_build_it() {
        assert_eq!(
            Feature::Aws.needed_by("action `route53.failover`"),
            "action `route53.failover` needs medic built with the `aws` feature \
             (cargo build --features aws)"
        );
        assert_eq!(
            Feature::Kubernetes
                .missing_for("check `kubernetes`")
                .is_some(),
            !cfg!(feature = "kubernetes")
        );
        assert_eq!(
            Feature::Aws.missing_for("x").is_some(),
            !cfg!(feature = "aws")
        );
    }
}

/// What a build without both features says about the shipped files
/// (`cargo test --no-default-features --lib features`, a step of the
/// test command).
#[cfg(all(test, not(feature = "aws"), not(feature = "kubernetes")))]
mod without {
    use std::path::Path;

    #[test]
    fn the_shipped_rules_are_refused_where_they_use_a_missing_feature() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config =
            crate::config::load(&root.join("medic.yaml")).unwrap_or_else(|d| panic!("{d}"));
        let errors = crate::rules::load_paths(&[root.join("rules")], &config)
            .expect_err("the shipped rules use route53 and kubernetes");
        let errors: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        eprintln!("{}", errors.join("\n"));
        assert!(!errors.is_empty());
        let at = regex::Regex::new(r"^[^:]+\.yaml:\d+:\d+: .*needs medic built with the `(aws|kubernetes)` feature \(cargo build --features (aws|kubernetes)\)$").unwrap();
        for e in &errors {
            assert!(
                at.is_match(e),
                "not a feature refusal at file:line:col: {e}"
            );
        }
        let infra = "complete-infrastructure-failure.yaml:59:";
        assert!(
            errors.iter().any(|e| e.contains(infra)
                && e.contains("`route53.failover`")
                && e.contains("`aws`")),
            "route53.failover is refused where it is written"
        );
        assert!(errors.iter().any(|e| e.contains("`kubernetes` feature")));
    }
}
