//! Loom models of whole streams: the real `Producer` and `Consumer` (and
//! everything under them) on in-memory rings of model memory. Run with the
//! models of `protocol/loom.rs` (docs/ARCHITECTURE.md, "Model checking").

use loom::thread;

use crate::sync::loom_model::model_bounded;
use crate::{Checksum, StartAt, Stream, StreamOptions};

/// Segment size of the models' rings (the smallest under loom).
const SEG: u64 = 64;

/// The real `Producer` and `Consumer` on an in-memory ring of two 64-byte
/// segments: a producer thread sends more than the ring holds, so it must
/// wait for the consumer (flow control through the floor), and its claims
/// cross segment ends (padding); the consumer receives every record once,
/// in order, with its bytes.
#[test]
fn loom_producer_waits_for_a_slow_consumer() {
    model_bounded("producer_waits_for_a_slow_consumer", Some(1), || {
        let opts = StreamOptions::ring(2 * SEG)
            .segments(2)
            .checksum(Checksum::None);
        let s = Stream::create_in_memory("s", &opts).unwrap();
        let mut c = s.subscribe(StartAt::Start).unwrap();
        let mut p = s.producer().unwrap();
        const N: u64 = 6; // 6 frames of 24 bytes: more than the 128-byte ring
        let producer = thread::spawn(move || {
            for v in 0..N {
                p.send(&v.to_le_bytes()).unwrap();
            }
        });
        for v in 0..N {
            let m = c.recv().unwrap();
            assert_eq!(m.to_vec().unwrap(), v.to_le_bytes(), "record {v}");
        }
        producer.join().unwrap();
    });
}

/// Two real group members share three records on an in-memory ring: each
/// record goes to exactly one of them, whatever the interleaving of their
/// claims on the group word.
#[test]
fn loom_two_members_share_a_group() {
    model_bounded("two_members_share_a_group", Some(1), || {
        let opts = StreamOptions::ring(2 * SEG)
            .segments(2)
            .checksum(Checksum::None);
        let s = Stream::create_in_memory("s", &opts).unwrap();
        let mut a = s.group("g").unwrap();
        let mut b = s.group("g").unwrap();
        let mut p = s.producer().unwrap();
        for v in 0..3u64 {
            p.send(&v.to_le_bytes()).unwrap();
        }
        let other = thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(m) = b.try_recv().unwrap() {
                got.push(u64::from_le_bytes(m.to_vec().unwrap().try_into().unwrap()));
            }
            got
        });
        let mut got = Vec::new();
        while let Some(m) = a.try_recv().unwrap() {
            got.push(u64::from_le_bytes(m.to_vec().unwrap().try_into().unwrap()));
        }
        let theirs = other.join().unwrap();
        // What one member did not get, the other did; nothing twice.
        let mut all = [got.clone(), theirs.clone()].concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            got.len() + theirs.len(),
            all.len(),
            "a record twice: {got:?} {theirs:?}"
        );
        // The other member is gone (dropped at the end of its thread): what
        // it had claimed and not read went back to the group, and a member
        // that polls again gets it. Every record, exactly once.
        while let Some(m) = a.try_recv().unwrap() {
            all.push(u64::from_le_bytes(m.to_vec().unwrap().try_into().unwrap()));
        }
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2], "first {got:?}, other {theirs:?}");
    });
}
