//! Fragmented messages larger than a quarter of a small ring, back to back.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::TempRoot;
use ipcress::{StartAt, Stream, StreamOptions};

fn data(k: u64) -> Vec<u8> {
    (0..300u64 << 10)
        .map(|i| (i * 7 + k * 13 + (i >> 11)) as u8)
        .collect()
}

#[test]
fn two_fragmented_messages_through_a_one_mib_ring() {
    let root = TempRoot::new("frag1m");
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 20)).unwrap();
    let mut c = s.subscribe(StartAt::Start).unwrap();
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        let mut p = s2.producer().unwrap();
        for k in 0..2u64 {
            let mut w = p.writer().unwrap();
            w.write_all(&data(k)).unwrap();
            w.finish().unwrap();
        }
    });
    for k in 0..2u64 {
        let m = c
            .recv_timeout(Duration::from_secs(20))
            .unwrap()
            .expect("message");
        let mut v = Vec::new();
        m.reader().read_to_end(&mut v).unwrap();
        assert_eq!(v, data(k));
    }
    t.join().unwrap();
}
