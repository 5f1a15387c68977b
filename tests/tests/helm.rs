//! The Helm chart (deploy/helm/kmesh-rs) deploys the agent the kustomize
//! overlays deploy: rendered and linted (--strict) by Helm's own Go SDK
//! through scripts/helm-template.py, each object valid against the
//! Kubernetes API schema, and for each overlay's values the same pod, the
//! same settings and the same mesh. deploy.rs checks what that pod asks for,
//! so both paths grant exactly the same.
use kmesh_tests::manifests::{
    agent_settings, chart_dir, helm_template, kustomize, object, tools_present,
};
use serde_json::{Value, json};

/// Each overlay and the chart values that stand for it.
const EQUIVALENTS: [(&str, &str); 3] = [
    ("standalone", "{}"),
    ("istio", r#"{"meshSource": "istio"}"#),
    ("privileged", r#"{"privileged": true}"#),
];

fn tools() -> bool {
    tools_present(&[
        &["kubectl", "--help"],
        &["kubernetes-validate", "--help"],
        &["python3", "-c", "import helm_python"],
    ])
}

/// Lists of named objects (env, volumes, mounts, ports) sorted by name:
/// kustomize's patches append where a template writes in place.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(normalized).collect();
            if items.iter().all(|i| i["name"].is_string()) {
                items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            }
            Value::Array(items)
        }
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), normalized(v)))
            .collect(),
        other => other.clone(),
    }
}

fn names(objects: &[Value]) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = objects
        .iter()
        .filter(|o| o["kind"] != "Namespace")
        .map(|o| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&o["kind"]), text(&o["metadata"]["name"]))
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_chart_renders_what_each_overlay_renders() {
    if !tools() {
        return;
    }
    for (overlay, values) in EQUIVALENTS {
        let expected = kustomize(overlay);
        let rendered = helm_template(values).unwrap_or_else(|e| panic!("{overlay}: {e}"));
        assert_eq!(
            names(&rendered),
            names(&expected),
            "{overlay}: the same objects (helm install --create-namespace makes the namespace)"
        );
        for o in &rendered {
            assert_eq!(o["metadata"]["namespace"], "kmesh-system", "{o}");
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/part-of"],
                "kmesh-rs"
            );
        }
        let ds = object(&rendered, "DaemonSet", "kmesh-agent");
        let want = object(&expected, "DaemonSet", "kmesh-agent");
        assert_eq!(
            normalized(&ds["spec"]["template"]["spec"]),
            normalized(&want["spec"]["template"]["spec"]),
            "{overlay}: the same pod"
        );
        for field in ["selector", "updateStrategy"] {
            assert_eq!(ds["spec"][field], want["spec"][field], "{overlay}: {field}");
        }
        let mut annotations = ds["spec"]["template"]["metadata"]["annotations"].clone();
        let checksum = annotations
            .as_object_mut()
            .and_then(|a| a.remove("checksum/settings"));
        assert!(
            checksum.is_some(),
            "{overlay}: pods restart when the settings change"
        );
        assert_eq!(
            annotations, want["spec"]["template"]["metadata"]["annotations"],
            "{overlay}: scrape annotations"
        );
        for name in ["kmesh-agent-settings", "kmesh-mesh"] {
            if names(&expected)
                .iter()
                .any(|(_, n)| n.trim_matches('"') == name)
            {
                assert_eq!(
                    object(&rendered, "ConfigMap", name)["data"],
                    object(&expected, "ConfigMap", name)["data"],
                    "{overlay}: ConfigMap {name}"
                );
            }
        }
        assert_eq!(
            object(&rendered, "ServiceAccount", "kmesh-agent")["automountServiceAccountToken"],
            false
        );
    }
}

