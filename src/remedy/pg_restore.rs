//! The runbook's last resorts with a backup (`postgres.backup` copies):
//!
//! `postgres.restore` (database failure, step 3: no replica left) restores
//! the newest verified copy (recorded by a succeeded backup run, not found
//! broken by `backup.verify`, its sha256 as recorded), or the newest older
//! than `before`, into a NEW database on a chosen server, then verifies
//! it: the row count of every table equals what the backup run counted in
//! the dump's own snapshot, and every `integrity` query returns 0. Its
//! gates: the original database must not answer as a writable primary
//! (`original-down`: restoring beside a live primary splits the data), the
//! new database must not exist (`new-database`: nothing is overwritten),
//! and `data-window` says how much is lost (the copy's age) against the
//! scenario's RPO. When the original still answers read-only (fenced, or a
//! standby stuck in recovery) its contents are dumped first (the safety
//! dump, stored beside the backup job's copies as `JOB-safety-STAMP.dump`,
//! which no retention or restore counts as a copy). Clients are repointed
//! by the plan's next steps (`then: continue`, e.g. `k8s.set-env`).
//!
//! `postgres.restore-tables` (data corruption, step 3: `pg_restore -t`)
//! restores named tables from the newest verified copy older than the
//! incident's first detection (or `before`) into a side schema
//! (`medic_restore` by default, through a scratch database on the same
//! server: pg_restore cannot rename a schema), diffs each with the live
//! table by primary key (rows missing, rows changed, rows added since),
//! and with `copy_back: true` inserts exactly the missing rows, every
//! table in one transaction with the live tables locked against writes,
//! refusing more than `max_rows`. Changed rows are reported, never
//! overwritten. Both kinds need `approval: required` (the rule loader
//! refuses them without), except a `copy_back: false` diff, which writes
//! only to its own side schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

use super::{Action, ActionContext, ActionResult, BuildError, Gate, Preflight};
use crate::config::{Config, PostgresTarget, TargetConfig};
use crate::jobs::backup::{conn_args, run_program, scratch_dir};
use crate::jobs::storage::{Place, StoredCopy, sha256_file};
use crate::store::{JobOutcome, Store};

/// How long one probe of a server may take during the gates.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The default side schema of `postgres.restore-tables`.
pub const DEFAULT_SIDE_SCHEMA: &str = "medic_restore";

/// `action: postgres.restore`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// The `postgres.backup` job whose copies are restored.
    pub backup: String,
    /// The server restored onto (one postgres target; its `dbname` is only
    /// where medic connects to create the new database).
    pub target: String,
    /// The new database; it must not exist.
    pub database: String,
    /// The database that failed (must not answer as a writable primary);
    /// default the backup job's target.
    pub original: Option<String>,
    /// Restore the newest copy taken before this time (RFC 3339).
    pub before: Option<String>,
    /// Queries that must each return 0 on the restored database.
    #[serde(default)]
    pub integrity: BTreeMap<String, String>,
}

/// `action: postgres.restore-tables`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTablesParams {
    /// The `postgres.backup` job whose copies are read.
    pub backup: String,
    /// The live database (one postgres target); default the backup job's.
    pub target: Option<String>,
    /// Tables (NAME or SCHEMA.NAME, default schema `public`).
    pub tables: Vec<String>,
    /// The side schema the backup's tables are restored into.
    pub schema: Option<String>,
    /// Insert the missing rows (needs `approval: required`); `false`
    /// only shows the diff. Default true.
    pub copy_back: Option<bool>,
    /// Refuse to copy back more rows than this, over all tables.
    pub max_rows: Option<u64>,
    /// The newest copy taken before this time (RFC 3339); default the
    /// incident's first detection.
    pub before: Option<String>,
}

impl RestoreTablesParams {
    fn copies_back(&self) -> bool {
        self.copy_back.unwrap_or(true)
    }
}

/// Where a backup job's copies are and how to read them.
#[derive(Debug)]
struct Source {
    job: String,
    places: Vec<Place>,
    verifiers: Vec<String>,
    bin: Option<PathBuf>,
    /// The job's target (the database it dumps).
    target: String,
}

impl Source {
    fn build(config: &Config, job: &str) -> Result<Source, BuildError> {
        let b = config
            .jobs
            .get(job)
            .and_then(|j| j.backup.as_ref())
            .ok_or_else(|| BuildError::Invalid(format!("{job:?} is not a postgres.backup job")))?;
        Ok(Source {
            job: job.to_string(),
            places: crate::jobs::backup::places(config, job)
                .map_err(|e| BuildError::Invalid(e.to_string()))?,
            verifiers: crate::jobs::backup::verifiers_of(config, job),
            bin: crate::jobs::pg_bin(b.pg_bin.as_deref()),
            target: b.target.clone(),
        })
    }

    fn program(&self, name: &str) -> PathBuf {
        crate::jobs::pg_program(self.bin.as_deref(), name)
    }

    /// The newest copy a succeeded run recorded that is not known broken
    /// in some place, taken before `before`; with the run's data.
    async fn newest(
        &self,
        store: &dyn Store,
        before: Option<DateTime<Utc>>,
    ) -> Result<(StoredCopy, Value), String> {
        let runs = store
            .job_runs(&self.job, 10_000)
            .await
            .map_err(|e| format!("store: {e}"))?;
        let recorded: BTreeMap<String, Value> = runs
            .into_iter()
            .filter(|r| r.outcome == Some(JobOutcome::Succeeded))
            .filter_map(|r| Some((r.data.get("file")?.as_str()?.to_string(), r.data)))
            .collect();
        let broken = crate::jobs::backup::verified_broken(store, &self.verifiers).await?;
        let mut best: Option<(StoredCopy, Value)> = None;
        let mut seen = Vec::new();
        for place in &self.places {
            let copies = match place.storage.list(&self.job).await {
                Ok(c) => c,
                Err(e) => {
                    seen.push(format!("{}: {e}", place.describe()));
                    continue;
                }
            };
            let good = copies.into_iter().rev().find(|c| {
                recorded.contains_key(&c.name)
                    && before.is_none_or(|b| c.taken_at < b)
                    && !broken.get(&place.name).is_some_and(|b| b.contains(&c.name))
            });
            match good {
                Some(c) if best.as_ref().is_none_or(|(b, _)| c.taken_at > b.taken_at) => {
                    let data = recorded[&c.name].clone();
                    best = Some((c, data));
                }
                Some(_) => {}
                None => seen.push(format!("{}: no verified copy", place.describe())),
            }
        }
        best.ok_or_else(|| {
            let when = before.map_or(String::new(), |b| {
                format!(" taken before {}", b.to_rfc3339())
            });
            format!(
                "no verified copy of backup job {}{when} ({})",
                self.job,
                seen.join("; ")
            )
        })
    }

