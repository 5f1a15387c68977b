//! The Grafana dashboards under `dashboards/`, checked against a real
//! Prometheus that scraped a real agent while real traffic went through the
//! mesh: every query of every panel and template variable must parse and
//! return data, every metric a dashboard names must be one the agent
//! exports, and every panel must query the `${datasource}` variable.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use kmesh_tests::{
    harness::{Metrics, Topology, echo_mesh, privileged},
    prometheus::{self, Prometheus, Sample},
    rotel::Rotel,
    workloads::{self, Pod},
};
use serde_json::Value;

const VIP: &str = "198.18.0.40:80";
/// Weighted, served in the cgroup so the inbound side is observed too.
const BACKENDS: [(&str, u32); 3] = [
    ("127.0.0.2:8080", 35),
    ("127.0.0.3:8080", 25),
    ("127.0.0.4:8080", 20),
];
/// Resets every connection after the request: rst_sent / rst_received.
const RESETS: (&str, u32) = ("127.0.0.5:8080", 10);
/// Nothing listens here: connect_refused.
const REFUSES: (&str, u32) = ("127.0.0.6:8080", 10);
/// A second service, so per-service groupings have more than one line.
const OTHER_VIP: &str = "198.18.0.41:80";
const OTHER_BACKEND: &str = "127.0.0.7:8080";

/// Who calls whom: one client workload per service, by its pod address,
/// and the workloads behind the backends, so the service graph has names.
const ECHO_CLIENT: Pod = Pod::new("10.77.1.1", "front", "web");
const OTHER_CLIENT: Pod = Pod::new("10.77.2.1", "jobs", "batch");
const SERVERS: [Pod; 5] = [
    Pod::new("127.0.0.2", "shop", "echo"),
    Pod::new("127.0.0.3", "shop", "echo"),
    Pod::new("127.0.0.4", "shop", "echo"),
    Pod::new("127.0.0.5", "shop", "echo-flaky"),
    Pod::new("127.0.0.7", "bank", "ledger"),
];

const ECHO_CONNECTIONS: u64 = 200;
const OTHER_CONNECTIONS: u64 = 40;

