//! What the benchmarks measure besides the traffic itself: CPU time and resident memory of
//! processes from `/proc`, the CPU of this process's children, and run settings from the
//! environment. Percentiles come from `meshctl::app::load_report::percentile`, the same
//! function `meshctl app load` reports with.

/// CPU time (user + system) and resident memory of a process, from `/proc`.
#[derive(Clone, Copy, Debug)]
pub struct ProcUsage {
    /// CPU seconds used since the process started.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads `pid`'s CPU time and RSS.
pub fn proc_usage(pid: i32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the command.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_seconds = (ticks(11)? + ticks(12)?) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(ProcUsage {
        cpu_seconds,
        rss_bytes: rss_kib * 1024,
    })
}

/// Resident memory of `pid` in MiB.
pub fn rss_mib(pid: i32) -> Option<f64> {
    proc_usage(pid).map(|u| u.rss_bytes as f64 / f64::from(1 << 20))
}

/// CPU seconds used by this process's waited-for children (and theirs), such as the
/// `meshctl exec` running `meshctl app load`.
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The number in environment variable `name`, else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether the benchmark runs for real: `cargo bench` passes `--bench`, `cargo test
/// --benches` does not, and then a short run only checks that every path works.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_is_readable() {
        let me = proc_usage(std::process::id() as i32).expect("own /proc entry");
        assert!(me.rss_bytes > 0);
        assert!(proc_usage(-1).is_none());
    }
}
