//! Records carry their commit time: `get --since`, `get --last`, and the
//! lag in records and seconds of `stat`, on rings and logs (retention
//! included), and on streams of the older format 3, which have no time.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const LIMIT: Duration = Duration::from_secs(180);

/// `t` as RFC 3339 in UTC with nanoseconds.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    let (days, secs) = ((d.as_secs() / 86_400) as i64, d.as_secs() % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        d.subsec_nanos()
    )
}

/// Lines `{tag}{i:05}` for i in `range`, newline-terminated.
fn lines(tag: &str, range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("{tag}{i:05}\n")).collect()
}

/// A moment strictly between what was committed before and after it.
fn moment() -> SystemTime {
    std::thread::sleep(Duration::from_millis(5));
    let t = SystemTime::now();
    std::thread::sleep(Duration::from_millis(5));
    t
}

fn get(root: &Root, args: &[&str]) -> String {
    String::from_utf8(root.ok(args)).unwrap()
}

#[test]
fn since_and_last_on_a_ring_and_a_log() {
    let _w = Watchdog::new("since_and_last_on_a_ring_and_a_log", LIMIT);
    let root = Root::new("since");
    root.ok(&["create", "r", "--ring", "1M"]);
    root.ok(&["create", "l", "--log", "--segment", "4K"]);
    for s in ["r", "l"] {
        let (a, b, c) = (lines("a", 0..300), lines("b", 0..300), lines("c", 0..5));
        root.ok_in(&["put", s], a.as_bytes());
        let t1 = moment();
        root.ok_in(&["put", s], b.as_bytes());
        let t2 = moment();
        root.ok_in(&["put", s], c.as_bytes());
        let all = format!("{a}{b}{c}");
        assert_eq!(
            get(&root, &["get", s, "--since", &rfc3339(t1)]),
            format!("{b}{c}"),
            "{s}"
        );
        assert_eq!(get(&root, &["get", s, "--since", &rfc3339(t2)]), c, "{s}");
        assert_eq!(get(&root, &["get", s, "--since", "1h"]), all, "{s}");
        assert_eq!(get(&root, &["get", s, "--since", "1h30m"]), all, "{s}");
        assert_eq!(
            get(&root, &["get", s, "--since", "2999-01-01T00:00:00Z"]),
            "",
            "{s}"
        );
        assert_eq!(
            get(&root, &["get", s, "--last", "3"]),
            lines("c", 2..5),
            "{s}"
        );
        let last7 = format!("{}{c}", lines("b", 298..300));
        assert_eq!(get(&root, &["get", s, "--last", "7"]), last7, "{s}");
        assert_eq!(get(&root, &["get", s, "--last", "100000"]), all, "{s}");
        // A durable consumer made there keeps that start.
        assert_eq!(
            get(&root, &["get", s, "--last", "1", "--consumer", "k"]),
            "c00004\n"
        );
    }
    // One clear line for a bad time; --since and --from do not mix.
    let bad = root.run(&["get", "r", "--since", "yesterday"]);
    assert_eq!(bad.code(), 2);
    assert!(
        bad.stderr.clone().contains("bad time"),
        "{}",
        bad.stderr.clone()
    );
    assert_ne!(
        root.run(&["get", "r", "--since", "1h", "--from", "end"])
            .code(),
        0
    );
}

#[test]
fn since_and_last_after_retention_dropped_old_segments() {
    let _w = Watchdog::new("since_and_last_after_retention", LIMIT);
    let root = Root::new("since-retain");
    root.ok(&["create", "l", "--log", "--segment", "4K", "--retain", "32K"]);
    // 3000 frames of 32 bytes (96 KiB): the first segments are dropped.
    let a = lines("a", 0..3000);
    root.ok_in(&["put", "l"], a.as_bytes());
    let t = moment();
    let b = lines("b", 0..500); // 16 KiB: retained whole
    root.ok_in(&["put", "l"], b.as_bytes());
    let head = root.stat("l")["head"].as_u64().unwrap();
    assert!(head >= 64 << 10, "old segments dropped (head {head})");
    assert_eq!(get(&root, &["get", "l", "--since", &rfc3339(t)]), b);
    let kept = get(&root, &["get", "l", "--since", "1h"]);
    assert!(kept.ends_with(&b) && kept.len() < a.len() + b.len());
    assert_eq!(kept, get(&root, &["get", "l", "--from", "start"]));
    let last = format!("{}{b}", lines("a", 2900..3000));
    assert_eq!(get(&root, &["get", "l", "--last", "600"]), last);
    // More than retained: from the oldest retained record.
    assert_eq!(get(&root, &["get", "l", "--last", "100000"]), kept);
}

