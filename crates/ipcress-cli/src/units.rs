//! Parsing of the human units on the command line: sizes, ages, file modes,
//! start positions; and formatting them back for people.

use std::time::Duration;

/// Parse a size: a number with an optional unit, all powers of 1024:
/// `4096`, `4K`, `4KB`, `4KiB`, `64M`, `1G`, `1T` (case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "bad size {s:?}: expected a number with an optional unit K, M, G or T \
             (powers of 1024; KiB, KB and K are the same)"
        )
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Parse a record size for `--record-size`: a size (`230400`, `6M`) from
/// 1 byte to 1 GiB (one record is read into memory before it is sent).
pub fn parse_record_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n == 0 || n > 1 << 30 {
        return Err(format!("bad record size {s:?}: expected 1 byte to 1G"));
    }
    Ok(n as usize)
}

/// Parse an age: a number with a unit `ms`, `s`, `m` (minutes), `h`, `d`
/// or `w`: `500ms`, `30s`, `10m`, `2h`, `7d`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad age {s:?}: expected a number with a unit ms, s, m, h, d or w");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = unit_ms(unit).ok_or_else(bad)?;
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(bad)
}

/// Milliseconds in one of the time units ages and `--since` take.
pub fn unit_ms(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    })
}

/// What `--retain` keeps: a byte count or an age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    /// Keep at least this many newest bytes.
    Bytes(u64),
    /// Drop data older than this.
    Age(Duration),
}

/// `--retain SIZE|AGE`: an age when the unit is an age unit (note `m` is
/// minutes; write `M` or `MiB` for mebibytes), else a size.
pub fn parse_retain(s: &str) -> Result<Retain, String> {
    if let Ok(d) = parse_age(s) {
        return Ok(Retain::Age(d));
    }
    parse_size(s).map(Retain::Bytes).map_err(|_| {
        format!(
            "bad retention {s:?}: expected a size (64M, 1G) or an age (10m, 2h, 7d; \
             lower-case m is minutes)"
        )
    })
}

/// An octal file mode such as `0660` or `660`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("bad mode {s:?}: expected an octal mode such as 0600 or 0660"))
}

/// Where a consumer starts.
pub fn parse_from(s: &str) -> Result<ipcress::StartAt, String> {
    match s {
        "start" | "begin" | "beginning" => Ok(ipcress::StartAt::Start),
        "end" | "tail" => Ok(ipcress::StartAt::End),
        _ => s
            .parse::<u64>()
            .map(ipcress::StartAt::Position)
            .map_err(|_| {
                format!("bad start {s:?}: expected start, end or a position (a byte offset)")
            }),
    }
}

/// A stream or consumer name, checked like the library does.
pub fn parse_name(s: &str) -> Result<String, String> {
    ipcress::validate_name(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// How sizes are shown everywhere: binary units (KiB, MiB, ...), one
/// decimal where it matters (`1.5 GiB`, `64 MiB`, `12 B`), by `humansize`.
fn binary_1() -> humansize::FormatSizeOptions {
    humansize::BINARY.decimal_places(1).decimal_zeroes(0)
}

/// `1.5 GiB`, `64 MiB`, `12 B`.
pub fn human_bytes(n: u64) -> String {
    humansize::format_size(n, binary_1())
}

/// A rate of bytes, in the same units as sizes: `12.3 KiB/s`.
pub fn human_bytes_rate(v: f64) -> String {
    format!("{}/s", human_bytes(v.max(0.0) as u64))
}

/// A rate of records (counts, not bytes, so powers of 1000): `12.3 k`,
/// `4.5 M`.
pub fn human_rate(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.1} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok = [
            ("4096", 4096),
            ("4K", 4096),
            ("4KiB", 4096),
            ("4kb", 4096),
            ("64M", 64 << 20),
            ("64m", 64 << 20),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("2T", 2 << 40),
            ("7B", 7),
        ];
        for (s, n) in ok {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for s in [
            "",
            "M",
            "64X",
            "1.5G",
            "-1",
            "99999999999999999999",
            "16777216T",
        ] {
            assert!(parse_size(s).is_err(), "{s}");
        }
    }

    #[test]
    fn ages() {
        let ok = [
            ("500ms", 500),
            ("30s", 30_000),
            ("10m", 600_000),
            ("2h", 7_200_000),
            ("7d", 604_800_000),
            ("1w", 604_800_000),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_age(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for s in ["", "10", "10x", "h", "1.5h"] {
            assert!(parse_age(s).is_err(), "{s}");
        }
    }

    #[test]
    fn retention() {
        assert_eq!(
            parse_retain("10m"),
            Ok(Retain::Age(Duration::from_secs(600)))
        );
        assert_eq!(parse_retain("10M"), Ok(Retain::Bytes(10 << 20)));
        assert_eq!(parse_retain("1G"), Ok(Retain::Bytes(1 << 30)));
        assert!(parse_retain("soon").is_err());
    }

    #[test]
    fn modes_and_starts() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert_eq!(parse_from("start"), Ok(ipcress::StartAt::Start));
        assert_eq!(parse_from("end"), Ok(ipcress::StartAt::End));
        assert_eq!(parse_from("128"), Ok(ipcress::StartAt::Position(128)));
        assert!(parse_from("middle").is_err());
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn sizes_and_byte_rates_are_shown_in_binary_units() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes_rate(12_595.2), "12.3 KiB/s");
        assert_eq!(human_rate(4_500_000.0), "4.5 M");
    }
}
