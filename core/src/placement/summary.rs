//! Placement's part of the federation summaries: the free capacity of a
//! subtree, its largest free host, the tenants it may hold, and what kinds of
//! host it has (the cpu speed classes, the most accelerators of one host, the
//! racks), as bitsets and small integers so that a summary stays a few words.
//!
//! Leaders sum their members' parts as they sum the federation's own counts;
//! a member not heard from yet counts as [`PlacementSummary::UNKNOWN`]: no room
//! (so no request is sent there on a guess) and every tenant (so `ps` still
//! visits it).

use super::tenants::TenantFilter;
use crate::federation::Summary;
use crate::service::SummaryPart;
use serde::{Deserialize, Serialize};

/// What placement reports of a subtree.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementSummary {
    /// Free cpu in the subtree, in millicores.
    pub free_cpu_millicores: u64,
    /// Free memory in the subtree, in bytes.
    pub free_memory_bytes: u64,
    /// The most free cpu on one agent of the subtree, in millicores.
    pub largest_free_cpu_millicores: u64,
    /// The most free memory on one agent of the subtree (maybe another agent), in bytes.
    pub largest_free_memory_bytes: u64,
    /// The tenants with processes in the subtree (`ps` visits only subtrees that may hold its tenant).
    pub tenants: TenantFilter,
    /// The cpu speed classes of the subtree's hosts, busy or not: bit `c` for class
    /// `c` (`nefele_api::spec::cpu_class_of`, at most 15).
    pub cpu_classes: u16,
    /// The most accelerators one host of the subtree has, busy or not.
    pub max_accelerators: u32,
    /// The most free accelerators on one host of the subtree (at most `max_accelerators`).
    pub largest_free_accelerators: u32,
    /// The racks of the subtree's hosts: bit `rack % 64`.
    pub racks: u64,
}

impl PlacementSummary {
    /// Placement's part of `summary` (a summary without one, from an agent that
    /// does not run placement on this instance, holds nothing).
    #[must_use]
    pub fn of(summary: &Summary) -> PlacementSummary {
        summary.payload.placement.unwrap_or_default()
    }

    /// Whether some host of the subtree has cpu speed class `class` or a faster one.
    #[must_use]
    pub fn has_class(&self, class: u8) -> bool {
        let at_least = u16::MAX.checked_shl(u32::from(class)).unwrap_or(0);
        self.cpu_classes & at_least != 0
    }
}

impl SummaryPart for PlacementSummary {
    const UNKNOWN: Self = PlacementSummary {
        free_cpu_millicores: 0,
        free_memory_bytes: 0,
        largest_free_cpu_millicores: 0,
        largest_free_memory_bytes: 0,
        tenants: TenantFilter::ALL,
        cpu_classes: 0,
        max_accelerators: 0,
        largest_free_accelerators: 0,
        racks: 0,
    };

    /// Sums the free amounts; the largest free amounts are the larger of the two.
    fn plus(self, other: Self) -> Self {
        PlacementSummary {
            free_cpu_millicores: self
                .free_cpu_millicores
                .saturating_add(other.free_cpu_millicores),
            free_memory_bytes: self
                .free_memory_bytes
                .saturating_add(other.free_memory_bytes),
            largest_free_cpu_millicores: self
                .largest_free_cpu_millicores
                .max(other.largest_free_cpu_millicores),
            largest_free_memory_bytes: self
                .largest_free_memory_bytes
                .max(other.largest_free_memory_bytes),
            tenants: self.tenants.union(other.tenants),
            cpu_classes: self.cpu_classes | other.cpu_classes,
            max_accelerators: self.max_accelerators.max(other.max_accelerators),
            largest_free_accelerators: self
                .largest_free_accelerators
                .max(other.largest_free_accelerators),
            racks: self.racks | other.racks,
        }
    }

    /// No host has more accelerators free than the most any host has.
    fn is_valid(&self) -> bool {
        self.largest_free_accelerators <= self.max_accelerators
    }
}
