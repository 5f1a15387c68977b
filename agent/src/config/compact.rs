//! The compact mesh format (YAML): parsing and validation into a [`Mesh`].
//!
//! Each service is validated while it is deserialized, so an error carries
//! the line and column of the service that caused it; the format is
//! documented in docs/configuration.md.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::Deserialize;

use super::MAX_BACKENDS;
use crate::model::{Backend, Mesh, Origin, Policy, ProbeSettings, Service};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    #[serde(default)]
    probe: RawProbe,
    /// Required, so that a file cut short before its list is not read as
    /// "route nothing"; `services: []` says that.
    services: Option<Vec<ValidService>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    /// Seconds between running-total reports of a long-lived connection; 0 turns them off.
    report_interval_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    vip: SocketAddr,
    #[serde(default = "default_policy")]
    policy: Policy,
    #[serde(default)]
    backends: Vec<RawBackend>,
}

fn default_policy() -> Policy {
    Policy::Random
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: SocketAddr,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug)]
struct ValidService(Service);

// Validating inside the visitor (rather than with `try_from`) makes the YAML
// deserializer attach the service's own line to the error.
impl<'de> Deserialize<'de> for ValidService {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ServiceVisitor;
        impl<'de> serde::de::Visitor<'de> for ServiceVisitor {
            type Value = ValidService;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a service (name, vip, policy, backends)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ValidService, A::Error> {
                let raw =
                    RawService::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                ValidService::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_map(ServiceVisitor)
    }
}

impl TryFrom<RawService> for ValidService {
    type Error = String;

