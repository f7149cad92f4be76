//! Demoting a PostgreSQL server on disk, while it is down: the fence that
//! comes before the old primary can accept a write at all.
//!
//! A fence over SQL needs the old primary to answer, and races the first
//! client that reaches it after its restart. A server whose data directory
//! medic can reach (`data_dir:` on a member, on medic's host) is demoted
//! before the failover promotes another member, as Patroni's restarted
//! node comes back: `standby.signal` in the data directory and a
//! `primary_conninfo` naming the new primary in `postgresql.auto.conf`
//! (its `primary_slot_name` removed: the new primary has no slot for it).
//! When it starts again it starts in recovery, read-only, and either
//! streams from the new primary (its WAL did not go past the fork point)
//! or stays in recovery on its old timeline until it is rebuilt (pg_rewind
//! or a new base backup). Nothing of it is written while PostgreSQL could
//! read it half-written: each file is written beside and renamed, owned
//! like the data directory.
//!
//! `default_transaction_read_only` is not written: in recovery every
//! transaction is read-only anyway, and a setting left behind would make
//! the member a read-only primary the day a later failover promotes it.
//! The password of the new primary is not written either: replication
//! authenticates by the server's own passfile or `pg_hba.conf`.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::PostgresTarget;

/// The keys medic replaces in `postgresql.auto.conf`.
const REPLACED: &[&str] = &["primary_conninfo", "primary_slot_name"];

/// What [`demote`] changed, to undo it when the promotion fails.
#[derive(Debug)]
pub struct Demoted {
    data_dir: PathBuf,
    /// `postgresql.auto.conf` before (None: there was none).
    auto_conf_before: Option<String>,
    /// `standby.signal` existed before.
    signal_existed: bool,
    /// What was done, for the timeline.
    pub detail: String,
}

/// Whether `data_dir` looks like a PostgreSQL data directory medic can
/// reach: `Err` says why not.
pub fn reachable(data_dir: &Path) -> Result<(), String> {
    let v = data_dir.join("PG_VERSION");
    match std::fs::metadata(&v) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "data_dir {}: {} ({e})",
            data_dir.display(),
            if e.kind() == std::io::ErrorKind::NotFound {
                "not a PostgreSQL data directory (no PG_VERSION)"
            } else {
                "cannot be read"
            }
        )),
    }
}

/// A libpq conninfo value, quoted when it must be.
fn conninfo_value(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/@".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// The `primary_conninfo` of a standby of `primary`, named `me`.
pub fn conninfo(primary: &PostgresTarget, me: &str) -> String {
    format!(
        "host={} port={} user={} application_name={}",
        conninfo_value(&primary.host),
        primary.port,
        conninfo_value(&primary.user),
        conninfo_value(me)
    )
}

/// `postgresql.auto.conf` with `REPLACED` keys removed and the standby's
/// settings appended.
fn rewrite_auto_conf(before: &str, conninfo: &str, note: &str) -> String {
    let mut out: String = before
        .lines()
        .filter(|l| {
            let key = l
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            !REPLACED.contains(&key.as_str())
        })
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("# {note}\n"));
    out.push_str(&format!(
        "primary_conninfo = '{}'\n",
        conninfo.replace('\'', "''")
    ));
    out
}

/// Writes `text` to `path` through a file beside it, owned like `dir`.
fn write_owned(dir: &Path, path: &Path, text: &str) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension("medic-tmp");
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("create", e))?;
    f.write_all(text.as_bytes()).map_err(|e| fail("write", e))?;
    f.sync_all().map_err(|e| fail("sync", e))?;
    drop(f);
    if let Err(e) = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid())) {
        // Not root and not the owner: the server cannot read a file it
        // does not own, so do not put it in place.
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "chown {} to the data directory's owner: {e}",
            tmp.display()
        ));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("rename {} to {}: {e}", tmp.display(), path.display())
    })
}

