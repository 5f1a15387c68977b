//! The queries of a Grafana dashboard, read out of its JSON as Grafana
//! would run them: every panel's `expr`, template variables and their
//! `label_values(...)`, Grafana's `$variables` substituted, and the metric
//! names each query mentions.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use kmesh_tests::harness::Metrics;
use serde_json::Value;

pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

pub fn load_dashboards() -> Vec<Dashboard> {
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
pub fn families(m: &Metrics) -> BTreeMap<String, String> {
    m.0.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// Whether a sample name in a query belongs to an exported family: the
/// family itself, a counter's `_total`, or a histogram's series.
pub fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
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
pub fn metric_names(expr: &str) -> BTreeSet<String> {
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
pub fn substitute(
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
pub fn label_values_query(query: &str) -> Option<(String, String)> {
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

pub fn uses_datasource_variable(v: &Value) -> bool {
    v.get("datasource")
        .and_then(|d| d.get("uid"))
        .and_then(Value::as_str)
        == Some("${datasource}")
}

/// One query of a dashboard and where it is.
pub struct Query {
    pub place: String,
    pub expr: String,
}

/// Every `expr` under `v`, named by the panel it is in; and every panel or
/// target that does not query `${datasource}`.
pub fn walk(
    v: &Value,
    panel: &str,
    queries: &mut Vec<Query>,
    problems: &mut Vec<(String, String)>,
) {
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
