//! The NATS server goes away mid-flow (SIGKILL) and comes back on the same
//! port and store: both bridges reconnect with backoff and T equals S.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ipcress::{Stream, StreamOptions};

const N: u64 = 60_000;

#[test]
fn server_killed_and_restarted() {
    let Some(bin) = nats_server() else { return };
    let work = work_dir();
    let root = shm_dir();
    let mut srv = Server::single(&bin, work.path());
    let opts = StreamOptions::ring(256 << 20).segments(4);
    let src = Stream::create_in(root.path(), "src", &opts).unwrap();
    let dst = Stream::create_in(root.path(), "dst", &opts).unwrap();
    let r = root.path().display().to_string();
    let url = srv.url();
    let mut out = Bridge::spawn(
        "out",
        work.path(),
        &out_args(&r, &url, "sr.data", "SR", &[]),
    );
    let mut inb = Bridge::spawn("in", work.path(), &in_args(&r, &url, "SR", "sr-in", &[]));
    let t0 = Instant::now();
    fill(&src, 0..N / 2);
    while dst.tail() < 1 << 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no flow; {}",
            inb.tail_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    srv.kill();
    eprintln!("server killed at {:.1} s", t0.elapsed().as_secs_f64());
    fill(&src, N / 2..N);
    std::thread::sleep(Duration::from_secs(3));
    srv.start();
    eprintln!("server restarted at {:.1} s", t0.elapsed().as_secs_f64());
    let what = || format!("{}\n{}", out.tail_log(), inb.tail_log());
    verify(&dst, N, Duration::from_secs(120), &what);
    eprintln!(
        "all {N} records equal after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    out.stop();
    inb.stop();
}
