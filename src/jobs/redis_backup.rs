//! `redis.backup`: the runbook's Redis backup. `BGSAVE` on the target,
//! wait until `LASTSAVE` moves past the value read before (bounded by
//! `save_timeout`), then copy the RDB file the server names
//! (`CONFIG GET dir` + `dbfilename`) to every place of the job,
//! verified ([`rdb::check`]: the `REDIS` magic and the trailing CRC64) and
//! checksummed before it counts, with the same retention as
//! `postgres.backup`.
//!
//! The file is read where medic runs: medic must run on the Redis host (or
//! see its data directory mounted). When the file is not readable the run
//! fails and says so; medic has no remote copy protocol of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::backup::Copies;
use super::storage;
use super::{JobContext, JobError, Report};
use crate::check::redis::info_field;
use crate::config::{Config, RedisBackupJobConfig, TargetConfig};

pub mod rdb;

/// A built `redis.backup` job.
pub struct RedisBackupJob {
    target: String,
    address: String,
    client: redis::Client,
    copies: Copies,
    save_timeout: Duration,
}

impl RedisBackupJob {
    /// Builds job `name` from its config.
    pub fn build(name: &str, c: &RedisBackupJobConfig, config: &Config) -> Result<Self, JobError> {
        let t = match config.targets.get(&c.target) {
            Some(TargetConfig::Redis(t)) => t,
            Some(_) => {
                return Err(JobError::Invalid(format!(
                    "target {:?} is not a redis target",
                    c.target
                )));
            }
            None => return Err(JobError::Invalid(format!("unknown target {:?}", c.target))),
        };
        let client = crate::connect::redis(&c.target, t).map_err(JobError::Invalid)?;
        Ok(RedisBackupJob {
            target: c.target.clone(),
            address: t.address.clone(),
            client,
            copies: Copies::of(config, name)?,
            save_timeout: c.save_timeout.get(),
        })
    }
}

#[async_trait::async_trait]
impl super::Job for RedisBackupJob {
    fn kind(&self) -> &'static str {
        "redis.backup"
    }

    async fn run(&self, cx: &JobContext) -> Report {
        self.copies
            .run(cx, "redis-backup", |name, partial, work| async move {
                let data = self.backup_into(cx, &name, &partial, &work).await?;
                let summary = format!(
                    "redis backup {name} of {} taken, verified and stored ({} bytes, {} keys)",
                    self.target, data["size"], data["keys"]
                );
                Ok((summary, data))
            })
            .await
    }
}

fn rerr(what: &str, e: redis::RedisError) -> String {
    format!("{what}: {e}")
}