    fn try_from(raw: RawService) -> Result<Self, String> {
        let name = raw.name.trim();
        let what = format!("service {name:?} ({})", raw.vip);
        if name.is_empty() {
            return Err(format!("service at {}: name must not be empty", raw.vip));
        }
        if [crate::metrics::UNKNOWN, crate::metrics::OVERFLOW].contains(&name) {
            return Err(format!(
                "{what}: the name {name:?} is reserved for series of unconfigured destinations; rename the service"
            ));
        }
        if raw.vip.port() == 0 {
            return Err(format!("{what}: vip needs a port other than 0"));
        }
        for addr in std::iter::once(&raw.vip).chain(raw.backends.iter().map(|b| &b.address)) {
            if let std::net::IpAddr::V6(v6) = addr.ip()
                && let Some(v4) = v6.to_ipv4_mapped()
            {
                return Err(format!(
                    "{what}: {addr} is an IPv4-mapped IPv6 address; write it as {v4}:{}",
                    addr.port()
                ));
            }
        }
        if raw.backends.len() > MAX_BACKENDS {
            return Err(format!(
                "{what}: {} backends, at most {MAX_BACKENDS} are supported; split the service",
                raw.backends.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for b in &raw.backends {
            if b.address.is_ipv4() != raw.vip.is_ipv4() {
                return Err(format!(
                    "{what}: backend {} is not of the vip's address family",
                    b.address
                ));
            }
            if b.address.port() == 0 {
                return Err(format!("{what}: backend {} needs a port", b.address));
            }
            if !seen.insert(b.address) {
                return Err(format!("{what}: backend {} is listed twice", b.address));
            }
        }
        let total: u64 = raw.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total > u64::from(u32::MAX) {
            return Err(format!(
                "{what}: weights sum to {total}, above {}",
                u32::MAX
            ));
        }
        if raw.policy == Policy::Weighted && !raw.backends.is_empty() && total == 0 {
            return Err(format!(
                "{what}: policy weighted but all weights are 0; give at least one backend a weight"
            ));
        }
        Ok(ValidService(Service {
            name: name.to_string(),
            vip: raw.vip,
            policy: raw.policy,
            backends: raw
                .backends
                .into_iter()
                .map(|b| Backend {
                    addr: b.address,
                    weight: b.weight,
                })
                .collect(),
            origin: Origin::default(),
        }))
    }
}

/// Parses mesh YAML; the error names the line and what to change.
pub fn parse(text: &str) -> Result<Mesh, String> {
    let raw: RawMesh = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let Some(raw_services) = raw.services else {
        return Err(
            "no `services:` list; a truncated write? To remove every service, write `services: []`"
                .into(),
        );
    };
    let mut services = BTreeMap::new();
    for ValidService(service) in raw_services {
        if let Some(other) = services.get(&service.vip).map(|s: &Service| s.name.clone()) {
            return Err(format!(
                "services {other:?} and {:?} both use vip {}; each vip:port may belong to one service",
                service.name, service.vip
            ));
        }
        services.insert(service.vip, service);
    }
    let mut probe = ProbeSettings::default();
    if let Some(secs) = raw.probe.report_interval_seconds {
        if !(0.0..=86_400.0).contains(&secs) {
            return Err(format!(
                "probe.report_interval_seconds: {secs} is outside 0..=86400 (0 turns periodic reports off)"
            ));
        }
        probe.report_interval = Duration::from_secs_f64(secs);
    }
    Ok(Mesh { services, probe })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
probe:
  report_interval_seconds: 2.5
services:
  - name: reviews
    vip: 198.18.0.10:9080
    policy: weighted
    backends:
      - address: 127.0.0.1:40001
        weight: 80
      - address: 127.0.0.1:40002
        weight: 20
  - name: ratings
    vip: "[fd00::10]:80"
    backends:
      - address: "[::1]:8080"
"#;

    #[test]
    fn parses_services_backends_and_defaults() {
        let mesh = parse(GOOD).unwrap();
        assert_eq!(mesh.services.len(), 2);
        let reviews = &mesh.services[&"198.18.0.10:9080".parse().unwrap()];
        assert_eq!(reviews.policy, Policy::Weighted);
        assert_eq!(reviews.backends[1].weight, 20);
        let ratings = &mesh.services[&"[fd00::10]:80".parse().unwrap()];
        assert_eq!(ratings.policy, Policy::Random);
        assert_eq!(ratings.backends[0].weight, 1);
        assert_eq!(mesh.probe.report_interval, Duration::from_millis(2500));
    }

    #[test]
    fn an_empty_service_list_is_an_empty_mesh() {
        assert_eq!(parse("services: []\n").unwrap(), Mesh::default());
    }

    #[test]
    fn a_missing_service_list_is_refused() {
        for text in ["", "probe:\n  report_interval_seconds: 1\n", "services:\n"] {
            assert!(error_of(text).contains("services: []"), "{text:?}");
        }
    }

    fn error_of(text: &str) -> String {
        parse(text).expect_err("config should be rejected")
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = error_of("services:\n  - name: a\n    vip: [not closed\n");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_line() {
        let err = error_of("services:\n  - name: a\n    vip: 198.18.0.1:80\n    polcy: weighted\n");
        assert!(err.contains("polcy") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_service_and_line() {
        let err = error_of(
            "services:\n  - name: ok\n    vip: 198.18.0.1:80\n  - name: bad\n    vip: 198.18.0.2:80\n    policy: weighted\n    backends:\n      - address: 127.0.0.1:1\n        weight: 0\n",
        );
        assert!(
            err.contains("\"bad\"") && err.contains("weights are 0"),
            "{err}"
        );
        assert!(
            err.contains("line 4"),
            "the error should point at the bad service: {err}"
        );
    }

    #[test]
    fn rejects_bad_services() {
        let cases = [
            ("vip: 198.18.0.1:0", "port other than 0"),
            (
                "vip: 198.18.0.1:80\n    backends:\n      - address: \"[::1]:80\"",
                "address family",
            ),
            (
                "vip: 198.18.0.1:80\n    backends:\n      - address: 127.0.0.1:80\n      - address: 127.0.0.1:80",
                "listed twice",
            ),
            ("vip: 198.18.0.1:80\n    policy: fastest", "unknown variant"),
            (
                "vip: 198.18.0.1:80\n    backends:\n      - address: 127.0.0.1:80\n        weight: -1",
                "weight",
            ),
        ];
        for (body, expected) in cases {
            let err = error_of(&format!("services:\n  - name: s\n    {body}\n"));
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn rejects_duplicate_vips() {
        let err = error_of(
            "services:\n  - name: a\n    vip: 198.18.0.1:80\n  - name: b\n    vip: 198.18.0.1:80\n",
        );
        assert!(err.contains("both use vip 198.18.0.1:80"), "{err}");
    }

    #[test]
    fn rejects_too_many_backends() {
        let mut text =
            String::from("services:\n  - name: big\n    vip: 198.18.0.1:80\n    backends:\n");
        for i in 0..=MAX_BACKENDS {
            text.push_str(&format!(
                "      - address: 127.0.{}.{}:80\n",
                i / 250,
                i % 250 + 1
            ));
        }
        assert!(error_of(&text).contains("at most 256"));
    }

    #[test]
    fn rejects_weights_that_overflow() {
        let err = error_of(
            "services:\n  - name: s\n    vip: 198.18.0.1:80\n    backends:\n      - address: 127.0.0.1:1\n        weight: 4294967295\n      - address: 127.0.0.1:2\n        weight: 1\n",
        );
        assert!(err.contains("weights sum"), "{err}");
    }

    #[test]
    fn rejects_reserved_names_and_v4_mapped_addresses() {
        let e = error_of("services:\n  - name: overflow\n    vip: 198.18.0.1:80\n");
        assert!(e.contains("reserved"), "{e}");
        let e = error_of("services:\n  - name: a\n    vip: \"[::ffff:198.18.0.1]:80\"\n");
        assert!(e.contains("write it as 198.18.0.1:80"), "{e}");
    }

    #[test]
    fn rejects_out_of_range_report_interval() {
        assert!(
            error_of("probe:\n  report_interval_seconds: -1\nservices: []\n")
                .contains("report_interval")
        );
    }
}