#[test]
fn format_3_streams_are_read_without_times() {
    let _w = Watchdog::new("format_3_streams_are_read_without_times", LIMIT);
    let root = Root::new("v3");
    root.ok(&["create", "old", "--ring", "64K", "--format-version", "3"]);
    root.ok_in(&["put", "old"], b"one\ntwo\nthree\n");
    let st = root.stat("old");
    assert_eq!(st["format_version"], 3);
    // 16-byte headers, no time word.
    assert_eq!(st["tail"], 3 * 24);
    assert_eq!(get(&root, &["get", "old"]), "one\ntwo\nthree\n");
    assert_eq!(get(&root, &["get", "old", "--last", "2"]), "two\nthree\n");
    let since = root.run(&["get", "old", "--since", "10m"]);
    assert_eq!(since.code(), 1);
    let err = since.stderr.clone();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("format version 3") && err.contains("no commit time"),
        "{err}"
    );
    // Lag in records still; no lag in seconds (null).
    root.ok(&["get", "old", "--consumer", "c", "--count", "1"]);
    let c = &root.stat("old")["consumers"][0];
    assert_eq!(
        (c["lag_records"].as_u64(), c["lag_seconds"].is_null()),
        (Some(2), true)
    );
    // The default is still format 4.
    root.ok(&["create", "new", "--ring", "64K"]);
    assert_eq!(root.stat("new")["format_version"], 4);
}

#[test]
fn stat_shows_lag_in_records_and_seconds() {
    let _w = Watchdog::new("stat_shows_lag_in_records_and_seconds", LIMIT);
    let root = Root::new("lag");
    root.ok(&["create", "s", "--ring", "1M"]);
    let before = SystemTime::now();
    root.ok_in(&["put", "s"], lines("x", 0..50).as_bytes());
    root.ok(&["get", "s", "--consumer", "slow", "--count", "10"]);
    root.ok(&["get", "s", "--consumer", "done"]);
    std::thread::sleep(Duration::from_millis(50));
    let st = root.stat("s");
    let after = SystemTime::now();
    let by_name = |n: &str| {
        st["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()
            .clone()
    };
    let slow = by_name("slow");
    assert_eq!(slow["lag_records"], 40);
    assert_eq!(slow["lag_bytes"], 40 * frame_len(6));
    // Its oldest unread record was committed after `before`, at least
    // 50 ms before `stat` looked.
    let secs = slow["lag_seconds"].as_f64().unwrap();
    let most = after.duration_since(before).unwrap().as_secs_f64();
    assert!((0.05..=most).contains(&secs), "{secs} not in 0.05..={most}");
    let done = by_name("done");
    assert_eq!(
        (done["lag_records"].as_u64(), done["lag_seconds"].as_f64()),
        (Some(0), Some(0.0))
    );
    let table = get(&root, &["stat", "s", "--interval", "0"]);
    assert!(
        table.contains("LAG MSGS") && table.contains("LAG TIME"),
        "{table}"
    );
    let top = get(&root, &["top", "--once"]);
    assert!(top.contains("LAG MSGS") && top.contains(" 40 "), "{top}");
}

/// `exec` starts a new group where `get` would start a new consumer:
/// `--since` and `--last` pick the same records for its workers.
#[test]
fn exec_starts_its_group_at_a_time_or_the_last_n() {
    let _w = Watchdog::new("exec_starts_its_group_at_a_time_or_the_last_n", LIMIT);
    let root = Root::new("execsince");
    root.ok(&["create", "a", "--ring", "1M"]);
    for out in ["by-time", "by-count"] {
        root.ok(&["create", out, "--ring", "1M"]);
    }
    root.ok_in(&["put", "a"], lines("old", 0..200).as_bytes());
    let t = moment();
    root.ok_in(&["put", "a"], lines("new", 0..50).as_bytes());
    let at = rfc3339(t);
    root.ok(&[
        "exec", "--in", "a", "--out", "by-time", "--since", &at, "-n", "50", "--", "cat",
    ]);
    root.ok(&[
        "exec", "--in", "a", "--out", "by-count", "--last", "30", "-n", "30", "--", "cat",
    ]);
    let new = lines("new", 0..50);
    assert_eq!(get(&root, &["get", "by-time"]), new);
    let last30: String = new.lines().skip(20).map(|l| format!("{l}\n")).collect();
    assert_eq!(get(&root, &["get", "by-count"]), last30);
}
