//! `postgres.restore-test`: the runbook's monthly restoration test.
//!
//! Restores the newest good copy of a backup job into a scratch database
//! (`medic_restore_test_TIMESTAMP`, created and dropped by the job; never
//! the target's own database), runs the runbook's step-4 row counts and the
//! data-corruption integrity queries on it, and records how long the
//! restore took: the measured RTO of "restore from backup", compared with
//! the objective (runbook: database 2 h).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

use super::backup::{
    archive_entries, conn_args, places, postgres_target, recorded_copies, run_program, scratch_dir,
};
use super::storage::Place;
use super::{JobContext, JobError, Report};
use crate::config::{Config, PostgresTarget, RestoreTestJobConfig};

/// A built `postgres.restore-test` job.
pub struct RestoreTestJob {
    backup: String,
    target: PostgresTarget,
    places: Vec<Place>,
    bin: Option<PathBuf>,
    rto: Duration,
    count: Vec<String>,
    integrity: BTreeMap<String, String>,
}

impl RestoreTestJob {
    /// Builds the job from its config.
    pub fn build(r: &RestoreTestJobConfig, config: &Config) -> Result<Self, JobError> {
        let b = config
            .jobs
            .get(&r.backup)
            .and_then(|j| j.backup.as_ref())
            .ok_or_else(|| {
                JobError::Invalid(format!("{:?} is not a postgres.backup job", r.backup))
            })?;
        let target = postgres_target(config, r.target.as_deref().unwrap_or(&b.target))?;
        Ok(RestoreTestJob {
            backup: r.backup.clone(),
            target,
            places: places(config, &r.backup)?,
            bin: super::pg_bin(b.pg_bin.as_deref()),
            rto: r.rto.get(),
            count: r.count.clone(),
            integrity: r.integrity.clone(),
        })
    }
}

async fn connect(t: &PostgresTarget, dbname: &str) -> Result<Client, String> {
    let mut c = crate::connect::postgres(t, "medic", Duration::from_secs(10))?;
    c.dbname(dbname);
    let (client, conn) = c
        .connect(NoTls)
        .await
        .map_err(|e| format!("connect to {}:{}/{dbname}: {e}", t.host, t.port))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Row counts of `tables` (quoted identifiers, schema-qualified allowed).
pub async fn count_rows(c: &Client, tables: &[String]) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for t in tables {
        let quoted = t
            .split('.')
            .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(".");
        let row = c
            .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
            .await
            .map_err(|e| format!("count {t}: {}", pg_err(&e)))?;
        out.insert(t.clone(), row.get::<_, i64>(0));
    }
    Ok(out)
}

fn pg_err(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

#[async_trait::async_trait]
impl super::Job for RestoreTestJob {
    fn kind(&self) -> &'static str {
        "postgres.restore-test"
    }

    async fn run(&self, cx: &JobContext) -> Report {
        let scratch_db = format!(
            "medic_restore_test_{}",
            cx.clock.now().format("%Y%m%d%H%M%S")
        );
        if scratch_db == self.target.dbname {
            return Report::failed(
                "the scratch database would be the target's own database",
                json!({}),
            );
        }
        let work = match scratch_dir("restore") {
            Ok(d) => d,
            Err(e) => return Report::failed(e, json!({})),
        };
        let admin = match connect(&self.target, &self.target.dbname).await {
            Ok(c) => c,
            Err(e) => return Report::failed(e, json!({})),
        };
        // Scratch databases a crashed run left behind (ours by name).
        if let Ok(rows) = admin
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'medic\\_restore\\_test\\_%'",
                &[],
            )
            .await
        {
            for r in rows {
                let name: String = r.get(0);
                if admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .is_ok()
                {
                    cx.event(
                        "cleanup",
                        format!("dropped {name}, left by an earlier run"),
                        Value::Null,
                    )
                    .await;
                }
            }
        }
        let r = self.restore(cx, &admin, &scratch_db, &work).await;
        // Always dropped, whatever happened.
        let drop = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{scratch_db}\" WITH (FORCE)"
            ))
            .await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        match drop {
            Ok(()) => {
                cx.event(
                    "cleanup",
                    format!("dropped the scratch database {scratch_db}"),
                    Value::Null,
                )
                .await
            }
            Err(e) => {
                cx.event(
                    "cleanup",
                    format!("could not drop {scratch_db}: {}", pg_err(&e)),
                    Value::Null,
                )
                .await
            }
        }
        r.unwrap_or_else(|(e, data)| Report::failed(e, data))
    }
}

