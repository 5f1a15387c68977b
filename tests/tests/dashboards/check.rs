//! One dashboard checked against Prometheus: its variables resolved in
//! order, then every query run, each failure named by dashboard, panel and
//! expression.
use std::collections::{BTreeMap, BTreeSet};

use kmesh_tests::prometheus::{Prometheus, Sample};

use super::{
    BACKENDS, PREFERRED, REFUSES, never_completes,
    queries::{
        Dashboard, exported, label_values_query, metric_names, substitute,
        uses_datasource_variable, walk,
    },
};

/// Checks one dashboard; returns how many queries it ran. Failures name the
/// dashboard, the panel or variable, and the expression.
pub fn check_dashboard(
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
