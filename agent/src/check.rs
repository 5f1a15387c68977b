//! `kmesh-agent check`: a mesh config as `run` would read it, in words a
//! person (or a CI job grepping the first line) can judge.
use std::{collections::BTreeMap, io::Write, path::Path};

use kmesh_agent::{
    config::{self, Loaded},
    model::Mesh,
    xds::translate::Severity,
};

/// One line: services, routed backends (weight above 0), workloads when a
/// source names them, findings by severity, unrouted routes and refused
/// resources.
pub fn summary(loaded: &Loaded) -> String {
    let mesh = &loaded.mesh;
    let routed: usize = mesh
        .services
        .values()
        .map(|s| s.routable_backends().len())
        .sum();
    let mut parts = vec![
        count(mesh.services.len(), "service", "services"),
        count(routed, "routed backend", "routed backends"),
    ];
    if !mesh.workloads.is_empty() {
        parts.push(count(mesh.workloads.len(), "workload", "workloads"));
    }
    let report = &loaded.report;
    let mut by_severity: BTreeMap<Severity, usize> = BTreeMap::new();
    for f in &report.findings {
        *by_severity.entry(f.severity).or_default() += 1;
    }
    if by_severity.is_empty() {
        parts.push("no findings".into());
    } else {
        let kinds: Vec<String> = by_severity
            .iter()
            .map(|(s, n)| format!("{n} {}", severity_word(*s)))
            .collect();
        parts.push(format!(
            "{} ({})",
            count(report.findings.len(), "finding", "findings"),
            kinds.join(", ")
        ));
    }
    if !report.unrouted.is_empty() {
        parts.push(count(
            report.unrouted.len(),
            "unrouted route",
            "unrouted routes",
        ));
    }
    parts.push(count(
        report.rejected.len(),
        "refused resource",
        "refused resources",
    ));
    parts.join(", ")
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Unsupported => "unsupported",
        Severity::Unresolved => "unresolved",
        Severity::Adjusted => "adjusted",
        Severity::Ignored => "ignored",
    }
}

/// Prints the summary line, then every service, workload, note, refusal,
/// unrouted route and finding. Fails only when the config cannot be read
/// at all; refused resources and findings are for the reader to judge.
pub fn check(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let loaded = config::load(path)?;
    let mesh = &loaded.mesh;
    writeln!(out, "{}: {}", path.display(), summary(&loaded))?;
    for s in mesh.services.values() {
        writeln!(
            out,
            "  {} {} {} ({})",
            s.name,
            s.vip,
            s.policy.as_str(),
            count(s.backends.len(), "backend", "backends")
        )?;
        for b in &s.backends {
            writeln!(out, "    {} weight {}", b.addr, b.weight)?;
        }
    }
    print_workloads(mesh, out)?;
    for note in &loaded.notes {
        writeln!(out, "note: {note}")?;
    }
    let report = &loaded.report;
    for r in &report.rejected {
        writeln!(out, "rejected {} {:?}: {}", r.kind, r.name, r.reason)?;
    }
    for u in &report.unrouted {
        let backends: Vec<String> = u
            .backends
            .iter()
            .map(|b| format!("{} weight {}", b.addr, b.weight))
            .collect();
        writeln!(
            out,
            "unrouted: listener {:?} port {} virtual host {:?} -> {}: {}",
            u.listener,
            u.port,
            u.virtual_host,
            backends.join(", "),
            u.reason
        )?;
    }
    for f in &report.findings {
        writeln!(
            out,
            "{:?} {} {:?}: {}",
            f.severity, f.kind, f.name, f.message
        )?;
    }
    Ok(())
}

