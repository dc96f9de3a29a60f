//! Crash-safe at the edges, the claim side (issue 12): a live grant is never
//! overwritten, user positions are validated before any read, log recovery
//! keeps records committed after a dead producer's hole, read-only opens
//! write nothing. Real processes (the test binary re-runs itself as
//! children), real signals, a watchdog on every child.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::*;
use ipcress::{Error, Policy, StartAt, Stream, StreamOptions};

const WATCHDOG: Duration = Duration::from_secs(120);

fn pattern(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

/// Wait (bounded) for `path` to exist.
fn wait_for_file(path: &Path) {
    for _ in 0..12_000 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

/// Entry point of every child process; a no-op in the parent.
#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "grant_holder" => {
            // Reserve 1000 bytes, fill them, and hold the grant until told.
            let s = open();
            let mut p = s.producer().unwrap();
            let mut g = p.reserve(1000).unwrap();
            for (i, b) in g.iter_mut().enumerate() {
                *b = pattern(i);
            }
            println!("RESULT pos {}", g.position().unwrap());
            wait_for_file(Path::new(&env("GO")));
            let changed = g
                .iter()
                .enumerate()
                .filter(|&(i, &b)| b != pattern(i))
                .count();
            println!("RESULT changed {changed}");
            match g.commit() {
                Ok(pos) => println!("RESULT committed {pos}"),
                Err(e) => println!("RESULT error {e}"),
            }
        }
        "sender" => {
            let s = open();
            let n: u64 = env("COUNT").parse().unwrap();
            let mut p = s.producer().unwrap();
            for seq in 0..n {
                p.send(&payload(2, seq, 1000)).unwrap();
            }
            println!("RESULT sent {n}");
        }
        "opener" => {
            // What `ls` and `stat` do: open, look, close.
            let s = open();
            println!(
                "RESULT {} {} {} {:?}",
                s.head(),
                s.tail(),
                s.consumers().len(),
                s.producer_totals()
            );
        }
        "reader" => {
            // `get --from start --count N` as a subscriber.
            let mut s = open();
            if s.encrypted() {
                s = s.with_key(&ipcress::Key::from_bytes(KEY)).unwrap();
            }
            let n: u64 = env("COUNT").parse().unwrap();
            let mut c = s.subscribe(StartAt::Start).unwrap();
            for i in 0..n {
                let m = c.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
                assert_eq!(check_payload(&m.to_vec().unwrap()), (1, i));
            }
            println!("RESULT read {n}");
        }
        other => panic!("unknown role {other}"),
    }
}

/// First `RESULT` line of a child, read while it runs.
fn first_result(child: &mut Child) -> (String, BufReader<std::process::ChildStdout>) {
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "child ended early");
        if let Some(i) = line.find("RESULT ") {
            return (line[i + 7..].trim().to_string(), r);
        }
    }
}

/// Producer A holds a grant; producer B (another process) writes 200 KB
/// into a 64 KiB ring. A's bytes stay A's until it commits, its commit
/// succeeds, and B waits for it instead of lapping it.
fn grant_survives(policy: Policy, subscriber: bool) {
    let root = TempRoot::new("grant");
    let cap = 1u64 << 16;
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(cap).policy(policy)).unwrap();
    let _sub = subscriber.then(|| s.subscribe(StartAt::Start).unwrap());
    let go = root.path().join("go");
    let envs = vec![
        ("ROOT", root.path().display().to_string()),
        ("STREAM", "s".to_string()),
        ("GO", go.display().to_string()),
        ("COUNT", "200".to_string()),
    ];
    let mut holder = spawn_child("grant_holder", &envs);
    let (first, mut hout) = first_result(&mut holder);
    let pos: u64 = first.strip_prefix("pos ").unwrap().parse().unwrap();
    let mut sender = spawn_child("sender", &envs);
    // Let B run until it is done (it lapped A) or stands still past the
    // point where it would have to (it waits for A).
    let mut last = 0;
    let mut still = 0;
    for _ in 0..12_000 {
        if sender.try_wait().unwrap().is_some() {
            break;
        }
        let t = s.tail();
        if t > pos + cap && t == last {
            still += 1;
            if still == 40 {
                break;
            }
        } else {
            still = 0;
        }
        last = t;
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(&go, b"").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut hout, &mut rest).unwrap();
    let out = wait_with_watchdog(holder, WATCHDOG);
    assert!(out.status.success());
    let lines: Vec<String> = results(rest.as_bytes());
    assert_eq!(
        lines,
        vec!["changed 0".to_string(), format!("committed {pos}")],
        "policy {policy:?}: the grant was overwritten while it lived"
    );
    let out = wait_with_watchdog(sender, WATCHDOG);
    assert_eq!(results(&out.stdout), vec!["sent 200".to_string()]);
}

