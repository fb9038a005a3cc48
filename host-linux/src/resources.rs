//! The host's capacity, from /proc: logical cores, memory, cpu model and speed.
//! Parsing is split from reading so it is tested on fixed texts.

use nefele_core::HostResources;

/// The clock speed of the reference core (`cpu_speed` 1000), in MHz.
pub const REFERENCE_MHZ: f64 = 2000.0;

/// What the host has, as measured at start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capacity {
    /// Logical cores.
    pub cores: u32,
    /// Total memory, in bytes.
    pub memory_bytes: u64,
    /// The cpu model name.
    pub cpu_model: String,
    /// The cpu clock, in MHz (0 if unknown).
    pub cpu_mhz: f64,
}

impl Capacity {
    /// Reads /proc/cpuinfo and /proc/meminfo; missing facts stay zero.
    pub fn measure() -> Capacity {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mut capacity = Capacity::parse(&cpuinfo, &meminfo);
        if capacity.cores == 0 {
            capacity.cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        }
        capacity
    }

    /// Parses the texts of /proc/cpuinfo and /proc/meminfo.
    pub fn parse(cpuinfo: &str, meminfo: &str) -> Capacity {
        let field = |line: &str, key: &str| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        };
        let cores = cpuinfo
            .lines()
            .filter(|l| field(l, "processor").is_some())
            .count() as u32;
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| field(l, "model name"))
            .unwrap_or_default();
        let cpu_mhz = cpuinfo
            .lines()
            .find_map(|l| field(l, "cpu MHz"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let memory_bytes = meminfo
            .lines()
            .find_map(|l| field(l, "MemTotal"))
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        Capacity {
            cores,
            memory_bytes,
            cpu_model,
            cpu_mhz,
        }
    }

    /// The capacity in the core's terms, with nothing committed yet.
    pub fn to_resources(&self) -> HostResources {
        let cpu_speed = if self.cpu_mhz > 0.0 {
            (self.cpu_mhz / REFERENCE_MHZ * 1000.0).round() as u32
        } else {
            1000
        };
        HostResources {
            cores: self.cores,
            cpu_millicores: self.cores.saturating_mul(1000),
            memory_bytes: self.memory_bytes,
            accelerators: 0,
            cpu_speed,
            committed_cpu_millicores: 0,
            committed_memory_bytes: 0,
            // Where the server stands is configuration (nefeled's `[host]`).
            location: nefele_core::Location::default(),
            // What the cgroups can enforce is the adapter's to say.
            unenforced: nefele_core::host::LimitKinds::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_and_meminfo_are_parsed() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.144\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n";
        let meminfo = "MemTotal:       24576000 kB\nMemFree: 1 kB\n";
        let c = Capacity::parse(cpuinfo, meminfo);
        assert_eq!(c.cores, 2);
        assert_eq!(c.cpu_model, "AMD EPYC");
        assert_eq!(c.memory_bytes, 24_576_000 * 1024);
        let r = c.to_resources();
        assert_eq!((r.cpu_millicores, r.cpu_speed), (2000, 1298));
    }
}