/// Demotes the server `me` with its data directory at `data_dir` to a
/// standby of `primary` (named `primary_name`): `standby.signal` and
/// `primary_conninfo`. `why` goes into the file as a comment.
pub fn demote(
    data_dir: &Path,
    me: &str,
    primary_name: &str,
    primary: &PostgresTarget,
    why: &str,
) -> Result<Demoted, String> {
    reachable(data_dir)?;
    let auto = data_dir.join("postgresql.auto.conf");
    let auto_conf_before = match std::fs::read_to_string(&auto) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("read {}: {e}", auto.display())),
    };
    let signal = data_dir.join("standby.signal");
    let signal_existed = signal.exists();
    let ci = conninfo(primary, me);
    let text = rewrite_auto_conf(auto_conf_before.as_deref().unwrap_or(""), &ci, why);
    write_owned(data_dir, &auto, &text)?;
    if !signal_existed && let Err(e) = write_owned(data_dir, &signal, "") {
        // Put the configuration back as it was: half a demotion is none.
        let _ = match &auto_conf_before {
            Some(t) => write_owned(data_dir, &auto, t),
            None => std::fs::remove_file(&auto).map_err(|e| e.to_string()),
        };
        return Err(e);
    }
    Ok(Demoted {
        data_dir: data_dir.to_path_buf(),
        auto_conf_before,
        signal_existed,
        detail: format!(
            "{me} demoted on disk in {}: standby.signal, primary_conninfo = '{ci}' (a standby of {primary_name}); it restarts in recovery, read-only",
            data_dir.display()
        ),
    })
}

impl Demoted {
    /// Undoes [`demote`] (the promotion it was for did not happen): the
    /// old `postgresql.auto.conf` back, `standby.signal` removed unless it
    /// was there before.
    pub fn undo(&self) -> Result<String, String> {
        let auto = self.data_dir.join("postgresql.auto.conf");
        match &self.auto_conf_before {
            Some(t) => write_owned(&self.data_dir, &auto, t)?,
            None => std::fs::remove_file(&auto).map_err(|e| format!("{}: {e}", auto.display()))?,
        }
        if !self.signal_existed {
            let s = self.data_dir.join("standby.signal");
            std::fs::remove_file(&s).map_err(|e| format!("{}: {e}", s.display()))?;
        }
        Ok(format!(
            "demotion on disk undone in {}",
            self.data_dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> PostgresTarget {
        PostgresTarget {
            host: "10.0.0.2".into(),
            port: 5433,
            user: "repl user".into(),
            dbname: "postgres".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_auto_conf_keeps_other_settings_and_replaces_the_upstream() {
        let before = "# Do not edit this file manually!\nwork_mem = '8MB'\nprimary_conninfo = 'host=old'\nPrimary_Slot_Name = 'replica1'\n";
        let after = rewrite_auto_conf(before, &conninfo(&primary(), "db-a"), "medic");
        assert_eq!(
            after,
            "# Do not edit this file manually!\nwork_mem = '8MB'\n# medic\nprimary_conninfo = 'host=10.0.0.2 port=5433 user=''repl user'' application_name=db-a'\n"
        );
    }

    #[test]
    fn demote_writes_the_signal_and_undo_puts_everything_back() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(d.path().join("postgresql.auto.conf"), "work_mem = '8MB'\n").unwrap();
        let done = demote(d.path(), "db-a", "db-b", &primary(), "failover").unwrap();
        assert!(d.path().join("standby.signal").exists());
        let conf = std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert!(
            conf.starts_with(
                "work_mem = '8MB'\n# failover\nprimary_conninfo = 'host=10.0.0.2 port=5433"
            ),
            "{conf}"
        );
        assert!(
            done.detail.contains("db-a demoted on disk in"),
            "{}",
            done.detail
        );
        done.undo().unwrap();
        assert!(!d.path().join("standby.signal").exists());
        assert_eq!(
            std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap(),
            "work_mem = '8MB'\n"
        );
    }

    #[test]
    fn a_directory_that_is_not_a_data_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = demote(d.path(), "db-a", "db-b", &primary(), "x").unwrap_err();
        assert!(
            e.contains("not a PostgreSQL data directory (no PG_VERSION)"),
            "{e}"
        );
        assert!(!d.path().join("standby.signal").exists());
    }
}
