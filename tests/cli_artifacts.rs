//! What the command line generates from its own definition: shell
//! completions (checked by the shell itself), the man page (rendered by
//! groff with warnings on) and the version with its git commit.

use std::process::Command;

fn medic(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The commands the CLI has (from `medic --help`).
fn commands() -> Vec<String> {
    let (ok, help, _) = medic(&["--help"]);
    assert!(ok);
    help.split("Commands:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

#[test]
fn version_names_the_git_commit() {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    // Built from a checkout: its commit; from a tarball: "unknown".
    let commit = std::env::var("MEDIC_GIT_COMMIT")
        .ok()
        .or(head)
        .unwrap_or_else(|| "unknown".into());
    let want = format!("medic {} ({commit})\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(medic(&["--version"]).1, want);
    assert_eq!(medic(&["version"]).1, want);
}

#[test]
fn bash_completions_parse_and_offer_every_command() {
    let (ok, script, err) = medic(&["completions", "bash"]);
    assert!(ok, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medic.bash");
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Completing `medic ` offers every command (bash runs the function).
    let probe = format!(
        "source {}; COMP_WORDS=(medic ''); COMP_CWORD=1; _medic medic '' medic; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let out = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    for c in commands() {
        assert!(
            offered.lines().any(|l| l == c),
            "`medic <TAB>` lacks {c}: {offered}"
        );
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (ok, script, err) = medic(&["completions", shell]);
        assert!(ok && script.contains("medic"), "{shell}: {err}");
    }
    let (ok, _, err) = medic(&["completions", "tcsh"]);
    assert!(!ok && err.contains("invalid value"), "{err}");
}

#[test]
fn the_man_page_renders_cleanly_and_covers_every_command() {
    let (ok, page, err) = medic(&["man"]);
    assert!(ok, "{err}");
    assert!(
        page.contains(&format!(
            ".TH medic 1  \"medic {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medic.1");
    std::fs::write(&path, &page).unwrap();
    // groff with every warning: a malformed request shows up on stderr.
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-bcu"])
        .arg(&path)
        .output()
        .expect("groff (Debian's groff-base, part of man-db)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "groff: {stderr}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let text: String = text.replace(['\u{2010}', '\u{2212}'], "-");
    for c in commands() {
        // Listed among the commands, and a section of its own.
        let listed = format!("\n       medic {c}\n");
        let section = format!("\nMEDIC {}\n", c.to_uppercase());
        assert!(
            text.contains(&listed),
            "the man page does not list `medic {c}`:\n{text}"
        );
        assert!(
            text.contains(&section),
            "the man page has no section for `medic {c}`"
        );
    }
    assert!(
        !text.contains("medic-run(1)"),
        "a page that does not exist is named:\n{text}"
    );
    assert!(
        text.contains("-c, --config <CONFIG> [default: medic.yaml]"),
        "{text}"
    );
}
