//! `systemd-restart`: `systemctl restart UNIT`.
//!
//! The same bounded process handling as `exec` (own process group, timeout,
//! captured output, always reaped), with the unit as its only input. Its
//! verification is the step's symptoms, as for any restart.

use serde::Deserialize;
use serde_json::json;

use super::exec::{ExecAction, ExecParams};
use super::{Action, ActionContext, ActionResult, BuildError};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdRestartParams {
    pub unit: String,
}

/// A runnable `systemd-restart`.
#[derive(Debug)]
pub struct SystemdRestart {
    unit: String,
    exec: ExecAction,
}

impl SystemdRestart {
    pub fn build(p: &SystemdRestartParams) -> Result<Self, BuildError> {
        Self::with_program(p, "systemctl")
    }

    /// With another `systemctl` (tests use a stand-in that records argv).
    pub fn with_program(p: &SystemdRestartParams, program: &str) -> Result<Self, BuildError> {
        // A unit still to be expanded is checked once it is (for_labels).
        if !super::template::has_vars(&p.unit)
            && let Err(e) = crate::unit::name(&p.unit)
        {
            return Err(BuildError::Invalid(format!(
                "systemd-restart: not a unit name: {e}"
            )));
        }
        let exec = ExecAction::build(&ExecParams {
            args: vec![program.into(), "restart".into(), p.unit.clone()],
            env: Default::default(),
            cwd: None,
        })?;
        Ok(SystemdRestart {
            unit: p.unit.clone(),
            exec,
        })
    }
}

#[async_trait::async_trait]
impl Action for SystemdRestart {
    fn describe(&self) -> String {
        format!("systemctl restart {}", self.unit)
    }

    fn inputs(&self) -> serde_json::Value {
        json!({ "unit": self.unit })
    }

    fn for_labels(
        &self,
        values: &super::template::Values,
    ) -> Result<Option<std::sync::Arc<dyn Action>>, super::template::TemplateError> {
        if !super::template::has_vars(&self.unit) {
            return Ok(None);
        }
        let unit = values.expand(&self.unit, super::template::Slot::Unit)?;
        let a = Self::with_program(&SystemdRestartParams { unit }, self.exec.program())
            .map_err(|e| super::template::TemplateError::Invalid(e.to_string()))?;
        Ok(Some(std::sync::Arc::new(a)))
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        self.exec.run(ctx).await
    }
}

impl super::ActionKind for SystemdRestartParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        // Globs restart every unit they match: a unit is one name, and a
        // glob written beside `${labels.NAME}` is refused now, not at 3 a.m.
        // (label names never contain one). The template syntax itself is
        // checked by the rule loader.
        let glob = self.unit.contains(['*', '?', '[', ']']);
        if (!super::template::has_vars(&self.unit) || glob)
            && let Err(e) = crate::unit::name(&self.unit)
        {
            v.err(
                crate::yaml::field_pos(p, "unit"),
                format!("not a unit name: {e}"),
            );
        }
    }

    fn expands() -> &'static [&'static str] {
        &["unit"]
    }

    fn build(
        &self,
        _config: &crate::config::Config,
    ) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        Ok(std::sync::Arc::new(SystemdRestart::build(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_systemctl_restart_unit() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("systemctl");
        let log = dir.path().join("argv");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$@\" > {}\n", log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let a = SystemdRestart::with_program(
            &SystemdRestartParams {
                unit: "prometheus.service".into(),
            },
            fake.to_str().unwrap(),
        )
        .unwrap();
        let r = a
            .run(&ActionContext::new("t", Duration::from_secs(5)))
            .await;
        assert!(r.ok, "{r:?}");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "restart prometheus.service\n"
        );
        assert_eq!(a.describe(), "systemctl restart prometheus.service");
    }

    #[test]
    fn option_like_units_are_refused() {
        let e = SystemdRestart::build(&SystemdRestartParams {
            unit: "--now".into(),
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "systemd-restart: not a unit name: \"--now\" starts with \"-\""
        );
        let e = SystemdRestart::build(&SystemdRestartParams {
            unit: "*.service".into(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("glob character '*'"), "{e}");
    }
}
