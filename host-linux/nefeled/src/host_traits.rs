//! The facts of this server that placement reads besides its capacity: where it
//! stands (its rack and row, the failure domains `spread` and `near` use), its
//! cpu speed (placement's speed class, `nefele_api::spec::cpu_class_of`) and its
//! accelerators.
//!
//! The `[host]` table of the configuration file gives them; what it leaves out
//! is measured: the cpu speed from /proc/cpuinfo (the Linux host does that), the
//! accelerators by counting the device nodes of `/dev` ([`count_accelerators`]).
//! A host whose file gives no location stands in row 0, rack 0.

use nefele_core::host::{HostResources, Location};
use serde::Deserialize;

/// The `[host]` table, as written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHost {
    /// The row of racks this server stands in.
    pub row: Option<u16>,
    /// Its rack (numbered across the data centre, not per row).
    pub rack: Option<u16>,
    /// Its relative cpu speed (1000 is a 2 GHz reference core) instead of the
    /// one measured from /proc/cpuinfo.
    pub cpu_speed: Option<u32>,
    /// Its accelerator devices instead of the count of device nodes in /dev.
    pub accelerators: Option<u32>,
}

/// The resolved facts: a location, and what replaces the measured values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HostTraits {
    /// Where the server stands.
    pub location: Location,
    /// The cpu speed to announce, if the file gives one.
    pub cpu_speed: Option<u32>,
    /// The accelerators to announce, if the file gives them.
    pub accelerators: Option<u32>,
}

impl From<FileHost> for HostTraits {
    fn from(f: FileHost) -> Self {
        HostTraits {
            location: Location {
                row: f.row.unwrap_or(0),
                rack: f.rack.unwrap_or(0),
            },
            cpu_speed: f.cpu_speed,
            accelerators: f.accelerators,
        }
    }
}

impl HostTraits {
    /// `r` with these facts: the location always, the speed and accelerators
    /// where given (else `measured_accelerators`).
    #[must_use]
    pub fn apply(&self, mut r: HostResources, measured_accelerators: u32) -> HostResources {
        r.location = self.location;
        if let Some(s) = self.cpu_speed {
            r.cpu_speed = s;
        }
        r.accelerators = self.accelerators.unwrap_or(measured_accelerators);
        r
    }
}

/// The accelerator devices among the names of `/dev` and `/dev/accel`: NVIDIA's
/// `nvidia0`, `nvidia1`, … (not `nvidiactl` or `nvidia-uvm`) and the kernel's
/// accel class `accel0`, ….
pub fn count_accelerators<'a>(names: impl IntoIterator<Item = &'a str>) -> u32 {
    let numbered = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let n = names
        .into_iter()
        .filter(|n| numbered(n, "nvidia") || numbered(n, "accel"))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The accelerators of this server, from /dev and /dev/accel (0 if unreadable).
#[must_use]
pub fn measure_accelerators() -> u32 {
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let all: Vec<String> = names("/dev")
        .into_iter()
        .chain(names("/dev/accel"))
        .collect();
    count_accelerators(all.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerators_are_the_numbered_device_nodes() {
        let dev = [
            "nvidia0",
            "nvidia1",
            "nvidiactl",
            "nvidia-uvm",
            "null",
            "accel0",
            "accel",
        ];
        assert_eq!(count_accelerators(dev), 3);
        assert_eq!(count_accelerators([]), 0);
    }

    #[test]
    fn the_file_replaces_what_is_measured_and_places_the_host() {
        let traits = HostTraits::from(FileHost {
            row: Some(2),
            rack: Some(17),
            cpu_speed: Some(1600),
            accelerators: None,
        });
        let r = traits.apply(HostResources::default(), 4);
        assert_eq!(r.location, Location { row: 2, rack: 17 });
        assert_eq!((r.cpu_speed, r.accelerators), (1600, 4));
        let r = HostTraits::default().apply(
            HostResources {
                cpu_speed: 1300,
                ..HostResources::default()
            },
            0,
        );
        assert_eq!(
            (r.cpu_speed, r.accelerators, r.location),
            (1300, 0, Location::default())
        );
    }
}
