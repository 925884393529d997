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

#[cfg(test)]
mod tests {
    use super::*;

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
