//! A strict deserializer for the [`Duration`]s of the wire and client protocols.
//!
//! serde's own accepts any `nanos` and carries whole seconds of it into `secs`, so
//! two byte strings decoded to the same duration and a decoded message did not
//! encode back to its bytes. This one refuses `nanos` of a second or more, which no
//! encoder produces; the layout (`secs`, then `nanos`) is serde's, so the bytes of
//! every valid duration are unchanged. Use it with
//! `#[serde(deserialize_with = "nefele_api::duration::deserialize")]` (and
//! [`option::deserialize`] with `#[serde(default)]` for an `Option<Duration>`).

use serde::de::Error;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

const NANOS_PER_SEC: u32 = 1_000_000_000;

/// serde's layout of a [`Duration`].
#[derive(Deserialize)]
#[serde(rename = "Duration")]
struct Parts {
    secs: u64,
    nanos: u32,
}

/// A [`Duration`] whose `nanos` is under a second.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let Parts { secs, nanos } = Parts::deserialize(deserializer)?;
    if nanos >= NANOS_PER_SEC {
        return Err(D::Error::custom(format_args!(
            "duration with {nanos} nanoseconds (not under a second)"
        )));
    }
    Ok(Duration::new(secs, nanos))
}

/// The same for an `Option<Duration>`.
pub mod option {
    use super::Duration;
    use serde::{Deserialize, Deserializer};

    /// `None`, or a [`Duration`] whose `nanos` is under a second.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Strict(#[serde(deserialize_with = "super::deserialize")] Duration);
        Ok(Option::<Strict>::deserialize(deserializer)?.map(|Strict(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq, serde::Serialize)]
    struct Both {
        #[serde(deserialize_with = "deserialize")]
        d: Duration,
        #[serde(default, deserialize_with = "option::deserialize")]
        o: Option<Duration>,
    }

    #[test]
    fn layout_is_serdes_and_a_second_of_nanos_is_refused() {
        let both = Both {
            d: Duration::new(3, 999_999_999),
            o: Some(Duration::new(1, 2)),
        };
        let bytes = bincode::serialize(&both).unwrap();
        assert_eq!(bincode::deserialize::<Both>(&bytes).unwrap(), both);
        let std_bytes = bincode::serialize(&(both.d, both.o)).unwrap();
        assert_eq!(bytes, std_bytes, "the same bytes as serde's own");
        let mut bad = bytes.clone();
        bad[8..12].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert!(bincode::deserialize::<Both>(&bad).is_err());
        let mut bad = bytes;
        let at = bad.len() - 4;
        bad[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(bincode::deserialize::<Both>(&bad).is_err());
    }
}
