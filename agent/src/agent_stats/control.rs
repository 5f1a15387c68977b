//! What the control loop has done: config loads and what is in the routing
//! maps. Written a few times a minute at most, so a lock is cheap here.

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

/// Written by the control loop, read by the exporters and the admin API.
pub type ControlStats = crate::shared::Shared<ControlFigures>;
