//! Builds the two eBPF objects for the BPF target and leaves them in OUT_DIR,
//! where `include_bytes_aligned!` embeds them in the agent.
//!
//! aya-build is not used: it forces its own RUSTFLAGS, so it cannot pass
//! `-C target-cpu=v3`, which the round-robin cursor's atomic fetch-add needs
//! (with the default CPU LLVM rejects "Invalid usage of the XADD return
//! value"). The compiler is Debian's rustc-web, whose library source makes
//! `-Z build-std=core` work; scripts/setup.sh installs it.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const EBPF_PACKAGES: [(&str, &str); 2] = [
    ("orchestration-ebpf", "orchestration"),
    ("probe-ebpf", "probe"),
];
const TARGET: &str = "bpfel-unknown-none";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    for var in ["KMESH_BPF_CARGO", "KMESH_BPF_RUSTC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    for path in ["common/src", "common/Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let cargo = env::var("KMESH_BPF_CARGO").unwrap_or_else(|_| "/usr/bin/cargo".into());
    let rustc = env::var("KMESH_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    for tool in [&cargo, &rustc] {
        if !Path::new(tool).exists() {
            panic!(
                "{tool} not found: the eBPF programs build with Debian's rustc-web toolchain. \
                 Run scripts/setup.sh (or set KMESH_BPF_CARGO / KMESH_BPF_RUSTC)."
            );
        }
    }

    let target_dir = out_dir.join("ebpf-target");
    for (package, bin) in EBPF_PACKAGES {
        println!("cargo:rerun-if-changed={}", root.join(package).display());
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args([
                "build",
                "--package",
                package,
                "--bins",
                "--release",
                "--target",
                TARGET,
            ])
            .args(["-Z", "build-std=core", "--target-dir"])
            .arg(&target_dir)
            .env("RUSTC", &rustc)
            .env("RUSTC_BOOTSTRAP", "1")
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                ["-Cdebuginfo=2", "-Clink-arg=--btf", "-Ctarget-cpu=v3"].join("\x1f"),
            )
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTC_WRAPPER")
            .status()
            .unwrap_or_else(|e| panic!("failed to run {cargo}: {e}"));
        if !status.success() {
            panic!("building {package} for {TARGET} failed ({status}); see the errors above");
        }
        let built = target_dir.join(TARGET).join("release").join(bin);
        std::fs::copy(&built, out_dir.join(bin))
            .unwrap_or_else(|e| panic!("copying {} to OUT_DIR: {e}", built.display()));
    }
}