#[test]
fn grant_survives_block_without_consumers() {
    grant_survives(Policy::Block, false);
}

#[test]
fn grant_survives_overwrite_with_subscriber() {
    grant_survives(Policy::Overwrite, true);
}

#[test]
fn grant_survives_overwrite_without_consumers() {
    grant_survives(Policy::Overwrite, false);
}

/// `try_send` behind a live grant a lap back returns `Full` instead of
/// lapping it, and succeeds again once the grant is committed.
#[test]
fn try_send_is_full_behind_a_live_grant() {
    let root = TempRoot::new("tryfull");
    let cap = 1u64 << 16;
    for policy in [Policy::Block, Policy::Overwrite] {
        let name = format!("{policy:?}");
        let s = Stream::create_in(root.path(), &name, &StreamOptions::ring(cap).policy(policy))
            .unwrap();
        let mut a = s.producer().unwrap();
        let mut b = s.producer().unwrap();
        let mut g = a.reserve(1000).unwrap();
        g.fill(0xAB);
        let pos = g.position().unwrap();
        let mut sent = 0u64;
        let full = loop {
            match b.try_send(&payload(2, sent, 1000)) {
                Ok(_) => sent += 1,
                Err(Error::Full) => break true,
                Err(e) => panic!("{e}"),
            }
            if sent == 200 {
                break false;
            }
        };
        assert!(full, "{policy:?}: try_send lapped a live grant");
        assert!(s.tail() <= pos + cap + 2048, "{policy:?}");
        assert!(g.iter().all(|&x| x == 0xAB));
        assert_eq!(g.commit().unwrap(), pos);
        b.try_send(&payload(2, sent, 1000)).unwrap();
    }
}

/// A grant whose producer is SIGKILLed is not in anybody's way: the hole
/// is the unblocker's, and other producers go on (no wait on the dead).
#[test]
fn dead_grant_does_not_hold_producers() {
    for policy in [Policy::Block, Policy::Overwrite] {
        let root = TempRoot::new("deadgrant");
        let s = Stream::create_in(
            root.path(),
            "s",
            &StreamOptions::ring(1 << 16).policy(policy),
        )
        .unwrap();
        let envs = vec![
            ("ROOT", root.path().display().to_string()),
            ("STREAM", "s".to_string()),
            ("GO", root.path().join("never").display().to_string()),
            ("COUNT", "200".to_string()),
        ];
        let mut holder = spawn_child("grant_holder", &envs);
        let _ = first_result(&mut holder);
        unsafe_kill(holder.id(), 9);
        let _ = holder.wait();
        let sender = spawn_child("sender", &envs);
        let out = wait_with_watchdog(sender, WATCHDOG);
        assert_eq!(results(&out.stdout), vec!["sent 200".to_string()]);
        assert!(s.tail() >= 200 * 1016);
    }
}

// ---- item 4: user positions are validated before any read ---------------

fn three_records(root: &Path) -> (Stream, Vec<u64>) {
    let opts = StreamOptions::ring(1 << 16).unblock_timeout(Duration::from_millis(100));
    let s = Stream::create_in(root, "s", &opts).unwrap();
    let mut p = s.producer().unwrap();
    let pos = (0..3)
        .map(|i| p.send(&payload(1, i, 1000)).unwrap())
        .collect();
    (s, pos)
}

fn read_all(s: &Stream, n: u64) {
    let mut c = s.subscribe(StartAt::Start).unwrap();
    for i in 0..n {
        let m = c
            .recv_timeout(Duration::from_secs(30))
            .unwrap()
            .expect("record");
        assert_eq!(check_payload(m.bytes().unwrap()), (1, i));
    }
    assert!(c.recv_timeout(Duration::from_millis(20)).unwrap().is_none());
}

