//! What `kmesh-top` says when the path it was given is not the agent's
//! admin socket.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kmesh-top-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the test's directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `kmesh-top --once --admin-socket path`: its one line of error.
fn error_for(path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kmesh-top"))
        .args(["--once", "--admin-socket"])
        .arg(path)
        .output()
        .expect("running kmesh-top");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn a_path_that_is_not_a_socket_is_named_as_what_it_is() {
    let dir = TempDir::new("not-a-socket");
    let file = dir.0.join("admin.sock");
    std::fs::write(&file, "").expect("a regular file");
    for (path, what) in [(&file, "a regular file"), (&dir.0, "a directory")] {
        let err = error_for(path);
        let expected = format!(
            "{} is not a socket (it is {what}); give the agent's admin socket with --admin-socket (default /run/kmesh-rs/admin.sock)",
            path.display()
        );
        assert!(err.contains(&expected), "{err}");
    }

    let err = error_for(&dir.0.join("absent.sock"));
    assert!(
        err.contains("no kmesh-agent admin socket at") && err.contains("is the agent running"),
        "{err}"
    );
}
