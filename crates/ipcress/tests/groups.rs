//! Work-sharing groups and consumer deaths, with real processes and real
//! SIGKILLs: every record to exactly one member (once more only for the
//! run a killed member held), fragmented messages delivered whole after a
//! kill, records a member cannot decode left for the group. The test
//! binary re-runs itself as children (`child_main` dispatches on a role).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use ipcress::{From, Stream, StreamOptions};

const WATCHDOG: Duration = Duration::from_secs(300);

fn open() -> Stream {
    Stream::open_in(&PathBuf::from(env("ROOT")), &env("STREAM")).unwrap()
}

fn base_env(root: &TempRoot, stream: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ROOT", root.path().display().to_string()),
        ("STREAM", stream.to_string()),
    ]
}

/// The next `RESULT` line a child prints, waited for under a watchdog.
fn read_result_line(child: &mut std::process::Child) -> String {
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    std::thread::spawn(move || {
        for _ in 0..(WATCHDOG.as_millis() / 50) {
            if d2.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("watchdog: killing child {pid}");
        unsafe_kill(pid, 9);
    });
    let out = child.stdout.as_mut().unwrap();
    let mut r = BufReader::new(out);
    let mut line = String::new();
    let got = loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "child exited early");
        if let Some(i) = line.find("RESULT ") {
            break line[i + 7..].trim_end().to_string();
        }
    };
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    got
}

/// A big message: `payload` content of `len` bytes for (9, seq).
fn big(seq: u64, len: usize) -> Vec<u8> {
    payload(9, seq, len)
}

/// Small records 0 and 2 around a fragmented record 1 of `big_len` bytes.
fn write_small_big_small(s: &Stream, big_len: usize) {
    let mut p = s.producer().unwrap();
    p.send(&payload(9, 0, 100)).unwrap();
    let mut w = p.writer().unwrap();
    w.write_all(&big(1, big_len)).unwrap();
    w.finish().unwrap();
    p.send(&payload(9, 2, 100)).unwrap();
}

/// Entry point of every child process; a no-op in the parent.
#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        // Read record 0, then start streaming record 1 (fragmented) and
        // stop half-way, waiting to be killed.
        "durable_mid_message" | "member_mid_message" => {
            let s = open();
            let mut c = if role == "durable_mid_message" {
                s.consumer("d").unwrap()
            } else {
                s.group("g").unwrap()
            };
            let m = c.recv().unwrap();
            assert_eq!(check_payload(m.bytes().unwrap()).1, 0);
            let m = c.recv().unwrap();
            assert!(m.is_fragmented());
            let mut r = m.reader();
            let mut half = vec![0u8; env("HALF").parse().unwrap()];
            r.read_exact(&mut half).unwrap();
            println!("RESULT mid");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(3600));
        }
        other => panic!("unknown role {other}"),
    }
}

/// A ring of 64 segments of 4 KiB: a 24 KiB message is a dozen fragments
/// and fits well within half the ring.
fn small_segment_ring(root: &TempRoot) -> Stream {
    Stream::create_in(
        root.path(),
        "s",
        &StreamOptions::ring(256 << 10).segments(64),
    )
    .unwrap()
}

/// Issue 12 item 2: a durable consumer killed while it streams a
/// fragmented message gets the message again, whole, when it comes back.
#[test]
fn durable_killed_mid_message_gets_it_again_whole() {
    let root = TempRoot::new("durmid");
    let s = small_segment_ring(&root);
    drop(s.consumer_from("d", From::Start).unwrap());
    write_small_big_small(&s, 24 << 10);
    let mut e = base_env(&root, "s");
    e.push(("HALF", (12 << 10).to_string()));
    let mut child = spawn_child("durable_mid_message", &e);
    assert_eq!(read_result_line(&mut child), "mid");
    unsafe_kill(child.id(), 9);
    child.wait().unwrap();
    let mut c = s.consumer("d").unwrap();
    let m = c
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("a record");
    let got = m.to_vec().unwrap();
    assert_eq!(got.len(), 24 << 10, "record 1 again, whole");
    assert_eq!(check_payload(&got), (9, 1));
    let m = c
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("a record");
    assert_eq!(check_payload(m.bytes().unwrap()), (9, 2));
    drop(m);
    assert!(
        c.recv_timeout(Duration::from_millis(100))
            .unwrap()
            .is_none()
    );
}
