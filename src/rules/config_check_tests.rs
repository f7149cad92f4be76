//! The `config` check's parameters as a rule file writes them: each
//! mistake at its `file:line:col`. (Here, not in `check::config`: loading
//! a rule is the rules layer's, above the checks.)

fn errors(check: &str) -> Vec<String> {
    let config = crate::config::load_str(
        "medic.yaml",
        "targets:\n  \
         backend: { kubernetes: { kind: Deployment, name: backend, namespace: keneyapp } }\n  \
         web: { docker: { container: web } }\n  \
         db: { tcp: { address: \"127.0.0.1:5432\" } }\n",
    )
    .unwrap();
    let rule = format!(
        "scenario: s\nsummary: s\nseverity: high\nrto: 1h\n\
         symptoms:\n  bad:\n    check:\n{check}\
         when: {{ any: [bad] }}\nplan:\n  - action: exec\n    args: [\"true\"]\nescalation: default\n"
    );
    match crate::rules::load_str("r.yaml", &rule, &config) {
        Ok(_) => vec![],
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_scalar_is_not_a_list_of_keys() {
    assert_eq!(
        errors("      config: { target: web, env: A }\n"),
        vec![
            "r.yaml:8:35: invalid type: string \"A\", expected a list of names, or a mapping of name to { equals | matches | sha256 }"
        ]
    );
}

#[test]
fn valid_parameters_load() {
    let ok = errors(
        "      config:\n        target: backend\n        container: backend\n        \
         env:\n          DATABASE_URL: { matches: '^postgres://' }\n          \
         API_KEY: { sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 }\n          \
         LOG_LEVEL: ~\n        config_maps: {backend-config: [LOG_LEVEL], other: { A: { equals: x } }}\n        \
         secrets: { backend-database: [url] }\n",
    );
    if cfg!(feature = "kubernetes") {
        assert_eq!(ok, Vec::<String>::new());
    } else {
        assert_eq!(ok.len(), 1, "{ok:?}");
        assert!(ok[0].contains("`kubernetes` feature"), "{ok:?}");
    }
    assert_eq!(
        errors("      config: { target: web, env: [PORT, HOME] }\n"),
        Vec::<String>::new()
    );
}

#[test]
fn bad_parameters_are_refused_where_written() {
    assert_eq!(
        errors("      config:\n        target: web\n        envv: [A]\n        env: [A]\n"),
        vec!["r.yaml:10:9: unknown field \"envv\" (did you mean \"env\"?)"]
    );
    assert_eq!(
        errors(
            "      config:\n        target: web\n        env:\n          A: { matches: '(' }\n          B: { sha256: ab12 }\n          C: { equals: x, sha256: ab }\n"
        ),
        vec![
            "r.yaml:11:25: \"A\": `matches` is not a valid regex: regex parse error:\n    (\n    ^\nerror: unclosed group",
            "r.yaml:12:24: \"B\": `sha256` must be 64 hex digits (printf %s VALUE | sha256sum), found 4 characters",
            "r.yaml:13:27: \"C\": one of equals, matches or sha256, not equals and sha256",
            "r.yaml:13:35: \"C\": `sha256` must be 64 hex digits (printf %s VALUE | sha256sum), found 2 characters",
        ]
    );
    assert_eq!(
        errors(
            "      config:\n        target: web\n        env: [A]\n        config_maps: { c: [k] }\n        secrets: { s: [k] }\n"
        ),
        vec![
            "r.yaml:11:9: `config_maps` applies to a kubernetes target; target \"web\" is a docker target (its containers' env is checked)",
            "r.yaml:12:9: `secrets` applies to a kubernetes target; target \"web\" is a docker target (its containers' env is checked)",
        ]
    );
    let e = errors(
        "      config:\n        target: backend\n        secrets:\n          s: { url: { matches: x } }\n",
    );
    assert!(
        e.iter().any(|e| e.starts_with(
            "r.yaml:11:23: \"url\": a Secret's value is compared only by `sha256: HEX`"
        )),
        "{e:?}"
    );
    assert_eq!(
        errors("      config: { target: db, env: [A] }\n"),
        vec![
            "r.yaml:8:25: target \"db\" is a tcp target, but a config check needs a kubernetes or docker target"
        ]
    );
    assert_eq!(
        errors("      config: { target: web }\n"),
        vec!["r.yaml:8:15: a config check must test something: env, config_maps or secrets"]
    );
    assert_eq!(
        errors("      config: { target: web, env: { A: { equal: x } } }\n"),
        vec!["r.yaml:8:42: unknown field \"equal\" (did you mean \"equals\"?)"]
    );
}
