//! Host uid/gid ranges of tenants: each tenant's user namespace on this host maps
//! its ids `0..IDS_PER_TENANT` to a range of unprivileged host ids that belongs to
//! it alone, so that a tenant's root is an ordinary, unprivileged user of the host
//! and two tenants never share a host id.
//!
//! Invariants:
//! - ranges are allocated from `first` upwards, one slot of [`IDS_PER_TENANT`] ids
//!   per tenant, never overlap, and never include host id 0;
//! - an allocation is durable (in `<data>/id-ranges.json`, replaced atomically)
//!   before it is handed out, so a tenant keeps its range across agent restarts
//!   (its files in its data directory stay its own) and a restarted agent never
//!   hands a live tenant's range to another;
//! - ranges are never reused while the file lives: a tenant that comes back gets
//!   the same range.
//!
//! The operator keeps `[first, first + slots * IDS_PER_TENANT)` free of real host
//! users (the default, [`DEFAULT_FIRST_ID`], is far above what distributions hand
//! out and what `/etc/subuid` usually holds).

use crate::error::HostError;
use crate::state;
use nefele_core::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Ids mapped for each tenant: a whole 16-bit range, so that programs using the
/// conventional ids (`nobody` is 65534) run unchanged.
pub const IDS_PER_TENANT: u32 = 1 << 16;
/// The first host id handed to tenants, by default.
pub const DEFAULT_FIRST_ID: u32 = 1 << 30;

/// One tenant's range: ids `0..IDS_PER_TENANT` inside are `base..base + IDS_PER_TENANT` on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    /// The host id of the tenant's id 0.
    pub base: u32,
}

impl IdRange {
    /// The line written to `/proc/<pid>/uid_map` and `gid_map`.
    pub fn map_line(self) -> String {
        format!("0 {} {IDS_PER_TENANT}\n", self.base)
    }
}

/// What the file holds: the slot of each tenant.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Saved {
    slots: BTreeMap<TenantId, u32>,
}

/// The allocation table of one agent.
#[derive(Debug)]
pub struct IdRanges {
    path: PathBuf,
    first: u32,
    saved: Saved,
}

impl IdRanges {
    /// Reads the table kept in `data_dir`, allocating from host id `first` (> 0).
    pub fn open(data_dir: &Path, first: u32) -> Result<Self, HostError> {
        let path = data_dir.join("id-ranges.json");
        let saved: Saved = state::load_json(&path)?;
        Ok(IdRanges {
            path,
            first: first.max(1),
            saved,
        })
    }

    /// How many tenants fit above `first`.
    fn capacity(&self) -> u32 {
        (u32::MAX - self.first) / IDS_PER_TENANT
    }

    /// The range of `tenant`, allocated (and made durable) on first use.
    pub fn range(&mut self, tenant: TenantId) -> Result<IdRange, HostError> {
        let slot = match self.saved.slots.get(&tenant) {
            Some(&slot) => slot,
            None => {
                let used: std::collections::BTreeSet<u32> =
                    self.saved.slots.values().copied().collect();
                let slot = (0..self.capacity())
                    .find(|s| !used.contains(s))
                    .ok_or_else(|| HostError::State {
                        path: self.path.clone(),
                        source: std::io::Error::other(format!(
                            "no free host id range left above {}",
                            self.first
                        )),
                    })?;
                self.saved.slots.insert(tenant, slot);
                if let Err(e) = state::save_json(&self.path, &self.saved, true) {
                    self.saved.slots.remove(&tenant);
                    return Err(e);
                }
                slot
            }
        };
        Ok(IdRange {
            base: self.first + slot * IDS_PER_TENANT,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_distinct_unprivileged_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = IdRanges::open(dir.path(), DEFAULT_FIRST_ID).unwrap();
        let a = ids.range(TenantId(7)).unwrap();
        let b = ids.range(TenantId(3)).unwrap();
        assert_eq!(a.base, DEFAULT_FIRST_ID);
        assert_eq!(b.base, DEFAULT_FIRST_ID + IDS_PER_TENANT);
        assert_eq!(ids.range(TenantId(7)).unwrap(), a);
        let mut reopened = IdRanges::open(dir.path(), DEFAULT_FIRST_ID).unwrap();
        assert_eq!(reopened.range(TenantId(3)).unwrap(), b);
        assert_eq!(reopened.range(TenantId(7)).unwrap(), a);
        let c = reopened.range(TenantId(9)).unwrap();
        assert_eq!(c.base, DEFAULT_FIRST_ID + 2 * IDS_PER_TENANT);
        assert_eq!(a.map_line(), format!("0 {DEFAULT_FIRST_ID} 65536\n"));
    }

    #[test]
    fn allocation_stops_when_the_id_space_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = IdRanges::open(dir.path(), u32::MAX - 2 * IDS_PER_TENANT).unwrap();
        ids.range(TenantId(1)).unwrap();
        ids.range(TenantId(2)).unwrap();
        assert!(ids.range(TenantId(3)).is_err());
        assert!(
            ids.range(TenantId(1)).is_ok(),
            "existing ranges still served"
        );
    }
}