/// The workloads a source named (ambient's workload discovery): who runs
/// behind the addresses, as telemetry will name them.
fn print_workloads(mesh: &Mesh, out: &mut impl Write) -> anyhow::Result<()> {
    if mesh.workloads.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "{}",
        count(mesh.workloads.len(), "workload", "workloads")
    )?;
    for w in mesh.workloads.iter() {
        let addresses: Vec<String> = w.addresses.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "  {} {}/{} {}/{} sa {} [{}]",
            w.uid,
            w.namespace,
            w.workload_name,
            w.canonical_name,
            w.canonical_revision,
            w.service_account,
            addresses.join(", ")
        )?;
    }
    Ok(())
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `check` prints for a mesh file holding `text`.
    fn check_output(tag: &str, text: &str) -> String {
        let path =
            std::env::temp_dir().join(format!("kmesh-check-{tag}-{}.yaml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        let result = check(&path, &mut out);
        let _ = std::fs::remove_file(&path);
        result.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn check_counts_in_words_and_notes_services_that_are_not_routed() {
        let out = check_output(
            "notes",
            "services:\n  - name: lonely\n    vip: 198.18.0.1:80\n    backends: []\n  - name: drained\n    vip: 198.18.0.2:80\n    backends:\n      - address: 127.0.0.1:80\n        weight: 0\n",
        );
        let first = out.lines().next().unwrap();
        assert!(
            first.ends_with(": 2 services, 0 routed backends, no findings, 0 refused resources"),
            "{out}"
        );
        assert!(
            out.contains("(0 backends)") && out.contains("(1 backend)"),
            "{out}"
        );
        for note in [
            "note: service \"lonely\" (198.18.0.1:80) has no backends; connect() to it is refused (EPERM) until it has a backend\n",
            "note: service \"drained\" (198.18.0.2:80) has every backend at weight 0 (drained); connect() to it is refused (EPERM) until it has a backend\n",
        ] {
            assert!(out.contains(note), "{note}\n{out}");
        }
        let out = check_output("one", "services:\n  - name: a\n    vip: 198.18.0.1:80\n");
        assert!(
            out.lines()
                .next()
                .unwrap()
                .ends_with(": 1 service, 0 routed backends, no findings, 0 refused resources"),
            "{out}"
        );
    }

    #[test]
    fn check_prints_the_workloads_and_services_of_a_ztunnel_dump() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata/xds/istio-1.24-ambient-ztunnel.config_dump.json");
        let mut out = Vec::new();
        check(&path, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let first = out.lines().next().unwrap();
        assert!(
            first.contains(": 53 services, ")
                && first.contains(" routed backends, 48 workloads, ")
                && first.ends_with(", 0 refused resources"),
            "{out}"
        );
        assert!(out.contains("\n48 workloads\n"), "{out}");
        assert!(
            out.contains(
                "  reviews.bookinfo.svc.cluster.local 10.96.224.224:9080 random (3 backends)\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("  cluster-default//Pod/bookinfo/reviews-v2-f6d449f65-v2qx7 bookinfo/reviews-v2 reviews/v2 sa bookinfo-reviews [10.244.1.18]\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "Unsupported service \"bookinfo/reviews.bookinfo.svc.cluster.local\": uses waypoint"
            ),
            "{out}"
        );
    }
}

#[cfg(test)]
mod summary_tests {
    use std::path::PathBuf;

    use super::*;

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata/xds")
            .join(name)
    }

    /// The first line of a real sidecar dump: every count a CI gate greps.
    #[test]
    fn the_summary_counts_services_backends_findings_and_refusals() {
        let loaded = config::load(&testdata(
            "istio-1.18-sidecar-deathstarbench.config_dump.json",
        ))
        .unwrap();
        let line = summary(&loaded);
        let routed: usize = loaded
            .mesh
            .services
            .values()
            .map(|s| s.routable_backends().len())
            .sum();
        assert!(
            line.starts_with(&format!("122 services, {routed} routed backends, ")),
            "{line}"
        );
        let ignored = loaded
            .report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Ignored)
            .count();
        assert!(line.contains(&format!("{ignored} ignored")), "{line}");
        assert!(line.ends_with(", 1 refused resource"), "{line}");
    }
}
