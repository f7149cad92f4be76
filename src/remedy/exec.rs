//! `exec`: run a command (argv, env, timeout, captured output).
//!
//! No shell: `args[0]` is the program. The command runs in its own process
//! group so a timeout kills everything it started (SIGTERM, then SIGKILL
//! after a short grace), and it is always waited on, so nothing lingers as a
//! zombie. The exit status gives the outcome.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::k8s::EnvValue;
use super::{Action, ActionContext, ActionResult, BuildError};

/// Captured output is cut to this many bytes per stream.
const OUTPUT_LIMIT: usize = 16 * 1024;
/// Between SIGTERM and SIGKILL on timeout.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// `action: exec` with `args: [...]`, optional `env` and `cwd`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// argv; the first element is the program (no shell).
    pub args: Vec<String>,
    /// Extra environment; values may be secret references.
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    pub cwd: Option<PathBuf>,
}

/// A runnable `exec` step.
#[derive(Debug)]
pub struct ExecAction {
    params: ExecParams,
}

impl ExecAction {
    pub fn build(p: &ExecParams) -> Result<Self, BuildError> {
        if p.args.first().is_none_or(|a| a.is_empty()) {
            return Err(BuildError::Invalid(
                "exec needs a non-empty args list".into(),
            ));
        }
        if let Some((k, _)) = p.env.iter().find(|(_, v)| v.kube_ref().is_some()) {
            return Err(BuildError::Invalid(format!(
                "exec env {k}: secret_key_ref is for k8s.set-env; use {{env: NAME}} or {{file: PATH}}"
            )));
        }
        Ok(ExecAction { params: p.clone() })
    }

    /// The program it runs.
    pub fn program(&self) -> &str {
        &self.params.args[0]
    }

    /// The parameters with `${labels.NAME}` expanded, every value checked
    /// as an argument (never a leading `-`, the step's pattern or the
    /// default class); `None` if they have nothing to expand.
    fn expanded(
        &self,
        values: &super::template::Values,
    ) -> Result<Option<ExecParams>, super::template::TemplateError> {
        use super::template::{Slot, has_vars};
        let p = &self.params;
        let plain = |v: &EnvValue| matches!(v, EnvValue::Plain(s) if has_vars(s));
        let cwd_vars = p
            .cwd
            .as_ref()
            .is_some_and(|c| has_vars(&c.to_string_lossy()));
        if !p.args.iter().any(|a| has_vars(a)) && !p.env.values().any(plain) && !cwd_vars {
            return Ok(None);
        }
        let args = p
            .args
            .iter()
            .map(|a| values.expand(a, Slot::Arg))
            .collect::<Result<_, _>>()?;
        let mut env = BTreeMap::new();
        for (k, v) in &p.env {
            let v = match v {
                EnvValue::Plain(s) => EnvValue::Plain(values.expand(s, Slot::Arg)?),
                other => other.clone(),
            };
            env.insert(k.clone(), v);
        }
        let cwd = match &p.cwd {
            Some(c) => Some(PathBuf::from(
                values.expand(&c.to_string_lossy(), Slot::Arg)?,
            )),
            None => None,
        };
        Ok(Some(ExecParams { args, env, cwd }))
    }
}

