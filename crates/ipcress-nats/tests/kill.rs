//! Both bridges killed with SIGKILL and restarted at random moments, at
//! least five times each: T still equals S exactly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ipcress::{Stream, StreamOptions};

#[test]
fn bridges_killed_and_restarted() {
    killed_and_restarted(200_000, &[]);
}

/// The same with one NATS message per record (no batches).
#[test]
fn bridges_killed_and_restarted_one_message_per_record() {
    killed_and_restarted(60_000, &["--batch-bytes", "0"]);
}

fn killed_and_restarted(n: u64, out_extra: &[&str]) {
    let Some(bin) = nats_server() else { return };
    let work = work_dir();
    let root = shm_dir();
    let srv = Server::single(&bin, work.path());
    let opts = StreamOptions::ring(256 << 20).segments(4);
    let src = Stream::create_in(root.path(), "src", &opts).unwrap();
    let dst = Stream::create_in(root.path(), "dst", &opts).unwrap();
    let r = root.path().display().to_string();
    let url = srv.url();
    let mut out = Bridge::spawn(
        "out",
        work.path(),
        &out_args(&r, &url, "kill.data", "KILL", out_extra),
    );
    let mut inb = Bridge::spawn(
        "in",
        work.path(),
        &in_args(&r, &url, "KILL", "kill-in", &[]),
    );
    // The producer writes over several seconds while the killing goes on.
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let src = src.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while i < n {
                let end = (i + 2_000).min(n);
                fill(&src, i..end);
                i = end;
                std::thread::sleep(Duration::from_millis(60));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut rng = Rng(seed());
    let t0 = Instant::now();
    while out.kills < 5 || inb.kills < 5 || !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(150 + rng.below(900)));
        let b = if out.kills < inb.kills || (out.kills == inb.kills && rng.below(2) == 0) {
            &mut out
        } else {
            &mut inb
        };
        b.kill();
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        b.start();
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "killing took too long"
        );
    }
    producer.join().unwrap();
    eprintln!(
        "killed bridge out {} times and bridge in {} times in {:.1} s",
        out.kills,
        inb.kills,
        t0.elapsed().as_secs_f64()
    );
    let what = || format!("{}\n{}", out.tail_log(), inb.tail_log());
    let aborted = verify_killed(&dst, n, Duration::from_secs(180), &what);
    eprintln!("{aborted} records aborted by a killed bridge in, then delivered whole");
    eprintln!(
        "all {n} records equal after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    out.stop();
    inb.stop();
}