#[test]
fn position_inside_a_record_is_refused() {
    let root = TempRoot::new("midpos");
    let (s, pos) = three_records(root.path());
    let data = std::fs::read(root.path().join("s/data")).unwrap();
    for p in [8, 16, 512, pos[1] + 8, pos[2] - 8] {
        let Err(e) = s.subscribe(StartAt::Position(p)) else {
            panic!("{p}: a position inside a record was accepted");
        };
        assert!(
            matches!(&e, Error::InvalidOptions(m) if m.contains("inside a record")),
            "{p}: {e}"
        );
        assert!(s.consumer_from("d", StartAt::Position(p)).is_err(), "{p}");
        assert!(s.group_from("g", StartAt::Position(p)).is_err(), "{p}");
    }
    // Frame boundaries are accepted.
    for (i, &p) in pos.iter().enumerate() {
        let mut c = s.subscribe(StartAt::Position(p)).unwrap();
        let m = c.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(check_payload(m.bytes().unwrap()), (1, i as u64));
    }
    assert!(std::fs::read(root.path().join("s/data")).unwrap() == data);
    read_all(&s, 3);
}

/// A damaged saved position (a durable slot patched to point inside a
/// record) makes the reader report corruption; the unblocker writes
/// nothing there.
#[test]
fn unblocker_never_writes_inside_a_record() {
    use ipcress::format::{cslot, meta};
    let root = TempRoot::new("midsaved");
    let (s, pos) = three_records(root.path());
    drop(s.consumer_from("d", StartAt::Position(pos[1])).unwrap());
    let slot = s.consumers().iter().find(|c| c.name == "d").unwrap().slot;
    drop(s);
    let meta_path = root.path().join("s/meta");
    let mut m = std::fs::read(&meta_path).unwrap();
    let off = meta::CONSUMERS + slot * 256 + cslot::POSITION;
    m[off..off + 8].copy_from_slice(&(pos[1] + 8).to_le_bytes());
    std::fs::write(&meta_path, m).unwrap();
    let data = std::fs::read(root.path().join("s/data")).unwrap();
    let s = Stream::open_in(root.path(), "s").unwrap();
    let mut c = s.consumer("d").unwrap();
    let e = c.recv_timeout(Duration::from_secs(30)).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    drop(c);
    assert!(std::fs::read(root.path().join("s/data")).unwrap() == data);
    read_all(&s, 3);
}

// ---- item 11: log recovery keeps what was committed after a hole ---------

