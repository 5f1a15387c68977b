//! The kmesh-agent admin API: JSON over HTTP/1.1 on a Unix socket that only
//! the agent's user (root) may open. Every type a request or response
//! carries is here, under the version it belongs to; a change that breaks a
//! client gets a new version module beside `v1`, never an edit of it.
#[cfg(feature = "client")]
pub mod client;
pub mod v1;
