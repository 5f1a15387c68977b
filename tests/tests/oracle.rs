//! Envoy as the oracle: every case is served over ADS to a real Envoy 1.40
//! and to kmesh-agent on the real kernel, and the two must ACK and NACK
//! alike, naming the same resources, except where docs/xds.md ("Envoy as
//! the oracle") says why they differ on purpose: [`DELIBERATE`].
use std::path::{Path, PathBuf};

use kmesh_agent::xds::{json, resources::ResourceSet};
use kmesh_tests::{
    harness::{Topology, privileged},
    oracle::{Case, Compared, Oracle, cases},
    xds_data,
};

/// Disagreements kept on purpose: (case, type, why). Mirrored in
/// docs/xds.md; an entry that no longer disagrees fails the test too.
const DELIBERATE: &[(&str, &str, &str)] = &[
    (
        "eds-host-name",
        "endpoints",
        "both NACK; the agent's message names the assignment, Envoy's EDS message names none",
    ),
    (
        "v2-type-url",
        "listener",
        "both refuse the whole response; Envoy's message prints the response, so it seems to name every listener in it",
    ),
    (
        "unsubscribed-type",
        "raw",
        "Envoy ignores a response of a type it watches nothing of; the agent NACKs it, so the server sees the refusal instead of waiting for an answer",
    ),
];

/// Disagreements found and not fixed yet (issue 19): (case, type, what is
/// left to do). Listed apart from DELIBERATE, in docs/xds.md too, so
/// nothing new slips in; an entry fixed fails the test until removed.
const OPEN: &[(&str, &str, &str)] = &[
    (
        "two-listeners-one-address",
        "listener",
        "Envoy refuses the second listener on an address already taken in the response; the agent takes both (the first wins the VIP, as a finding)",
    ),
    (
        "listener-without-name",
        "listener",
        "Envoy takes an unnamed listener (naming it itself); the agent refuses it",
    ),
];

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/xds")
}

fn fuzz_seeds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/translate_document")
}

/// The documents of a JSON or YAML file, as the agent reads them.
fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("reading test data");
    kmesh_agent::config::values_of(&text).expect("JSON or YAML")
}

/// Envoy resources of `paths` as one case; `None` for files that hold
/// none (the compact format, a ztunnel dump).
fn file_case(name: String, paths: &[PathBuf]) -> Option<Case> {
    let mut set = ResourceSet::default();
    for doc in paths.iter().flat_map(|p| documents(p)) {
        if !json::is_envoy_document(&doc) {
            return None;
        }
        if let Err(e) = json::read(&doc, "file", &mut set) {
            // A file the reader refuses is not a set of resources to serve;
            // what Envoy says of its parts, the generated cases ask.
            eprintln!("{name}: not served: {e}");
            return None;
        }
    }
    Some(Case::new(name, xds_data::by_type(&set)))
}

fn all_cases() -> (Vec<Case>, usize) {
    let mut cases = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("../shared/testdata/xds")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "yaml"))
        .collect();
    files.sort();
    // Envoy Gateway's four files are one snapshot.
    let (gateway, single): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|p| p.display().to_string().contains("envoy-gateway-weighted"));
    cases.extend(file_case(
        "testdata:envoy-gateway-weighted".into(),
        &gateway,
    ));
    for path in single {
        let name = format!("testdata:{}", path.file_name().unwrap().to_string_lossy());
        cases.extend(file_case(name, &[path]));
    }
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(fuzz_seeds())
        .expect("fuzz/corpus/translate_document")
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    let seed_count = seeds.len();
    for path in seeds {
        let name = format!("seed:{}", path.file_name().unwrap().to_string_lossy());
        cases.extend(file_case(name, &[path]));
    }
    cases.extend(cases::hostile());
    (cases, seed_count)
}

#[test]
fn envoy_and_the_agent_ack_and_nack_alike() {
    if !privileged("envoy_and_the_agent_ack_and_nack_alike") {
        return;
    }
    let topo = Topology::new("oracle");
    let mut oracle = Oracle::start(&topo.workdir.join("envoy"));
    // Envoy's bootstrap asks for state of the world; the agent speaks the same.
    let _agent = topo.start_agent_xds(oracle.server.addr(), &["--xds-protocol", "sotw"]);
    oracle.agent_joined();

    let (cases, seeds) = all_cases();
    let mut compared: Vec<Compared> = Vec::new();
    for case in &cases {
        compared.extend(oracle.run(case));
    }
    let report: Vec<String> = compared.iter().map(Compared::describe).collect();
    eprintln!(
        "{} cases ({} fuzz seeds looked at), {} verdict pairs:\n{}",
        cases.len(),
        seeds,
        compared.len(),
        report.join("\n")
    );
    let deliberate = |c: &Compared| {
        DELIBERATE
            .iter()
            .chain(OPEN)
            .any(|(case, kind, _)| *case == c.case && *kind == c.kind)
    };
    let unexpected: Vec<String> = compared
        .iter()
        .filter(|c| !c.agrees() && !deliberate(c))
        .map(Compared::describe)
        .collect();
    assert!(
        unexpected.is_empty(),
        "Envoy and the agent disagree (fix the agent, or list it in DELIBERATE and docs/xds.md):\n{}",
        unexpected.join("\n")
    );
    let stale: Vec<&str> = DELIBERATE
        .iter()
        .chain(OPEN)
        .filter(|(case, kind, _)| {
            compared
                .iter()
                .any(|c| c.case == *case && c.kind == *kind && c.agrees())
        })
        .map(|(case, _, _)| *case)
        .collect();
    assert!(
        stale.is_empty(),
        "listed as deliberate but agreeing now: {stale:?}"
    );
}