async fn read_capped(mut r: impl AsyncRead + Unpin) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            // Keep draining past the cap so the child never blocks on a full pipe.
            Ok(n) if buf.len() < OUTPUT_LIMIT => {
                let take = n.min(OUTPUT_LIMIT - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            Ok(_) => {}
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[async_trait::async_trait]
impl Action for ExecAction {
    fn describe(&self) -> String {
        format!("exec {:?}", self.params.args)
    }

    fn inputs(&self) -> serde_json::Value {
        let env: BTreeMap<&str, String> = self
            .params
            .env
            .iter()
            .map(|(k, v)| {
                let shown = match v {
                    EnvValue::Plain(s) => s.clone(),
                    EnvValue::Secret(r) => format!("<secret {}>", secret_ref_name(r)),
                    EnvValue::Kube(_) | EnvValue::KubeFrom(_) => "<secret_key_ref>".to_string(),
                };
                (k.as_str(), shown)
            })
            .collect();
        json!({ "args": self.params.args, "env": env, "cwd": self.params.cwd })
    }

    fn for_labels(
        &self,
        values: &super::template::Values,
    ) -> Result<Option<std::sync::Arc<dyn Action>>, super::template::TemplateError> {
        Ok(self.expanded(values)?.map(|params| {
            let a: std::sync::Arc<dyn Action> = std::sync::Arc::new(ExecAction { params });
            a
        }))
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let mut cmd = Command::new(&self.params.args[0]);
        cmd.args(&self.params.args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &self.params.cwd {
            cmd.current_dir(cwd);
        }
        for (k, v) in &self.params.env {
            match v {
                EnvValue::Plain(s) => {
                    cmd.env(k, s);
                }
                EnvValue::Secret(r) => match r.resolve() {
                    Ok(secret) => {
                        cmd.env(k, secret.expose());
                    }
                    Err(e) => return failed(format!("env {k}: {e}"), json!({})),
                },
                EnvValue::Kube(_) | EnvValue::KubeFrom(_) => {
                    return failed(
                        format!("env {k}: secret_key_ref is for k8s.set-env"),
                        json!({}),
                    );
                }
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return failed(
                    format!("cannot start {:?}: {e}", self.params.args[0]),
                    json!({}),
                );
            }
        };
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        let stdout = tokio::spawn(read_capped(child.stdout.take().expect("piped")));
        let stderr = tokio::spawn(read_capped(child.stderr.take().expect("piped")));
        let started = tokio::time::Instant::now();
        let mut timed_out = false;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = tokio::time::sleep(ctx.timeout) => { timed_out = true; stop_group(&mut child, pid).await }
            _ = ctx.cancel.cancelled() => stop_group(&mut child, pid).await,
        };
        let out = stdout.await.unwrap_or_default();
        let err = stderr.await.unwrap_or_default();
        let data = json!({
            "stdout": out,
            "stderr": err,
            "elapsed_ms": started.elapsed().as_millis() as u64,
            "timed_out": timed_out,
        });
        match status {
            _ if timed_out => failed(
                format!(
                    "timed out after {}; process group killed",
                    humantime::format_duration(ctx.timeout)
                ),
                data,
            ),
            Ok(s) if s.success() => ActionResult {
                ok: true,
                detail: "exit status 0".into(),
                data,
            },
            Ok(s) => {
                let last = err.lines().last().unwrap_or("").trim();
                let detail = match s.code() {
                    Some(code) if last.is_empty() => format!("exit status {code}"),
                    Some(code) => format!("exit status {code}: {last}"),
                    None => format!("killed by signal ({s})"),
                };
                failed(detail, data)
            }
            Err(e) => failed(format!("waiting for the command: {e}"), data),
        }
    }
}

fn failed(detail: String, data: serde_json::Value) -> ActionResult {
    ActionResult {
        ok: false,
        detail,
        data,
    }
}

fn secret_ref_name(r: &crate::secret::SecretRef) -> String {
    match r {
        crate::secret::SecretRef::Env(n) => format!("env:{n}"),
        crate::secret::SecretRef::File(p) => format!("file:{}", p.display()),
    }
}

/// SIGTERM the whole group, SIGKILL after a grace, and always reap the child.
async fn stop_group(
    child: &mut tokio::process::Child,
    pid: Option<Pid>,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pid) = pid {
        let _ = killpg(pid, Signal::SIGTERM);
        if let Ok(s) = tokio::time::timeout(KILL_GRACE, child.wait()).await {
            let _ = killpg(pid, Signal::SIGKILL);
            return s;
        }
        let _ = killpg(pid, Signal::SIGKILL);
    }
    let _ = child.start_kill();
    child.wait().await
}

impl super::ActionKind for ExecParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, item_pos};
        match self.args.first() {
            None => v.err(
                field_pos(p, "args"),
                "exec needs a program: args: [PROGRAM, ARG...]",
            ),
            Some(prog) if prog.trim().is_empty() => v.err(
                item_pos(p, "args", 0),
                "the program (first of args) must not be empty",
            ),
            Some(_) => {}
        }
    }

    fn expands() -> &'static [&'static str] {
        &["args", "env", "cwd"]
    }

    fn build(
        &self,
        _config: &crate::config::Config,
    ) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        Ok(std::sync::Arc::new(ExecAction::build(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(args: &[&str]) -> ExecAction {
        ExecAction::build(&ExecParams {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: None,
        })
        .unwrap()
    }

    fn ctx(timeout: Duration) -> ActionContext {
        ActionContext::new("t", timeout)
    }

    #[tokio::test]
    async fn success_captures_output() {
        let r = action(&["sh", "-c", "echo hello; echo oops >&2"])
            .run(&ctx(Duration::from_secs(10)))
            .await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.data["stdout"], "hello\n");
        assert_eq!(r.data["stderr"], "oops\n");
    }

    #[tokio::test]
    async fn exit_status_gives_outcome() {
        let r = action(&["sh", "-c", "echo broken >&2; exit 3"])
            .run(&ctx(Duration::from_secs(10)))
            .await;
        assert!(!r.ok);
        assert_eq!(r.detail, "exit status 3: broken");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // A grandchild that would write the marker if it outlived the timeout.
        let script = format!("(sleep 3; touch {}) & sleep 30", marker.display());
        let r = action(&["sh", "-c", &script])
            .run(&ctx(Duration::from_millis(300)))
            .await;
        assert!(!r.ok);
        assert_eq!(r.data["timed_out"], true);
        assert!(
            r.detail.starts_with("timed out after 300ms"),
            "{}",
            r.detail
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!marker.exists(), "a grandchild outlived the timeout");
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_failure() {
        let r = action(&["/nonexistent/medic-test-program"])
            .run(&ctx(Duration::from_secs(1)))
            .await;
        assert!(!r.ok);
        assert!(
            r.detail
                .starts_with("cannot start \"/nonexistent/medic-test-program\"")
        );
    }

    #[tokio::test]
    async fn secret_env_is_passed_but_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("pw");
        std::fs::write(&secret_file, "s3cr3t-value\n").unwrap();
        let seen = dir.path().join("seen");
        let params = ExecParams {
            args: vec![
                "sh".into(),
                "-c".into(),
                format!("printf %s \"$PW\" > {}", seen.display()),
            ],
            env: BTreeMap::from([(
                "PW".to_string(),
                EnvValue::Secret(crate::secret::SecretRef::File(secret_file)),
            )]),
            cwd: None,
        };
        let a = ExecAction::build(&params).unwrap();
        let r = a.run(&ctx(Duration::from_secs(5))).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(std::fs::read_to_string(&seen).unwrap(), "s3cr3t-value");
        let shown = format!("{} {} {:?}", a.inputs(), a.describe(), r);
        assert!(!shown.contains("s3cr3t"), "secret leaked: {shown}");
        assert!(shown.contains("<secret file:"), "{shown}");
    }

    #[test]
    fn empty_args_refused() {
        let e = ExecAction::build(&ExecParams {
            args: vec![],
            env: BTreeMap::new(),
            cwd: None,
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "exec needs a non-empty args list");
    }
}
