//! Group scaling, end to end: one producer process sends N records of B
//! bytes into a 64 MiB ring; a group of M member processes reads them,
//! each spending W ns of CPU per record. Prints records/s for M = 1 and
//! M = 2 (alternating, median of R runs) and the ratio, in one run.
//!
//! `cargo run --release -p ipcress --example group_scale -- N B W R`
//! (defaults: 2000000 100 0 3). Until `ipcress-bench scale` exists, this
//! is how docs/BENCHMARKS.md ("Scaling") measures groups with work per
//! record.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipcress::{Stream, StreamOptions};

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spin(ns: u64) {
    if ns == 0 {
        return;
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_nanos(ns) {
        std::hint::spin_loop();
    }
}

fn child(role: &str, root: &std::path::Path, extra: &[(&str, String)]) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env("SCALE_ROLE", role).env("SCALE_ROOT", root);
    for (k, v) in extra {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn run(members: usize, n: u64, size: u64, work: u64) -> f64 {
    let root = std::path::PathBuf::from(format!(
        "/dev/shm/ipcress-group-scale-{}-{members}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let s = Stream::create_in(&root, "s", &StreamOptions::ring(64 << 20)).unwrap();
    drop(s.group("g").unwrap());
    let mut kids: Vec<Child> = (0..members)
        .map(|_| child("member", &root, &[("SCALE_WORK", work.to_string())]))
        .collect();
    while s.consumers().iter().filter(|c| c.kind == "member").count() < members {
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    let mut p = child(
        "producer",
        &root,
        &[("SCALE_N", n.to_string()), ("SCALE_SIZE", size.to_string())],
    );
    assert!(p.wait().unwrap().success());
    let tail = s.tail();
    loop {
        let g = s
            .consumers()
            .into_iter()
            .find(|c| c.kind == "group")
            .unwrap();
        if g.position >= tail {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = start.elapsed().as_secs_f64();
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    let _ = std::fs::remove_dir_all(&root);
    n as f64 / secs
}

fn main() {
    if let Ok(role) = std::env::var("SCALE_ROLE") {
        let root = std::path::PathBuf::from(std::env::var("SCALE_ROOT").unwrap());
        let s = Stream::open_in(&root, "s").unwrap();
        if role == "producer" {
            let n: u64 = std::env::var("SCALE_N").unwrap().parse().unwrap();
            let size: usize = std::env::var("SCALE_SIZE").unwrap().parse().unwrap();
            let mut p = s.producer().unwrap();
            let rec = vec![b'x'; size];
            for _ in 0..n {
                p.send(&rec).unwrap();
            }
        } else {
            let work: u64 = std::env::var("SCALE_WORK").unwrap().parse().unwrap();
            let mut c = s.group("g").unwrap();
            let mut sum = 0u64;
            loop {
                let m = c.recv().unwrap();
                sum = sum.wrapping_add(m.bytes().map_or(0, |b| b.len() as u64));
                spin(work);
            }
        }
        return;
    }
    let n = arg(1, 2_000_000);
    let size = arg(2, 100);
    let work = arg(3, 0);
    let reps = arg(4, 3) as usize;
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        one.push(run(1, n, size, work));
        two.push(run(2, n, size, work));
    }
    one.sort_by(f64::total_cmp);
    two.sort_by(f64::total_cmp);
    let (a, b) = (one[reps / 2], two[reps / 2]);
    println!(
        "records {n} x {size} B, work {work} ns/record: group of 1 {:.2} M/s, group of 2 {:.2} M/s, ratio {:.2} (median of {reps}; runs 1: {:?}, 2: {:?})",
        a / 1e6,
        b / 1e6,
        b / a,
        one.iter()
            .map(|x| (x / 1e4).round() / 100.0)
            .collect::<Vec<_>>(),
        two.iter()
            .map(|x| (x / 1e4).round() / 100.0)
            .collect::<Vec<_>>()
    );
}
