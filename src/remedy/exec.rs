//! `exec`: run a command (argv, env, timeout, captured output).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::k8s::EnvValue;

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

pub struct ExecAction {}
impl ExecAction {
    pub fn build(_p: &ExecParams) -> Result<Self, super::BuildError> {
        todo!()
    }
}
#[async_trait::async_trait]
impl super::Action for ExecAction {
    fn describe(&self) -> String {
        todo!()
    }
    fn inputs(&self) -> serde_json::Value {
        todo!()
    }
    async fn run(&self, _ctx: &super::ActionContext) -> super::ActionResult {
        todo!()
    }
}
