//! CPU time spent in the agent's eBPF programs, from the kernel's own
//! accounting (`run_time_ns`, `run_cnt` of each program), which runs only
//! while statistics are enabled: [`Accounting`] enables them through
//! BPF_ENABLE_STATS for as long as it lives, so the machine's
//! `kernel.bpf_stats_enabled` setting is never changed.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::OwnedFd,
};

use anyhow::Context;
use aya::{
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};
use serde::{Deserialize, Serialize};

/// Run time and run count of one program (or of the programs sharing a
/// name: the kernel keeps 15 characters, so vip_getpeername4 and 6 meet).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ProgramRuns {
    pub run_ns: u64,
    pub runs: u64,
}

/// Program name -> runs.
pub type Runs = BTreeMap<String, ProgramRuns>;

pub struct Accounting {
    _enabled: OwnedFd,
}

impl Accounting {
    pub fn enable() -> anyhow::Result<Self> {
        let fd = enable_stats(Stats::RunTime)
            .context("BPF_ENABLE_STATS (kernel >= 5.8, root): cannot account eBPF run time")?;
        Ok(Self { _enabled: fd })
    }
}

/// IDs of every program loaded now; those loaded later are the agent's.
pub fn loaded_ids() -> BTreeSet<u32> {
    loaded_programs().flatten().map(|p| p.id()).collect()
}

/// Runs so far of the programs loaded since `before`, by name.
pub fn runs_since(before: &BTreeSet<u32>) -> Runs {
    let mut runs = Runs::new();
    for p in loaded_programs().flatten() {
        if before.contains(&p.id()) {
            continue;
        }
        let name = p.name_as_str().unwrap_or("?").to_string();
        let entry = runs.entry(name).or_default();
        entry.run_ns += p.run_time().as_nanos() as u64;
        entry.runs += p.run_count();
    }
    runs
}

/// `after - before`, program by program.
pub fn delta(before: &Runs, after: &Runs) -> Runs {
    after
        .iter()
        .map(|(name, a)| {
            let b = before.get(name).copied().unwrap_or_default();
            let d = ProgramRuns {
                run_ns: a.run_ns.saturating_sub(b.run_ns),
                runs: a.runs.saturating_sub(b.runs),
            };
            (name.clone(), d)
        })
        .collect()
}
