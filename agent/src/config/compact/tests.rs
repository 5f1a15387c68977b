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
    assert!(err.contains("line 3"), "{err}");
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

/// A service whose backends start at line 5; `body` follows them.
fn service_with_backends(backends: &str) -> String {
    format!("services:\n  - name: s\n    vip: 198.18.0.1:80\n    backends:\n{backends}")
}

#[test]
fn backend_errors_point_at_the_backend() {
    let cases = [
        (
            "      - address: 127.0.0.1:80\n      - address: \"[::1]:80\"\n",
            "line 6",
            "not of the vip's address family",
        ),
        (
            "      - address: 127.0.0.1:80\n      - address: 127.0.0.1:80\n",
            "line 6",
            "listed twice",
        ),
        (
            "      - address: 127.0.0.1:80\n      - address: 127.0.0.1:0\n",
            "line 6",
            "needs a port",
        ),
        (
            "      - address: 127.0.0.1:80\n      - address: \"[::ffff:127.0.0.1]:80\"\n",
            "line 6",
            "write it as 127.0.0.1:80",
        ),
        (
            "      - address: 127.0.0.1:1\n        weight: 4294967295\n      - address: 127.0.0.1:2\n        weight: 1\n",
            "line 8",
            "weights sum",
        ),
    ];
    for (backends, line, reason) in cases {
        let err = error_of(&service_with_backends(backends));
        assert!(
            err.contains(line) && err.contains(reason) && err.contains("service \"s\""),
            "{backends}: {err}"
        );
    }
}

#[test]
fn a_bad_weight_says_what_a_weight_is_and_where() {
    for weight in ["-1", "1.5", "4294967296", "heavy"] {
        let err = error_of(&service_with_backends(&format!(
            "      - address: 127.0.0.1:80\n        weight: {weight}\n"
        )));
        assert!(
            err.contains("line 6")
                && err.contains("service \"s\"")
                && err.contains("127.0.0.1:80")
                && err.contains("whole number 0..=4294967295"),
            "weight {weight}: {err}"
        );
    }
}

