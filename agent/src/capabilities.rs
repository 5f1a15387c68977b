//! The capabilities the agent needs, checked before anything is loaded, so
//! a container started without one fails with the capability's name and
//! what it is for instead of the verifier's "Permission denied".
use std::fmt;

/// A capability the agent needs: its number (linux/capability.h), its
/// name and what for.
struct Required {
    bit: u32,
    name: &'static str,
    why: &'static str,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Measured on kernel 6.18 (tests/tests/capabilities.rs): with these three
/// and nothing else the agent starts, routes and observes; without any one
/// of them it cannot.
const REQUIRED: [Required; 3] = [
    Required {
        bit: CAP_BPF,
        name: "CAP_BPF",
        why: "creating the maps and loading the programs",
    },
    Required {
        bit: CAP_NET_ADMIN,
        name: "CAP_NET_ADMIN",
        why: "loading and attaching the cgroup socket programs (connect, getpeername, sock_ops)",
    },
    Required {
        bit: CAP_PERFMON,
        name: "CAP_PERFMON",
        why: "loading the probe, which reads socket fields and the kernel clock, and its tracepoint",
    },
];

#[derive(Debug)]
pub struct MissingCapabilities(Vec<&'static Required>);

impl std::error::Error for MissingCapabilities {}

impl fmt::Display for MissingCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the agent lacks ")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "; and ")?;
            }
            write!(f, "{}, needed for {}", r.name, r.why)?;
        }
        write!(
            f,
            ". Add {} to the container's securityContext.capabilities.add \
             (or CAP_SYS_ADMIN, which covers all three, as the privileged overlay gives)",
            self.0
                .iter()
                .map(|r| r.name.trim_start_matches("CAP_"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl fmt::Debug for Required {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Checks this process's effective capabilities.
pub fn check() -> Result<(), MissingCapabilities> {
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => check_status(&status),
        // Without procfs there is nothing to check against; the kernel
        // will still refuse what is not allowed.
        Err(_) => Ok(()),
    }
}

fn check_status(status: &str) -> Result<(), MissingCapabilities> {
    let Some(effective) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Ok(());
    };
    let has = |bit: u32| effective & (1 << bit) != 0;
    // CAP_SYS_ADMIN covers all three.
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&'static Required> = REQUIRED.iter().filter(|r| !has(r.bit)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingCapabilities(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(cap_eff: u64) -> String {
        format!("Name:\tkmesh-agent\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\n")
    }

    const ALL_THREE: u64 = 1 << CAP_BPF | 1 << CAP_NET_ADMIN | 1 << CAP_PERFMON;

    #[test]
    fn the_three_capabilities_or_sys_admin_are_enough() {
        assert!(check_status(&status(ALL_THREE)).is_ok());
        assert!(check_status(&status(1 << CAP_SYS_ADMIN)).is_ok());
        assert!(check_status(&status(0x000001ffffffffff)).is_ok());
    }

    #[test]
    fn each_missing_capability_is_named_with_its_reason() {
        for r in &REQUIRED {
            let e = check_status(&status(ALL_THREE & !(1 << r.bit))).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(r.name) && text.contains(r.why), "{text}");
            assert_eq!(e.0.len(), 1, "{text}");
        }
        let none = check_status(&status(0)).unwrap_err();
        assert_eq!(none.0.len(), 3);
        assert!(
            none.to_string().contains("BPF, NET_ADMIN, PERFMON"),
            "{none}"
        );
    }

    #[test]
    fn an_unreadable_status_is_not_an_error() {
        assert!(check_status("Name:\tx\n").is_ok());
    }
}
