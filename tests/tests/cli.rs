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
