//! Records larger than the server's max payload travel in parts; `bridge
//! out` killed at random moments (often between the parts of a record)
//! resumes at the right part, and T still equals S.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ipcress::{Stream, StreamOptions};

/// Record `i`: 1–2.5 MiB (two or three parts at the default 1 MiB max
/// payload), its index in the first 8 bytes.
fn big(i: u64) -> Vec<u8> {
    let len = (1 << 20) + (mix_len(i) % (3 << 19)) as usize;
    let mut out: Vec<u8> = (0..len)
        .map(|j| (j as u64 ^ i.wrapping_mul(31)) as u8)
        .collect();
    out[..8].copy_from_slice(&i.to_le_bytes());
    out
}

fn mix_len(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 27)
}

#[test]
fn split_records_with_bridge_out_killed() {
    let Some(bin) = nats_server() else { return };
    let work = work_dir();
    let root = shm_dir();
    let srv = Server::single(&bin, work.path());
    // Frames of up to 4 MiB: every record is one frame, split on the wire.
    let opts = StreamOptions::log(64 << 20);
    let src = Stream::create_in(root.path(), "src", &opts).unwrap();
    let dst = Stream::create_in(root.path(), "dst", &opts).unwrap();
    let r = root.path().display().to_string();
    let url = srv.url();
    let n = 240u64;
    {
        let mut p = src.producer().unwrap();
        for i in 0..n {
            p.send(&big(i)).unwrap();
        }
    }
    let mut out = Bridge::spawn(
        "out",
        work.path(),
        &out_args(&r, &url, "split.data", "SPLIT", &["--window", "4"]),
    );
    let mut inb = Bridge::spawn(
        "in",
        work.path(),
        &in_args(&r, &url, "SPLIT", "split-in", &[]),
    );
    let mut rng = Rng(seed());
    let t0 = Instant::now();
    while out.kills < 6 {
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        out.kill();
        out.start();
        assert!(t0.elapsed() < Duration::from_secs(120), "took too long");
    }
    let mut c = dst.subscribe(ipcress::StartAt::Start).unwrap();
    for i in 0..n {
        let m = c
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
            .unwrap_or_else(|| panic!("{i} of {n} records; {}", out.tail_log()));
        let got = m.to_vec().unwrap();
        assert!(
            got == big(i),
            "record {i} differs ({} bytes, want {}); {}",
            got.len(),
            big(i).len(),
            out.tail_log()
        );
    }
    assert!(
        c.recv_timeout(Duration::from_secs(2)).unwrap().is_none(),
        "an extra record"
    );
    let log = std::fs::read_to_string(work.path().join("bridge-out.log")).unwrap();
    eprintln!(
        "{n} records of 1-2.5 MiB equal; bridge out killed {} times, resumed inside a split \
         record {} times",
        out.kills,
        log.matches("Some(Part").count()
    );
    out.stop();
    inb.stop();
}
