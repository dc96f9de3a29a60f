//! Multi-process behaviour with real processes and real SIGKILLs. The test
//! binary re-runs itself as children (`child_main` dispatches on a role).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use common::*;
use ipcress::{StartAt, Stream, StreamOptions};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const WATCHDOG: Duration = Duration::from_secs(300);

/// Entry point of every child process; a no-op in the parent.
#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "producer" => {
            let s = open();
            let id: u32 = env("ID").parse().unwrap();
            let count: u64 = env("COUNT").parse().unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(env("SEED").parse().unwrap());
            let mut p = s.producer().unwrap();
            for seq in 0..count {
                p.send(&payload(id, seq, random_len(&mut rng))).unwrap();
            }
            println!("RESULT done");
        }
        "durable" => {
            let s = open();
            let expect: u64 = env("EXPECT").parse().unwrap();
            let mut c = s.consumer(&env("NAME")).unwrap();
            let mut next: HashMap<u32, u64> = HashMap::new();
            let (mut n, mut bytes) = (0u64, 0u64);
            while n < expect {
                let m = c.recv().unwrap();
                let b = m.bytes().unwrap();
                let (p, seq) = check_payload(b);
                let want = next.entry(p).or_insert(0);
                assert_eq!(seq, *want, "producer {p}: order broken");
                *want += 1;
                n += 1;
                bytes += b.len() as u64;
            }
            c.commit().unwrap();
            assert!(c.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
            println!("RESULT {n} {bytes}");
        }
        "claim_and_hang" => {
            let s = open();
            let mut p = s.producer().unwrap();
            for seq in 0..100 {
                p.send(&payload(1, seq, 100)).unwrap();
            }
            let g = p.reserve(1000).unwrap();
            println!("RESULT claimed {}", g.position().unwrap());
            std::thread::sleep(Duration::from_secs(3600));
            drop(g);
        }
        "logging_durable" => {
            // Process each record (append its seq to a file), then let the
            // next recv commit it.
            let s = open();
            let mut c = s.consumer("worker").unwrap();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(env("LOG"))
                .unwrap();
            let total: u64 = env("EXPECT").parse().unwrap();
            loop {
                let Some(m) = c.recv_timeout(Duration::from_millis(500)).unwrap() else {
                    break;
                };
                let (_, seq) = check_payload(m.bytes().unwrap());
                // One write(2), so a kill cannot tear the line.
                f.write_all(format!("{seq}\n").as_bytes()).unwrap();
                if seq + 1 == total {
                    break;
                }
            }
            c.commit().unwrap();
            println!("RESULT end");
        }
        "member_hold" => {
            let s = open();
            let mut c = s.group("g").unwrap();
            let m = c.recv().unwrap();
            let (_, seq) = check_payload(m.bytes().unwrap());
            println!("RESULT held {seq}");
            std::thread::sleep(Duration::from_secs(3600));
        }
        "big_writer" => {
            let s = open();
            let total: u64 = env("SIZE").parse().unwrap();
            let mut p = s.producer().unwrap();
            let mut w = p.writer().unwrap();
            let mut h = Sha256::new();
            let mut chunk = vec![0u8; 1 << 20];
            let mut x: u64 = 42;
            let mut sent = 0u64;
            while sent < total {
                for v in chunk.chunks_exact_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v.copy_from_slice(&x.to_le_bytes());
                }
                let n = (total - sent).min(chunk.len() as u64) as usize;
                h.update(&chunk[..n]);
                w.write_all(&chunk[..n]).unwrap();
                sent += n as u64;
            }
            w.finish().unwrap();
            println!("RESULT {:x} {}", h.finalize(), peak_rss_kib());
        }
        "big_reader" => {
            let s = open();
            let mut c = s.subscribe(StartAt::Start).unwrap();
            let m = c.recv().unwrap();
            let mut r = m.reader();
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                total += n as u64;
            }
            println!("RESULT {:x} {} {total}", h.finalize(), peak_rss_kib());
        }
        other => panic!("unknown role {other}"),
    }
}

