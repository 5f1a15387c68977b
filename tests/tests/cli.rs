//! The agent's command-line commands as a user meets them: what they print
//! and how they fail. Nothing here needs privileges.
use std::process::{Command, Output};

use kmesh_tests::harness::target_bin;

fn kmesh_agent(args: &[&str]) -> Output {
    Command::new(target_bin("kmesh-agent"))
        .args(args)
        .env_remove("KMESH_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("running kmesh-agent")
}

/// A CLI command's error is one plain line on stderr, not a log record.
#[test]
fn a_failed_command_prints_one_plain_line() {
    let missing = std::env::temp_dir().join(format!("kmesh-cli-{}/mesh.yaml", std::process::id()));
    let out = kmesh_agent(&["check", "--config", &missing.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "kmesh-agent: cannot read mesh config {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    assert!(out.stdout.is_empty());

    let socket = std::env::temp_dir().join(format!("kmesh-cli-{}.sock", std::process::id()));
    let out = kmesh_agent(&["model", "--admin-socket", &socket.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("kmesh-agent: ") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md")
}

/// The fenced blocks of `lang` in `text`, in order.
fn code_blocks<'t>(text: &'t str, lang: &str) -> Vec<&'t str> {
    text.split(&format!("```{lang}\n"))
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .collect()
}

/// The README's first try: a mesh file to copy that `check` takes, and the
/// agent attached to a cgroup the reader makes, not the whole machine.
#[test]
fn the_readme_first_try_has_a_mesh_file_and_a_cgroup_of_its_own() {
    let readme = readme();
    let first = code_blocks(&readme, "sh")[0];
    assert!(
        first.starts_with("scripts/demo.sh")
            && first
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("scripts/test.sh")),
        "the first screen's two commands:\n{first}"
    );
    let (_, own) = readme
        .split_once("Run the agent on your own mesh")
        .expect("the section");
    let own = own.split("On Kubernetes").next().unwrap();
    let [mesh] = code_blocks(own, "yaml")[..] else {
        panic!("one example mesh file in:\n{own}");
    };
    let path = std::env::temp_dir().join(format!("kmesh-readme-{}.yaml", std::process::id()));
    std::fs::write(&path, mesh).unwrap();
    let out = kmesh_agent(&["check", "--config", &path.display().to_string()]);
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commands = code_blocks(own, "sh").concat();
    assert!(
        commands.contains("mkdir /sys/fs/cgroup/kmesh-try")
            && commands.contains("--cgroup /sys/fs/cgroup/kmesh-try")
            && commands.contains("cgroup.procs"),
        "{commands}"
    );
}

/// `check` as a CI gate: the first line sums the config up, and a config
/// the agent would run with (refused resources and findings included)
/// passes; only one it cannot use at all fails.
#[test]
fn check_sums_up_first_and_fails_only_on_unusable_input() {
    let dump = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/xds/istio-1.18-sidecar-deathstarbench.config_dump.json"
    );
    let out = kmesh_agent(&["check", "--config", dump]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("{dump}: 122 services, "))
            && first.contains(" routed backends, ")
            && first.contains(" ignored")
            && first.ends_with(", 1 refused resource"),
        "{first}"
    );
    assert!(
        stdout.contains("rejected listener \"virtualInbound\""),
        "{stdout}"
    );

    let bad = std::env::temp_dir().join(format!("kmesh-cli-bad-{}.json", std::process::id()));
    std::fs::write(
        &bad,
        r#"[{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "l"}]"#,
    )
    .unwrap();
    let out = kmesh_agent(&["check", "--config", &bad.display().to_string()]);
    let _ = std::fs::remove_file(&bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("kmesh-agent: ") && stderr.contains("needs an address"),
        "{stderr}"
    );
}
