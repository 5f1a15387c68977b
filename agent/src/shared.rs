//! State one task writes and others read, behind one lock: the aggregator
//! (the probe reader writes; the control loop, exporters and admin API
//! read), the applied model and the xDS client's status.
use std::sync::{Arc, Mutex, MutexGuard};

pub struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Default> Default for Shared<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(Mutex::new(value)))
    }

    /// Holders copy or update and let go; none waits on I/O while holding
    /// it (the probe reader waits on the aggregator's). What is shared is
    /// figures and records, which a panic can leave one update short but
    /// never broken, so a poisoned lock is taken anyway rather than
    /// stopping all telemetry.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
