//! The agent's own figures beyond the connections it counts: config loads
//! and routing maps (the control loop), exports and spans (the exporters).
//! Each part writes its own; the exporters read them all through one table
//! ([`AGENT_FAMILIES`]), the admin API some of them.
mod control;
mod export;
pub mod families;

pub use self::{
    control::{ControlFigures, ControlStats},
    export::{ExportHealth, ExportHealthSnapshot, add},
    families::{AGENT_FAMILIES, AgentFigures},
};
