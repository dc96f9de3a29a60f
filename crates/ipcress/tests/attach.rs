//! What a process pays to attach to a ring: it faults in a bounded window
//! ahead of where it writes or reads, never the whole ring, and the window
//! moves along so that a full lap still goes through (children are real
//! processes; the test binary re-runs itself).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use ipcress::{StartAt, Stream, StreamOptions};

/// Shared-memory pages this process has mapped, in KiB (RssShmem).
fn rss_shmem_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("RssShmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssShmem in /proc/self/status")
}

/// Entry point of every child process; a no-op in the parent.
#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    let s = Stream::open_in(&PathBuf::from(env("ROOT")), &env("STREAM")).unwrap();
    match role.as_str() {
        // A short-lived producer and reader: one record each way.
        "one_record" => {
            let mut c = s.subscribe(StartAt::Start).unwrap();
            let mut p = s.producer().unwrap();
            p.send(b"x").unwrap();
            assert_eq!(c.recv().unwrap().bytes().unwrap(), b"x");
            println!("RESULT {}", rss_shmem_kib());
        }
        // Two laps of the ring: every record comes back intact.
        "laps" => {
            let cap = s.capacity().unwrap();
            let mut c = s.subscribe(StartAt::End).unwrap();
            let mut p = s.producer().unwrap();
            let rec = vec![0x5au8; 60_000];
            let n = (2 * cap / rec.len() as u64) as usize;
            for i in 0..n {
                let mut r = rec.clone();
                r[..8].copy_from_slice(&(i as u64).to_le_bytes());
                p.send(&r).unwrap();
                let m = c.recv().unwrap();
                assert_eq!(m.bytes().unwrap(), &r[..], "record {i}");
            }
            println!("RESULT {} {}", n, rss_shmem_kib());
        }
        r => panic!("unknown role {r}"),
    }
}

fn run(root: &TempRoot, stream: &str, role: &str) -> Vec<String> {
    let child = spawn_child(
        role,
        &[
            ("ROOT", root.path().display().to_string()),
            ("STREAM", stream.to_string()),
        ],
    );
    results(&wait_with_watchdog(child, Duration::from_secs(300)).stdout)
}

/// A producer and a subscriber that move one record through a 256 MiB ring
/// map a few MiB of it, not the ring (they used to fault in all of it,
/// which made `echo x | ipcress put r` take seconds on a 1 GiB ring).
#[test]
fn attaching_to_a_large_ring_faults_in_a_bounded_window() {
    let root = TempRoot::new("attach");
    Stream::create_in(root.path(), "big", &StreamOptions::ring(256 << 20)).unwrap();
    let r = run(&root, "big", "one_record");
    let kib: u64 = r[0].parse().unwrap();
    assert!(
        kib <= 8 << 10,
        "a one-record process mapped {kib} KiB of a 256 MiB ring"
    );
}

/// The window moves along: two full laps of a 64 MiB ring with 64
/// segments read back intact, and by then every page is mapped.
#[test]
fn the_window_moves_along_over_laps() {
    let root = TempRoot::new("attach-laps");
    Stream::create_in(
        root.path(),
        "r",
        &StreamOptions::ring(64 << 20).segments(64),
    )
    .unwrap();
    let r = run(&root, "r", "laps");
    let v: Vec<u64> = r[0].split(' ').map(|x| x.parse().unwrap()).collect();
    assert!(v[0] > 2000, "{v:?}");
    assert!(
        v[1] >= 64 << 10,
        "after two laps the whole ring is mapped: {v:?}"
    );
}
