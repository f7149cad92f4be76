//! `scripts/image.sh --offline` against a real Docker Engine (a private
//! dockerd): it packages this build's medic binary (the debug one here;
//! the release one for users) into an image by `docker import`, and that
//! image runs as it documents: uid 65532, `medic version` and `medic
//! check` on the shipped config and rules, and `medic run` (its default
//! command) answering `/healthz` and `/readyz` with its store in
//! `/var/lib/medic`.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::docker::Dockerd;
use common::{block_on, free_port, wait_until};

fn docker(d: &Dockerd, args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", d.socket_str()))
        .output()
        .expect("the docker CLI (docker.io) runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_offline_image_runs_medic_as_documented() {
    let d = Dockerd::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tag = format!("medic-image-test:{}", std::process::id());
    let built = Command::new(root.join("scripts/image.sh"))
        .current_dir(root)
        .args([
            "--offline",
            "--binary",
            env!("CARGO_BIN_EXE_medic"),
            "--tag",
        ])
        .arg(&tag)
        .env("DOCKER_HOST", format!("unix://{}", d.socket_str()))
        .output()
        .unwrap();
    assert!(built.status.success(), "image.sh failed: {}", text(&built));
    assert!(
        text(&built).contains(&format!("image: {tag}")),
        "{}",
        text(&built)
    );

    let user = docker(
        &d,
        &["image", "inspect", "--format", "{{.Config.User}}", &tag],
    );
    assert_eq!(text(&user).trim(), "65532:65532");

    let version = docker(&d, &["run", "--rm", "--network", "host", &tag, "version"]);
    assert!(version.status.success(), "{}", text(&version));
    assert!(
        text(&version).starts_with("medic 0.1.0 ("),
        "{}",
        text(&version)
    );

    let check = docker(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "host",
            &tag,
            "check",
            "--config",
            "/etc/medic/medic.yaml",
            "/etc/medic/rules",
        ],
    );
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).starts_with("ok: "), "{}", text(&check));

    // Its default command, on a port of the test's own.
    let port = free_port();
    let name = format!("medic-image-test-{}", std::process::id());
    let run = docker(
        &d,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "-e",
            &format!("MEDIC_HTTP__LISTEN=127.0.0.1:{port}"),
            &tag,
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    let get = |path: &str| {
        block_on(async {
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}{path}"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        })
    };
    let mut ready = None;
    wait_until(
        Duration::from_secs(20),
        "the container's medic to be ready",
        || {
            ready = get("/readyz");
            ready == Some(200)
        },
    );
    assert_eq!(get("/healthz"), Some(200));
    let logs = docker(&d, &["logs", &name]);
    assert!(
        text(&logs).contains("\"level\":\"INFO\""),
        "JSON logs by default: {}",
        text(&logs)
    );
    let state = docker(
        &d,
        &[
            "inspect",
            "--format",
            "{{.State.Running}} {{.Config.User}}",
            &name,
        ],
    );
    assert_eq!(text(&state).trim(), "true 65532:65532");
    let _ = docker(&d, &["rm", "-f", &name]);
}
