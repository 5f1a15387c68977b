//! What the control loop has done: config loads and what is in the routing
//! maps. Written a few times a minute at most, so a lock is cheap here.
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlFigures {
    pub config_reloads_ok: u64,
    pub config_reloads_failed: u64,
    /// Services in the applied mesh.
    pub services: u64,
    /// Entries in the routing maps now.
    pub map_services: u64,
    pub map_backends: u64,
}

#[derive(Debug, Default)]
pub struct ControlStats(Mutex<ControlFigures>);

impl ControlStats {
    pub fn update(&self, change: impl FnOnce(&mut ControlFigures)) {
        // Plain counters: a panic elsewhere cannot leave them inconsistent.
        change(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn get(&self) -> ControlFigures {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
