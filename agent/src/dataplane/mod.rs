//! Loads the two eBPF objects, shares their maps through bpffs pins, attaches
//! them to a cgroup, and takes it all down again, or leaves routing in
//! place for the next agent ([`OnExit::KeepRouting`]).
mod pin_dir;
mod pinned_links;

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf, EbpfLoader, include_bytes_aligned,
    maps::Map,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSockAddr, SockOps,
        cgroup_sock_addr::CgroupSockAddrLinkId, links::FdLink,
    },
};
use kmesh_common::map_names;
use tracing::{info, warn};

use crate::sysfs;
use pin_dir::{PINNED_MAPS, check_existing_pins, lock_pin_dir, prepare_pin_dir, remove_pins};
pub use pin_dir::{Removed, remove_left_state};
use pinned_links::{LINKS_DIR, LeftLinks};

static ORCHESTRATION_OBJ: &[u8] =
    include_bytes_aligned!(concat!(env!("OUT_DIR"), "/orchestration"));
static PROBE_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "route_connect4",
    "route_connect6",
    "vip_getpeername4",
    "vip_getpeername6",
];

/// Programs attach through bpf_link (kernel >= 5.7), which always lets them
/// run beside other programs on the cgroup; the kernel rejects any explicit
/// attach flag on a link, so the mode must be the flag-less one.
const LINK_MODE: CgroupAttachMode = CgroupAttachMode::Single;

const SOCKOPS_PROGRAM: &str = "observe_sockops";
const RESET_PROGRAM: &str = "observe_receive_reset";
const RESET_TRACEPOINT: &str = "tcp_receive_reset";

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    #[error("bpffs directory {path}: {reason}")]
    Bpffs { path: PathBuf, reason: String },
    #[error(
        "pinned map {path} was left by an incompatible build (type, key size, value size, capacity: {found}; this agent needs {expected}); \
         remove the map pins (rm {dir}/KM_*) and start again: programs an earlier agent left keep routing with their own copies until this agent takes over"
    )]
    IncompatiblePin {
        path: PathBuf,
        dir: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "another kmesh-agent, or kmesh-agent cleanup, is using {path}; stop it first, or give this agent another --bpffs-dir"
    )]
    PinDirBusy { path: PathBuf },
    #[error("loading the {object} eBPF object")]
    Load {
        object: &'static str,
        source: aya::EbpfError,
    },
    #[error("{action} program {program}")]
    Program {
        action: &'static str,
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error(
        "pinning program {program}: its link is not an fd link (kernels before 5.7 cannot keep routing across restarts, run with --on-exit detach)"
    )]
    Link {
        program: &'static str,
        source: aya::programs::links::LinkError,
    },
    #[error(
        "the embedded eBPF objects have no program {0}; the agent and its programs disagree (rebuild)"
    )]
    MissingProgram(&'static str),
    #[error(
        "the {object} eBPF object has no map {name}; the agent and its embedded programs disagree"
    )]
    MissingMap {
        object: &'static str,
        name: &'static str,
    },
    #[error(transparent)]
    Sys(#[from] sysfs::SysError),
}

pub struct DataPlaneOptions {
    pub cgroup: PathBuf,
    pub bpffs_dir: PathBuf,
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ringbuf_bytes: u32,
    /// Attach the probe too; without it connections are routed but not observed.
    pub observe: bool,
    pub on_exit: OnExit,
}

/// What becomes of routing when the agent process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnExit {
    /// Detach every program and remove the pins: nothing is left behind.
    Detach,
    /// Keep the routing programs attached (their links pinned in bpffs)
    /// and the maps pinned, however the process ends, so connections are
    /// still routed until the next agent takes over. The probe detaches:
    /// nobody would read what it records.
    KeepRouting,
}

impl OnExit {
    /// The name `--on-exit` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Detach => "detach",
            Self::KeepRouting => "keep-routing",
        }
    }
}

/// The loaded, attached programs. Dropping it detaches all but the pinned
/// routing links; [`Self::shut_down`] also removes the pins unless routing
/// is to outlive the agent.
pub struct DataPlane {
    orchestration: Ebpf,
    probe: Ebpf,
    cgroup: File,
    cgroup_path: PathBuf,
    pin_dir: PathBuf,
    /// Held for the agent's life: no second agent or cleanup touches the
    /// pins meanwhile (the agent holds no fd of its pinned links, so
    /// removing a pin would detach its routing).
    pin_dir_lock: File,
    observe: bool,
    /// The kernel accepted the reset observer (see [`load_reset_observer`]).
    reset_observer: bool,
    on_exit: OnExit,
}

