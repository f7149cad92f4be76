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
