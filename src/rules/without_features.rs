//! What a build without both optional features (`aws`, `kubernetes`) says
//! about the shipped files (`cargo test --no-default-features --lib
//! features`, a step of the test command). Here, not in `features`:
//! loading config and rules is above the bottom layer.

use std::path::Path;

#[test]
fn the_shipped_rules_are_refused_where_they_use_a_missing_feature() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = crate::config::load(&root.join("medic.yaml")).unwrap_or_else(|d| panic!("{d}"));
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
        errors
            .iter()
            .any(|e| e.contains(infra) && e.contains("`route53.failover`") && e.contains("`aws`")),
        "route53.failover is refused where it is written"
    );
    assert!(errors.iter().any(|e| e.contains("`kubernetes` feature")));
}
