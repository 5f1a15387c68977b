use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::Outcome;

/// What a client run did, to compare with what the agent counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientReport {
    pub ok: u64,
    /// Failed connections by kind (refused, reset, timeout, unreachable, other).
    pub failures: BTreeMap<String, u64>,
    /// Completed connections by the backend that answered.
    pub backends: BTreeMap<String, u64>,
    /// Completed connections by the address getpeername() returned.
    pub peer_names: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl ClientReport {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok {
                backend,
                peer,
                sent,
                received,
            } => {
                self.ok += 1;
                *self.backends.entry(backend).or_default() += 1;
                *self.peer_names.entry(peer).or_default() += 1;
                self.bytes_sent += sent;
                self.bytes_received += received;
            }
            Outcome::Failed {
                kind,
                sent,
                received,
            } => {
                *self.failures.entry(kind.to_string()).or_default() += 1;
                self.bytes_sent += sent;
                self.bytes_received += received;
            }
        }
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}