/// The value each template variable prefers when its query offers it.
const PREFERRED: [(&str, &str); 1] = [("service", "echo")];

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    if !privileged("every_dashboard_query_returns_data_from_a_real_prometheus") {
        return;
    }
    let Some(bin) =
        prometheus::available("every_dashboard_query_returns_data_from_a_real_prometheus")
    else {
        return;
    };
    // Read them first: a dashboard that is not JSON fails before any setup.
    let dashboards = load_dashboards();

    let topo = Topology::new("dashboards");
    let served: Vec<&str> = BACKENDS.iter().map(|(b, _)| *b).collect();
    let _servers = topo.serve_in_cgroup(&served, false);
    let _resetting = topo.serve_in_cgroup(&[RESETS.0], true);
    let _other = topo.serve(&[OTHER_BACKEND], false);
    let mut weights = BACKENDS.to_vec();
    weights.extend([RESETS, REFUSES]);
    let pods = [&[ECHO_CLIENT, OTHER_CLIENT][..], &SERVERS].concat();
    workloads::add_addresses(&topo, &[ECHO_CLIENT.ip, OTHER_CLIENT.ip]);
    let echo = echo_mesh(VIP, "weighted", &weights)
        .replace("  - name: echo\n", "  - name: echo\n    namespace: shop\n");
    let mesh = format!(
        "{}{echo}  - name: ledger\n    namespace: bank\n    vip: {OTHER_VIP}\n    policy: round_robin\n    backends:\n      - address: {OTHER_BACKEND}\n",
        workloads::yaml(&pods),
    );
    // A collector, so the OTLP panels divide by exports that happened.
    let rotel = Rotel::start(&topo.workdir);
    let agent = topo.start_agent_with(
        &mesh,
        &[
            "--otlp-endpoint",
            &format!("http://{}", rotel.grpc),
            "--otlp-metrics-interval",
            "1s",
        ],
    );
    // Declared after the topology: dropped (killed, data removed) first.
    let prom = Prometheus::start(&bin, &topo.workdir, &[agent.addr])
        .unwrap_or_else(|e| panic!("starting prometheus: {e:#}"));
    // One scrape before any traffic, two after each round: every counter
    // has samples on both sides of an increase, so rates are not zero.
    prom.wait_for_scrapes(1).expect("first scrape");
    for round in 1..=2 {
        traffic(&topo, round);
        let m = agent.metrics_when(|m| settled(m, round));
        assert!(
            settled(&m, round),
            "round {round} not in /metrics:\n{}",
            m.0
        );
        prom.wait_for_more_scrapes(2)
            .expect("scrapes after the traffic");
    }
    let at = prometheus::unix_now();
    // Grafana's $__rate_interval is at least four scrape intervals; here it
    // also spans everything the test scraped, so every range holds it all.
    let window = prom.whole_range();
    let families = families(&agent.metrics());
    // The premise: rates over the window are not zero, so a panel showing
    // data is showing the traffic, not an idle series.
    for counter in [
        "kmesh_tcp_connections_opened_total",
        "kmesh_tcp_connections_failed_total",
        "kmesh_tcp_connect_latency_seconds_count",
    ] {
        let expr = format!("sum(rate({counter}{{destination_service=\"echo\"}}[{window}s]))");
        let rate = prom
            .query(&expr, Some(at))
            .unwrap_or_else(|e| panic!("{expr}: {e:#}"));
        assert!(
            rate.first().is_some_and(|s| s.value > 0.0),
            "{expr} = {rate:?}: the traffic did not reach prometheus"
        );
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    for d in &dashboards {
        checked += check_dashboard(d, &prom, at, window, &families, &mut failures);
    }
    eprintln!(
        "checked {checked} queries in {} dashboards against prometheus at {} ({window}s ranges)",
        dashboards.len(),
        prom.addr
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard queries failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    check_service_graph(&dashboards, &prom, at, window);
}

/// The service graph's node-graph panel draws exactly who called whom:
/// each client workload → the service it called → the workloads behind it,
/// and every edge ends at a node (Grafana refuses an edge to a missing one).
fn check_service_graph(dashboards: &[Dashboard], prom: &Prometheus, at: f64, window: u64) {
    let graph = dashboards
        .iter()
        .find(|d| d.file == "kmesh-service-graph.json")
        .expect("the service graph dashboard");
    let panel = graph.json["panels"]
        .as_array()
        .and_then(|panels| panels.iter().find(|p| p["type"] == "nodeGraph"))
        .expect("a nodeGraph panel");
    let vars: BTreeMap<String, String> =
        [("__rate_interval".to_string(), format!("{window}s"))].into();
    let frame = |ref_id: &str| -> BTreeMap<String, f64> {
        let target = panel["targets"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["refId"] == ref_id))
            .unwrap_or_else(|| panic!("no {ref_id} query"));
        assert_eq!(target["format"], "table", "{ref_id}: Grafana reads a table");
        let expr = substitute(
            target["expr"].as_str().unwrap(),
            &vars,
            &mut BTreeSet::new(),
        );
        prom.query(&expr, Some(at))
            .unwrap_or_else(|e| panic!("{ref_id}: {e:#}"))
            .into_iter()
            .map(|s| (s.labels["id"].clone(), s.value))
            .collect()
    };
    let (nodes, edges) = (frame("nodes"), frame("edges"));
    for id in edges.keys() {
        let (source, target) = id.split_once(" -> ").expect("source -> target");
        assert!(
            nodes.contains_key(source) && nodes.contains_key(target),
            "edge {id} ends outside the nodes {nodes:?}"
        );
    }
    for edge in [
        "workload:front/web -> service:shop/echo",
        "service:shop/echo -> workload:shop/echo",
        "service:shop/echo -> workload:shop/echo-flaky",
        "workload:jobs/batch -> service:bank/ledger",
        "service:bank/ledger -> workload:bank/ledger",
    ] {
        assert!(
            edges.get(edge).is_some_and(|rate| *rate > 0.0),
            "no traffic on {edge}: {edges:?}"
        );
    }
    assert!(
        !edges.keys().any(|e| e.starts_with("workload:unknown")),
        "every client was named: {edges:?}"
    );
}

