//! Readiness by name: each part the agent waits for before it may say it is
//! ready holds a [`Blocker`]; `/readyz` lists the names still held.
use std::collections::BTreeSet;

use crate::shared::Shared;

#[derive(Clone, Default)]
pub struct Readiness(Shared<BTreeSet<&'static str>>);

/// Holds readiness back until dropped (or [`Blocker::done`]).
#[must_use = "readiness is held back only while the blocker lives"]
pub struct Blocker {
    readiness: Readiness,
    name: &'static str,
}

impl Readiness {
    /// Holds readiness back until the returned blocker is dropped.
    pub fn block(&self, name: &'static str) -> Blocker {
        self.0.lock().insert(name);
        Blocker {
            readiness: self.clone(),
            name,
        }
    }

    /// What readiness still waits for; empty when ready.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        self.0.lock().iter().copied().collect()
    }
}

impl Blocker {
    pub fn done(self) {}
}

impl Drop for Blocker {
    fn drop(&mut self) {
        self.readiness.0.lock().remove(self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_blocker_is_gone() {
        let readiness = Readiness::default();
        assert!(readiness.waiting_for().is_empty());
        let attach = readiness.block("programs attached");
        let sync = readiness.block("first xDS sync applied");
        assert_eq!(
            readiness.waiting_for(),
            ["first xDS sync applied", "programs attached"]
        );
        attach.done();
        assert_eq!(readiness.waiting_for(), ["first xDS sync applied"]);
        drop(sync);
        assert!(readiness.waiting_for().is_empty());
    }
}
