//! `systemd-restart`: `systemctl restart UNIT`.

use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdRestartParams {
    pub unit: String,
}