/// One round of traffic to both services; checks the failures the test
/// relies on happened.
fn traffic(topo: &Topology, round: u64) {
    let echo = topo.client(
        VIP,
        ECHO_CONNECTIONS,
        &[
            "--concurrency",
            "4",
            "--request-bytes",
            "300",
            "--reply-bytes",
            "5000",
            "--source",
            ECHO_CLIENT.ip,
        ],
    );
    for (kind, why) in [("reset", RESETS.0), ("refused", REFUSES.0)] {
        assert!(
            echo.failures.get(kind).copied().unwrap_or(0) > 0,
            "round {round}: no {kind} connection through {why}: {echo:?}"
        );
    }
    assert!(echo.ok > 0, "round {round}: {echo:?}");
    let other = topo.client(OTHER_VIP, OTHER_CONNECTIONS, &["--source", OTHER_CLIENT.ip]);
    assert_eq!(other.ok, OTHER_CONNECTIONS, "round {round}: {other:?}");
}

/// Whether /metrics shows every connection of `rounds` rounds, both sides.
fn settled(m: &Metrics, rounds: u64) -> bool {
    let ended = |service: &str, direction: &str| {
        let l = [("destination_service", service), ("direction", direction)];
        m.value("kmesh_tcp_connections_closed_total", &l)
            + m.value("kmesh_tcp_connections_failed_total", &l)
    };
    let echo_opened = m.value(
        "kmesh_tcp_connections_opened_total",
        &[("destination_service", "echo"), ("direction", "outbound")],
    );
    ended("echo", "outbound") >= (rounds * ECHO_CONNECTIONS) as f64
        && ended("echo", "inbound") >= echo_opened
        && ended("ledger", "outbound") >= (rounds * OTHER_CONNECTIONS) as f64
}

struct Dashboard {
    file: String,
    json: Value,
}

fn load_dashboards() -> Vec<Dashboard> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            Dashboard {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            }
        })
        .collect()
}

/// The metric families /metrics declares (`# TYPE name type`).
fn families(m: &Metrics) -> BTreeMap<String, String> {
    m.0.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// Whether a sample name in a query belongs to an exported family: the
/// family itself, a counter's `_total`, or a histogram's series.
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    let is = |base: &str, kind: &str| families.get(base).is_some_and(|k| k == kind);
    families.contains_key(name)
        || name
            .strip_suffix("_total")
            .is_some_and(|b| is(b, "counter"))
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|b| is(b, "histogram")))
}

/// The agent's metric names an expression mentions (`kmesh_*`, `process_*`),
/// outside string literals.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            let mut escaped = false;
            for d in chars.by_ref() {
                if d == c && !escaped {
                    break;
                }
                escaped = d == '\\' && !escaped;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut ident = c.to_string();
            while let Some(&d) = chars.peek() {
                if !(d.is_ascii_alphanumeric() || d == '_' || d == ':') {
                    break;
                }
                ident.push(d);
                chars.next();
            }
            if ident.starts_with("kmesh_") || ident.starts_with("process_") {
                names.insert(ident);
            }
        } else if c.is_ascii_digit() {
            // A number such as 1e3 is not the start of a name.
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
            {
                chars.next();
            }
        }
    }
    names
}

