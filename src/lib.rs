//! medic: a daemon that keeps production systems alive.
//!
//! It watches targets, matches symptoms against one rule file per scenario,
//! runs bounded and verified remediation and pages humans on escalation timers.
//! Data flows one way (the layers below are checked by `tests/layers.rs`):
//!
//! ```text
//! check ──> engine::symptom ──> engine (scenario matcher) ──> incident
//!                                          │
//!                         engine::plan (guards → action → verify)
//!                                          │
//!                                page (escalation → notifiers)
//! ```
//!
//! Modules, and what each owns:
//! - [`clock`]: wall-clock time that follows tokio's (pausable) clock in tests.
//! - [`duration`]: human durations (`90s`, `5m`, `1h30m`) in config and rules.
//! - [`schedule`]: cron schedules in a time zone (jobs and drills).
//! - [`secret`]: secret references (`{env: X}` / `{file: P}`), never printed.
//! - [`diag`]: diagnostics that point at `path:line:col`.
//! - [`features`]: the optional Cargo features (`aws`, `kubernetes`) and the refusal of what a build lacks.
//! - `yaml`: YAML with positions, and the one cursor every loader (config, rules, rule tests) reads it with.
//! - [`unit`]: systemd unit names as `systemd.unit(5)` defines them, checked alike by the config and the actions.
//! - [`observe`]: what was observed: outcomes, series and labels, symptom phases and views.
//! - [`config`]: the daemon config: load (file + `MEDIC_` env), validate.
//! - [`rules`]: scenario rule files: model, loading with positions, validation.
//! - [`check`]: one file per check kind; the [`check::Check`] trait.
//! - [`remedy`]: one file per action kind; the [`remedy::Action`] trait.
//! - [`page`]: notifiers (log, Slack, PagerDuty, webhook, email), escalation, the communication plan, the post-recovery checklist.
//! - [`engine`]: symptom state machines, scenario matching, incident life cycle, the plan executor and its guards, the quorum of observers (replicas) before a step acts.
//! - [`connect`]: connections to targets (PostgreSQL, Redis, Kubernetes, Docker Engine clients from config targets).
//! - [`store`]: durable state behind the [`store::Store`] trait (SQLite by default).
//! - [`jobs`]: scheduled disaster-recovery jobs (backups, verification, restore tests).
//! - [`drill`]: `medic drill`, injected failures with measured detection and recovery.
//! - [`lead`]: leadership (advisory lock, Kubernetes Lease, single) and fencing terms.
//! - [`metrics`]: medic's own Prometheus metrics, served on `/metrics`.
//! - [`server`]: the HTTP surface (health, readiness, metrics, incidents API, status page, webhooks), the credentials of each route and the bounded (optionally TLS) listener.
//! - [`ops`]: operator tools: the API client behind the CLI and `medic report`.
//! - [`daemon`]: wires everything into `medic run`, with graceful shutdown.
//! - [`ruletest`]: `medic test`, rule unit tests on a simulated clock.
//! - [`probe`]: `medic probe`, one symptom's check run once, its outcome shown.
//! - [`reload`]: live reload of config and rules (SIGHUP, `POST /-/reload`).
//! - [`notify`]: systemd readiness and watchdog notifications.
//! - [`logging`]: tracing set-up (text on a terminal, JSON on request).
//! - [`cli`]: the `medic` command line (commands, flags, help), parsed by `main.rs`.
//!
//! ## Layers
//!
//! Imports point down: a module uses modules of its own layer or a lower
//! one, never a higher one, and no two modules import each other, directly
//! or through others. This block is the one place the order is written;
//! `tests/layers.rs` reads it and fails on an upward import or a circle,
//! naming the file and line.
//!
//! ```text
//! 11  cli
//! 10  drill ruletest
//! 9   daemon
//! 8   reload server notify ops probe
//! 7   engine
//! 6   page
//! 5   rules jobs remedy
//! 4   check lead
//! 3   store connect
//! 2   metrics observe
//! 1   config
//! 0   clock duration schedule secret diag features logging yaml unit
//! ```
#![forbid(unsafe_code)]

pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod diag;
pub mod drill;
pub mod duration;
pub mod engine;
pub mod features;
pub mod jobs;
pub mod lead;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod ops;
pub mod page;
pub mod probe;
pub mod reload;
pub mod remedy;
pub mod rules;
pub mod ruletest;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod store;
pub mod unit;
pub(crate) mod yaml;
