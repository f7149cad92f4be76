//! A check whose outcome the test sets, for tests that drive the real
//! engine with `medic::daemon::run_with`.

use std::sync::{Arc, Mutex};

use medic::check::{Check, Outcome};

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