/// Replaces Grafana's `$name`, `${name}` and `${name:format}`; names not in
/// `vars` are left as they are and collected in `unknown`.
fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
    unknown: &mut BTreeSet<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, used) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => {
                    let inner = &braced[..end];
                    (inner.split(':').next().unwrap_or(inner), end + 2)
                }
                None => ("", 0),
            }
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&after[..len], len)
        };
        if name.is_empty() {
            out.push('$');
        } else if let Some(v) = vars.get(name) {
            out.push_str(v);
        } else {
            unknown.insert(name.to_string());
            out.push('$');
            out.push_str(&after[..used]);
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

/// `label_values(selector, label)` (or `label_values(label)`) as a query
/// whose result carries the label's values.
fn label_values_query(query: &str) -> Option<(String, String)> {
    let args = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    // The last comma outside braces and quotes separates the label.
    let (mut depth, mut quote, mut split) = (0i32, None, None);
    for (i, c) in args.char_indices() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{' | '(') => depth += 1,
            (None, '}' | ')') => depth -= 1,
            (None, ',') if depth == 0 => split = Some(i),
            _ => {}
        }
    }
    match split {
        Some(i) => {
            let label = args[i + 1..].trim().to_string();
            let selector = args[..i].trim();
            Some((format!("group by ({label}) ({selector})"), label))
        }
        None => {
            let label = args.trim().to_string();
            Some((format!("group by ({label}) ({{{label}!=\"\"}})"), label))
        }
    }
}

fn uses_datasource_variable(v: &Value) -> bool {
    v.get("datasource")
        .and_then(|d| d.get("uid"))
        .and_then(Value::as_str)
        == Some("${datasource}")
}

/// One query of a dashboard and where it is.
struct Query {
    place: String,
    expr: String,
}

/// Every `expr` under `v`, named by the panel it is in; and every panel or
/// target that does not query `${datasource}`.
fn walk(v: &Value, panel: &str, queries: &mut Vec<Query>, problems: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            let here = match map.get("title").and_then(Value::as_str) {
                Some(title) if map.contains_key("targets") || map.contains_key("gridPos") => {
                    format!("panel {title:?}")
                }
                _ => panel.to_string(),
            };
            if let Some(targets) = map.get("targets").and_then(Value::as_array) {
                let not_variable = "does not query the ${datasource} variable".to_string();
                if !uses_datasource_variable(v) {
                    problems.push((here.clone(), not_variable.clone()));
                }
                for t in targets {
                    if !uses_datasource_variable(t) {
                        let r = t.get("refId").and_then(Value::as_str).unwrap_or("?");
                        problems.push((format!("{here}, target {r}"), not_variable.clone()));
                    }
                }
            }
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("templating", _) => {}
                    ("expr", Value::String(expr)) => queries.push(Query {
                        place: here.clone(),
                        expr: expr.clone(),
                    }),
                    _ => walk(child, &here, queries, problems),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, panel, queries, problems);
            }
        }
        _ => {}
    }
}

