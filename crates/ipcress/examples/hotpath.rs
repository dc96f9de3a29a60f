//! The send / recv hot path in one thread, for instruction counting:
//!
//! ```text
//! cargo build --release -p ipcress --example hotpath
//! valgrind --tool=callgrind target/release/examples/hotpath 200000 [reserve|send] [v3]
//! ```
//!
//! `v3` writes a stream of format version 3 (records without a time).
//!
//! Sends N 64-byte messages in batches that fit the ring, receiving each
//! batch after it is sent, so neither side ever waits. Divide the counts by
//! N for the cost per message.

use ipcress::{Checksum, StartAt, Stream, StreamOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // `reserve` as the second argument: fill grants in place instead.
    let in_place = std::env::args().nth(2).as_deref() == Some("reserve");
    let dir = std::env::temp_dir().join(format!("ipcress-hotpath-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let v3 = std::env::args().nth(3).as_deref() == Some("v3");
    let opts = StreamOptions::ring(1 << 20)
        .checksum(Checksum::None)
        .format_version(if v3 { 3 } else { 4 });
    let stream = Stream::create_in(&dir, "hot", &opts)?;
    let mut c = stream.subscribe(StartAt::Start)?;
    let mut p = stream.producer()?;
    let msg = [7u8; 64];
    let batch = 4096;
    let mut sum = 0u64;
    let mut sent = 0;
    while sent < n {
        let k = batch.min(n - sent);
        for _ in 0..k {
            if in_place {
                let mut g = p.reserve(msg.len())?;
                g.copy_from_slice(&msg);
                g.commit()?;
            } else {
                p.send(&msg)?;
            }
        }
        for _ in 0..k {
            let m = c.recv()?;
            sum += m.bytes().map_or(0, |b| b[0] as u64);
        }
        sent += k;
    }
    assert_eq!(sum, 7 * n);
    drop((c, p, stream));
    std::fs::remove_dir_all(&dir)?;
    println!("{n} messages");
    Ok(())
}
