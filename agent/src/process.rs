//! The agent's own resource use, read from procfs, under the names every
//! Prometheus client uses (`process_*`), so stock dashboards and alerts work.
use std::path::Path;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// Unix time the process started, in seconds.
    pub start_time_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessStatsError {
    #[error("reading {path}: {error}")]
    Read {
        path: &'static str,
        error: std::io::Error,
    },
    #[error("{path} has no field {field}; is /proc a procfs mount?")]
    Field {
        path: &'static str,
        field: &'static str,
    },
}

fn read(path: &'static str) -> Result<String, ProcessStatsError> {
    std::fs::read_to_string(path).map_err(|error| ProcessStatsError::Read { path, error })
}

/// Reads this process's figures from /proc/self.
pub fn read_self() -> Result<ProcessStats, ProcessStatsError> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let stat = read("/proc/self/stat")?;
    let boot_time = boot_time_seconds(&read("/proc/stat")?)?;
    let fields = parse_stat(&stat)?;
    Ok(ProcessStats {
        cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
        resident_bytes: fields.rss_pages * page,
        virtual_bytes: fields.vsize,
        open_fds: count_entries(Path::new("/proc/self/fd")),
        start_time_seconds: boot_time + fields.start_ticks as f64 / ticks,
    })
}

struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Fields of /proc/<pid>/stat (proc(5)); the command name may hold spaces
/// and parentheses, so fields are counted from the last ')'.
fn parse_stat(stat: &str) -> Result<StatFields, ProcessStatsError> {
    let missing = |field| ProcessStatsError::Field {
        path: "/proc/self/stat",
        field,
    };
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| missing("comm"))?;
    // After ')' the first field is `state`, field 3 of proc(5).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |number: usize, name: &'static str| -> Result<u64, ProcessStatsError> {
        fields
            .get(number - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| missing(name))
    };
    Ok(StatFields {
        utime: field(14, "utime")?,
        stime: field(15, "stime")?,
        start_ticks: field(22, "starttime")?,
        vsize: field(23, "vsize")?,
        rss_pages: field(24, "rss")?,
    })
}

fn boot_time_seconds(stat: &str) -> Result<f64, ProcessStatsError> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(ProcessStatsError::Field {
            path: "/proc/stat",
            field: "btime",
        })
}

fn count_entries(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a ')' must not shift the fields.
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    1234 104857600 2560 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1";
        let f = parse_stat(stat).unwrap();
        assert_eq!((f.utime, f.stime), (250, 50));
        assert_eq!(f.start_ticks, 1234);
        assert_eq!(f.vsize, 104_857_600);
        assert_eq!(f.rss_pages, 2560);
    }

    #[test]
    fn this_process_reads_plausibly() {
        let s = read_self().unwrap();
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
        assert!(
            s.open_fds >= 3,
            "stdin, stdout, stderr at least: {}",
            s.open_fds
        );
        assert!(s.start_time_seconds > 1.5e9, "{}", s.start_time_seconds);
    }
}