/// A producer SIGKILLed between claim and commit leaves a hole; another
/// commits records after it; every process closes the log; the next
/// open recovers it: the hole becomes an aborted frame and the records
/// are all there, in order, byte for byte.
#[test]
fn log_recovery_keeps_records_after_a_dead_producers_hole() {
    for (tag, opts, count) in [
        ("plain", StreamOptions::log(1 << 16), 20u64),
        // The hole in the first segment, records after it in the second.
        ("twosegs", StreamOptions::log(1 << 12), 6),
    ] {
        let root = TempRoot::on_disk("logrec");
        drop(Stream::create_in(root.path(), "s", &opts).unwrap());
        let envs = vec![
            ("ROOT", root.path().display().to_string()),
            ("STREAM", "s".to_string()),
            ("GO", root.path().join("never").display().to_string()),
            ("COUNT", count.to_string()),
        ];
        let mut holder = spawn_child("grant_holder", &envs);
        let (first, _out) = first_result(&mut holder);
        let hole: u64 = first.strip_prefix("pos ").unwrap().parse().unwrap();
        let sender = spawn_child("sender", &envs);
        let out = wait_with_watchdog(sender, WATCHDOG);
        assert_eq!(results(&out.stdout), vec![format!("sent {count}")]);
        unsafe_kill(holder.id(), 9);
        let _ = holder.wait();
        // Nobody has the log open now: this open recovers it.
        let s = Stream::open_in(root.path(), "s").unwrap();
        let mut c = s.subscribe(StartAt::Start).unwrap();
        for i in 0..count {
            let m = c
                .recv_timeout(Duration::from_secs(30))
                .unwrap()
                .unwrap_or_else(|| panic!("{tag}: record {i} lost by recovery"));
            assert!(m.position() > hole, "{tag}");
            assert_eq!(check_payload(m.bytes().unwrap()), (2, i), "{tag}");
        }
        assert!(c.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
        // And the stream goes on after them.
        let mut p = s.producer().unwrap();
        let at = p.send(b"after").unwrap();
        let m = c.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
        assert_eq!((m.position(), m.bytes().unwrap()), (at, &b"after"[..]));
    }
}

// ---- item 10: read-only opens write nothing -----------------------------

const KEY: [u8; 32] = [7; 32];

/// Every file of a stream directory with its bytes.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// `ls`/`stat` (open and look) and a subscriber that reads change no byte
/// of an idle stream, an encrypted log included (opening one used to
/// move its tail to the next segment). The only exception: a subscriber
/// registers itself in a consumer slot of the meta file (so that, under
/// Block, producers do not overwrite what it reads), and frees it again.
#[test]
fn read_only_opens_change_no_byte() {
    use ipcress::format::{CONSUMER_SLOT_LEN, CONSUMER_SLOTS, meta};
    for (tag, opts) in [
        ("enclog", StreamOptions::log(1 << 16).encrypted(true)),
        ("log", StreamOptions::log(1 << 16)),
        ("ring", StreamOptions::ring(1 << 16)),
    ] {
        let root = TempRoot::new("readonly");
        let mut s = Stream::create_in(root.path(), "s", &opts).unwrap();
        if s.encrypted() {
            s = s.with_key(&ipcress::Key::from_bytes(KEY)).unwrap();
        }
        let mut p = s.producer().unwrap();
        for i in 0..5 {
            p.send(&payload(1, i, 300)).unwrap();
        }
        drop((p, s));
        let dir = root.path().join("s");
        let before = snapshot(&dir);
        let envs = vec![
            ("ROOT", root.path().display().to_string()),
            ("STREAM", "s".to_string()),
            ("COUNT", "5".to_string()),
        ];
        for _ in 0..2 {
            let out = wait_with_watchdog(spawn_child("opener", &envs), WATCHDOG);
            assert_eq!(results(&out.stdout).len(), 1);
            assert!(
                snapshot(&dir) == before,
                "{tag}: opening the stream to look changed it"
            );
        }
        let out = wait_with_watchdog(spawn_child("reader", &envs), WATCHDOG);
        assert_eq!(results(&out.stdout), vec!["read 5".to_string()]);
        let after = snapshot(&dir);
        assert_eq!(after.len(), before.len(), "{tag}");
        let slots = meta::CONSUMERS..meta::CONSUMERS + CONSUMER_SLOTS * CONSUMER_SLOT_LEN;
        for (path, b) in &before {
            let a = &after[path];
            if path.ends_with("meta") {
                assert_eq!(a.len(), b.len());
                // The registry generation is bumped when the slot is taken
                // and freed (producers re-read who holds them back).
                let epoch = meta::EPOCH..meta::EPOCH + 8;
                let changed: Vec<usize> = (0..a.len())
                    .filter(|i| !slots.contains(i) && !epoch.contains(i) && a[*i] != b[*i])
                    .collect();
                assert!(
                    changed.is_empty(),
                    "{tag}: a reader changed meta outside its consumer slot: {changed:?}"
                );
            } else {
                assert!(a == b, "{tag}: a reader changed {}", path.display());
            }
        }
    }
}

/// Item 12: a header left from a lap long ago (inside padding, or in grant
/// bytes nobody wrote, a header can stay for any number of laps) must not
/// pass for one of today's. Here the ring has gone round exactly 2^16 laps
/// of 512 KiB since the record at offset 0 was written (the tail and head
/// are moved there, as 32 GiB of traffic would move them): a header whose
/// lap had 16 bits, with 32 bits of position, names that position again.
/// A reader there must wait for a new record, not deliver the old one.
#[test]
fn a_header_two_to_the_sixteen_laps_old_is_not_taken_for_new() {
    use ipcress::format::meta;
    let root = TempRoot::new("oldlap");
    let cap = 1u64 << 19;
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(cap)).unwrap();
    let old = vec![0xA5u8; 1000];
    s.producer().unwrap().send(&old).unwrap();
    drop(s);
    let later = cap << 16;
    let meta_path = root.path().join("s/meta");
    let mut m = std::fs::read(&meta_path).unwrap();
    for off in [meta::TAIL, meta::HEAD] {
        m[off..off + 8].copy_from_slice(&later.to_le_bytes());
    }
    std::fs::write(&meta_path, m).unwrap();

    let s = Stream::open_in(root.path(), "s").unwrap();
    assert_eq!((s.head(), s.tail()), (later, later));
    let mut c = s.subscribe(StartAt::Position(later)).unwrap();
    match c.recv_timeout(Duration::from_millis(300)) {
        Ok(None) => {}
        Ok(Some(m)) => panic!(
            "a record {} laps old was delivered as new ({} bytes)",
            1u32 << 16,
            m.bytes().unwrap().len()
        ),
        Err(e) => panic!("{e}"),
    }
    // The next record written there is the one read.
    let new = vec![0x5Au8; 1000];
    s.producer().unwrap().send(&new).unwrap();
    let m = c.recv_timeout(WATCHDOG).unwrap().expect("the new record");
    assert_eq!(m.bytes().unwrap(), &new[..]);
    assert!(c.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
}