fn base_env(root: &TempRoot, stream: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ROOT", root.path().display().to_string()),
        ("STREAM", stream.to_string()),
    ]
}

#[test]
fn four_producers_three_durable_consumers_exactly_once() {
    let root = TempRoot::new("mp4x3");
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(16 << 20)).unwrap();
    let per: u64 = 100_000;
    // Durable consumers registered before any record: they hold the ring.
    for i in 0..3 {
        drop(s.consumer(&format!("c{i}")).unwrap());
    }
    let mut consumers = Vec::new();
    for i in 0..3 {
        let mut e = base_env(&root, "s");
        e.push(("NAME", format!("c{i}")));
        e.push(("EXPECT", (4 * per).to_string()));
        consumers.push(spawn_child("durable", &e));
    }
    let mut producers = Vec::new();
    for id in 0..4u32 {
        let mut e = base_env(&root, "s");
        e.push(("ID", id.to_string()));
        e.push(("COUNT", per.to_string()));
        e.push(("SEED", (1000 + id).to_string()));
        producers.push(spawn_child("producer", &e));
    }
    for p in producers {
        let out = wait_with_watchdog(p, WATCHDOG);
        assert_eq!(results(&out.stdout), vec!["done"]);
    }
    // The expected byte total, from the same seeds.
    let mut bytes = 0u64;
    for id in 0..4u32 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + id as u64);
        for seq in 0..per {
            bytes += payload(id, seq, random_len(&mut rng)).len() as u64;
        }
    }
    for c in consumers {
        let out = wait_with_watchdog(c, WATCHDOG);
        assert_eq!(results(&out.stdout), vec![format!("{} {bytes}", 4 * per)]);
    }
}

fn read_result_line(child: &mut std::process::Child) -> String {
    let out = child.stdout.as_mut().unwrap();
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "child exited early");
        if let Some(i) = line.find("RESULT ") {
            return line[i + 7..].trim_end().to_string();
        }
    }
}

#[test]
fn producer_killed_between_claim_and_commit_is_unblocked() {
    let root = TempRoot::new("unblock");
    let opts = StreamOptions::ring(1 << 20).unblock_timeout(Duration::from_millis(200));
    let s = Stream::create_in(root.path(), "s", &opts).unwrap();
    let mut c = s.subscribe(StartAt::Start).unwrap();
    let mut hang = spawn_child("claim_and_hang", &base_env(&root, "s"));
    let line = read_result_line(&mut hang);
    assert!(line.starts_with("claimed "), "{line}");
    // Another producer appends after the hole while the claimer is alive.
    let mut p = s.producer().unwrap();
    for seq in 0..100 {
        p.send(&payload(2, seq, 200)).unwrap();
    }
    unsafe_kill(hang.id(), 9);
    hang.wait().unwrap();
    let mut got = HashMap::new();
    while let Some(m) = c.recv_timeout(Duration::from_secs(5)).unwrap() {
        let (pid, seq) = check_payload(m.bytes().unwrap());
        let n = got.entry(pid).or_insert(0u64);
        assert_eq!(seq, *n);
        *n += 1;
        if got.get(&2) == Some(&100) {
            break;
        }
    }
    assert_eq!(got.get(&1), Some(&100), "records before the hole");
    assert_eq!(got.get(&2), Some(&100), "records after the hole");
    // The stream keeps working.
    p.send(b"still fine").unwrap();
    assert_eq!(c.recv().unwrap().bytes().unwrap(), b"still fine");
}