#[test]
fn vip_errors_point_at_the_vip() {
    let err = error_of("services:\n  - name: s\n    policy: random\n    vip: 198.18.0.1:0\n");
    assert!(
        err.contains("line 4") && err.contains("port other than 0"),
        "{err}"
    );
    // Backends written before the vip: the vip is the odd one out.
    let err = error_of(
        "services:\n  - name: s\n    backends:\n      - address: \"[::1]:80\"\n    vip: 198.18.0.1:80\n",
    );
    assert!(
        err.contains("line 5") && err.contains("address family"),
        "{err}"
    );
    let err = error_of("services:\n  - name: s\n    vip: not-an-address\n");
    assert!(
        err.contains("line 3") && err.contains("198.18.0.10:9080"),
        "{err}"
    );
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

const WITH_WORKLOADS: &str = r#"
workloads:
  - name: cart-7d9f
    namespace: shop
    workload: cart
    service_account: cart-sa
    labels: { app: cart, version: v2 }
    addresses: [10.1.0.5]
  - name: web-1
    namespace: front
    uid: cluster-a//Pod/front/web-1
    labels:
      service.istio.io/canonical-name: storefront
      app: web
    addresses: ["fd00::7", 10.1.0.9]
services:
  - name: cart
    namespace: shop
    vip: 198.18.0.20:80
    backends:
      - address: 10.1.0.5:8080
  - name: web.front.svc.cluster.local
    vip: 198.18.0.21:80
    backends:
      - address: 10.1.0.9:80
        workload: front/web-1
      - address: 10.1.0.10:80
"#;

#[test]
fn workloads_take_istio_defaults_and_back_their_services() {
    let mesh = parse(WITH_WORKLOADS).unwrap();
    assert_eq!(mesh.workloads.len(), 2);
    let cart = mesh.workloads.get("shop/cart-7d9f").unwrap();
    assert_eq!(cart.workload_name, "cart");
    assert_eq!(
        (
            cart.canonical_name.as_str(),
            cart.canonical_revision.as_str()
        ),
        ("cart", "v2")
    );
    assert_eq!(cart.services, ["shop/cart"]);
    assert_eq!(
        cart.principal().as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/cart-sa")
    );
    let web = mesh.workloads.get("cluster-a//Pod/front/web-1").unwrap();
    // The canonical-name label wins over app; no version label: latest.
    assert_eq!(web.canonical_name, "storefront");
    assert_eq!(web.canonical_revision, "latest");
    assert_eq!(web.workload_name, "web-1");
    assert_eq!(web.service_account, "default");
    assert_eq!(web.services, ["front/web.front.svc.cluster.local"]);
    let web_svc = &mesh.services[&"198.18.0.21:80".parse().unwrap()];
    // Named by namespace/name, stored by uid; an unknown address names none.
    assert_eq!(
        web_svc.backends[0].workload.as_deref(),
        Some("cluster-a//Pod/front/web-1")
    );
    assert_eq!(web_svc.backends[1].workload, None);
    let cart_svc = &mesh.services[&"198.18.0.20:80".parse().unwrap()];
    assert_eq!(cart_svc.istio_names().namespace.as_deref(), Some("shop"));
    assert_eq!(
        mesh.workloads
            .by_addr("fd00::7".parse().unwrap())
            .unwrap()
            .name,
        "web-1"
    );
}

#[test]
fn workload_errors_name_the_workload_and_the_fix() {
    let base = "services: []\nworkloads:\n";
    let err = error_of(&format!("{base}  - name: a\n    addresses: [10.0.0.1]\n"));
    assert!(err.contains("namespace") && err.contains("line 3"), "{err}");
    let err = error_of(&format!(
        "{base}  - name: a\n    namespace: n\n    addresses: [10.0.0.1:80]\n"
    ));
    assert!(
        err.contains("without a port") && err.contains("line 5"),
        "{err}"
    );
    let err = error_of(&format!(
        "{base}  - {{ name: a, namespace: n, addresses: [10.0.0.1] }}\n  - {{ name: a, namespace: n, addresses: [10.0.0.2] }}\n"
    ));
    assert!(err.contains("\"n/a\" is listed twice"), "{err}");
    let err = error_of(&format!(
        "{base}  - {{ name: a, namespace: n, addresses: [10.0.0.1] }}\n  - {{ name: b, namespace: n, addresses: [10.0.0.1] }}\n"
    ));
    assert!(err.contains("both have address 10.0.0.1"), "{err}");
    let err = error_of(&format!(
        "{base}  - {{ name: a, namespace: n, addresses: [10.0.0.1], labls: {{}} }}\n"
    ));
    assert!(err.contains("labls"), "{err}");
    let err = error_of(
        "services:\n  - name: s\n    vip: 198.18.0.1:80\n    backends:\n      - { address: 10.0.0.1:80, workload: n/ghost }\n",
    );
    assert!(
        err.contains("\"n/ghost\"") && err.contains("does not list"),
        "{err}"
    );
}

#[test]
fn empty_names_are_refused_naming_the_field_and_line() {
    let cases = [
        (
            "services:\n  - name: s\n    namespace: \" \"\n    vip: 198.18.0.1:80\n",
            [
                "line 3",
                "service \"s\": namespace must not be empty",
                "leave it out",
            ],
        ),
        (
            "services:\n  - name: s\n    vip: 198.18.0.1:80\n    backends:\n      - address: 127.0.0.1:80\n        workload: \"\"\n",
            [
                "line 6",
                "backend 127.0.0.1:80: workload must not be empty",
                "namespace/name",
            ],
        ),
        (
            "services:\n  - name: \"  \"\n    vip: 198.18.0.1:80\n",
            [
                "line 2",
                "a service's name must not be empty",
                "services[0].name",
            ],
        ),
        (
            "services: []\nworkloads:\n  - name: a\n    namespace: n\n    service_account: \"\"\n    addresses: [10.0.0.1]\n",
            [
                "line 5",
                "workloads[0].service_account",
                "must not be empty",
            ],
        ),
    ];
    for (text, expected) in cases {
        let err = error_of(text);
        for part in expected {
            assert!(err.contains(part), "{text}: {part:?} not in {err}");
        }
    }
}
