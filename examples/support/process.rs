//! Readings of this process from /proc (Linux only; `None` elsewhere): resident memory now and
//! at its peak (with the peak's reset), and CPU time. Written here rather than with a crate
//! such as sysinfo because the examples need VmHWM's reset (`clear_refs`), which those do not
//! offer. Shared by examples that `#[path]`-include it; each uses some of it.
#![allow(dead_code)]

use std::time::Duration;

/// A `Vm*` line of /proc/self/status (kB), in MiB.
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resident memory now, in MiB.
pub fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

/// Peak resident memory since start or since the last [`reset_peak_rss`], in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// Starts a new peak-memory measurement (writing 5 to clear_refs resets VmHWM).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time of this process so far, user and system, all threads.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel reports these in USER_HZ, 100 on every Linux platform Rust supports.
    Some(Duration::from_millis(ticks * 10))
}
