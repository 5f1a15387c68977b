//! The OTLP resource: which agent on which node sent the data. Our defaults
//! first, then OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over them, as
//! the SDK spec orders it.
use opentelemetry::KeyValue;
use opentelemetry_proto::{tonic::common::v1::KeyValue as ProtoKeyValue, transform::common::tonic};
use opentelemetry_sdk::{Resource, resource::EnvResourceDetector};

pub const SERVICE_NAME: &str = "kmesh-agent";

pub fn build(node_name: Option<&str>) -> Resource {
    let mut ours = vec![
        KeyValue::new("service.name", SERVICE_NAME),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("telemetry.sdk.language", "rust"),
        KeyValue::new("telemetry.sdk.name", "opentelemetry"),
    ];
    if let Some(host) = hostname() {
        ours.push(KeyValue::new("host.name", host));
    }
    if let Some(node) = node_name {
        ours.push(KeyValue::new("k8s.node.name", node.to_string()));
    }
    let mut builder = Resource::builder_empty()
        .with_attributes(ours)
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// The resource's attributes as OTLP protobuf.
pub fn to_proto(resource: &Resource) -> Vec<ProtoKeyValue> {
    tonic::ResourceAttributesWithSchema::from(resource)
        .attributes
        .0
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use opentelemetry::Key;

    use super::*;

    #[test]
    fn names_the_agent_and_the_node() {
        let r = build(Some("node-7"));
        let get = |k: &'static str| r.get(&Key::new(k)).map(|v| v.to_string());
        // OTEL_SERVICE_NAME may be set in the environment running the tests.
        let expected = std::env::var("OTEL_SERVICE_NAME").unwrap_or(SERVICE_NAME.into());
        assert_eq!(get("service.name").as_deref(), Some(expected.as_str()));
        assert_eq!(get("k8s.node.name").as_deref(), Some("node-7"));
        assert!(get("host.name").is_some());
        assert_eq!(to_proto(&r).len(), r.len());
    }
}
