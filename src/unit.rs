//! systemd unit names (`systemd.unit(5)`): what `systemd-restart` steps
//! and a PostgreSQL server's `restart: { systemd: UNIT }` may name. Here,
//! below the config and the actions, so both check names the same way.

/// A character a unit name (and a template instance) may have.
pub fn value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-')
}

/// The unit types `systemctl` knows; a name without one is a `.service`.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// A systemd unit name as `systemd.unit(5)` defines it: at most 255 bytes
/// of letters, digits, `:`, `_`, `.`, `\` and `-` (plus one `@` before a
/// template's instance), not starting with `-` or `.`; with a unit type
/// suffix or none (`systemctl` then adds `.service`). No globs: `systemctl
/// restart` would expand `*`, `?` and `[...]` over every loaded unit.
pub fn name(u: &str) -> Result<(), String> {
    if u.is_empty() {
        return Err("it is empty".into());
    }
    if u.len() > 255 {
        return Err(format!("{} bytes long (at most 255)", u.len()));
    }
    if let Some(c) = u.chars().find(|c| matches!(c, '*' | '?' | '[' | ']')) {
        return Err(format!("{u:?} has the glob character {c:?}"));
    }
    if u.starts_with('-') || u.starts_with('.') {
        return Err(format!("{u:?} starts with {:?}", &u[..1]));
    }
    if let Some(c) = u
        .chars()
        .find(|c| !(value_char(*c) || matches!(c, '\\' | '@')))
    {
        return Err(format!("{u:?} has {c:?}, which a unit name cannot have"));
    }
    if u.matches('@').count() > 1 {
        return Err(format!("{u:?} has more than one '@'"));
    }
    if let Some((stem, ty)) = u.rsplit_once('.')
        && UNIT_TYPES.contains(&ty)
        && stem.trim_end_matches('@').is_empty()
    {
        return Err(format!("{u:?} has no name before .{ty}"));
    }
    Ok(())
}