    /// A local file holding `copy` whose sha256 is the recorded one, from
    /// the first place that has it intact.
    async fn fetch(
        &self,
        copy: &StoredCopy,
        sha256: &str,
        work: &Path,
    ) -> Result<(PathBuf, String), String> {
        let mut tried = Vec::new();
        for p in &self.places {
            match p.storage.fetch(&copy.name, work).await {
                Ok(f) => match sha256_file(&f).await {
                    Ok((sha, _)) if sha == sha256 => return Ok((f, p.describe())),
                    Ok(_) => tried.push(format!(
                        "{}: sha256 differs from the recorded one",
                        p.describe()
                    )),
                    Err(e) => tried.push(format!("{}: {e}", p.describe())),
                },
                Err(e) => tried.push(format!("{}: {e}", p.describe())),
            }
        }
        Err(format!(
            "no intact copy of {}: {}",
            copy.name,
            tried.join("; ")
        ))
    }

    /// `pg_restore` of `file` into database `db` of `t`, optionally only
    /// some tables (`-n SCHEMA -t TABLE` each).
    async fn pg_restore(
        &self,
        t: &PostgresTarget,
        db: &str,
        file: &Path,
        tables: &[(String, String)],
    ) -> Result<(), String> {
        let mut args = conn_args(t, db);
        args.extend([
            "--no-owner".into(),
            "--no-privileges".into(),
            "--exit-on-error".into(),
        ]);
        for (schema, table) in tables {
            args.extend(["--schema".into(), schema.clone()]);
            args.extend(["--table".into(), table.clone()]);
        }
        args.push(file.display().to_string());
        run_program(&self.program("pg_restore"), &args, t)
            .await
            .map(|_| ())
    }
}

