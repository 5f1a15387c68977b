//! deploy/ renders and is what docs/deploy.md says: every overlay renders
//! with `kubectl kustomize`, every object validates against the Kubernetes
//! API schema (kubernetes-validate --strict, offline), and the DaemonSet
//! asks for exactly the capabilities, mounts and probes the agent needs.
use std::process::Command;

use kmesh_tests::{
    harness::target_bin,
    manifests::{agent_settings, kustomize, object, strings, tools_present},
};

const OVERLAYS: [&str; 3] = ["standalone", "istio", "privileged"];

#[test]
fn every_overlay_renders_validates_and_grants_what_the_agent_needs() {
    if !tools_present(&[&["kubectl", "--help"], &["kubernetes-validate", "--help"]]) {
        return;
    }
    let known = agent_settings();
    assert!(known.contains(&"KMESH_CONFIG".to_string()), "{known:?}");
    for overlay in OVERLAYS {
        let objects = kustomize(overlay);
        for o in &objects {
            assert_eq!(
                o["metadata"]["namespace"]
                    .as_str()
                    .or(o["metadata"]["name"].as_str()),
                Some("kmesh-system"),
                "{overlay}: everything in kmesh-system: {}",
                o["metadata"]
            );
            let kind = o["kind"].as_str().unwrap_or_default();
            assert!(
                !kind.contains("Role"),
                "{overlay}: the agent reads no API, so no {kind}"
            );
        }
        let settings = object(&objects, "ConfigMap", "kmesh-agent-settings");
        for key in settings["data"].as_object().expect("data").keys() {
            assert!(
                known.contains(key),
                "{overlay}: the agent reads no setting {key}"
            );
        }

        assert_eq!(
            settings["data"]["KMESH_ON_EXIT"], "keep-routing",
            "{overlay}: a rolling update must not stop routing"
        );

        let ds = object(&objects, "DaemonSet", "kmesh-agent");
        let pod = &ds["spec"]["template"]["spec"];
        assert_ne!(pod["hostNetwork"], true, "{overlay}: no hostNetwork");
        assert_eq!(pod["priorityClassName"], "system-node-critical");
        assert_eq!(pod["tolerations"][0]["operator"], "Exists");
        let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "9464");
        let agent = &pod["containers"][0];
        assert_eq!(agent["image"], "kmesh-rs:0.1.0");
        assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(strings(&agent["args"]).contains(&"--metrics-addr=0.0.0.0:9464"));
        assert!(agent["resources"]["limits"]["memory"].is_string());

        let host_paths: Vec<(&str, &str)> = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
            .collect();
        assert_eq!(
            host_paths,
            [("cgroup", "/sys/fs/cgroup"), ("bpffs", "/sys/fs/bpf")],
            "{overlay}: exactly the two host mounts"
        );
        let mounts = agent["volumeMounts"].as_array().expect("mounts");
        let read_only = |name: &str| {
            mounts
                .iter()
                .find(|m| m["name"] == name)
                .map(|m| m["readOnly"] == true)
        };
        assert_eq!(
            read_only("cgroup"),
            Some(true),
            "attaching only opens the cgroup"
        );
        assert_eq!(read_only("bpffs"), Some(false), "the pins are written");

        let security = &agent["securityContext"];
        assert_eq!(security["runAsUser"], 0);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        if overlay == "privileged" {
            assert_eq!(security["privileged"], true);
            assert_ne!(
                security["allowPrivilegeEscalation"], false,
                "the API refuses privileged without privilege escalation"
            );
        } else {
            assert_ne!(security["privileged"], true, "{overlay}: not privileged");
            assert_eq!(security["allowPrivilegeEscalation"], false);
            assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
            assert_eq!(
                strings(&security["capabilities"]["add"]),
                ["BPF", "NET_ADMIN", "PERFMON"],
                "{overlay}: exactly the capabilities the agent checks for"
            );
        }

        let env: Vec<&str> = agent["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for name in &env {
            assert!(
                known.iter().any(|k| k == name)
                    || ["POD_NAME", "POD_NAMESPACE", "INSTANCE_IP"].contains(name),
                "{overlay}: the agent reads no {name}"
            );
        }
        match overlay {
            "standalone" | "privileged" => {
                assert!(env.contains(&"KMESH_CONFIG"));
                let mesh = object(&objects, "ConfigMap", "kmesh-mesh")["data"]["mesh.yaml"]
                    .as_str()
                    .expect("mesh.yaml");
                let file = std::env::temp_dir()
                    .join(format!("kmesh-deploy-mesh-{}.yaml", std::process::id()));
                std::fs::write(&file, mesh).expect("writing mesh.yaml");
                let check = Command::new(target_bin("kmesh-agent"))
                    .arg("check")
                    .arg("--config")
                    .arg(&file)
                    .output()
                    .expect("kmesh-agent check");
                let _ = std::fs::remove_file(&file);
                assert!(
                    check.status.success(),
                    "{}",
                    String::from_utf8_lossy(&check.stderr)
                );
            }
            "istio" => {
                assert_eq!(
                    settings["data"]["KMESH_XDS_ADDRESS"],
                    "istiod.istio-system.svc:15012"
                );
                let token = pod["volumes"]
                    .as_array()
                    .expect("volumes")
                    .iter()
                    .find(|v| v["name"] == "istio-token")
                    .expect("the istio-token volume");
                assert_eq!(
                    token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
                    "istio-ca"
                );
            }
            _ => unreachable!(),
        }
    }
}