#[test]
fn the_charts_values_reach_the_pod_and_typos_are_refused() {
    if !tools() {
        return;
    }
    let chart: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));

    let values = json!({
        "image": {"repository": "registry.example.com/kmesh-rs", "tag": "1.2.3", "pullPolicy": "Always"},
        "settings": {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel.observability.svc:4317",
            "KMESH_RINGBUF_BYTES": 1_048_576,
            "KMESH_TRACE_SAMPLE_RATIO": 0.25,
            "KMESH_ROUTING_ONLY": true,
        },
        "metricsPort": 9500,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "podAnnotations": {"example.com/team": "platform"},
        "mesh": "services: []\n",
        "global": {"imageRegistry": "set by an umbrella chart"},
    });
    let rendered = helm_template(&values.to_string()).expect("custom values render");
    let ds = object(&rendered, "DaemonSet", "kmesh-agent");
    let pod = &ds["spec"]["template"]["spec"];
    let agent = &pod["containers"][0];
    assert_eq!(agent["image"], "registry.example.com/kmesh-rs:1.2.3");
    assert_eq!(agent["imagePullPolicy"], "Always");
    assert_eq!(agent["ports"][0]["containerPort"], 9500);
    assert!(
        agent["args"]
            .as_array()
            .expect("args")
            .contains(&json!("--metrics-addr=0.0.0.0:9500"))
    );
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "9500");
    assert_eq!(annotations["example.com/team"], "platform");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    let settings = &object(&rendered, "ConfigMap", "kmesh-agent-settings")["data"];
    assert_eq!(
        settings["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel.observability.svc:4317"
    );
    // Helm reads YAML numbers as floats; their own text would be 1.048576e+06.
    assert_eq!(settings["KMESH_RINGBUF_BYTES"], "1048576");
    assert_eq!(settings["KMESH_TRACE_SAMPLE_RATIO"], "0.25");
    assert_eq!(settings["KMESH_ROUTING_ONLY"], "true");
    assert_eq!(settings["KMESH_ON_EXIT"], "keep-routing", "defaults stay");
    assert_eq!(
        object(&rendered, "ConfigMap", "kmesh-mesh")["data"]["mesh.yaml"],
        "services: []\n"
    );

    let digest = format!("sha256:{}", "ab".repeat(32));
    let pinned =
        helm_template(&json!({"image": {"digest": digest}}).to_string()).expect("a digest renders");
    assert_eq!(
        object(&pinned, "DaemonSet", "kmesh-agent")["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("kmesh-rs@{digest}")
    );
    let istio = json!({"meshSource": "istio", "settings": {"KMESH_XDS_ADDRESS": "istiod.istio-canary.svc:15012"}});
    let istio = helm_template(&istio.to_string()).expect("istio renders");
    assert_eq!(
        object(&istio, "ConfigMap", "kmesh-agent-settings")["data"]["KMESH_XDS_ADDRESS"],
        "istiod.istio-canary.svc:15012",
        "a setting given wins over the chart's"
    );

    for (values, named) in [
        (r#"{"meshSource": "istoi"}"#, "meshSource"),
        (r#"{"meshsource": "istio"}"#, "meshsource"),
        (
            r#"{"settings": {"OTEL_EXPORTER_OTLP_ENDPIONT": "http://otel:4317"}}"#,
            "OTEL_EXPORTER_OTLP_ENDPIONT",
        ),
        (
            r#"{"settings": {"KMESH_CGROUP": "/sys/fs/cgroup"}}"#,
            "KMESH_CGROUP",
        ),
        (r#"{"metricsPort": 70000}"#, "metricsPort"),
    ] {
        let refused = helm_template(values).expect_err(values);
        assert!(
            refused.contains(named),
            "{values}: the refusal names {named}:\n{refused}"
        );
    }
}

/// The settings the schema allows are the agent's own: a new agent setting,
/// or one renamed, fails here until the chart knows it.
#[test]
fn the_chart_allows_exactly_the_settings_the_agent_reads() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).expect("schema"),
    )
    .expect("the schema is JSON");
    let settings = &schema["properties"]["settings"];
    assert_eq!(settings["additionalProperties"], false);
    let mut allowed: Vec<&str> = settings["properties"]
        .as_object()
        .expect("settings properties")
        .keys()
        .map(String::as_str)
        .collect();
    allowed.sort_unstable();
    // The pod sets these itself: its cgroup and bpffs mounts, its port, the
    // mesh file mount, the admin socket kmesh-top expects, the node name.
    let set_by_the_chart = [
        "KMESH_CGROUP",
        "KMESH_BPFFS_DIR",
        "KMESH_METRICS_ADDR",
        "KMESH_CONFIG",
        "KMESH_ADMIN_SOCKET",
        "NODE_NAME",
    ];
    let agent = agent_settings();
    let mut expected: Vec<&str> = agent
        .iter()
        .map(String::as_str)
        .filter(|name| !set_by_the_chart.contains(name))
        .chain(["RUST_LOG", "NO_COLOR"])
        .collect();
    expected.sort_unstable();
    assert_eq!(allowed, expected);
}
