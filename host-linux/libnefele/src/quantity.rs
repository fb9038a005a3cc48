//! Strict parsing of cpu and memory quantities, as `nef spawn` flags and the
//! `nefeled` configuration take them.
//!
//! Cpu: `500m` (millicores), `0.5` or `2` (cores). Memory: a byte count with an
//! optional binary suffix, `K`, `M`, `G` or `T` (optionally followed by `i` or
//! `B`: `512M`, `512Mi`, `1GB` are all powers of 1024). Anything else, zero, or an
//! overflow is an error that quotes the input.

/// Why a quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a cpu amount.
    #[error("{0:?} is not a cpu amount (examples: 500m, 0.5, 2)")]
    Cpu(String),
    /// Not a memory amount.
    #[error("{0:?} is not a memory amount (examples: 512M, 1G, 1048576)")]
    Memory(String),
}

/// Millicores from `500m`, `0.5` or `2`.
pub fn parse_cpu(s: &str) -> Result<u32, QuantityError> {
    let bad = || QuantityError::Cpu(s.to_owned());
    let millis = if let Some(m) = s.strip_suffix('m') {
        digits(m).ok_or_else(bad)?
    } else {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if frac.len() > 3 || (whole.is_empty() && frac.is_empty()) {
            return Err(bad());
        }
        let whole = if whole.is_empty() {
            0
        } else {
            digits(whole).ok_or_else(bad)?
        };
        let frac = if frac.is_empty() {
            0
        } else {
            digits(frac).ok_or_else(bad)? * 10u64.pow(3 - frac.len() as u32)
        };
        whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(bad)?
    };
    u32::try_from(millis)
        .ok()
        .filter(|&m| m > 0)
        .ok_or_else(bad)
}

/// Bytes from `512M`, `1Gi`, `4096`.
pub fn parse_memory(s: &str) -> Result<u64, QuantityError> {
    let bad = || QuantityError::Memory(s.to_owned());
    let t = s.strip_suffix(['i', 'B']).unwrap_or(s);
    let (number, shift) = match t.char_indices().last() {
        Some((at, 'K' | 'k')) => (&t[..at], 10),
        Some((at, 'M')) => (&t[..at], 20),
        Some((at, 'G')) => (&t[..at], 30),
        Some((at, 'T')) => (&t[..at], 40),
        _ if t.len() != s.len() => return Err(bad()),
        _ => (t, 0),
    };
    let n = digits(number).ok_or_else(bad)?;
    n.checked_mul(1u64 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(bad)
}

/// A plain decimal number (ASCII digits only, no sign).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `1.5G`-style text for a byte count, for tables.
pub fn show_memory(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            let tenths = bytes * 10 / size;
            return if tenths.is_multiple_of(10) {
                format!("{}{unit}", tenths / 10)
            } else {
                format!("{}.{}{unit}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{bytes}B")
}

/// `500m` or `2` for millicores, for tables.
pub fn show_cpu(millicores: u32) -> String {
    if millicores.is_multiple_of(1000) {
        (millicores / 1000).to_string()
    } else {
        format!("{millicores}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_amounts() {
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu(".25"), Ok(250));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("1.125"), Ok(1125));
        for bad in [
            "",
            "m",
            "0",
            "0m",
            "-1",
            "1.2345",
            "1e3",
            "abc",
            "99999999999",
            " 1",
        ] {
            assert!(parse_cpu(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory_amounts() {
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert_eq!(parse_memory("512M"), Ok(512 << 20));
        assert_eq!(parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(parse_memory("1GB"), Ok(1 << 30));
        assert_eq!(parse_memory("2k"), Ok(2048));
        for bad in [
            "",
            "M",
            "0",
            "1.5G",
            "-1M",
            "1X",
            "1i",
            "99999999999T",
            "1 G",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shown_amounts() {
        assert_eq!(show_memory(512 << 20), "512M");
        assert_eq!(show_memory(3 << 29), "1.5G");
        assert_eq!(show_memory(12), "12B");
        assert_eq!(show_cpu(500), "500m");
        assert_eq!(show_cpu(2000), "2");
    }
}
