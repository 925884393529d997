//! Memory accounting of the running process (host RSS and, on accelerators, device memory), for
//! `metrics.jsonl`, `summary.json` and `cpt bench`.

/// Peak resident set size of this process so far in MiB, from `/proc/self/status` (`VmHWM`);
/// `None` where that file does not exist (outside Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// What an accelerator's allocator holds for this process, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes of live tensors (without allocation padding).
    pub in_use: u64,
    /// Bytes the allocator has taken from the device: its pools, live or free. What the device
    /// cannot give to anyone else, as PyTorch's `torch.cuda.memory_reserved()`.
    pub reserved: u64,
}

impl DeviceMemory {
    /// `in_use` in MiB.
    pub fn in_use_mib(&self) -> f64 {
        self.in_use as f64 / MIB
    }

    /// `reserved` in MiB.
    pub fn reserved_mib(&self) -> f64 {
        self.reserved as f64 / MIB
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Reads the device memory of the backend a run computes on: chosen where the backend is chosen
/// (the `cpt` binary's backend dispatch), so that trainers and benchmarks stay generic. CPU
/// backends use [`no_device_memory`].
pub type DeviceMemoryProbe = fn() -> Option<DeviceMemory>;

/// The probe of a backend without device memory of its own (the CPU): always `None`.
pub fn no_device_memory() -> Option<DeviceMemory> {
    None
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in MiB.
fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Memory this process can still take, in bytes: the kernel's `MemAvailable` (`/proc/meminfo`),
/// lowered to the room left under a cgroup v2 limit (`memory.max` − `memory.current`) where the
/// process runs in one; `None` where neither can be read (outside Linux).
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let host = parse_mem_available(&meminfo)?;
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
    let cgroup = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(current)) => cgroup_room(&max, &current),
        _ => None,
    };
    Some(cgroup.map_or(host, |room| room.min(host)))
}

/// The `MemAvailable:` line of a `/proc/meminfo` text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Room under a cgroup v2 limit from the texts of `memory.max` (`max` when unlimited) and
/// `memory.current`.
fn cgroup_room(max: &str, current: &str) -> Option<u64> {
    let max: u64 = max.trim().parse().ok()?;
    let current: u64 = current.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_available_memory_and_cgroup_room() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(cgroup_room("1000\n", "400\n"), Some(600));
        assert_eq!(cgroup_room("max\n", "400\n"), None);
        assert_eq!(cgroup_room("100", "400"), Some(0));
    }

    #[test]
    fn reads_the_high_water_mark_in_mib() {
        let status = "Name:\tcpt\nVmPeak:\t  900000 kB\nVmHWM:\t    3072 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(3.0));
        assert_eq!(parse_vm_hwm("Name:\tcpt\n"), None);
    }

    #[test]
    fn device_memory_in_mib() {
        let memory = DeviceMemory {
            in_use: 3 << 20,
            reserved: 5 << 19,
        };
        assert_eq!((memory.in_use_mib(), memory.reserved_mib()), (3.0, 2.5));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_peak() {
        assert!(peak_rss_mib().is_some_and(|m| m > 0.0));
    }
}
