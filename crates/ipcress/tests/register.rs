//! Registering a consumer while producers run, with real processes: a new
//! durable consumer starts at what is retained when it is registered, not
//! at a position a producer overwrote meanwhile.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use ipcress::{Error, Stream, StreamOptions};

#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        // Send 1 KiB records as fast as possible until STOP exists.
        "producer" => {
            let s = Stream::open_in(&PathBuf::from(env("ROOT")), "s").unwrap();
            let mut p = s.producer().unwrap();
            let stop = PathBuf::from(env("STOP"));
            for seq in 0..50_000_000u64 {
                p.send(&payload(1, seq, 1000)).unwrap();
                if seq % 1000 == 0 && stop.exists() {
                    break;
                }
            }
            println!("RESULT done");
        }
        other => panic!("unknown role {other}"),
    }
}

/// Chaos (seed 2): a new durable consumer made from the oldest retained
/// record while a producer laps a ring nobody holds back got `Lagged` on
/// its first read: the head passed the position it was given before its
/// slot was published.
#[test]
fn new_durable_consumer_is_not_lagged_at_birth() {
    let root = TempRoot::new("register");
    let s = Stream::create_in(
        root.path(),
        "s",
        &StreamOptions::ring(256 << 10).segments(4),
    )
    .unwrap();
    let stop = root.path().join("STOP");
    let child = spawn_child(
        "producer",
        &[
            ("ROOT", root.path().display().to_string()),
            ("STOP", stop.display().to_string()),
        ],
    );
    // The producer is lapping the ring.
    while s.tail() < 4 << 20 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut lagged = 0;
    for i in 0..500 {
        let name = format!("n{i}");
        let mut c = s.consumer(&name).unwrap();
        match c.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(_)) => {}
            Err(Error::Lagged { .. }) => lagged += 1,
            other => panic!("{name}: {:?}", other.map(|m| m.map(|m| m.position()))),
        }
        drop(c);
        s.remove_consumer(&name).unwrap();
    }
    std::fs::write(&stop, b"").unwrap();
    wait_with_watchdog(child, Duration::from_secs(60));
    assert_eq!(lagged, 0, "new consumers lagged at birth");
}
