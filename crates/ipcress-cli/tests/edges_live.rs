//! Crash-safety at the edges through the real binary (issue 12, items 5
//! and 7): a `put` blocked on a full ring ends on the first SIGTERM; `rm`
//! refuses what live processes use, and `--force` makes them stop with a
//! clear error instead of writing into removed files.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use rustix::process::Signal;

const LIMIT: Duration = Duration::from_secs(120);

/// Lines of 100 bytes (frames of 120): `n` of them.
fn lines(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let l = format!("{i:099}\n");
        v.extend_from_slice(l.as_bytes());
    }
    v
}

/// Spawn `put s` fed with `input` from a thread (which stops quietly when
/// put goes away).
fn spawn_put(root: &Root, input: Vec<u8>) -> Bg {
    let mut put = Bg::spawn({
        let mut c = root.cmd(&["put", "s"]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    });
    let mut stdin = put.child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    put
}

fn tail(root: &Root) -> u64 {
    root.stat("s")["tail"].as_u64().unwrap()
}

/// Wait until the tail stops moving at or past `at_least`.
fn await_blocked(root: &Root, at_least: u64) {
    let mut last = u64::MAX;
    for _ in 0..6000 {
        let t = tail(root);
        if t >= at_least && t == last {
            return;
        }
        last = t;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("put never filled the ring (tail {last})");
}

/// Item 5: `put` blocked on a full ring (a durable consumer that does not
/// read) ends on the first SIGTERM with exit 130, not only on a second.
#[test]
fn blocked_put_ends_on_the_first_sigterm() {
    let _w = Watchdog::new("blocked_put_ends_on_the_first_sigterm", LIMIT);
    let root = Root::new("putterm");
    root.ok(&["create", "s", "--ring", "64K"]);
    // A durable consumer at the start holds the ring.
    root.ok(&["get", "s", "--consumer", "d", "--count", "0"]);
    let mut put = spawn_put(&root, lines(2000));
    await_blocked(&root, 65536 - 120 + 1);
    put.signal(Signal::TERM);
    let st = put.wait(LIMIT);
    let err = put.stderr();
    assert_eq!(st.code(), Some(130), "put: {st:?} {err}");
    assert!(err.contains("interrupted"), "{err}");
    // What put says it sent is there, intact and in order, and nothing
    // else: the consumer reads exactly those records.
    let sent: usize = err
        .split("interrupted after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {err:?}"));
    let out = root.ok(&["get", "s", "--consumer", "d"]);
    let n = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(n, sent, "records kept");
    // A 64 KiB ring holds more than 500 of them.
    assert!(n > 500, "{n}");
    assert_eq!(&out[..], &lines(n)[..]);
}