impl DataPlane {
    /// Loads and verifies both objects; nothing is attached yet, so the
    /// maps can be filled before the first connection is routed.
    pub fn load(opts: &DataPlaneOptions) -> Result<Self, DataPlaneError> {
        sysfs::raise_memlock_limit();
        let cgroup = open_cgroup(&opts.cgroup)?;
        prepare_pin_dir(&opts.bpffs_dir)?;
        let pin_dir_lock = lock_pin_dir(&opts.bpffs_dir)?;
        check_existing_pins(&opts.bpffs_dir)?;
        let had_pins = PINNED_MAPS
            .iter()
            .any(|spec| opts.bpffs_dir.join(spec.name).exists());
        let loaded = Self::load_objects(opts, cgroup, pin_dir_lock);
        if loaded.is_err() && !had_pins {
            // Loading pins the shared maps before the verifier runs; a
            // failed start must not leave them behind.
            remove_pins(&opts.bpffs_dir);
        }
        loaded
    }

    fn load_objects(
        opts: &DataPlaneOptions,
        cgroup: File,
        pin_dir_lock: File,
    ) -> Result<Self, DataPlaneError> {
        let mut orchestration = EbpfLoader::new()
            .default_map_pin_directory(&opts.bpffs_dir)
            .load(ORCHESTRATION_OBJ)
            .map_err(|source| DataPlaneError::Load {
                object: "orchestration",
                source,
            })?;
        let mut probe = EbpfLoader::new()
            .default_map_pin_directory(&opts.bpffs_dir)
            .map_max_entries(map_names::EVENTS, opts.ringbuf_bytes)
            .load(PROBE_OBJ)
            .map_err(|source| DataPlaneError::Load {
                object: "probe",
                source,
            })?;
        for name in SOCK_ADDR_PROGRAMS {
            let program: &mut CgroupSockAddr = program_mut(&mut orchestration, name)?;
            program.load().map_err(prog_err("loading", name))?;
        }
        let sockops: &mut SockOps = program_mut(&mut probe, SOCKOPS_PROGRAM)?;
        sockops
            .load()
            .map_err(prog_err("loading", SOCKOPS_PROGRAM))?;
        // The reset observer runs kernel-wide, not per cgroup: without the
        // probe it would only cost time.
        let reset_observer = opts.observe && load_reset_observer(&mut probe)?;
        Ok(Self {
            orchestration,
            probe,
            cgroup,
            cgroup_path: opts.cgroup.clone(),
            pin_dir: opts.bpffs_dir.clone(),
            pin_dir_lock,
            observe: opts.observe,
            reset_observer,
            on_exit: opts.on_exit,
        })
    }

    /// Attaches routing and the probe to the cgroup: from here on, every
    /// connect() in it is routed and every TCP connection observed.
    ///
    /// Routing links an earlier agent left pinned keep routing until this
    /// agent's programs are attached, then they are detached. Both running
    /// for that moment is harmless: the first rewrites a VIP to a backend,
    /// and the second finds no service at a backend's address.
    pub fn attach(&mut self) -> Result<(), DataPlaneError> {
        let links_dir = self.pin_dir.join(LINKS_DIR);
        let left = LeftLinks::open(&links_dir)?;
        let mut routing = Vec::with_capacity(SOCK_ADDR_PROGRAMS.len());
        for name in SOCK_ADDR_PROGRAMS {
            let program: &mut CgroupSockAddr = program_mut(&mut self.orchestration, name)?;
            let id = program
                .attach(&self.cgroup, LINK_MODE)
                .map_err(prog_err("attaching", name))?;
            routing.push((name, id));
        }
        if self.observe {
            let sockops: &mut SockOps = program_mut(&mut self.probe, SOCKOPS_PROGRAM)?;
            sockops
                .attach(&self.cgroup, LINK_MODE)
                .map_err(prog_err("attaching", SOCKOPS_PROGRAM))?;
            if self.reset_observer {
                let reset: &mut BtfTracePoint = program_mut(&mut self.probe, RESET_PROGRAM)?;
                if let Err(e) = reset.attach() {
                    warn_without_reset_observer(&format!("attaching {RESET_PROGRAM}: {e}"));
                    self.reset_observer = false;
                }
            }
        }
        // Only now, with everything attached, is routing handed over: a
        // failure above leaves the earlier agent's links routing.
        let pinned = match self.on_exit {
            OnExit::KeepRouting => pinned_links::commit(self.stage_routing(routing, &links_dir)?)?,
            OnExit::Detach => Vec::new(),
        };
        let earlier = left.len();
        let released = left.release(&pinned);
        if earlier > 0 {
            info!(programs = ?released, "took over routing: the links an earlier agent left pinned are detached");
        }
        if pinned.is_empty() {
            let _ = std::fs::remove_dir(&links_dir);
        }
        // Without the probe, its object stays loaded: it owns the maps the
        // reader and the control loop open, which simply stay empty.
        info!(
            cgroup = %self.cgroup_path.display(),
            bpffs = %self.pin_dir.display(),
            probe = self.observe,
            reset_observer = self.reset_observer,
            on_exit = self.on_exit.as_str(),
            "eBPF programs attached"
        );
        Ok(())
    }

