//! Where the transport's randomness comes from: the operating system in
//! ordinary builds, madsim's seeded global RNG under `--cfg madsim`, so that a
//! simulated run replays bit for bit from its seed. Used for handshake nonces
//! and reconnect jitter only.

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// Fills `buf` with random bytes fit for nonces.
pub(crate) fn fill(buf: &mut [u8]) {
    #[cfg(not(madsim))]
    rand::rngs::OsRng.fill_bytes(buf);
    #[cfg(madsim)]
    madsim::rand::thread_rng().fill_bytes(buf);
}

/// A fast RNG for jitter, seeded from [`fill`].
pub(crate) fn jitter_rng() -> SmallRng {
    let mut seed = [0; 8];
    fill(&mut seed);
    SmallRng::seed_from_u64(u64::from_le_bytes(seed))
}
