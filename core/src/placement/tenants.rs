//! Which tenants have processes in a subtree, as a fixed-size Bloom filter that
//! travels up the hierarchy inside each [`Summary`](super::Summary).
//!
//! Invariant: a filter may say a tenant is present when it is not (a false
//! positive, which only costs `ps` a visit), never the opposite. The union of
//! two subtrees is the bitwise or of their filters, so a leader sums its
//! members' filters exactly as it sums their capacity, and a member it has not
//! heard from yet counts as [`TenantFilter::ALL`].

use crate::ids::TenantId;
use serde::{Deserialize, Serialize};

/// 64-bit words in a filter: 512 bits, about 10% false positives with 100
/// tenants in one subtree, well under 1% with 10.
const WORDS: usize = 8;
const BITS: u64 = (WORDS * 64) as u64;

/// A set of tenants that may hold false positives, never false negatives.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantFilter([u64; WORDS]);

impl TenantFilter {
    /// Every tenant (what a subtree not heard from yet may hold).
    pub const ALL: TenantFilter = TenantFilter([u64::MAX; WORDS]);

    /// Adds `tenant`.
    pub fn insert(&mut self, tenant: TenantId) {
        for bit in bits(tenant) {
            self.0[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Whether `tenant` may be in the set (false: it certainly is not).
    #[must_use]
    pub fn may_contain(&self, tenant: TenantId) -> bool {
        bits(tenant)
            .iter()
            .all(|bit| self.0[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// The union of two sets.
    #[must_use]
    pub fn union(self, other: TenantFilter) -> TenantFilter {
        let mut words = self.0;
        for (w, o) in words.iter_mut().zip(other.0) {
            *w |= o;
        }
        TenantFilter(words)
    }
}

impl FromIterator<TenantId> for TenantFilter {
    fn from_iter<I: IntoIterator<Item = TenantId>>(tenants: I) -> Self {
        let mut filter = TenantFilter::default();
        for t in tenants {
            filter.insert(t);
        }
        filter
    }
}

/// The two bits of `tenant`: halves of a SplitMix64 hash of its id (stable
/// across runs and machines, as the wire needs).
fn bits(tenant: TenantId) -> [u64; 2] {
    let mut z = u64::from(tenant.0).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    [z % BITS, (z >> 32) % BITS]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_always_found_and_the_union_keeps_both_sides() {
        let a: TenantFilter = (0..50).map(TenantId).collect();
        let b: TenantFilter = (50..100).map(TenantId).collect();
        let both = a.union(b);
        assert!((0..100).all(|t| both.may_contain(TenantId(t))));
        assert!((0..50).all(|t| a.may_contain(TenantId(t))));
        assert!(TenantFilter::ALL.may_contain(TenantId(u32::MAX)));
        assert!(!TenantFilter::default().may_contain(TenantId(7)));
    }

    #[test]
    fn false_positives_are_rare_with_a_few_tenants() {
        let ten: TenantFilter = (0..10).map(TenantId).collect();
        let false_positives = (1000..11_000)
            .filter(|t| ten.may_contain(TenantId(*t)))
            .count();
        assert!(false_positives < 100, "{false_positives} in 10,000");
    }
}
