//! A 1 GiB file (256 MiB with IPCRESS_QUICK) through a 64 MiB ring with
//! `put --whole` and `get --whole`: same SHA-256 at both ends.

mod common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

#[test]
fn whole_file_larger_than_the_ring_round_trips() {
    let _w = Watchdog::new("whole_file_larger_than_the_ring", Duration::from_secs(900));
    let size: usize = if std::env::var_os("IPCRESS_QUICK").is_some() {
        256 << 20
    } else {
        1 << 30
    };
    let root = Root::new("big");
    let files = Root::new("big-input");
    let input = files.path().join("input.bin");
    let expected = {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x1b5);
        let mut h = Sha256::new();
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..size >> 20 {
            rng.fill_bytes(&mut chunk);
            h.update(&chunk);
            f.write_all(&chunk).unwrap();
        }
        f.flush().unwrap();
        h.finalize()
    };
    root.ok(&["create", "s", "--ring", "64M"]);
    let mut get = Bg::spawn({
        let mut c = root.cmd(&["get", "s", "--whole", "--count", "1"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    });
    let mut out = get.child.stdout.take().unwrap();
    let hasher = std::thread::spawn(move || {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n;
        }
        (h.finalize(), total)
    });
    root.await_consumers("s", 1);
    let put = run(
        root.cmd(&["put", "s", "--whole", input.to_str().unwrap()]),
        None,
        Duration::from_secs(600),
    );
    put.assert_ok(&["put"]);
    let (got, total) = hasher.join().unwrap();
    let st = get.wait(Duration::from_secs(600));
    assert!(st.success(), "get: {}", get.stderr());
    assert_eq!(total, size);
    assert_eq!(got, expected, "SHA-256 differs");
    assert!(root.stat("s")["tail"].as_u64().unwrap() > size as u64);
}