fn pg_err(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A plain SQL identifier (it is spliced into SQL and used as a name).
fn is_ident(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

/// `NAME` → (`public`, NAME); `SCHEMA.NAME` → (SCHEMA, NAME).
fn split_table(s: &str) -> Option<(String, String)> {
    let (schema, name) = s.split_once('.').unwrap_or(("public", s));
    (is_ident(schema) && is_ident(name)).then(|| (schema.to_string(), name.to_string()))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn one_server(config: &Config, name: &str) -> Result<PostgresTarget, BuildError> {
    match config.targets.get(name) {
        Some(TargetConfig::Postgres(t)) if !t.is_cluster() => Ok(t.clone()),
        _ => Err(BuildError::Invalid(format!(
            "target {name:?} is not one postgres server"
        ))),
    }
}

/// Connects to database `db` of `t` (its own `dbname` when `None`).
async fn connect(
    t: &PostgresTarget,
    db: Option<&str>,
    timeout: Duration,
) -> Result<Client, String> {
    let mut cfg = crate::connect::postgres(t, "medic", timeout)?;
    if let Some(db) = db {
        cfg.dbname(db);
    }
    let name = format!("{}:{}/{}", t.host, t.port, db.unwrap_or(&t.dbname));
    let (client, conn) = tokio::time::timeout(timeout, cfg.connect(NoTls))
        .await
        .map_err(|_| {
            format!(
                "{name}: no answer within {}",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("{name}: {}", pg_err(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// How the original database answers.
#[derive(Debug, PartialEq)]
enum Answer {
    /// A writable primary: do not restore beside it.
    Writable,
    /// Read-only (fenced) or in recovery: failed for clients, but dumpable.
    ReadOnly(String),
    /// No answer.
    Down(String),
}

/// The original's servers: writable if any is; else the first that
/// answers read-only (with its name and target, for the safety dump).
async fn probe_all(
    servers: &[(String, PostgresTarget)],
) -> (Answer, Option<(String, PostgresTarget)>) {
    let mut found = None;
    let mut down = Vec::new();
    for (name, t) in servers {
        match probe(t).await {
            Answer::Writable => return (Answer::Writable, Some((name.clone(), t.clone()))),
            Answer::ReadOnly(why) if found.is_none() => {
                found = Some((
                    Answer::ReadOnly(format!("{name} is {why}")),
                    (name.clone(), t.clone()),
                ));
            }
            Answer::ReadOnly(_) => {}
            Answer::Down(e) => down.push(e),
        }
    }
    match found {
        Some((a, s)) => (a, Some(s)),
        None => (Answer::Down(down.join("; ")), None),
    }
}

async fn probe(t: &PostgresTarget) -> Answer {
    let c = match connect(t, None, PROBE_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => return Answer::Down(e),
    };
    let q = "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'";
    match tokio::time::timeout(PROBE_TIMEOUT, c.query_one(q, &[])).await {
        Ok(Ok(r)) => match (r.get::<_, bool>(0), r.get::<_, bool>(1)) {
            (false, false) => Answer::Writable,
            (true, _) => Answer::ReadOnly("in recovery (a standby)".into()),
            (false, true) => Answer::ReadOnly("default_transaction_read_only = on (fenced)".into()),
        },
        Ok(Err(e)) => Answer::Down(pg_err(&e)),
        Err(_) => Answer::Down("no answer to a query within 3s".into()),
    }
}

/// "3h 2m" for a chrono duration (never negative).
fn human(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// The gate saying how much is lost restoring a copy taken at `taken_at`.
fn window_gate(ctx: &ActionContext, copy: &StoredCopy) -> (Gate, Value) {
    let lost = ctx.now - copy.taken_at;
    let rpo = ctx.rpo;
    let within = rpo.is_none_or(|r| lost.to_std().is_ok_and(|l| l <= r));
    let detail = format!(
        "{} taken {} ago: writes since then are lost{}",
        copy.name,
        human(lost),
        match rpo {
            Some(r) => format!(
                " (RPO {}: {})",
                humantime::format_duration(r),
                if within { "within" } else { "MISSED" }
            ),
            None => " (the scenario sets no RPO)".into(),
        }
    );
    let data = json!({
        "file": copy.name,
        "taken_at": copy.taken_at,
        "lost_secs": lost.num_seconds().max(0),
        "rpo_secs": rpo.map(|r| r.as_secs()),
        "within_rpo": within,
    });
    // Never a refusal: an old backup is still the last resort, and a
    // human approves the step knowing what it loses.
    (Gate::pass("data-window", detail), data)
}

/// A runnable `postgres.restore`.
pub struct Restore {
    params: RestoreParams,
    source: Source,
    into: PostgresTarget,
    /// The original's servers: one, or a cluster's members.
    original: Vec<(String, PostgresTarget)>,
    original_name: String,
    before: Option<DateTime<Utc>>,
}

impl Restore {
    pub fn build(p: &RestoreParams, config: &Config) -> Result<Self, BuildError> {
        let source = Source::build(config, &p.backup)?;
        let original_name = p.original.clone().unwrap_or_else(|| source.target.clone());
        let original = match config.postgres_members(&original_name) {
            Some(members) => members,
            None => vec![(original_name.clone(), one_server(config, &original_name)?)],
        };
        let before = match &p.before {
            Some(b) => Some(parse_time(b).ok_or_else(|| {
                BuildError::Invalid(format!("before: {b:?} is not an RFC 3339 time"))
            })?),
            None => None,
        };
        Ok(Restore {
            into: one_server(config, &p.target)?,
            params: p.clone(),
            source,
            original,
            original_name,
            before,
        })
    }

    fn store<'a>(&self, ctx: &'a ActionContext) -> Result<&'a dyn Store, String> {
        ctx.ledger
            .as_deref()
            .ok_or_else(|| "no store: the backup runs are not known".to_string())
    }

    async fn gates(&self, ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        let (answer, server) = probe_all(&self.original).await;
        let ok = match &answer {
            Answer::Writable => pre.gate(Gate::fail(
                "original-down",
                format!(
                    "the original database {} answers as a writable primary{}: restoring beside it would split the data; repair, promote or fence it instead",
                    self.original_name,
                    server.filter(|(n, _)| *n != self.original_name).map_or(String::new(), |(n, _)| format!(" ({n})"))
                ),
            )),
            Answer::ReadOnly(why) => pre.gate(Gate::pass(
                "original-down",
                format!(
                    "{} answers but {why}: its contents are dumped first (safety dump)",
                    self.original_name
                ),
            )),
            Answer::Down(e) => pre.gate(Gate::pass(
                "original-down",
                format!("{} does not answer ({e})", self.original_name),
            )),
        };
        if !ok {
            return pre;
        }
        let exists = match connect(&self.into, None, PROBE_TIMEOUT).await {
            Ok(c) => c
                .query_one(
                    "SELECT count(*) FROM pg_database WHERE datname = $1",
                    &[&self.params.database],
                )
                .await
                .map(|r| r.get::<_, i64>(0) > 0)
                .map_err(|e| pg_err(&e)),
            Err(e) => Err(e),
        };
        match exists {
            Ok(true) => {
                pre.gate(Gate::fail(
                    "new-database",
                    format!(
                        "database {} already exists on {}: medic restores only into a new database, never over one",
                        self.params.database, self.params.target
                    ),
                ));
                return pre;
            }
            Ok(false) => pre.gate(Gate::pass(
                "new-database",
                format!(
                    "database {} does not exist on {} yet",
                    self.params.database, self.params.target
                ),
            )),
            Err(e) => {
                pre.gate(Gate::fail(
                    "new-database",
                    format!("the server to restore onto does not answer: {e}"),
                ));
                return pre;
            }
        };
        let store = match self.store(ctx) {
            Ok(s) => s,
            Err(e) => {
                pre.gate(Gate::fail("backup", e));
                return pre;
            }
        };
        match self.source.newest(store, self.before).await {
            Ok((copy, _)) => {
                pre.gate(Gate::pass(
                    "backup",
                    format!("newest verified copy: {}", copy.name),
                ));
                let (g, data) = window_gate(ctx, &copy);
                pre.gate(g);
                pre.data = json!({
                    "file": copy.name,
                    "window": data,
                    "safety_dump": matches!(answer, Answer::ReadOnly(_)),
                });
            }
            Err(e) => {
                pre.gate(Gate::fail("backup", e));
            }
        }
        pre
    }

    /// `pg_dump` of the original into every place of the backup job.
    async fn safety_dump(
        &self,
        ctx: &ActionContext,
        server: &PostgresTarget,
        work: &Path,
    ) -> Result<Value, String> {
        let name = format!(
            "{}-safety-{}.dump",
            self.source.job,
            ctx.now.format("%Y%m%dT%H%M%S%.3fZ")
        );
        let file = work.join(&name);
        let mut args = conn_args(server, &server.dbname);
        args.extend([
            "--format=custom".into(),
            "--file".into(),
            file.display().to_string(),
        ]);
        run_program(&self.source.program("pg_dump"), &args, server).await?;
        let (sha256, size) = sha256_file(&file).await?;
        let mut stored = Vec::new();
        let mut failed = Vec::new();
        for p in &self.source.places {
            match p.storage.put(&name, &file).await {
                Ok(()) => stored.push(p.describe()),
                Err(e) => failed.push(format!("{}: {e}", p.describe())),
            }
        }
        if stored.is_empty() {
            return Err(format!(
                "the safety dump {name} could not be stored: {}",
                failed.join("; ")
            ));
        }
        Ok(
            json!({ "file": name, "sha256": sha256, "size": size, "stored": stored, "failed": failed }),
        )
    }

    async fn restore(
        &self,
        ctx: &ActionContext,
        work: &Path,
    ) -> Result<ActionResult, (String, Value)> {
        let mut data = serde_json::Map::new();
        let fail =
            |e: String, data: &serde_json::Map<String, Value>| (e, Value::Object(data.clone()));
        let store = self.store(ctx).map_err(|e| fail(e, &data))?;
        // Re-checked: preflight was a while ago (an approval in between).
        match probe_all(&self.original).await {
            (Answer::Writable, _) => {
                return Err(fail(
                    format!(
                        "the original database {} answers as a writable primary: not restored",
                        self.original_name
                    ),
                    &data,
                ));
            }
            (Answer::ReadOnly(why), Some((_, server))) => {
                let d = self.safety_dump(ctx, &server, work).await.map_err(|e| {
                    fail(
                        format!(
                            "safety dump of {} ({why}) failed: {e}; not restored",
                            self.original_name
                        ),
                        &data,
                    )
                })?;
                data.insert("safety_dump".into(), d);
            }
            _ => {}
        }
        let (copy, run) = self
            .source
            .newest(store, self.before)
            .await
            .map_err(|e| fail(e, &data))?;
        let (_, window) = window_gate(ctx, &copy);
        data.insert("window".into(), window);
        let sha = run["sha256"].as_str().unwrap_or_default().to_string();
        let (file, from) = self
            .source
            .fetch(&copy, &sha, work)
            .await
            .map_err(|e| fail(e, &data))?;
        data.insert("file".into(), json!(copy.name));
        data.insert("from".into(), json!(from));
        let admin = connect(&self.into, None, ctx.timeout.min(Duration::from_secs(30)))
            .await
            .map_err(|e| fail(e, &data))?;
        let db = &self.params.database;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", ident(db)))
            .await
            .map_err(|e| fail(format!("create database {db}: {}", pg_err(&e)), &data))?;
        data.insert("database".into(), json!(db));
        let started = tokio::time::Instant::now();
        let checked = async {
            self.source.pg_restore(&self.into, db, &file, &[]).await?;
            let c = connect(&self.into, Some(db), Duration::from_secs(30)).await?;
            self.verify(&c, &run).await
        }
        .await;
        let restore_ms = started.elapsed().as_millis() as u64;
        data.insert("restore_ms".into(), json!(restore_ms));
        let (counts, problems) = match checked {
            Ok(v) => v,
            Err(e) => {
                // Ours, created by this attempt: dropped, so a retry can
                // restore into a new database again.
                let _ = admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        ident(db)
                    ))
                    .await;
                return Err(fail(
                    format!(
                        "restore of {} into {db} failed: {e}; {db} dropped",
                        copy.name
                    ),
                    &data,
                ));
            }
        };
        data.insert("counts".into(), counts);
        data.insert("problems".into(), json!(problems));
        let lost = &data["window"];
        let window = format!(
            "data window lost {}{}",
            human(chrono::Duration::seconds(
                lost["lost_secs"].as_i64().unwrap_or(0)
            )),
            match lost["rpo_secs"].as_u64() {
                Some(r) => format!(
                    " against RPO {} ({})",
                    humantime::format_duration(Duration::from_secs(r)),
                    if lost["within_rpo"] == json!(true) {
                        "within"
                    } else {
                        "MISSED"
                    }
                ),
                None => String::new(),
            }
        );
        if !problems.is_empty() {
            return Ok(ActionResult::failed(
                format!(
                    "{} restored into {db} on {} but it does not verify: {}; {window}; left in place for a human, clients not repointed",
                    copy.name,
                    self.params.target,
                    problems.join("; ")
                ),
                Value::Object(data),
            ));
        }
        let safety = data
            .get("safety_dump")
            .and_then(|d| d["file"].as_str())
            .map_or(String::new(), |f| format!("; safety dump {f} taken first"));
        Ok(ActionResult::ok(
            format!(
                "{} (from {from}) restored into new database {db} on {} in {} ms, row counts equal the backup's{safety}; {window}",
                copy.name, self.params.target, restore_ms
            ),
            Value::Object(data),
        ))
    }

    /// Row counts against what the backup counted, and the integrity
    /// queries: (counts, problems).
    async fn verify(&self, c: &Client, run: &Value) -> Result<(Value, Vec<String>), String> {
        let mut problems = Vec::new();
        let mut counts = serde_json::Map::new();
        match run.get("rows").and_then(Value::as_object) {
            Some(rows) => {
                for (table, want) in rows {
                    let Some((schema, name)) = table.split_once('.') else {
                        continue;
                    };
                    let got = c
                        .query_one(
                            &format!("SELECT count(*) FROM {}.{}", ident(schema), ident(name)),
                            &[],
                        )
                        .await
                        .map(|r| r.get::<_, i64>(0));
                    match got {
                        Ok(n) => {
                            if Some(n) != want.as_i64() {
                                problems
                                    .push(format!("{table}: {n} rows, the backup counted {want}"));
                            }
                            counts.insert(table.clone(), json!(n));
                        }
                        Err(e) => problems.push(format!("{table}: {}", pg_err(&e))),
                    }
                }
            }
            None if self.params.integrity.is_empty() => {
                problems.push("the backup run recorded no row counts and no integrity queries are given: nothing to verify the restore against".into());
            }
            None => {}
        }
        for (name, sql) in &self.params.integrity {
            match c.query_one(sql.as_str(), &[]).await {
                Ok(r) => {
                    let n: i64 = r.try_get(0).unwrap_or(-1);
                    if n != 0 {
                        problems.push(format!("integrity {name}: {n}"));
                    }
                }
                Err(e) => problems.push(format!("integrity {name}: {}", pg_err(&e))),
            }
        }
        Ok((Value::Object(counts), problems))
    }
}

#[async_trait::async_trait]
impl Action for Restore {
    fn describe(&self) -> String {
        format!(
            "postgres.restore of the newest verified copy of {} into new database {} on {}",
            self.params.backup, self.params.database, self.params.target
        )
    }

    fn inputs(&self) -> Value {
        json!({
            "backup": self.params.backup,
            "target": self.params.target,
            "database": self.params.database,
            "original": self.original_name,
            "before": self.params.before,
            "integrity": self.params.integrity,
        })
    }

    async fn preflight(&self, ctx: &ActionContext) -> Preflight {
        self.gates(ctx).await
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let work = match scratch_dir("restore-action") {
            Ok(d) => d,
            Err(e) => return ActionResult::failed(e, json!({})),
        };
        let r = tokio::select! {
            r = tokio::time::timeout(ctx.timeout, self.restore(ctx, &work)) => match r {
                Ok(Ok(r)) => r,
                Ok(Err((e, data))) => ActionResult::failed(e, data),
                Err(_) => ActionResult::failed(
                    format!("timed out after {}", humantime::format_duration(ctx.timeout)),
                    json!({ "timed_out": true }),
                ),
            },
            _ = ctx.cancel.cancelled() => ActionResult::failed("aborted: medic is stopping", json!({})),
        };
        let _ = tokio::fs::remove_dir_all(&work).await;
        r
    }

    /// After a crash mid-attempt: the new database is in place when it
    /// exists and verifies against the newest copy's counts. A partial
    /// one does not, and stays for a human (a new attempt refuses it).
    async fn reconcile(&self, ctx: &ActionContext) -> Option<ActionResult> {
        let store = ctx.ledger.as_deref()?;
        let (copy, run) = self.source.newest(store, self.before).await.ok()?;
        let db = &self.params.database;
        let c = match connect(&self.into, Some(db), PROBE_TIMEOUT).await {
            Ok(c) => c,
            Err(e) => {
                return Some(ActionResult::failed(
                    format!("{db} is not restored: {e}"),
                    json!({}),
                ));
            }
        };
        let (counts, problems) = self.verify(&c, &run).await.ok()?;
        let data =
            json!({ "file": copy.name, "database": db, "counts": counts, "problems": problems });
        Some(if problems.is_empty() {
            ActionResult::ok(format!("{db} holds {} and verifies", copy.name), data)
        } else {
            ActionResult::failed(
                format!("{db} exists but does not verify: {}", problems.join("; ")),
                data,
            )
        })
    }
}

/// The live database of a table restore: one server, or a cluster's
/// current primary (found when the action runs).
enum Live {
    One(Box<PostgresTarget>),
    Cluster(Arc<crate::connect::pg_cluster::Cluster>),
}

impl Live {
    async fn server(&self) -> Result<PostgresTarget, String> {
        match self {
            Live::One(t) => Ok((**t).clone()),
            Live::Cluster(c) => {
                let view = c.discover(PROBE_TIMEOUT).await;
                let primary = view.primary.as_deref().ok_or_else(|| {
                    format!(
                        "cluster {:?} has no primary that answers: {}",
                        c.name,
                        view.summary()
                    )
                })?;
                c.member(primary)
                    .map(|m| m.target.clone())
                    .ok_or_else(|| format!("{primary} is not a member of {:?}", c.name))
            }
        }
    }
}

/// A runnable `postgres.restore-tables`.
pub struct RestoreTables {
    params: RestoreTablesParams,
    source: Source,
    live: Live,
    tables: Vec<(String, String)>,
    schema: String,
    before: Option<DateTime<Utc>>,
}

/// What one table's diff found.
#[derive(Debug, Default, serde::Serialize)]
struct TableDiff {
    table: String,
    key: Vec<String>,
    in_backup: i64,
    live: i64,
    missing: i64,
    changed: i64,
    added_since: i64,
    copied: u64,
}

impl RestoreTables {
    pub fn build(p: &RestoreTablesParams, config: &Config) -> Result<Self, BuildError> {
        let source = Source::build(config, &p.backup)?;
        let name = p.target.as_deref().unwrap_or(&source.target);
        let live = match crate::connect::pg_cluster::cluster(config, name) {
            Some(c) => Live::Cluster(c),
            None => Live::One(Box::new(one_server(config, name)?)),
        };
        let tables = p
            .tables
            .iter()
            .map(|t| {
                split_table(t)
                    .ok_or_else(|| BuildError::Invalid(format!("{t:?} is not a table name")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let before = match &p.before {
            Some(b) => Some(parse_time(b).ok_or_else(|| {
                BuildError::Invalid(format!("before: {b:?} is not an RFC 3339 time"))
            })?),
            None => None,
        };
        Ok(RestoreTables {
            schema: p
                .schema
                .clone()
                .unwrap_or_else(|| DEFAULT_SIDE_SCHEMA.into()),
            params: p.clone(),
            source,
            live,
            tables,
            before,
        })
    }

    /// Copies older than this: `before`, else the incident's first
    /// detection, else now.
    fn cutoff(&self, ctx: &ActionContext) -> DateTime<Utc> {
        self.before.or(ctx.detected_at).unwrap_or(ctx.now)
    }

    fn side(&self, table: &str) -> String {
        format!("{}.{}", ident(&self.schema), ident(table))
    }

    /// Per table: `public.t: 7 missing, 3 changed (left as they are), 5
    /// added since, 7 copied back`.
    fn summary(&self, diffs: &[TableDiff]) -> Vec<String> {
        diffs
            .iter()
            .map(|d| {
                format!(
                    "{}: {} missing, {} changed (left as they are), {} added since{}",
                    d.table,
                    d.missing,
                    d.changed,
                    d.added_since,
                    if self.params.copies_back() {
                        format!(", {} copied back", d.copied)
                    } else {
                        String::new()
                    }
                )
            })
            .collect()
    }

    /// After a crash mid-attempt ([`Action::reconcile`]): drops the
    /// crashed attempt's scratch databases, then tells from the live
    /// database whether the effect is in place. The side copy must be
    /// complete (each table as many rows as the backup counted: a crash
    /// during its COPY leaves a table short); with `copy_back`, the copy
    /// back (one transaction: all or nothing) committed when no row of the
    /// backup is missing from the live tables. `None`: the live database
    /// does not answer, so nothing can be told.
    async fn reconcile_now(&self, ctx: &ActionContext) -> Option<ActionResult> {
        let target = self.live.server().await.ok()?;
        let mut c = connect(&target, None, PROBE_TIMEOUT).await.ok()?;
        let mut dropped = Vec::new();
        if let Ok(rows) = c
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'medic\\_restore\\_tables\\_%'",
                &[],
            )
            .await
        {
            for r in rows {
                let name: String = r.get(0);
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&name));
                if c.batch_execute(&sql).await.is_ok() {
                    dropped.push(name);
                }
            }
        }
        let mut data = json!({ "schema": self.schema, "dropped": dropped });
        let counted = match ctx.ledger.as_deref() {
            Some(store) => self
                .source
                .newest(store, Some(self.cutoff(ctx)))
                .await
                .ok()
                .and_then(|(copy, run)| {
                    data["file"] = json!(copy.name);
                    run.get("rows").cloned()
                }),
            None => None,
        };
        let mut short = Vec::new();
        for (schema, table) in &self.tables {
            let side = self.side(table);
            let n = c
                .query_one(&format!("SELECT count(*) FROM {side}"), &[])
                .await
                .map(|r| r.get::<_, i64>(0));
            let want = counted
                .as_ref()
                .and_then(|rows| rows.get(format!("{schema}.{table}")))
                .and_then(Value::as_i64);
            match (n, want) {
                (Err(_), _) => short.push(format!("{side} is missing")),
                (Ok(n), Some(w)) if n != w => {
                    short.push(format!("{side} holds {n} rows, the backup counted {w}"))
                }
                (Ok(_), None) if counted.is_none() => short.push(format!(
                    "{side}: the backup run recorded no row counts to check it against"
                )),
                _ => {}
            }
        }
        if !short.is_empty() {
            return Some(ActionResult::failed(
                format!(
                    "the attempt stopped before its side copy was complete ({}): not restored",
                    short.join("; ")
                ),
                data,
            ));
        }
        let (diffs, _) = match self.diff_and_copy(&mut c, false).await {
            Ok(d) => d,
            Err(e) => return Some(ActionResult::failed(format!("the diff failed: {e}"), data)),
        };
        let summary = self.summary(&diffs);
        let missing: i64 = diffs.iter().map(|d| d.missing).sum();
        data["tables"] = json!(diffs);
        Some(match (self.params.copies_back(), missing) {
            (false, _) => ActionResult::ok(
                format!(
                    "the side copy in schema {} is complete: {}",
                    self.schema,
                    summary.join("; ")
                ),
                data,
            ),
            (true, 0) => ActionResult::ok(
                format!(
                    "the copy back committed before the restart: no row of the backup is missing ({})",
                    summary.join("; ")
                ),
                data,
            ),
            (true, n) => ActionResult::failed(
                format!(
                    "the copy back did not commit before the restart (one transaction: nothing half-copied): {n} rows still missing; the side copy stays in schema {}",
                    self.schema
                ),
                data,
            ),
        })
    }

    async fn restore(
        &self,
        ctx: &ActionContext,
        work: &Path,
    ) -> Result<ActionResult, (String, Value)> {
        let store = ctx.ledger.as_deref().ok_or_else(|| {
            (
                "no store: the backup runs are not known".to_string(),
                json!({}),
            )
        })?;
        let cutoff = self.cutoff(ctx);
        let (copy, run) = self
            .source
            .newest(store, Some(cutoff))
            .await
            .map_err(|e| (e, json!({})))?;
        let base = json!({ "file": copy.name, "taken_at": copy.taken_at, "before": cutoff });
        let fail = |e: String| (e, base.clone());
        let sha = run["sha256"].as_str().unwrap_or_default().to_string();
        let (file, from) = self.source.fetch(&copy, &sha, work).await.map_err(fail)?;
        // pg_restore -t restores under the table's own schema: into a
        // scratch database of the same server, then copied to the side
        // schema over COPY.
        let scratch = format!("medic_restore_tables_{}", ctx.now.format("%Y%m%d%H%M%S%3f"));
        let target = self.live.server().await.map_err(fail)?;
        let admin = connect(&target, None, Duration::from_secs(30))
            .await
            .map_err(fail)?;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", ident(&scratch)))
            .await
            .map_err(|e| {
                fail(format!(
                    "create the scratch database {scratch}: {}",
                    pg_err(&e)
                ))
            })?;
        let r = self.restore_via(&target, &scratch, &file).await;
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                ident(&scratch)
            ))
            .await;
        r.map_err(fail)?;
        let mut live = connect(&target, None, Duration::from_secs(30))
            .await
            .map_err(fail)?;
        let (mut diffs, copied) = self
            .diff_and_copy(&mut live, self.params.copies_back())
            .await
            .map_err(fail)?;
        if copied.is_err() {
            // Rolled back: nothing was copied, whatever a table counted.
            for d in &mut diffs {
                d.copied = 0;
            }
        }
        let mut data = base.clone();
        data["from"] = json!(from);
        data["schema"] = json!(self.schema);
        data["tables"] = json!(diffs);
        let summary = self.summary(&diffs);
        match copied {
            Err(e) => Ok(ActionResult::failed(
                format!(
                    "{} restored into schema {}; {}; nothing copied back: {e}",
                    copy.name,
                    self.schema,
                    summary.join("; ")
                ),
                data,
            )),
            Ok(()) => Ok(ActionResult::ok(
                format!(
                    "{} (taken {}, before {}) restored into schema {}: {}",
                    copy.name,
                    copy.taken_at.to_rfc3339(),
                    cutoff.to_rfc3339(),
                    self.schema,
                    summary.join("; ")
                ),
                data,
            )),
        }
    }

    /// pg_restore of the tables into `scratch`, then each copied into the
    /// side schema of the live database (replacing an earlier side copy).
    async fn restore_via(
        &self,
        target: &PostgresTarget,
        scratch: &str,
        file: &Path,
    ) -> Result<(), String> {
        self.source
            .pg_restore(target, scratch, file, &self.tables)
            .await?;
        let src = connect(target, Some(scratch), Duration::from_secs(30)).await?;
        let dst = connect(target, None, Duration::from_secs(30)).await?;
        dst.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            ident(&self.schema)
        ))
        .await
        .map_err(|e| format!("create schema {}: {}", self.schema, pg_err(&e)))?;
        use futures_util::{SinkExt, StreamExt};
        for (schema, table) in &self.tables {
            let q = format!("{}.{}", ident(schema), ident(table));
            let side = self.side(table);
            dst.batch_execute(&format!(
                "DROP TABLE IF EXISTS {side}; CREATE TABLE {side} (LIKE {q} INCLUDING DEFAULTS)"
            ))
            .await
            .map_err(|e| format!("create {side}: {}", pg_err(&e)))?;
            let cols: Vec<String> = dst
                .query(
                    "SELECT quote_ident(attname) FROM pg_attribute
                     WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                     ORDER BY attnum",
                    &[&q],
                )
                .await
                .map_err(|e| format!("columns of {schema}.{table}: {}", pg_err(&e)))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let cols = cols.join(", ");
            let out = src
                .copy_out(&format!("COPY {q} ({cols}) TO STDOUT"))
                .await
                .map_err(|e| format!("read {schema}.{table} from the backup: {}", pg_err(&e)))?;
            let sink = dst
                .copy_in(&format!("COPY {side} ({cols}) FROM STDIN"))
                .await
                .map_err(|e| format!("write {side}: {}", pg_err(&e)))?;
            futures_util::pin_mut!(out);
            futures_util::pin_mut!(sink);
            while let Some(chunk) = out.next().await {
                let chunk = chunk.map_err(|e| format!("read {schema}.{table}: {}", pg_err(&e)))?;
                sink.send(chunk)
                    .await
                    .map_err(|e| format!("write {side}: {}", pg_err(&e)))?;
            }
            sink.as_mut()
                .finish()
                .await
                .map_err(|e| format!("write {side}: {}", pg_err(&e)))?;
        }
        Ok(())
    }

    /// In one transaction with the live tables locked against writes: the
    /// diff of every table, then (with `copy_back`) the missing rows
    /// inserted, counts checked, commit. Returns the diffs, and whether
    /// the copy was done (`Err`: why not, rolled back).
    async fn diff_and_copy(
        &self,
        c: &mut Client,
        copy: bool,
    ) -> Result<(Vec<TableDiff>, Result<(), String>), String> {
        let tx = c
            .transaction()
            .await
            .map_err(|e| format!("BEGIN: {}", pg_err(&e)))?;
        let mut diffs = Vec::new();
        for (schema, table) in &self.tables {
            let live = format!("{}.{}", ident(schema), ident(table));
            let side = self.side(table);
            tx.batch_execute(&format!("LOCK TABLE {live} IN SHARE ROW EXCLUSIVE MODE"))
                .await
                .map_err(|e| format!("lock {schema}.{table}: {}", pg_err(&e)))?;
            let key: Vec<String> = tx
                .query(
                    "SELECT quote_ident(a.attname) FROM pg_index i
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                     WHERE i.indrelid = $1::text::regclass AND i.indisprimary
                     ORDER BY array_position(i.indkey, a.attnum)",
                    &[&live],
                )
                .await
                .map_err(|e| format!("primary key of {schema}.{table}: {}", pg_err(&e)))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if key.is_empty() {
                return Err(format!(
                    "{schema}.{table} has no primary key: rows cannot be matched, nothing compared"
                ));
            }
            let on = key
                .iter()
                .map(|k| format!("b.{k} = l.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let k0 = &key[0];
            let count = |sql: String| {
                let tx = &tx;
                async move {
                    tx.query_one(&sql, &[])
                        .await
                        .map(|r| r.get::<_, i64>(0))
                        .map_err(|e| pg_err(&e))
                }
            };
            let in_backup = count(format!("SELECT count(*) FROM {side}")).await?;
            let live_n = count(format!("SELECT count(*) FROM {live}")).await?;
            let missing = count(format!(
                "SELECT count(*) FROM {side} b LEFT JOIN {live} l ON {on} WHERE l.{k0} IS NULL"
            ))
            .await?;
            let changed = count(format!(
                "SELECT count(*) FROM {side} b JOIN {live} l ON {on} WHERE to_jsonb(b) IS DISTINCT FROM to_jsonb(l)"
            ))
            .await?;
            let added_since = count(format!(
                "SELECT count(*) FROM {live} l LEFT JOIN {side} b ON {on} WHERE b.{k0} IS NULL"
            ))
            .await?;
            diffs.push(TableDiff {
                table: format!("{schema}.{table}"),
                key: key.clone(),
                in_backup,
                live: live_n,
                missing,
                changed,
                added_since,
                copied: 0,
            });
        }
        if !copy {
            // The diff only: the transaction (locks only) is rolled back.
            return Ok((diffs, Ok(())));
        }
        let total: i64 = diffs.iter().map(|d| d.missing).sum();
        if let Some(max) = self.params.max_rows
            && total as u64 > max
        {
            return Ok((
                diffs,
                Err(format!(
                    "{total} rows are missing, more than max_rows {max}: that much goes to a human"
                )),
            ));
        }
        for (i, (schema, table)) in self.tables.iter().enumerate() {
            let (missing, live_n, key) = (diffs[i].missing, diffs[i].live, diffs[i].key.clone());
            if missing == 0 {
                continue;
            }
            let live = format!("{}.{}", ident(schema), ident(table));
            let side = self.side(table);
            let on = key
                .iter()
                .map(|k| format!("b.{k} = l.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let cols: Vec<String> = tx
                .query(
                    "SELECT quote_ident(attname) FROM pg_attribute
                     WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                     ORDER BY attnum",
                    &[&live],
                )
                .await
                .map_err(|e| pg_err(&e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let list = cols.join(", ");
            let from = cols
                .iter()
                .map(|c| format!("b.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let n = tx
                .execute(
                    &format!(
                        "INSERT INTO {live} ({list}) SELECT {from} FROM {side} b
                         WHERE NOT EXISTS (SELECT 1 FROM {live} l WHERE {on})"
                    ),
                    &[],
                )
                .await
                .map_err(|e| format!("copy back into {schema}.{table}: {}", pg_err(&e)))?;
            if n != missing as u64 {
                // Dropping the transaction rolls it back.
                return Ok((
                    diffs,
                    Err(format!(
                        "{schema}.{table}: {n} rows inserted but {missing} were missing; rolled back"
                    )),
                ));
            }
            let after: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {live}"), &[])
                .await
                .map_err(|e| pg_err(&e))?
                .get(0);
            if after != live_n + missing {
                return Ok((
                    diffs,
                    Err(format!(
                        "{schema}.{table}: {after} rows after the copy, expected {}; rolled back",
                        live_n + missing
                    )),
                ));
            }
            diffs[i].copied = n;
        }
        tx.commit()
            .await
            .map_err(|e| format!("COMMIT: {}", pg_err(&e)))?;
        Ok((diffs, Ok(())))
    }
}

#[async_trait::async_trait]
impl Action for RestoreTables {
    fn describe(&self) -> String {
        format!(
            "postgres.restore-tables of {} from the newest verified copy of {} before the first detection into schema {}{}",
            self.params.tables.join(", "),
            self.params.backup,
            self.schema,
            if self.params.copies_back() {
                ", then the missing rows copied back"
            } else {
                " (diff only)"
            }
        )
    }

    fn inputs(&self) -> Value {
        json!({
            "backup": self.params.backup,
            "tables": self.params.tables,
            "schema": self.schema,
            "copy_back": self.params.copies_back(),
            "max_rows": self.params.max_rows,
            "before": self.params.before,
        })
    }

    async fn preflight(&self, ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        let target = match self.live.server().await {
            Ok(t) => t,
            Err(e) => {
                pre.gate(Gate::fail("reachable", e));
                return pre;
            }
        };
        match connect(&target, None, PROBE_TIMEOUT).await {
            Ok(_) => pre.gate(Gate::pass(
                "reachable",
                format!(
                    "the live database answers ({}:{})",
                    target.host, target.port
                ),
            )),
            Err(e) => {
                pre.gate(Gate::fail("reachable", e));
                return pre;
            }
        };
        let Some(store) = ctx.ledger.as_deref() else {
            pre.gate(Gate::fail(
                "backup",
                "no store: the backup runs are not known",
            ));
            return pre;
        };
        let cutoff = self.cutoff(ctx);
        match self.source.newest(store, Some(cutoff)).await {
            Ok((copy, _)) => {
                pre.gate(Gate::pass(
                    "backup",
                    format!(
                        "newest verified copy before {}: {}",
                        cutoff.to_rfc3339(),
                        copy.name
                    ),
                ));
                pre.data = json!({ "file": copy.name });
            }
            Err(e) => {
                pre.gate(Gate::fail("backup", e));
            }
        }
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let work = match scratch_dir("restore-tables") {
            Ok(d) => d,
            Err(e) => return ActionResult::failed(e, json!({})),
        };
        let r = tokio::select! {
            r = tokio::time::timeout(ctx.timeout, self.restore(ctx, &work)) => match r {
                Ok(Ok(r)) => r,
                Ok(Err((e, data))) => ActionResult::failed(e, data),
                Err(_) => ActionResult::failed(
                    format!("timed out after {}; nothing copied back", humantime::format_duration(ctx.timeout)),
                    json!({ "timed_out": true }),
                ),
            },
            _ = ctx.cancel.cancelled() => ActionResult::failed("aborted: medic is stopping; nothing copied back", json!({})),
        };
        let _ = tokio::fs::remove_dir_all(&work).await;
        r
    }

    async fn reconcile(&self, ctx: &ActionContext) -> Option<ActionResult> {
        self.reconcile_now(ctx).await
    }
}

/// A `postgres.backup` job named by `backup`, checked where written.
fn validate_backup(
    v: &mut crate::config::refs::Refs,
    p: &marked_yaml::Node,
    job: &str,
    user: &str,
) {
    use crate::yaml::field_pos;
    let Some(cfg) = v.config else { return };
    match cfg.jobs.get(job) {
        Some(j) if j.backup.is_some() => {}
        Some(_) => v.err(
            field_pos(p, "backup"),
            format!("job {job:?} is not a postgres.backup job, but {user} restores one"),
        ),
        None => {
            let known: Vec<&str> = cfg
                .jobs
                .iter()
                .filter(|(_, j)| j.backup.is_some())
                .map(|(n, _)| n.as_str())
                .collect();
            v.err(
                field_pos(p, "backup"),
                crate::yaml::unknown_field("postgres.backup job", job, &known),
            );
        }
    }
}

fn validate_before(
    v: &mut crate::config::refs::Refs,
    p: &marked_yaml::Node,
    before: &Option<String>,
) {
    if let Some(b) = before
        && parse_time(b).is_none()
    {
        v.err(
            crate::yaml::field_pos(p, "before"),
            format!("{b:?} is not an RFC 3339 time (e.g. 2026-03-01T02:00:00Z)"),
        );
    }
}

impl super::ActionKind for RestoreParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::field_pos;
        let user = "postgres.restore";
        validate_backup(v, p, &self.backup, user);
        v.target(p, "target", &self.target, &["postgres"], user);
        if let Some(o) = &self.original {
            v.target(p, "original", o, &["postgres"], user);
        }
        if !is_ident(&self.database) {
            v.err(
                field_pos(p, "database"),
                format!(
                    "{:?} is not a database name (letters, digits, _)",
                    self.database
                ),
            );
        }
        if let Some(cfg) = v.config
            && let Some(TargetConfig::Postgres(t)) = cfg.targets.get(&self.target)
            && t.dbname == self.database
        {
            v.err(
                field_pos(p, "database"),
                format!(
                    "{:?} is the database medic connects to on {}: name a new database",
                    self.database, self.target
                ),
            );
        }
        validate_before(v, p, &self.before);
        for (name, sql) in &self.integrity {
            if sql.trim().is_empty() {
                v.err(
                    field_pos(p, "integrity"),
                    format!("integrity query {name:?} is empty"),
                );
            }
        }
    }

    fn targets(&self) -> Vec<String> {
        std::iter::once(self.target.clone())
            .chain(self.original.clone())
            .collect()
    }

    fn requires_approval(&self) -> Option<&'static str> {
        Some(
            "postgres.restore replaces the database clients use with a backup: it needs `approval: required`",
        )
    }

    fn build(&self, config: &Config) -> Result<Arc<dyn Action>, BuildError> {
        Ok(Arc::new(Restore::build(self, config)?))
    }
}

impl super::ActionKind for RestoreTablesParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, item_pos};
        let user = "postgres.restore-tables";
        validate_backup(v, p, &self.backup, user);
        if let Some(t) = &self.target {
            v.target(p, "target", t, &["postgres"], user);
        }
        if self.tables.is_empty() {
            v.err(field_pos(p, "tables"), "name at least one table to restore");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            match split_table(t) {
                None => v.err(
                    item_pos(p, "tables", i),
                    format!("{t:?} is not a table name (NAME or SCHEMA.NAME)"),
                ),
                Some((_, name)) if !seen.insert(name.clone()) => v.err(
                    item_pos(p, "tables", i),
                    format!(
                        "table {name:?} is listed twice (the side schema holds one of each name)"
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(s) = &self.schema
            && (!is_ident(s) || s == "public" || s.starts_with("pg_"))
        {
            v.err(
                field_pos(p, "schema"),
                format!("{s:?} cannot be the side schema: name a schema of its own (default {DEFAULT_SIDE_SCHEMA})"),
            );
        }
        if let Some(0) = self.max_rows {
            v.err(field_pos(p, "max_rows"), "max_rows must be at least 1");
        }
        validate_before(v, p, &self.before);
    }

    fn targets(&self) -> Vec<String> {
        self.target.clone().into_iter().collect()
    }

    fn requires_approval(&self) -> Option<&'static str> {
        self.copies_back().then_some(
            "postgres.restore-tables copies rows back into live tables: it needs `approval: required` (or `copy_back: false` for the diff only)",
        )
    }

    fn build(&self, config: &Config) -> Result<Arc<dyn Action>, BuildError> {
        Ok(Arc::new(RestoreTables::build(self, config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_default_to_public_and_refuse_syntax() {
        assert_eq!(
            split_table("appointments"),
            Some(("public".into(), "appointments".into()))
        );
        assert_eq!(split_table("app.a_1"), Some(("app".into(), "a_1".into())));
        assert_eq!(split_table("a; DROP TABLE x"), None);
        assert_eq!(split_table("a.b.c"), None);
        assert_eq!(split_table(""), None);
    }

    #[test]
    fn the_data_window_is_measured_against_the_rpo() {
        let mut ctx = ActionContext::new("t", Duration::from_secs(1));
        let copy = StoredCopy {
            name: "db-backup-x.dump".into(),
            taken_at: ctx.now - chrono::Duration::hours(3),
            size: 1,
        };
        ctx.rpo = Some(Duration::from_secs(24 * 3600));
        let (g, d) = window_gate(&ctx, &copy);
        assert!(g.passed, "{g:?}");
        assert!(g.detail.contains("3h"), "{}", g.detail);
        assert_eq!(d["within_rpo"], json!(true));
        ctx.rpo = Some(Duration::from_secs(3600));
        let (g, d) = window_gate(&ctx, &copy);
        assert!(g.passed, "{g:?}");
        assert_eq!(d["within_rpo"], json!(false));
        assert!(g.detail.contains("MISSED"), "{}", g.detail);
        assert_eq!(d["lost_secs"], json!(3 * 3600));
    }
}
