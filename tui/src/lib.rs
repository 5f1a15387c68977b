//! kmesh-top: a live terminal dashboard of what kmesh-agent routes, read
//! from its admin API. The binary is `main.rs`; the library is here so
//! tests drive the same state and rendering the terminal does.
pub mod app;
pub mod calls;
pub mod feed;
pub mod fetch;
pub mod format;
pub mod hangup;
pub mod history;
pub mod once;
pub mod rows;
pub mod sort;
pub mod stats;
pub mod theme;
pub mod ui;