/// Checks one dashboard; returns how many queries it ran. Failures name the
/// dashboard, the panel or variable, and the expression.
fn check_dashboard(
    d: &Dashboard,
    prom: &Prometheus,
    at: f64,
    window: u64,
    families: &BTreeMap<String, String>,
    failures: &mut Vec<String>,
) -> usize {
    let mut fail = |place: &str, expr: &str, why: String| {
        let mut entry = format!("{} › {place}: {why}", d.file);
        if !expr.is_empty() {
            entry.push_str("\n    ");
            entry.push_str(&expr.replace('\n', "\n    "));
        }
        failures.push(entry);
    };
    let range = window.max(300);
    let mut vars: BTreeMap<String, String> = [
        ("__rate_interval", format!("{window}s")),
        ("__interval", "15s".to_string()),
        ("__interval_ms", "15000".to_string()),
        ("__range", format!("{range}s")),
        ("__range_s", range.to_string()),
        ("__range_ms", (range * 1000).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let missing_names = |expr: &str| -> Vec<String> {
        metric_names(expr)
            .into_iter()
            .filter(|n| !exported(n, families))
            .collect()
    };
    let mut ran = 0;
    // KMESH_DASHBOARDS_VERBOSE=1 prints what every query returned.
    let verbose = std::env::var_os("KMESH_DASHBOARDS_VERBOSE").is_some();

    // Template variables, in order: later ones may use earlier ones.
    let list = d.json["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut has_datasource = false;
    for var in &list {
        let name = var["name"].as_str().unwrap_or("?").to_string();
        let place = format!("variable ${name}");
        let kind = var["type"].as_str().unwrap_or("");
        let value = match kind {
            "datasource" => {
                has_datasource |= name == "datasource" && var["query"] == "prometheus";
                "prometheus".to_string()
            }
            "query" => {
                if !uses_datasource_variable(var) {
                    fail(
                        &place,
                        "",
                        "does not query the ${datasource} variable".into(),
                    );
                }
                let raw = var["query"]
                    .as_str()
                    .or_else(|| var["query"]["query"].as_str())
                    .unwrap_or("");
                let mut unknown = BTreeSet::new();
                let text = substitute(raw, &vars, &mut unknown);
                let missing = missing_names(raw);
                if !missing.is_empty() {
                    fail(&place, raw, format!("names {missing:?}, not in /metrics"));
                }
                if !unknown.is_empty() {
                    fail(&place, raw, format!("uses undefined variables {unknown:?}"));
                    continue;
                }
                let Some((query, label)) = label_values_query(&text) else {
                    fail(&place, raw, "not a label_values(...) query".into());
                    continue;
                };
                ran += 1;
                let values: BTreeSet<String> = match prom.query(&query, Some(at)) {
                    Ok(samples) => samples
                        .into_iter()
                        .filter_map(|s| s.labels.get(&label).cloned())
                        .collect(),
                    Err(e) => {
                        fail(&place, &query, format!("Prometheus rejected it: {e:#}"));
                        continue;
                    }
                };
                if values.is_empty() {
                    fail(&place, &query, format!("no values for label {label}"));
                    continue;
                }
                let preferred = PREFERRED
                    .iter()
                    .find(|(n, v)| *n == name && values.contains(*v))
                    .map(|(_, v)| v.to_string());
                if var["includeAll"].as_bool() == Some(true) {
                    match var["allValue"].as_str() {
                        Some(all) if !all.is_empty() => all.to_string(),
                        _ => format!("({})", values.iter().cloned().collect::<Vec<_>>().join("|")),
                    }
                } else {
                    preferred.unwrap_or_else(|| values.first().cloned().unwrap_or_default())
                }
            }
            "custom" | "constant" | "textbox" | "interval" => var["current"]["value"]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    var["query"]
                        .as_str()
                        .and_then(|q| q.split(',').next())
                        .map(|v| v.trim().to_string())
                })
                .unwrap_or_default(),
            other => {
                fail(
                    &place,
                    "",
                    format!("variable type {other:?} is not checked"),
                );
                continue;
            }
        };
        vars.insert(name, value);
    }
    if !has_datasource {
        fail(
            "templating",
            "",
            "no `datasource` variable of type datasource, query prometheus".into(),
        );
    }

    let mut queries = Vec::new();
    let mut problems = Vec::new();
    walk(&d.json, "dashboard", &mut queries, &mut problems);
    for (place, why) in problems {
        fail(&place, "", why);
    }
    if queries.is_empty() {
        fail("dashboard", "", "has no queries".into());
    }
    for q in &queries {
        // Every reason this query is broken, reported together.
        let mut why = Vec::new();
        let missing = missing_names(&q.expr);
        if !missing.is_empty() {
            why.push(format!("names {missing:?}, not in /metrics"));
        }
        let mut unknown = BTreeSet::new();
        let expr = substitute(&q.expr, &vars, &mut unknown);
        if !unknown.is_empty() {
            why.push(format!("uses undefined variables {unknown:?}"));
        } else {
            ran += 1;
            match prom.query(&expr, Some(at)) {
                Err(e) => why.push(format!("Prometheus rejected it: {e:#}")),
                Ok(samples) => {
                    if verbose {
                        eprintln!("{} › {}\n    {expr}", d.file, q.place);
                        for s in &samples {
                            eprintln!("      {:?} = {}", s.labels, s.value);
                        }
                    }
                    why.extend(no_value(&samples, never_completes));
                }
            }
        }
        if !why.is_empty() {
            fail(&q.place, &expr, why.join("; "));
        }
    }
    ran
}

/// The series of the backend that refuses every connection: it has no
/// connect latency, RTT or duration, so a quantile of them is NaN.
fn never_completes(labels: &BTreeMap<String, String>) -> bool {
    labels.get("destination_backend").map(String::as_str) == Some(REFUSES.0)
}

/// Why a panel query's result is not data: nothing at all, or a series
/// whose value is NaN (0/0, a quantile of no observations), which Grafana
/// draws as a gap, the same as no data; except for series `may_be_nan`
/// says have nothing to show.
fn no_value(
    samples: &[Sample],
    may_be_nan: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Option<String> {
    if samples.is_empty() {
        return Some("returned no data".into());
    }
    let nan: Vec<_> = samples
        .iter()
        .filter(|s| s.value.is_nan() && !may_be_nan(&s.labels))
        .map(|s| &s.labels)
        .collect();
    (!nan.is_empty()).then(|| {
        format!(
            "returned NaN for {} of {} series: {nan:?}",
            nan.len(),
            samples.len()
        )
    })
}

#[test]
fn nan_and_empty_results_are_not_data() {
    let sample = |backend: &str, value: f64| Sample {
        labels: [("destination_backend".to_string(), backend.to_string())].into(),
        value,
    };
    let (ok, refused) = (BACKENDS[0].0, REFUSES.0);
    assert_eq!(
        no_value(&[], never_completes),
        Some("returned no data".into())
    );
    let nan = no_value(&[sample(ok, f64::NAN)], never_completes).expect("NaN is not data");
    assert!(nan.contains("NaN for 1 of 1"), "{nan}");
    let one_of_two = no_value(&[sample(ok, 0.5), sample(ok, f64::NAN)], never_completes)
        .expect("one NaN series");
    assert!(one_of_two.contains("NaN for 1 of 2"), "{one_of_two}");
    assert_eq!(
        no_value(
            &[sample(ok, 0.0), sample(refused, f64::NAN)],
            never_completes
        ),
        None,
        "the refusing backend has no latency to show"
    );
}

#[test]
fn grafana_variables_are_substituted() {
    let vars: BTreeMap<String, String> = [("service", "echo"), ("__rate_interval", "30s")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut unknown = BTreeSet::new();
    assert_eq!(
        substitute(
            r#"rate(x{s="$service", t="${service:regex}"}[$__rate_interval]) $ $nope ${gone}"#,
            &vars,
            &mut unknown
        ),
        r#"rate(x{s="echo", t="echo"}[30s]) $ $nope ${gone}"#
    );
    assert_eq!(
        unknown.into_iter().collect::<Vec<_>>(),
        ["gone".to_string(), "nope".to_string()]
    );
}

#[test]
fn metric_names_and_label_values_are_read_from_queries() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(kmesh_tcp_rtt_seconds_bucket{x="kmesh_not"}[1m]))) / process_open_fds * 1e3"#
        )
        .into_iter()
        .collect::<Vec<_>>(),
        ["kmesh_tcp_rtt_seconds_bucket", "process_open_fds"]
    );
    assert_eq!(
        label_values_query(r#"label_values(m{a="x,y", b=~"$z"}, destination_backend)"#),
        Some((
            r#"group by (destination_backend) (m{a="x,y", b=~"$z"})"#.to_string(),
            "destination_backend".to_string()
        ))
    );
    let families: BTreeMap<String, String> = [
        ("kmesh_tcp_rtt_seconds", "histogram"),
        ("kmesh_tcp_connections_opened", "counter"),
        ("process_open_fds", "gauge"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for name in [
        "kmesh_tcp_rtt_seconds_bucket",
        "kmesh_tcp_rtt_seconds_count",
        "kmesh_tcp_connections_opened_total",
        "process_open_fds",
    ] {
        assert!(exported(name, &families), "{name}");
    }
    for name in [
        "kmesh_tcp_rtt_seconds_total",
        "process_open_fds_sum",
        "kmesh_x",
    ] {
        assert!(!exported(name, &families), "{name}");
    }
}
