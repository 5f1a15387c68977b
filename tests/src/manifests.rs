//! deploy/'s manifests as the tests see them: rendered by `kubectl
//! kustomize` or by Helm's Go SDK (scripts/helm-template.py), each object
//! validated against the Kubernetes API schema (kubernetes-validate
//! --strict, offline), then parsed into JSON values.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::Value;

use crate::harness::target_bin;

pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/kmesh-rs")
}

/// Whether each tool answers `--help` (a program, or `python3 -c import`
/// for a module); outside CI a missing one skips the test, under CI it fails.
pub fn tools_present(tools: &[&[&str]]) -> bool {
    let missing = tools.iter().find(|cmd| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .map_or(true, |o| !o.status.success())
    });
    match missing {
        None => true,
        Some(cmd) if crate::in_ci() => {
            panic!("`{}` fails; run scripts/setup.sh", cmd.join(" "))
        }
        Some(cmd) => {
            eprintln!("skipping: `{}` fails; run scripts/setup.sh", cmd.join(" "));
            false
        }
    }
}

/// `kubectl kustomize` of an overlay, validated.
pub fn kustomize(overlay: &str) -> Vec<Value> {
    let dir = deploy_dir().join("overlays").join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {} (kustomize v4 or later is needed: kubectl 1.21+)",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    validated(overlay, &String::from_utf8(out.stdout).expect("UTF-8"))
}

/// The chart rendered with `values` (JSON, as `--set-json`) into
/// kmesh-system, after `helm lint --strict`; Err holds what it printed.
pub fn helm_template(values: &str) -> Result<Vec<Value>, String> {
    let script = deploy_dir().join("../scripts/helm-template.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(chart_dir())
        .args(["--set-json", values, "--namespace", "kmesh-system"])
        .output()
        .expect("running scripts/helm-template.py");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    Ok(validated(&format!("helm {values}"), &text))
}

/// Checks every object of a YAML stream against the API schema.
pub fn validated(label: &str, yaml: &str) -> Vec<Value> {
    // Tests render in parallel threads of one process.
    static RENDERED: AtomicUsize = AtomicUsize::new(0);
    let file = std::env::temp_dir().join(format!(
        "kmesh-manifests-{}-{}.yaml",
        std::process::id(),
        RENDERED.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, yaml).expect("writing the rendered manifests");
    let check = validate_file(&file);
    let _ = std::fs::remove_file(&file);
    if let Err(report) = check {
        panic!("{label} does not validate against the Kubernetes API schema:\n{report}\n{yaml}");
    }
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML object"))
        .filter(|o: &Value| !o.is_null())
        .collect()
}

fn validate_file(file: &Path) -> Result<(), String> {
    let check = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(file)
        .output()
        .expect("running kubernetes-validate");
    if check.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        ))
    }
}

pub fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Every environment variable the agent reads, from its own `run --help`.
pub fn agent_settings() -> Vec<String> {
    let out = Command::new(target_bin("kmesh-agent"))
        .args(["run", "--help"])
        .output()
        .expect("kmesh-agent run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_string)
        .collect()
}