impl RedisBackupJob {
    async fn backup_into(
        &self,
        cx: &JobContext,
        name: &str,
        partial: &Path,
        work: &Path,
    ) -> Result<Value, String> {
        let a = &self.address;
        let mut conn = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| rerr(&format!("connect to {a}"), e))?;
        let keys = keyspace_keys(&mut conn).await?;
        let before = self.save(cx, &mut conn).await?;
        let path = rdb_path(&mut conn).await?;
        cx.event(
            "copy",
            format!("copying {} from {a}", path.display()),
            json!({ "path": path.display().to_string() }),
        )
        .await;
        copy_file(&path, partial, a).await?;
        let rdb = rdb::check(partial).await?;
        let (sha256, size) = storage::sha256_file(partial).await?;
        cx.event(
            "verify",
            format!("{}; sha256 {sha256}, {size} bytes", rdb.describe()),
            json!({ "rdb_version": rdb.version, "crc64": rdb.crc64_hex(), "sha256": sha256, "size": size }),
        )
        .await;
        let stored = self.copies.store(cx, work, partial, name).await?;
        Ok(json!({
            "file": name,
            "sha256": sha256,
            "size": size,
            "keys": keys,
            "rdb_version": rdb.version,
            "crc64": rdb.crc64_hex(),
            "source": path.display().to_string(),
            "lastsave_before": before,
            "stored": stored,
        }))
    }

    /// `BGSAVE`, then waits until `LASTSAVE` moves past the value read
    /// before (at most `save_timeout`). Returns the value read before.
    async fn save(&self, cx: &JobContext, conn: &mut MultiplexedConnection) -> Result<i64, String> {
        let a = &self.address;
        let before: i64 = redis::cmd("LASTSAVE")
            .query_async(conn)
            .await
            .map_err(|e| rerr("LASTSAVE", e))?;
        // LASTSAVE counts whole seconds: a save that ends in the second of
        // the previous one would not move it. Start the save in a later
        // second than `before` (by the server's clock).
        let deadline = tokio::time::Instant::now() + self.save_timeout;
        loop {
            let (secs, _micros): (i64, i64) = redis::cmd("TIME")
                .query_async(conn)
                .await
                .map_err(|e| rerr("TIME", e))?;
            if secs > before || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // SCHEDULE: when an AOF rewrite runs, the save starts after it
        // instead of being refused. A save already running (another
        // BGSAVE) is waited for, then ours is started.
        loop {
            match redis::cmd("BGSAVE")
                .arg("SCHEDULE")
                .query_async::<String>(conn)
                .await
            {
                Ok(reply) => {
                    cx.event(
                        "bgsave",
                        format!("BGSAVE on {a}: {reply} (LASTSAVE was {before})"),
                        json!({ "lastsave_before": before }),
                    )
                    .await;
                    break;
                }
                Err(e) if e.to_string().contains("already in progress") => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!(
                            "BGSAVE on {a}: another save was still running after {}",
                            humantime::format_duration(self.save_timeout)
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(rerr(&format!("BGSAVE on {a}"), e)),
            }
        }
        loop {
            let now: i64 = redis::cmd("LASTSAVE")
                .query_async(conn)
                .await
                .map_err(|e| rerr("LASTSAVE", e))?;
            if now > before {
                return Ok(before);
            }
            let info: String = redis::cmd("INFO")
                .arg("persistence")
                .query_async(conn)
                .await
                .map_err(|e| rerr("INFO persistence", e))?;
            let status = info_field(&info, "rdb_last_bgsave_status").unwrap_or("unknown");
            let running = info_field(&info, "rdb_bgsave_in_progress") == Some("1");
            let scheduled = info_field(&info, "aof_rewrite_in_progress") == Some("1")
                || info_field(&info, "aof_rewrite_scheduled") == Some("1");
            // A save that ran and failed: LASTSAVE stays, the status is err.
            if !running && !scheduled && status == "err" {
                return Err(format!(
                    "BGSAVE on {a} failed: rdb_last_bgsave_status is err, LASTSAVE still {before} (see the Redis log: often the data directory is not writable or the disk is full)"
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "BGSAVE on {a} did not finish within {}: LASTSAVE still {before}, rdb_last_bgsave_status {status}, rdb_bgsave_in_progress {}",
                    humantime::format_duration(self.save_timeout),
                    u8::from(running)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Keys in every database, from INFO keyspace (`db0:keys=N,...`).
pub async fn keyspace_keys(conn: &mut MultiplexedConnection) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(conn)
        .await
        .map_err(|e| rerr("INFO keyspace", e))?;
    Ok(parse_keyspace(&info))
}

fn parse_keyspace(info: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            l.split_once(':')?
                .1
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("keys="))?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The RDB file the server writes: `CONFIG GET dir` joined with
/// `CONFIG GET dbfilename`.
async fn rdb_path(conn: &mut MultiplexedConnection) -> Result<PathBuf, String> {
    let get = |what: &'static str| {
        let mut conn = conn.clone();
        async move {
            let v: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(what)
                .query_async(&mut conn)
                .await
                .map_err(|e| rerr(&format!("CONFIG GET {what}"), e))?;
            v.get(1)
                .cloned()
                .ok_or_else(|| format!("CONFIG GET {what} answered nothing"))
        }
    };
    let dir = get("dir").await?;
    let file = get("dbfilename").await?;
    Ok(Path::new(&dir).join(file))
}

/// Copies the RDB file from an open handle (Redis replaces it by rename,
/// so the handle keeps the one saved even if another save follows).
async fn copy_file(from: &Path, to: &Path, address: &str) -> Result<u64, String> {
    let mut src = tokio::fs::File::open(from).await.map_err(|e| {
        format!(
            "the RDB file {} (CONFIG GET dir + dbfilename on {address}) is not readable here: {e}; \
             redis.backup reads the file where medic runs, so medic must run on the Redis host \
             (or see its data directory mounted) with read access to it",
            from.display()
        )
    })?;
    let mut dst = tokio::fs::File::create(to)
        .await
        .map_err(|e| format!("create {}: {e}", to.display()))?;
    let n = tokio::io::copy(&mut src, &mut dst)
        .await
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))?;
    dst.flush()
        .await
        .map_err(|e| format!("write {}: {e}", to.display()))?;
    dst.sync_all()
        .await
        .map_err(|e| format!("sync {}: {e}", to.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RDB file on another host (or unreadable here): said so, with
    /// where medic looked and what it needs.
    #[tokio::test]
    async fn an_rdb_file_medic_cannot_read_is_said_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = copy_file(
            Path::new("/nonexistent-redis-dir/dump.rdb"),
            &dir.path().join("copy"),
            "cache.internal:6379",
        )
        .await
        .unwrap_err();
        assert!(
            e.contains("/nonexistent-redis-dir/dump.rdb")
                && e.contains("not readable here")
                && e.contains("cache.internal:6379")
                && e.contains("must run on the Redis host"),
            "{e}"
        );
    }

    #[test]
    fn keyspace_sums_every_database() {
        let info =
            "# Keyspace\r\ndb0:keys=12,expires=0,avg_ttl=0\r\ndb3:keys=5,expires=1,avg_ttl=9\r\n";
        assert_eq!(parse_keyspace(info), 17);
        assert_eq!(parse_keyspace("# Keyspace\r\n"), 0);
    }
}