impl RestoreTestJob {
    async fn restore(
        &self,
        cx: &JobContext,
        admin: &Client,
        scratch_db: &str,
        work: &std::path::Path,
    ) -> Result<Report, (String, Value)> {
        let fail = |e: String| (e, json!({ "database": scratch_db }));
        let recorded = recorded_copies(&*cx.store, &self.backup)
            .await
            .map_err(fail)?;
        // The newest copy a succeeded backup run recorded, from the first
        // place holding it intact (config order): a copy missing or broken
        // in one place is restored from the next.
        let mut found = None;
        let mut passed = Vec::new();
        for place in &self.places {
            let copies = match place.storage.list(&self.backup).await {
                Ok(c) => c,
                Err(e) => {
                    passed.push(format!("{}: {e}", place.describe()));
                    continue;
                }
            };
            let Some(c) = copies.iter().rev().find(|c| recorded.contains_key(&c.name)) else {
                passed.push(format!("{}: no recorded copy", place.describe()));
                continue;
            };
            if found
                .as_ref()
                .is_some_and(|(_, f): &(&Place, super::storage::StoredCopy)| {
                    f.taken_at >= c.taken_at
                })
            {
                continue;
            }
            found = Some((place, c.clone()));
        }
        let Some((place, copy)) = found else {
            return Err(fail(format!(
                "no good backup of {} to restore ({})",
                self.backup,
                passed.join("; ")
            )));
        };
        let started = tokio::time::Instant::now();
        let mut path = None;
        let mut from = String::new();
        // The newest copy, from each place that holds it, until one is intact.
        for p in std::iter::once(place).chain(self.places.iter().filter(|p| p.name != place.name)) {
            let fetched = match p.storage.fetch(&copy.name, work).await {
                Ok(f) => f,
                Err(e) => {
                    passed.push(format!("{}: {e}", p.describe()));
                    continue;
                }
            };
            let (sha, _) = super::storage::sha256_file(&fetched).await.map_err(fail)?;
            if sha == recorded[&copy.name].0 {
                path = Some(fetched);
                from = p.describe();
                break;
            }
            passed.push(format!(
                "{}: {}: sha256 differs from the recorded one",
                p.describe(),
                copy.name
            ));
        }
        let Some(path) = path else {
            return Err(fail(format!(
                "no intact copy of {} in any place: {}",
                copy.name,
                passed.join("; ")
            )));
        };
        archive_entries(self.bin.as_deref(), &path)
            .await
            .map_err(fail)?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{scratch_db}\""))
            .await
            .map_err(|e| fail(format!("create {scratch_db}: {}", pg_err(&e))))?;
        cx.event(
            "restore",
            format!("restoring {} from {} into {scratch_db}", copy.name, from),
            json!({ "file": copy.name, "database": scratch_db }),
        )
        .await;
        let mut args = conn_args(&self.target, scratch_db);
        args.extend([
            "--no-owner".into(),
            "--no-privileges".into(),
            "--exit-on-error".into(),
        ]);
        args.push(path.display().to_string());
        let pg_restore = super::pg_program(self.bin.as_deref(), "pg_restore");
        run_program(&pg_restore, &args, &self.target)
            .await
            .map_err(fail)?;
        let db = connect(&self.target, scratch_db).await.map_err(fail)?;
        let counts = count_rows(&db, &self.count).await.map_err(fail)?;
        let mut integrity = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, sql) in &self.integrity {
            match db.query_one(sql.as_str(), &[]).await {
                Ok(row) => {
                    let n: i64 = row.try_get(0).unwrap_or(-1);
                    if n != 0 {
                        problems.push(format!("{name}: {n}"));
                    }
                    integrity.insert(name.clone(), n);
                }
                Err(e) => problems.push(format!("{name}: {}", pg_err(&e))),
            }
        }
        let took = started.elapsed();
        drop(db);
        cx.event(
            "integrity",
            format!("row counts {counts:?}; integrity {integrity:?}"),
            json!({ "counts": counts, "integrity": integrity }),
        )
        .await;
        let within = took <= self.rto;
        let verdict = format!(
            "restore took {} (measured RTO of restore-from-backup), objective {}: {}",
            humantime::format_duration(Duration::from_millis(took.as_millis() as u64)),
            humantime::format_duration(self.rto),
            if within { "within" } else { "MISSED" }
        );
        cx.event(
            "rto",
            verdict.clone(),
            json!({ "restore_ms": took.as_millis() as u64, "rto_secs": self.rto.as_secs() }),
        )
        .await;
        let data = json!({
            "file": copy.name,
            "database": scratch_db,
            "counts": counts,
            "integrity": integrity,
            "restore_ms": took.as_millis() as u64,
            "rto_secs": self.rto.as_secs(),
            "within_rto": within,
            "problems": problems,
        });
        if !problems.is_empty() {
            return Ok(Report::failed(
                format!("integrity checks failed: {}", problems.join("; ")),
                data,
            ));
        }
        if !within {
            return Ok(Report::failed(verdict, data));
        }
        Ok(Report::ok(
            format!("{} restored and intact; {verdict}", copy.name),
            data,
        ))
    }
}