    /// Pins every routing link under its staging name; on any failure the
    /// staged pins are removed, so no partial set is ever put in place.
    fn stage_routing(
        &mut self,
        routing: Vec<(&'static str, CgroupSockAddrLinkId)>,
        links_dir: &Path,
    ) -> Result<Vec<pinned_links::Staged>, DataPlaneError> {
        let mut staged = Vec::with_capacity(routing.len());
        for (name, id) in routing {
            let link = program_mut::<CgroupSockAddr>(&mut self.orchestration, name)
                .and_then(|p| {
                    p.take_link(id)
                        .map_err(prog_err("taking the link of", name))
                })
                .and_then(|link| {
                    FdLink::try_from(link).map_err(|source| DataPlaneError::Link {
                        program: name,
                        source,
                    })
                })
                .and_then(|link| pinned_links::stage(link, links_dir, name));
            match link {
                Ok(s) => staged.push(s),
                Err(e) => {
                    pinned_links::discard(&staged);
                    return Err(e);
                }
            }
        }
        Ok(staged)
    }

    pub fn take_orchestration_map(&mut self, name: &'static str) -> Result<Map, DataPlaneError> {
        self.orchestration
            .take_map(name)
            .ok_or(DataPlaneError::MissingMap {
                object: "orchestration",
                name,
            })
    }

    pub fn take_probe_map(&mut self, name: &'static str) -> Result<Map, DataPlaneError> {
        self.probe.take_map(name).ok_or(DataPlaneError::MissingMap {
            object: "probe",
            name,
        })
    }

    /// Detaches the programs this agent holds. With [`OnExit::Detach`] it
    /// also removes the pinned maps and their directory, leaving nothing
    /// behind, unless pinned routing links remain (another agent's, which
    /// route with those maps).
    pub fn shut_down(self) {
        let Self {
            orchestration,
            probe,
            pin_dir,
            pin_dir_lock,
            on_exit,
            ..
        } = self;
        // What this agent holds detaches here; the directory stays locked
        // until its pins are dealt with.
        drop((orchestration, probe));
        let links_dir = pin_dir.join(LINKS_DIR);
        let left_links = std::fs::read_dir(&links_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        if left_links > 0 {
            let whose = match on_exit {
                OnExit::KeepRouting => "this agent's, --on-exit keep-routing",
                OnExit::Detach => "an earlier agent's, not taken over",
            };
            info!(
                links = %links_dir.display(),
                maps = %pin_dir.display(),
                "routing stays attached ({whose}) until the next agent takes over; `kmesh-agent cleanup` removes it"
            );
        } else {
            remove_pins(&pin_dir);
            info!(bpffs = %pin_dir.display(), "eBPF programs detached and pinned maps removed");
        }
        drop(pin_dir_lock);
    }
}

/// Loads the program that tells a reset received from a FIN. The probe works
/// without it, only reporting such closes as `fin` or `rst_sent`, so a kernel
/// that cannot load it (one built without BTF, which a BTF tracepoint is
/// typed by) costs a warning, not the start.
fn load_reset_observer(probe: &mut Ebpf) -> Result<bool, DataPlaneError> {
    let program: &mut BtfTracePoint = program_mut(probe, RESET_PROGRAM)?;
    let loaded = Btf::from_sys_fs()
        .map_err(|e| format!("reading the kernel's BTF (/sys/kernel/btf/vmlinux): {e}"))
        .and_then(|btf| {
            program
                .load(RESET_TRACEPOINT, &btf)
                .map_err(|e| format!("loading {RESET_PROGRAM}: {e}"))
        });
    if let Err(reason) = &loaded {
        warn_without_reset_observer(reason);
    }
    Ok(loaded.is_ok())
}

fn warn_without_reset_observer(reason: &str) {
    warn!(
        %reason,
        "resets from peers will be reported as close_reason fin or rst_sent: the reset observer is not running"
    );
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataPlaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(DataPlaneError::MissingProgram(name))?;
    program.try_into().map_err(prog_err("typing", name))
}

fn prog_err(
    action: &'static str,
    program: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> DataPlaneError {
    move |source| DataPlaneError::Program {
        action,
        program,
        source,
    }
}

fn open_cgroup(path: &Path) -> Result<File, DataPlaneError> {
    let err = |reason: String| DataPlaneError::Cgroup {
        path: path.to_path_buf(),
        reason,
    };
    if !sysfs::is_cgroup2(path) {
        return Err(err(
            "not a cgroup v2 directory; pass --cgroup with a path under the cgroup2 mount".into(),
        ));
    }
    File::open(path).map_err(|e| err(format!("cannot open: {e}")))
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::OnExit;

    #[test]
    fn on_exit_logs_the_names_the_flag_takes() {
        for v in OnExit::value_variants() {
            let flag = v.to_possible_value().expect("every variant is a value");
            assert_eq!(flag.get_name(), v.as_str());
        }
    }
}
