//! Memory accounting of the running process, for `metrics.jsonl`, `summary.json` and `cpt bench`.

/// Peak resident set size of this process so far in MiB, from `/proc/self/status` (`VmHWM`);
/// `None` where that file does not exist (outside Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in MiB.
fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_high_water_mark_in_mib() {
        let status = "Name:\tcpt\nVmPeak:\t  900000 kB\nVmHWM:\t    3072 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(3.0));
        assert_eq!(parse_vm_hwm("Name:\tcpt\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_peak() {
        assert!(peak_rss_mib().is_some_and(|m| m > 0.0));
    }
}