#[test]
fn durable_consumer_killed_resumes_without_loss() {
    let root = TempRoot::new("resume");
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 16)).unwrap();
    drop(s.consumer("worker").unwrap());
    let total: u64 = 20_000;
    let log = root.path().join("processed.log");
    let s2 = s.clone();
    let writer = std::thread::spawn(move || {
        let mut p = s2.producer().unwrap();
        for seq in 0..total {
            p.send(&payload(1, seq, 64)).unwrap();
        }
    });
    let mut e = base_env(&root, "s");
    e.push(("LOG", log.display().to_string()));
    e.push(("EXPECT", total.to_string()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut kills = 0;
    for _ in 0..5 {
        let child = spawn_child("logging_durable", &e);
        std::thread::sleep(Duration::from_millis(rng.random_range(20..120)));
        unsafe_kill(child.id(), 9);
        let _ = child.wait_with_output();
        kills += 1;
    }
    let last = spawn_child("logging_durable", &e);
    wait_with_watchdog(last, WATCHDOG);
    writer.join().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let seqs: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    let mut seen = vec![0u32; total as usize];
    for &s in &seqs {
        seen[s as usize] += 1;
    }
    let missing = seen.iter().filter(|&&n| n == 0).count();
    let dups: u32 = seen.iter().map(|&n| n.saturating_sub(1)).sum();
    assert_eq!(missing, 0, "records lost");
    // At-least-once: only the record in flight at each kill may repeat.
    assert!(dups <= kills, "{dups} duplicates after {kills} kills");
    // Processing order never goes backwards except at a restart.
    let backwards = seqs.windows(2).filter(|w| w[1] <= w[0]).count();
    assert!(backwards <= kills as usize);
}

#[test]
fn group_member_killed_while_holding_message_is_redelivered() {
    let root = TempRoot::new("grpkill");
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 20)).unwrap();
    let mut b = s.group("g").unwrap();
    let mut p = s.producer().unwrap();
    for seq in 0..50 {
        p.send(&payload(1, seq, 100)).unwrap();
    }
    let mut a = spawn_child("member_hold", &base_env(&root, "s"));
    let line = read_result_line(&mut a);
    let held: u64 = line.strip_prefix("held ").unwrap().parse().unwrap();
    unsafe_kill(a.id(), 9);
    a.wait().unwrap();
    let mut seen = vec![0u32; 50];
    while let Some(m) = b.recv_timeout(Duration::from_secs(2)).unwrap() {
        seen[check_payload(m.bytes().unwrap()).1 as usize] += 1;
        if seen.iter().all(|&n| n > 0) {
            break;
        }
    }
    assert_eq!(seen[held as usize], 1, "held message redelivered once");
    assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
}

#[test]
fn two_gib_message_through_64_mib_ring() {
    let size: u64 = if std::env::var_os("IPCRESS_QUICK").is_some() {
        256 << 20
    } else {
        2 << 30
    };
    let root = TempRoot::new("big");
    let _s = Stream::create_in(root.path(), "s", &StreamOptions::ring(64 << 20)).unwrap();
    let reader = spawn_child("big_reader", &base_env(&root, "s"));
    let mut e = base_env(&root, "s");
    e.push(("SIZE", size.to_string()));
    let writer = spawn_child("big_writer", &e);
    let w = results(&wait_with_watchdog(writer, WATCHDOG).stdout);
    let r = results(&wait_with_watchdog(reader, WATCHDOG).stdout);
    let w: Vec<&str> = w[0].split(' ').collect();
    let r: Vec<&str> = r[0].split(' ').collect();
    assert_eq!(w[0], r[0], "SHA-256 differs");
    assert_eq!(r[2], size.to_string());
    let (w_rss, r_rss): (u64, u64) = (w[1].parse().unwrap(), r[1].parse().unwrap());
    eprintln!("2 GiB message: writer peak RSS {w_rss} KiB, reader peak RSS {r_rss} KiB");
    assert!(w_rss < 256 << 10, "writer peak RSS {w_rss} KiB");
    assert!(r_rss < 256 << 10, "reader peak RSS {r_rss} KiB");
}
