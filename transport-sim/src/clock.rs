//! A simulated host clock: the agent's `now` is the simulated time shifted by an
//! offset and scaled by a drift, and it never runs backwards.
//!
//! `local(t) = max(last reading, t + t·drift_ppm/10⁶ + offset)`, clamped at zero.
//! [`HostClock::sim_time_of`] inverts the unclamped formula, rounding up, so that
//! at the returned simulated time the local clock has reached the deadline.

use nefele_core::Time;

/// One host's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostClock {
    offset_ns: i64,
    drift_ppm: i32,
    last_local: Time,
}

impl HostClock {
    /// Jumps the clock by `offset_ms` (a backward jump is absorbed: the clock stalls
    /// until real time catches up) and sets its drift.
    pub fn skew(&mut self, offset_ms: i64, drift_ppm: i32) {
        self.offset_ns = self
            .offset_ns
            .saturating_add(offset_ms.saturating_mul(1_000_000));
        self.drift_ppm = drift_ppm;
    }

    /// The host's reading at simulated time `t`; never less than an earlier reading.
    pub fn local(&mut self, t: Time) -> Time {
        self.last_local = self.reading(t);
        self.last_local
    }

    /// What [`HostClock::local`] would return at `t`, without moving the clock.
    #[must_use]
    pub fn reading(&self, t: Time) -> Time {
        let t = i128::from(t.as_nanos());
        // Most clocks do not drift; a 128-bit division per reading was 2% of a
        // placement run.
        let drift = match self.drift_ppm {
            0 => 0,
            ppm => t * i128::from(ppm) / 1_000_000,
        };
        let raw = t + drift + i128::from(self.offset_ns);
        let raw = Time::from_nanos(u64::try_from(raw.max(0)).unwrap_or(u64::MAX));
        self.last_local.max(raw)
    }

    /// The earliest simulated time at which the host's reading is at least `local`.
    #[must_use]
    pub fn sim_time_of(&self, local: Time) -> Time {
        if local == Time::NEVER {
            return Time::NEVER;
        }
        let shifted = i128::from(local.as_nanos()) - i128::from(self.offset_ns);
        // Without drift the scale is 1 and the division (rounding up) is exact.
        let t = match self.drift_ppm {
            0 => shifted,
            ppm => {
                let scale = 1_000_000 + i128::from(ppm);
                (shifted * 1_000_000 + scale - 1).div_euclid(scale)
            }
        } + 1;
        Time::from_nanos(u64::try_from(t.max(0)).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_without_skew() {
        let mut c = HostClock::default();
        assert_eq!(c.local(Time::from_secs(3)), Time::from_secs(3));
        assert!(c.sim_time_of(Time::from_secs(3)) >= Time::from_secs(3));
    }

    #[test]
    fn skewed_deadlines_are_reached_at_the_inverse_time() {
        let mut c = HostClock::default();
        c.skew(250, 150);
        for deadline in [1u64, 999_999, 5_000_000_000, 77_777_777_777] {
            let d = Time::from_nanos(deadline);
            let t = c.sim_time_of(d);
            assert!(c.local(t) >= d, "deadline {deadline} not reached at {t}");
        }
    }

    /// The formulas of the module docs, with no shortcut.
    fn general(ns: u64, drift_ppm: i128, offset_ns: i128) -> (u64, u64) {
        let t = i128::from(ns);
        let reading = (t + t * drift_ppm / 1_000_000 + offset_ns).max(0);
        let scale = 1_000_000 + drift_ppm;
        let inverse = ((t - offset_ns) * 1_000_000 + scale - 1).div_euclid(scale) + 1;
        let to_u64 = |v: i128| u64::try_from(v.max(0)).unwrap();
        (to_u64(reading), to_u64(inverse))
    }

    /// The driftless shortcut gives what the general formula gives.
    #[test]
    fn driftless_readings_match_the_general_formula() {
        let mut c = HostClock::default();
        c.skew(-40, 0);
        for ns in [0u64, 1, 39_999_999, 40_000_000, 40_000_001, 77_777_777_777] {
            let (reading, inverse) = general(ns, 0, -40_000_000);
            let t = Time::from_nanos(ns);
            assert_eq!(c.reading(t), Time::from_nanos(reading));
            assert_eq!(c.sim_time_of(t), Time::from_nanos(inverse));
        }
    }

    #[test]
    fn backward_jump_never_runs_the_clock_backwards() {
        let mut c = HostClock::default();
        let before = c.local(Time::from_secs(10));
        c.skew(-5_000, 0);
        assert_eq!(c.local(Time::from_secs(11)), before);
        assert_eq!(c.local(Time::from_secs(16)), Time::from_secs(11));
    }
}
