//! A scrape of the agent's /metrics, read as the tests need it.

/// A scrape of /metrics.
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include all of `labels`
    /// (0 when the family has none). Panics when the scrape has no such
    /// family at all, so a renamed or dropped metric cannot read as 0.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let families: Vec<&str> = self
            .0
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let declared = families.iter().any(|family| {
            name == *family
                || ["_total", "_bucket", "_count", "_sum", "_created"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family))
        });
        assert!(
            declared,
            "no metric family for {name} in the scrape (renamed or dropped?); it has: {}",
            families.join(", ")
        );
        self.samples(name)
            .iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every sample of `name`, with its labels.
    pub fn samples(&self, name: &str) -> Vec<crate::prometheus::Sample> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest.strip_suffix('}').unwrap_or(rest)),
                    None => (series, ""),
                };
                (metric == name).then(|| crate::prometheus::Sample {
                    labels: parse_labels(label_text),
                    value: value.parse().unwrap_or(f64::NAN),
                })
            })
            .collect()
    }
}

/// `a="x",b="y"` of the exposition format; values may hold commas and
/// escaped quotes.
fn parse_labels(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    const SCRAPE: &str = "\
# TYPE kmesh_tcp_connections_closed counter
kmesh_tcp_connections_closed_total{destination_service=\"echo\",close_reason=\"fin\"} 3
kmesh_tcp_connections_closed_total{destination_service=\"echo\",close_reason=\"rst_sent\"} 1
# TYPE kmesh_tcp_connections_failed counter
# TYPE kmesh_tcp_rtt_seconds histogram
kmesh_tcp_rtt_seconds_count{destination_service=\"echo\"} 4
";

    #[test]
    fn values_sum_the_matching_samples_of_a_family() {
        let m = Metrics(SCRAPE.to_string());
        assert_eq!(m.value("kmesh_tcp_connections_closed_total", &[]), 4.0);
        let fin = [("close_reason", "fin")];
        assert_eq!(m.value("kmesh_tcp_connections_closed_total", &fin), 3.0);
        assert_eq!(m.value("kmesh_tcp_rtt_seconds_count", &[]), 4.0);
        // A family without samples reads 0.
        assert_eq!(m.value("kmesh_tcp_connections_failed_total", &[]), 0.0);
    }

    #[test]
    #[should_panic(expected = "no metric family for kmesh_tcp_connection_closed_total")]
    fn a_family_missing_from_the_scrape_is_an_error_not_a_zero() {
        Metrics(SCRAPE.to_string()).value("kmesh_tcp_connection_closed_total", &[]);
    }
}
