//! Loads the two eBPF objects, shares their maps through bpffs pins, attaches
//! them to a cgroup, and takes it all down again, or leaves routing in
//! place for the next agent ([`OnExit::KeepRouting`]).
mod pinned_links;

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{Map, MapInfo},
    programs::{CgroupAttachMode, CgroupSockAddr, SockOps, TracePoint, links::FdLink},
};
use kmesh_common::{BackendKey, BackendValue, RouteDecision, ServiceKey, ServiceValue, map_names};
use tracing::{info, warn};

use crate::sysfs;
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

/// The maps pinned under the bpffs directory, with the key and value sizes
/// this build expects of them.
const PINNED_MAPS: [(&str, usize, usize); 3] = [
    (
        map_names::SERVICES,
        size_of::<ServiceKey>(),
        size_of::<ServiceValue>(),
    ),
    (
        map_names::BACKENDS,
        size_of::<BackendKey>(),
        size_of::<BackendValue>(),
    ),
    (
        map_names::SOCK_ROUTES,
        size_of::<u64>(),
        size_of::<RouteDecision>(),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    #[error("bpffs directory {path}: {reason}")]
    Bpffs { path: PathBuf, reason: String },
    #[error(
        "pinned map {path} was left by an incompatible build (key/value size {found:?}, this agent needs {expected:?}); \
         stop the agent that owns it, or remove the pin (rm {path}) to start afresh"
    )]
    IncompatiblePin {
        path: PathBuf,
        found: (u32, u32),
        expected: (u32, u32),
    },
    #[error("loading the {object} eBPF object: {source}")]
    Load {
        object: &'static str,
        source: aya::EbpfError,
    },
    #[error("{action} program {program}: {source}")]
    Program {
        action: &'static str,
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error(
        "pinning program {program}: its link is not an fd link ({source}); kernels before 5.7 cannot keep routing across restarts, run with --on-exit detach"
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
    #[error("{0}")]
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
    observe: bool,
    on_exit: OnExit,
}

impl DataPlane {
    /// Loads and verifies both objects; nothing is attached yet, so the
    /// maps can be filled before the first connection is routed.
    pub fn load(opts: &DataPlaneOptions) -> Result<Self, DataPlaneError> {
        sysfs::raise_memlock_limit();
        let cgroup = open_cgroup(&opts.cgroup)?;
        prepare_pin_dir(&opts.bpffs_dir)?;
        check_existing_pins(&opts.bpffs_dir)?;
        sysfs::ensure_tracefs()?;
        let had_pins = PINNED_MAPS
            .iter()
            .any(|(name, _, _)| opts.bpffs_dir.join(name).exists());
        let loaded = Self::load_objects(opts, cgroup);
        if loaded.is_err() && !had_pins {
            // Loading pins the shared maps before the verifier runs; a
            // failed start must not leave them behind.
            remove_pins(&opts.bpffs_dir);
        }
        loaded
    }

    fn load_objects(opts: &DataPlaneOptions, cgroup: File) -> Result<Self, DataPlaneError> {
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
        let reset: &mut TracePoint = program_mut(&mut probe, RESET_PROGRAM)?;
        reset.load().map_err(prog_err("loading", RESET_PROGRAM))?;
        Ok(Self {
            orchestration,
            probe,
            cgroup,
            cgroup_path: opts.cgroup.clone(),
            pin_dir: opts.bpffs_dir.clone(),
            observe: opts.observe,
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
            let reset: &mut TracePoint = program_mut(&mut self.probe, RESET_PROGRAM)?;
            reset
                .attach("tcp", "tcp_receive_reset")
                .map_err(prog_err("attaching", RESET_PROGRAM))?;
        }
        // Only now, with everything attached, is routing handed over: a
        // failure above leaves the earlier agent's links routing.
        let mut pinned = Vec::new();
        if self.on_exit == OnExit::KeepRouting {
            for (name, id) in routing {
                let program: &mut CgroupSockAddr = program_mut(&mut self.orchestration, name)?;
                let link = program
                    .take_link(id)
                    .map_err(prog_err("taking the link of", name))?;
                let link = FdLink::try_from(link).map_err(|source| DataPlaneError::Link {
                    program: name,
                    source,
                })?;
                pinned.push(pinned_links::pin(link, &links_dir, name)?);
            }
        }
        let replaced = left.len();
        let released = left.release(&pinned);
        if replaced > 0 {
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
            on_exit = self.on_exit.as_str(),
            "eBPF programs attached"
        );
        Ok(())
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
        let pin_dir = self.pin_dir.clone();
        let on_exit = self.on_exit;
        drop(self);
        let links_dir = pin_dir.join(LINKS_DIR);
        let pinned_links = std::fs::read_dir(&links_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        if pinned_links > 0 {
            let why = match on_exit {
                OnExit::KeepRouting => "--on-exit keep-routing",
                OnExit::Detach => "another agent pinned them",
            };
            info!(
                links = %links_dir.display(),
                maps = %pin_dir.display(),
                "the probe is detached; routing stays attached ({why}) until the next agent takes over; `kmesh-agent cleanup` removes it"
            );
            return;
        }
        remove_pins(&pin_dir);
        info!(bpffs = %pin_dir.display(), "eBPF programs detached and pinned maps removed");
    }
}

/// What [`remove_left_state`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// Program ids that stopped routing as their link pins went.
    pub detached_programs: Vec<u32>,
    pub maps: Vec<PathBuf>,
}

/// Removes what an agent left in the bpffs directory `dir`: the routing
/// links (detaching their programs), then the maps and `dir` itself. For
/// uninstalling after agents that ran with [`OnExit::KeepRouting`].
pub fn remove_left_state(dir: &Path) -> Result<Removed, DataPlaneError> {
    if !dir.exists() {
        return Ok(Removed::default());
    }
    let detached_programs = pinned_links::remove_all(&dir.join(LINKS_DIR))?;
    let maps = PINNED_MAPS
        .iter()
        .map(|(name, _, _)| dir.join(name))
        .filter(|p| p.exists())
        .collect();
    remove_pins(dir);
    if dir.exists() {
        let others: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        return Err(DataPlaneError::Bpffs {
            path: dir.to_path_buf(),
            reason: format!(
                "still holds {others:?}, which no kmesh-agent pins; remove them if nothing else uses them"
            ),
        });
    }
    Ok(Removed {
        detached_programs,
        maps,
    })
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

fn prepare_pin_dir(dir: &Path) -> Result<(), DataPlaneError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    sysfs::ensure_bpffs(parent)?;
    std::fs::create_dir_all(dir).map_err(|e| DataPlaneError::Bpffs {
        path: dir.to_path_buf(),
        reason: format!("cannot create: {e}"),
    })
}

fn check_existing_pins(dir: &Path) -> Result<(), DataPlaneError> {
    for (name, key, value) in PINNED_MAPS {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let expected = (key as u32, value as u32);
        match MapInfo::from_pin(&path) {
            Ok(found) if (found.key_size(), found.value_size()) == expected => {
                info!(map = %path.display(), "reusing pinned map");
            }
            Ok(found) => {
                return Err(DataPlaneError::IncompatiblePin {
                    path,
                    found: (found.key_size(), found.value_size()),
                    expected,
                });
            }
            Err(e) => {
                return Err(DataPlaneError::Bpffs {
                    path,
                    reason: format!("cannot open pinned map: {e}"),
                });
            }
        }
    }
    Ok(())
}

fn remove_pins(dir: &Path) {
    for (name, _, _) in PINNED_MAPS {
        let path = dir.join(name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(map = %path.display(), error = %e, "could not remove pinned map");
        }
    }
    if let Err(e) = std::fs::remove_dir(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "could not remove the bpffs directory (not empty?)");
    }
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
