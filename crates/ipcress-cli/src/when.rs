//! Times on the command line: `get --since 10m|1h30m|RFC3339`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `--since`: an age before now (`90s`, `10m`, `1h30m`, `2d`; units ms,
/// s, m, h, d, w, several in a row add up) or an RFC 3339 time
/// (`2026-12-01T15:30:00Z`, `2026-12-01T16:30:00.5+01:00`).
pub fn parse_since(s: &str) -> Result<SystemTime, String> {
    let t = s.trim();
    if let Some(age) = parse_compound_age(t) {
        return SystemTime::now()
            .checked_sub(age)
            .ok_or_else(|| format!("bad time {s:?}: before the epoch"));
    }
    parse_rfc3339(t).ok_or_else(|| {
        format!(
            "bad time {s:?}: expected an age (10m, 1h30m, 2d) or an RFC 3339 time \
             (2026-12-01T15:30:00Z)"
        )
    })
}

/// `1h30m`, `10m`, `500ms`: numbers each followed by a unit, added up.
fn parse_compound_age(t: &str) -> Option<Duration> {
    let mut rest = t;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = crate::units::unit_ms(&rest[..unit_len])?;
        rest = &rest[unit_len..];
        total = total.checked_add(Duration::from_millis(n.checked_mul(ms)?))?;
    }
    Some(total)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (`t` or a space for `T` too).
fn parse_rfc3339(t: &str) -> Option<SystemTime> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &t[start..i];
        if frac.is_empty() {
            return None;
        }
        let digits: String = frac.chars().chain("000000000".chars()).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    let offset_s = match t.get(i..)? {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let v = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u128 {
        parse_since(s)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    #[test]
    fn times_and_ages() {
        assert_eq!(at("1970-01-01T00:00:00Z"), 0);
        assert_eq!(at("2026-12-01T15:30:00Z"), 1_796_139_000 * 1_000_000_000);
        assert_eq!(at("2026-12-01T16:30:00.5+01:00"), 1_796_139_000_500_000_000);
        assert_eq!(at("2000-02-29 12:00:00-00:30"), 951_827_400 * 1_000_000_000);
        assert_eq!(parse_compound_age("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_compound_age("10m"), Some(Duration::from_secs(600)));
        assert_eq!(
            parse_compound_age("1s500ms"),
            Some(Duration::from_millis(1500))
        );
        for bad in [
            "",
            "10",
            "m10",
            "10x",
            "2026-13-01T00:00:00Z",
            "2026-12-01T00:00:00",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
        let ten_min = parse_since("10m").unwrap();
        let ago = SystemTime::now().duration_since(ten_min).unwrap();
        assert!(ago >= Duration::from_secs(600));
    }
}
