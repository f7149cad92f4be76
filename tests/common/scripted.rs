//! A check whose outcome the test sets, for tests that drive the real
//! engine with `medic::daemon::run_with`.

use std::sync::{Arc, Mutex};

use medic::check::Check;
use medic::observe::Outcome;

/// A check whose outcome the test sets; clones share it.
#[derive(Clone)]
pub struct Scripted(Arc<Mutex<Outcome>>);

impl Scripted {
    pub fn new(o: Outcome) -> Self {
        Scripted(Arc::new(Mutex::new(o)))
    }

    pub fn set(&self, o: Outcome) {
        *self.0.lock().unwrap() = o;
    }
}

#[async_trait::async_trait]
impl Check for Scripted {
    async fn run(&self) -> Outcome {
        self.0.lock().unwrap().clone()
    }
}

/// A per-series check whose observation the test sets; clones share it.
#[derive(Clone)]
pub struct ScriptedSeries(Arc<Mutex<medic::observe::Observation>>);

impl ScriptedSeries {
    pub fn new(o: medic::observe::Observation) -> Self {
        ScriptedSeries(Arc::new(Mutex::new(o)))
    }

    pub fn set(&self, o: medic::observe::Observation) {
        *self.0.lock().unwrap() = o;
    }

    /// Failing series, one per label set given as `[(name, value)...]`.
    pub fn failing(sets: &[&[(&str, &str)]]) -> medic::observe::Observation {
        medic::observe::Observation::Series(
            sets.iter()
                .map(|set| medic::observe::Series {
                    labels: set
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    value: 0.5,
                    detail: "5xx ratio 0.5".into(),
                })
                .collect(),
        )
    }
}

#[async_trait::async_trait]
impl Check for ScriptedSeries {
    async fn run(&self) -> Outcome {
        self.observe().await.into_outcome()
    }

    async fn observe(&self) -> medic::observe::Observation {
        self.0.lock().unwrap().clone()
    }

    fn per_series(&self) -> bool {
        true
    }
}

/// The real engine (`medic::daemon::run_with`) running one scenario in a
/// task, until [`Running::stop`].
pub struct Running {
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Runs `sc` in `mode` with `check` for its one symptom and `action` for
/// its first step, recording into `store`.
pub fn run_scenario(
    config: medic::config::Config,
    sc: medic::rules::model::Scenario,
    mode: medic::config::Mode,
    check: Arc<dyn Check>,
    action: Arc<dyn medic::remedy::Action>,
    store: Arc<dyn medic::store::Store>,
    clock: medic::clock::Clock,
) -> Running {
    let rt = Arc::new(medic::engine::ScenarioRuntime {
        steps: vec![medic::engine::plan::PlannedStep {
            step: sc.plan[0].clone(),
            action,
        }],
        checks: vec![check],
        scenario: sc,
        mode,
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sd = shutdown.clone();
    let handle = tokio::spawn(async move {
        medic::daemon::run_with(&config, vec![rt], 0, store, clock, sd).await
    });
    Running { shutdown, handle }
}

impl Running {
    /// Cancels the engine and waits for it to return (it must return Ok).
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}
