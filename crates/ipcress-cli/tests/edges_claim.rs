//! Crash-safe at the edges (issue 12), through the real binary: a position
//! given by the user is checked before anything is read or written.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn get_from_a_position_inside_a_record_is_refused() {
    let _w = Watchdog::new("get_from_inside", Duration::from_secs(300));
    let root = Root::new("frompos");
    root.ok(&["create", "s", "--ring", "64K"]);
    let line = "x".repeat(100);
    let input = format!("{line}\n{line}\n{line}\n");
    root.ok_in(&["put", "s"], input.as_bytes());
    let data = std::fs::read(root.path().join("s/data")).unwrap();
    for pos in ["8", "16", "64", "120"] {
        let o = root.run(&["get", "s", "--from", pos]);
        assert_ne!(o.code(), 0, "--from {pos} was accepted: {}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
        assert!(o.stderr.contains("inside a record"), "{}", o.stderr);
        assert!(o.stdout.is_empty());
    }
    assert!(std::fs::read(root.path().join("s/data")).unwrap() == data);
    // A frame boundary (the second record: a 16-byte header, the 8-byte
    // commit time and 100 bytes, rounded to 128).
    assert_eq!(
        root.ok(&["get", "s", "--from", "128"]),
        format!("{line}\n{line}\n").as_bytes()
    );
    assert_eq!(root.ok(&["get", "s"]), input.as_bytes());
}
