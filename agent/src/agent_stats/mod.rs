//! The agent's own figures beyond the connections it counts: config loads
//! and routing maps (the control loop), exports and spans (the exporters).
//! Each part writes its own; the exporters and the admin API read them.
mod control;
mod export;

pub use self::{
    control::{ControlFigures, ControlStats},
    export::{ExportHealth, ExportHealthSnapshot, add},
};
