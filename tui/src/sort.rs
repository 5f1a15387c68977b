//! Table order: one key per column, pressing it again reverses.
use std::cmp::Ordering;

use crate::{
    calls::CallRow,
    rows::{BackendRow, ServiceRow},
    stats::{Quantile, Stats},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Vip,
    Policy,
    Active,
    Rate,
    Latency,
    Rtt,
    Bytes,
    Retransmits,
    Errors,
}

impl SortKey {
    pub const ALL: [SortKey; 10] = [
        SortKey::Name,
        SortKey::Vip,
        SortKey::Policy,
        SortKey::Active,
        SortKey::Rate,
        SortKey::Latency,
        SortKey::Rtt,
        SortKey::Bytes,
        SortKey::Retransmits,
        SortKey::Errors,
    ];

    pub fn key(self) -> char {
        match self {
            SortKey::Name => 'n',
            SortKey::Vip => 'v',
            SortKey::Policy => 'p',
            SortKey::Active => 'a',
            SortKey::Rate => 'r',
            SortKey::Latency => 'l',
            SortKey::Rtt => 't',
            SortKey::Bytes => 'b',
            SortKey::Retransmits => 'x',
            SortKey::Errors => 'e',
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Vip => "vip",
            SortKey::Policy => "policy",
            SortKey::Active => "active",
            SortKey::Rate => "new/s",
            SortKey::Latency => "p99",
            SortKey::Rtt => "rtt",
            SortKey::Bytes => "bytes/s",
            SortKey::Retransmits => "retrans/s",
            SortKey::Errors => "errors/s",
        }
    }

    pub fn from_key(c: char) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.key() == c)
    }

    fn is_text(self) -> bool {
        matches!(self, SortKey::Name | SortKey::Vip | SortKey::Policy)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

impl Default for Sort {
    fn default() -> Self {
        Sort {
            key: SortKey::Name,
            descending: false,
        }
    }
}

impl Sort {
    /// Text columns start A to Z, figures largest first, as top does.
    pub fn press(&mut self, key: SortKey) {
        if self.key == key {
            self.descending = !self.descending;
        } else {
            *self = Sort {
                key,
                descending: !key.is_text(),
            };
        }
    }

    pub fn services(&self, rows: &mut [&ServiceRow]) {
        rows.sort_by(|a, b| {
            let by_key = match self.key {
                SortKey::Name => a.name.cmp(&b.name),
                SortKey::Vip => a.vip.cmp(&b.vip),
                SortKey::Policy => a.policy.cmp(&b.policy),
                _ => by_figure(self.key, &a.stats, &b.stats),
            };
            self.direct(by_key).then_with(|| a.name.cmp(&b.name))
        });
    }

    /// Backends have no VIP or policy of their own: the text keys order
    /// them by address.
    pub fn backends(&self, rows: &mut [(usize, &BackendRow)]) {
        rows.sort_by(|(_, a), (_, b)| {
            let by_key = match self.key {
                key if key.is_text() => a.address.cmp(&b.address),
                key => by_figure(key, &a.stats, &b.stats),
            };
            self.direct(by_key).then_with(|| a.address.cmp(&b.address))
        });
    }

    /// Calls: `n` orders by the client, `v` by the service, `p` by the
    /// reporter.
    pub fn calls(&self, rows: &mut [&CallRow]) {
        rows.sort_by(|a, b| {
            let by_key = match self.key {
                SortKey::Name => pair(a).cmp(&pair(b)),
                SortKey::Vip => a.service.cmp(&b.service),
                SortKey::Policy => a.reporter.cmp(&b.reporter),
                key => by_figure(key, &a.stats, &b.stats),
            };
            self.direct(by_key)
                .then_with(|| pair(a).cmp(&pair(b)))
                .then_with(|| a.reporter.cmp(&b.reporter))
        });
    }

    fn direct(&self, ordering: Ordering) -> Ordering {
        if self.descending {
            ordering.reverse()
        } else {
            ordering
        }
    }
}

/// A call's client and service, the order of its name.
fn pair(r: &CallRow) -> (&str, &str) {
    (&r.source, &r.service)
}

/// Missing figures (no interval yet, nothing recorded) sort below zero.
fn by_figure(key: SortKey, a: &Stats, b: &Stats) -> Ordering {
    let figure = |s: &Stats| -> f64 {
        let quantile = |q: Option<Quantile>| q.map_or(-1.0, |q| q.us as f64);
        match key {
            SortKey::Active => s.active as f64,
            SortKey::Latency => quantile(s.latency_p99),
            SortKey::Rtt => quantile(s.rtt_p99),
            _ => s.rates.map_or(-1.0, |r| match key {
                SortKey::Rate => r.opened,
                SortKey::Bytes => r.bytes(),
                SortKey::Retransmits => r.retransmits,
                _ => r.errors(),
            }),
        }
    };
    figure(a).total_cmp(&figure(b))
}
