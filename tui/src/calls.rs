//! Who calls whom: one row per client workload and service it calls, with
//! the figures of the interval, from the snapshot's `calls`.
use kmesh_api::v1::{Call, Snapshot};

use crate::{
    rows,
    stats::{self, Stats},
};

#[derive(Clone, Debug, PartialEq)]
pub struct CallRow {
    /// `source` (the client's side) or `destination` (only the server's).
    pub reporter: String,
    /// The client's workload, `namespace/workload`, or `unknown`.
    pub source: String,
    pub service: String,
    /// The workloads the connections reached, `namespace/workload`.
    pub destinations: Vec<String>,
    pub stats: Stats,
}

impl CallRow {
    /// Names the row across snapshots.
    pub fn id(&self) -> String {
        format!("{} {} {}", self.reporter, self.source, self.service)
    }

    /// The destination workloads, comma-separated; `-` when none is known.
    pub fn destinations_text(&self) -> String {
        match self.destinations.is_empty() {
            true => "-".into(),
            false => self.destinations.join(","),
        }
    }

    /// Case-insensitive substring match on the source, service, destination
    /// workloads and reporter; an empty filter matches everything.
    pub fn matches(&self, filter: &str) -> bool {
        let needle = filter.to_lowercase();
        [&self.source, &self.service, &self.reporter]
            .into_iter()
            .chain(&self.destinations)
            .any(|field| field.to_lowercase().contains(&needle))
    }
}

/// `namespace/workload`, or just `unknown` for a client outside the mesh.
pub fn source_name(call: &Call) -> String {
    match (
        call.source_namespace.as_str(),
        call.source_workload.as_str(),
    ) {
        (_, "unknown") | ("", _) => call.source_workload.clone(),
        (ns, workload) => format!("{ns}/{workload}"),
    }
}

fn same(a: &Call, b: &Call) -> bool {
    a.reporter == b.reporter
        && a.source_namespace == b.source_namespace
        && a.source_workload == b.source_workload
        && a.destination_service == b.destination_service
}

/// `before` must be an earlier snapshot of the same agent run (the caller
/// drops it when the agent restarted). Rates and quantiles are computed as
/// the services' are ([`stats::compute`]).
pub fn rows(before: Option<&Snapshot>, now: &Snapshot) -> Vec<CallRow> {
    let interval = rows::interval(before, now);
    now.calls
        .iter()
        .map(|call| {
            let previous = before
                .and_then(|b| b.calls.iter().find(|p| same(p, call)))
                .map(|p| &p.figures);
            // A pair new to this snapshot has no interval to compare yet.
            let stats = stats::compute(&call.figures, previous, previous.and(interval));
            CallRow {
                reporter: call.reporter.clone(),
                source: source_name(call),
                service: call.destination_service.clone(),
                destinations: call.destination_workloads.clone(),
                stats,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kmesh_api::v1::Figures;

    use super::*;

    fn call(namespace: &str, workload: &str) -> Call {
        Call {
            reporter: "source".into(),
            source_workload: workload.into(),
            source_namespace: namespace.into(),
            destination_service: "cart".into(),
            destination_workloads: vec!["shop/cart-v1".into()],
            figures: Figures::default(),
        }
    }

    #[test]
    fn sources_are_namespaced_unless_unknown() {
        assert_eq!(source_name(&call("front", "web")), "front/web");
        assert_eq!(source_name(&call("unknown", "unknown")), "unknown");
    }

    #[test]
    fn the_filter_reads_every_name() {
        let row = CallRow {
            reporter: "source".into(),
            source: "front/web".into(),
            service: "cart".into(),
            destinations: vec!["shop/cart-v1".into()],
            stats: Stats::default(),
        };
        for needle in ["", "FRONT", "cart", "v1", "sour"] {
            assert!(row.matches(needle), "{needle}");
        }
        assert!(!row.matches("jobs"));
    }
}
