//! Durations as human text (`"60s"`, `"1500ms"`, `"2m 30s"`) in scenario files and
//! reports, parsed and printed with `humantime`.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// The longest duration a scenario file or a flag may state: a year of simulated time,
/// far beyond any run, so that the products and sums the simulator and the agents
/// compute from durations cannot overflow.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration such as `"60s"` or `"250ms"`, at most [`MAX`], with an error that
/// says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like \"60s\" or \"250ms\" ({e})"))?;
    if d > MAX {
        return Err(format!("{text:?} is longer than a year, the most accepted"));
    }
    Ok(d)
}

/// Serializes a duration as text.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Deserializes a duration from text.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// The same, for optional durations.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes an optional duration as text or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Deserializes an optional duration from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| super::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_common_forms() {
        use std::time::Duration;
        assert_eq!(super::parse("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(super::parse("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(super::parse("2m 30s"), Ok(Duration::from_secs(150)));
        assert!(super::parse("soon").unwrap_err().contains("\"soon\""));
        assert_eq!(super::parse("365d"), Ok(super::MAX));
        assert!(super::parse("500000000000y")
            .unwrap_err()
            .contains("longer than"));
    }
}
