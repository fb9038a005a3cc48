//! Finding an RDMA device without libibverbs: the ports under
//! `/sys/class/infiniband`, the choice of one (by name, or the first active
//! port), the locked-memory limit, and the skip rule of tests that need a device.
//!
//! This module needs no system library, so a build without the `verbs`
//! feature still says precisely why RDMA is unavailable, and `nefeled` can
//! decide its fallback before touching libibverbs.
//!
//! Invariants: every error names what is missing and the fix; nothing here
//! panics on what sysfs or `/proc` contain.

use std::fs;
use std::path::{Path, PathBuf};

/// Where the kernel lists RDMA devices.
pub const SYSFS_ROOT: &str = "/sys/class/infiniband";

/// One port of one device, as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The device name (`mlx5_0`, `rxe0`).
    pub device: String,
    /// The port number (from 1).
    pub port: u8,
    /// The state text (`4: ACTIVE`, `1: DOWN`).
    pub state: String,
    /// `InfiniBand` or `Ethernet` (RoCE).
    pub link_layer: String,
}

impl Port {
    /// Whether the port can carry traffic.
    #[must_use]
    pub fn active(&self) -> bool {
        self.state.contains("ACTIVE")
    }
}

/// Why this host cannot use RDMA. Each message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// No device at all.
    #[error("no RDMA device ({} is empty): install an RDMA NIC and its driver, or load soft-RoCE (`modprobe rdma_rxe; rdma link add rxe0 type rxe netdev eth0`)", root.display())]
    NoDevice {
        /// The sysfs directory read.
        root: PathBuf,
    },
    /// The configured device does not exist.
    #[error("RDMA device `{name}` not found (devices: {found:?}); name one of these")]
    NoSuchDevice {
        /// The name asked for.
        name: String,
        /// The devices present.
        found: Vec<String>,
    },
    /// Devices exist but no port is active.
    #[error("no active RDMA port: {ports}; bring the link up (cable, switch, `ip link set <netdev> up` for RoCE)")]
    PortDown {
        /// Every port and its state.
        ports: String,
    },
    /// The locked-memory limit cannot hold the rings.
    #[error("locked-memory limit is {limit} bytes but the RDMA rings need {need} bytes: raise it with `ulimit -l unlimited` (shell) or `LimitMEMLOCK=infinity` in the nefeled systemd unit")]
    MemlockTooLow {
        /// The soft limit.
        limit: u64,
        /// Bytes the rings need.
        need: u64,
    },
}

/// Every port of every device under `root` (normally [`SYSFS_ROOT`]), sorted.
#[must_use]
pub fn scan(root: &Path) -> Vec<Port> {
    let mut ports = Vec::new();
    let Ok(devices) = fs::read_dir(root) else {
        return ports;
    };
    for device in devices.flatten() {
        let name = device.file_name().to_string_lossy().into_owned();
        let Ok(entries) = fs::read_dir(device.path().join("ports")) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(port) = entry.file_name().to_string_lossy().parse::<u8>() else {
                continue;
            };
            let read = |file: &str| {
                fs::read_to_string(entry.path().join(file))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default()
            };
            ports.push(Port {
                device: name.clone(),
                port,
                state: read("state"),
                link_layer: read("link_layer"),
            });
        }
    }
    ports.sort_by(|a, b| (&a.device, a.port).cmp(&(&b.device, b.port)));
    ports
}

/// The port to use: the first active port of device `name`, or of any device.
pub fn choose(root: &Path, ports: &[Port], name: Option<&str>) -> Result<Port, DeviceError> {
    if ports.is_empty() {
        return Err(DeviceError::NoDevice {
            root: root.to_owned(),
        });
    }
    let candidates: Vec<&Port> = match name {
        Some(name) => {
            let named: Vec<&Port> = ports.iter().filter(|p| p.device == name).collect();
            if named.is_empty() {
                let mut found: Vec<String> = ports.iter().map(|p| p.device.clone()).collect();
                found.dedup();
                return Err(DeviceError::NoSuchDevice {
                    name: name.to_owned(),
                    found,
                });
            }
            named
        }
        None => ports.iter().collect(),
    };
    candidates
        .iter()
        .find(|p| p.active())
        .map(|p| (*p).clone())
        .ok_or_else(|| DeviceError::PortDown {
            ports: candidates
                .iter()
                .map(|p| format!("{} port {} is {}", p.device, p.port, p.state))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The soft locked-memory limit of this process in bytes (`None` = unlimited or unknown),
/// read from `/proc/self/limits`.
#[must_use]
pub fn memlock_limit() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    parse_memlock(&text)
}

fn parse_memlock(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    line["Max locked memory".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether `need` bytes may be locked under the soft limit `limit`.
pub fn check_memlock(limit: Option<u64>, need: u64) -> Result<(), DeviceError> {
    match limit {
        Some(limit) if limit < need => Err(DeviceError::MemlockTooLow { limit, need }),
        _ => Ok(()),
    }
}

/// Whether this machine shows any RDMA device (`/sys/class/infiniband` non-empty).
#[must_use]
pub fn any_device() -> bool {
    !scan(Path::new(SYSFS_ROOT)).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(device: &str, n: u8, state: &str) -> Port {
        Port {
            device: device.into(),
            port: n,
            state: state.into(),
            link_layer: "Ethernet".into(),
        }
    }

    #[test]
    fn a_sysfs_tree_is_scanned_and_the_first_active_port_chosen() {
        let dir = std::env::temp_dir().join(format!("nefele-rdma-sysfs-{}", std::process::id()));
        for (dev, p, state) in [("mlx5_0", "1", "1: DOWN"), ("mlx5_1", "1", "4: ACTIVE")] {
            let d = dir.join(dev).join("ports").join(p);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("state"), format!("{state}\n")).unwrap();
            fs::write(d.join("link_layer"), "InfiniBand\n").unwrap();
        }
        let ports = scan(&dir);
        assert_eq!(ports.len(), 2);
        assert_eq!(choose(&dir, &ports, None).unwrap().device, "mlx5_1");
        assert!(matches!(
            choose(&dir, &ports, Some("mlx5_0")),
            Err(DeviceError::PortDown { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
        assert!(scan(&dir).is_empty());
    }

    #[test]
    fn errors_name_the_fix() {
        let root = Path::new("/nonexistent");
        let none = choose(root, &[], None).unwrap_err().to_string();
        assert!(
            none.contains("no RDMA device (/nonexistent is empty)"),
            "{none}"
        );
        let ports = [port("rxe0", 1, "1: DOWN")];
        let missing = choose(root, &ports, Some("mlx5_0")).unwrap_err();
        assert_eq!(
            missing,
            DeviceError::NoSuchDevice {
                name: "mlx5_0".into(),
                found: vec!["rxe0".into()]
            }
        );
        let down = choose(root, &ports, None).unwrap_err().to_string();
        assert!(down.contains("rxe0 port 1 is 1: DOWN"), "{down}");
        let memlock = check_memlock(Some(65536), 1 << 20).unwrap_err().to_string();
        assert!(
            memlock.contains("ulimit -l") && memlock.contains("LimitMEMLOCK="),
            "{memlock}"
        );
        assert!(check_memlock(None, u64::MAX).is_ok());
    }

    #[test]
    fn memlock_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         8388608              8388608              bytes\n";
        assert_eq!(parse_memlock(text), Some(8_388_608));
        let unlimited =
            "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_memlock(unlimited), None);
        assert_eq!(parse_memlock(""), None);
    }
}
