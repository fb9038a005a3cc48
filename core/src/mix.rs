//! SplitMix64's finaliser: the one stable 64-bit mixing function the workspace
//! derives seeds and spreads from. It is part of what makes a run replayable:
//! changing it changes every trace hash.

/// Mixes `z` into a well-spread 64-bit value (SplitMix64's finaliser).
#[must_use]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
