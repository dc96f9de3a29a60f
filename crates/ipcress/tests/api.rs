//! Public-API conformance, written once and run over every storage
//! backend: a ring on files, a log of segment files, and a ring in this
//! process's memory (`Stream::create_in_memory`).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use ipcress::{Checksum, Error, Policy, StartAt, Stream, StreamOptions};

/// Where a test's stream lives.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Ring,
    Log,
    Memory,
}

use Backend::*;

/// Every backend.
const ALL: [Backend; 3] = [Ring, Log, Memory];
/// The backends of fixed capacity (a log grows instead of filling up).
const RINGS: [Backend; 2] = [Ring, Memory];

impl Backend {
    /// Stream "s" of this backend: a ring of `size` bytes (a log of
    /// segments of a quarter of it), with `tune` applied to its options.
    fn create(
        self,
        root: &TempRoot,
        size: u64,
        tune: impl Fn(StreamOptions) -> StreamOptions,
    ) -> Stream {
        match self {
            Ring => Stream::create_in(root.path(), "s", &tune(StreamOptions::ring(size))),
            Log => Stream::create_in(root.path(), "s", &tune(StreamOptions::log(size / 4))),
            Memory => Stream::create_in_memory("s", &tune(StreamOptions::ring(size))),
        }
        .unwrap()
    }

    fn tag(self) -> &'static str {
        match self {
            Ring => "ring",
            Log => "log",
            Memory => "memory",
        }
    }
}

fn same(o: StreamOptions) -> StreamOptions {
    o
}

#[test]
fn send_and_receive_in_order() {
    for b in ALL {
        let tag = b.tag();
        let root = TempRoot::new(tag);
        let s = b.create(&root, 1 << 16, same);
        let mut c = s.subscribe(StartAt::Start).unwrap();
        let mut p = s.producer().unwrap();
        for i in 0..1000u64 {
            let len = 12 + (i as usize * 37) % 900;
            p.send(&payload(1, i, len)).unwrap();
            let m = c.recv().unwrap();
            assert_eq!(check_payload(m.bytes().unwrap()), (1, i), "{tag}");
        }
        assert!(c.try_recv().unwrap().is_none());
    }
}

#[test]
fn empty_message_and_reserve() {
    for b in ALL {
        let tag = b.tag();
        let root = TempRoot::new(tag);
        let s = b.create(&root, 1 << 16, same);
        let mut c = s.subscribe(StartAt::Start).unwrap();
        let mut p = s.producer().unwrap();
        p.send(b"").unwrap();
        let mut g = p.reserve(5).unwrap();
        g.copy_from_slice(b"hello");
        let pos = g.commit().unwrap();
        // Dropped grant: aborted frame, skipped by readers.
        drop(p.reserve(100).unwrap());
        p.send(b"after").unwrap();
        assert_eq!(c.recv().unwrap().bytes().unwrap(), b"");
        let m = c.recv().unwrap();
        assert_eq!(m.position(), pos);
        assert_eq!(m.bytes().unwrap(), b"hello");
        drop(m);
        assert_eq!(c.recv().unwrap().bytes().unwrap(), b"after");
        assert!(c.try_recv().unwrap().is_none(), "{tag}");
    }
}

#[test]
fn fragmented_message_streams_through_small_ring() {
    for b in RINGS {
        fragmented_message_streams_through(b);
    }
}

fn fragmented_message_streams_through(b: Backend) {
    let root = TempRoot::new("frag");
    let s = b.create(&root, 1 << 16, same);
    let s2 = s.clone();
    let mut c = s.subscribe(StartAt::Start).unwrap();
    let total: usize = 3 << 20; // 48x the ring
    let t = std::thread::spawn(move || {
        let mut p = s2.producer().unwrap();
        p.send(b"before").unwrap();
        let mut w = p.writer().unwrap();
        let mut sent = 0usize;
        let mut i = 0u64;
        while sent < total {
            let chunk = payload(7, i, 4000.min(total - sent).max(12));
            let chunk = &chunk[..4000.min(total - sent)];
            w.write_all(chunk).unwrap();
            sent += chunk.len();
            i += 1;
        }
        w.finish().unwrap();
        p.send(b"after").unwrap();
    });
    assert_eq!(c.recv().unwrap().bytes().unwrap(), b"before");
    let m = c.recv().unwrap();
    assert!(m.is_fragmented());
    let mut r = m.reader();
    let mut got = 0usize;
    let mut buf = vec![0u8; 4000];
    let mut i = 0u64;
    loop {
        let mut n = 0;
        while n < 4000 {
            let k = r.read(&mut buf[n..]).unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        let want = payload(7, i, 4000.min(total - got).max(12));
        assert_eq!(&buf[..n], &want[..n]);
        got += n;
        i += 1;
    }
    drop(r);
    assert_eq!(got, total);
    assert_eq!(c.recv().unwrap().bytes().unwrap(), b"after");
    t.join().unwrap();
}

#[test]
fn block_policy_try_send_full_then_space() {
    for b in RINGS {
        block_policy_try_send_full_then_space_in(b);
    }
}

fn block_policy_try_send_full_then_space_in(b: Backend) {
    let root = TempRoot::new("full");
    let s = b.create(&root, 1 << 14, same);
    let mut c = s.consumer("d").unwrap();
    let mut p = s.producer().unwrap();
    let mut n = 0u64;
    loop {
        match p.try_send(&payload(1, n, 500)) {
            Ok(_) => n += 1,
            Err(Error::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(n > 10 && n < 40, "sent {n}");
    for i in 0..n {
        assert_eq!(check_payload(c.recv().unwrap().bytes().unwrap()), (1, i));
    }
    c.commit().unwrap();
    p.try_send(&payload(1, n, 500)).unwrap();
}

/// A message borrowed from a Block-policy ring is never rewritten while it
/// is held: another producer fills every other byte of the ring and is
/// then told Full. This is the rule that lets a consumer hand out the
/// mapping's bytes (ARCHITECTURE.md, "A held frame is not rewritten";
/// `storage::HeldBytes`).
#[test]
fn a_held_message_is_not_rewritten() {
    for b in RINGS {
        for kind in ["consumer", "subscriber", "group"] {
            a_held_message_is_not_rewritten_in(b, kind);
        }
    }
}

fn a_held_message_is_not_rewritten_in(b: Backend, kind: &str) {
    let root = TempRoot::new("held");
    let s = b.create(&root, 1 << 14, same);
    let mut c = match kind {
        "consumer" => s.consumer("d"),
        "subscriber" => s.subscribe(StartAt::Start),
        _ => s.group("g"),
    }
    .unwrap();
    s.producer().unwrap().send(&payload(1, 0, 500)).unwrap();
    let msg = c.recv().unwrap();
    let held = msg.bytes().unwrap();
    let before = held.to_vec();
    let sent = std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut q = s.producer().unwrap();
            for n in 1..1000 {
                match q.try_send(&payload(2, n, 500)) {
                    Ok(_) => {}
                    Err(Error::Full) => return n - 1,
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("{kind} on {b:?}: 999 records went into a 16 KiB ring past a held one")
        })
        .join()
        .unwrap()
    });
    assert!(sent > 10, "{kind} on {b:?}: only {sent} records fitted");
    assert_eq!(
        held,
        &before[..],
        "{kind} on {b:?}: the held message was rewritten"
    );
    drop(msg);
    for n in 1..=sent {
        let got = check_payload(c.recv().unwrap().bytes().unwrap());
        assert_eq!(got, (2, n), "{kind} on {b:?}");
    }
    assert!(c.try_recv().unwrap().is_none(), "{kind} on {b:?}");
}

#[test]
fn overwrite_policy_reports_lag() {
    for b in RINGS {
        overwrite_policy_reports_lag_in(b);
    }
}

fn overwrite_policy_reports_lag_in(b: Backend) {
    let root = TempRoot::new("ovw");
    let s = b.create(&root, 1 << 14, |o| o.policy(Policy::Overwrite));
    let mut c = s.subscribe(StartAt::Start).unwrap();
    let mut p = s.producer().unwrap();
    for i in 0..200 {
        p.try_send(&payload(1, i, 500)).unwrap();
    }
    match c.recv() {
        Err(Error::Lagged { skipped_bytes }) => assert!(skipped_bytes > 0),
        other => panic!("expected Lagged, got {other:?}"),
    }
    // After the lag, reads resume in order with intact data.
    let (_, first) = check_payload(c.recv().unwrap().bytes().unwrap());
    let mut last = first;
    while let Some(m) = c.try_recv().unwrap() {
        let (_, s) = check_payload(m.bytes().unwrap());
        assert_eq!(s, last + 1);
        last = s;
    }
    assert_eq!(last, 199);
}

#[test]
fn durable_consumer_resumes() {
    for b in ALL {
        let tag = b.tag();
        let root = TempRoot::new(tag);
        let s = b.create(&root, 1 << 16, same);
        let mut p = s.producer().unwrap();
        {
            let _c = s.consumer("worker").unwrap();
        }
        for i in 0..50 {
            p.send(&payload(2, i, 100)).unwrap();
        }
        {
            let mut c = s.consumer("worker").unwrap();
            for i in 0..20 {
                assert_eq!(check_payload(c.recv().unwrap().bytes().unwrap()).1, i);
            }
            c.commit().unwrap();
        }
        let mut c = s.consumer("worker").unwrap();
        for i in 20..50 {
            assert_eq!(
                check_payload(c.recv().unwrap().bytes().unwrap()).1,
                i,
                "{tag}"
            );
        }
        assert!(c.recv_timeout(Duration::from_millis(10)).unwrap().is_none());
    }
}

#[test]
fn groups_share_work_exactly_once() {
    for b in ALL {
        groups_share_work_exactly_once_in(b);
    }
}

fn groups_share_work_exactly_once_in(b: Backend) {
    let root = TempRoot::new("grp");
    let s = b.create(&root, 1 << 16, same);
    let mut a = s.group("g").unwrap();
    let mut b = s.group("g").unwrap();
    let mut p = s.producer().unwrap();
    for i in 0..300 {
        p.send(&payload(3, i, 64)).unwrap();
    }
    let mut seen = vec![0u32; 300];
    for turn in 0..1000 {
        let c = if turn % 2 == 0 { &mut a } else { &mut b };
        if let Some(m) = c.try_recv().unwrap() {
            seen[check_payload(m.bytes().unwrap()).1 as usize] += 1;
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
}

#[test]
fn codecs_round_trip() {
    use ipcress::{Compression, Key};
    for (b, comp, enc) in ALL.into_iter().flat_map(|b| {
        [Compression::None, Compression::Lz4, Compression::Zstd(3)]
            .into_iter()
            .flat_map(move |c| [(b, c, false), (b, c, true)])
    }) {
        {
            let root = TempRoot::new("codec");
            let mut s = b.create(&root, 1 << 16, |o| o.compression(comp).encrypted(enc));
            if enc {
                s = s.with_key(&Key::from_bytes([7u8; 32])).unwrap();
            }
            let mut c = s.subscribe(StartAt::Start).unwrap();
            let mut p = s.producer().unwrap();
            let line =
                b"2026-11-21T10:00:00Z INFO request served path=/api/v1/items status=200 ms=12"
                    .repeat(4);
            let msgs: Vec<Vec<u8>> = vec![vec![], b"x".to_vec(), line.clone(), payload(1, 1, 3000)];
            for m in &msgs {
                p.send(m).unwrap();
            }
            for m in &msgs {
                assert_eq!(
                    &c.recv().unwrap().to_vec().unwrap(),
                    m,
                    "{b:?} {comp} enc={enc}"
                );
            }
        }
    }
}

#[test]
fn checksum_detects_damage() {
    // Damage one byte of the commit time (the CRC covers it), then one
    // of the payload.
    for at in [16 + 3, 24 + 3] {
        let root = TempRoot::new("crc");
        let opts = StreamOptions::ring(1 << 14).checksum(Checksum::Crc32c);
        let s = Stream::create_in(root.path(), "s", &opts).unwrap();
        let mut p = s.producer().unwrap();
        let pos = p.send(b"precious data").unwrap();
        let path = root.path().join("s").join("data");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[pos as usize + at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let mut c = s.subscribe(StartAt::Start).unwrap();
        match c.recv() {
            Err(Error::Corrupt { position, .. }) => assert_eq!(position, pos),
            other => panic!("byte {at}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn names_are_validated() {
    let root = TempRoot::new("names");
    for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(200), "sp ace"] {
        assert!(matches!(
            Stream::create_in(root.path(), bad, &StreamOptions::ring(1 << 14)),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!(matches!(
        Stream::open_in(root.path(), "nope"),
        Err(Error::NotFound { .. })
    ));
    for bad in ["", "a/b", "sp ace"] {
        assert!(matches!(
            Stream::create_in_memory(bad, &StreamOptions::ring(1 << 14)),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!(matches!(
        Stream::create_in_memory("log", &StreamOptions::log(1 << 14)),
        Err(Error::InvalidOptions(_))
    ));
}

/// Two member threads racing on a small ring: every record exactly once and
/// never overwritten while a member holds it (regression for the order in
/// which producers read group words and member claims).
#[test]
fn group_members_racing_on_a_small_ring() {
    for b in RINGS {
        group_members_racing_on_a_small_ring_in(b);
    }
}

fn group_members_racing_on_a_small_ring_in(b: Backend) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let root = TempRoot::new("grprace");
    let s = b.create(&root, 1 << 16, same);
    const N: u64 = 100_000;
    let seen = Arc::new(Mutex::new(vec![0u8; N as usize]));
    let torn = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..2 {
        let mut c = s.group("g").unwrap();
        let (seen, torn) = (seen.clone(), torn.clone());
        handles.push(std::thread::spawn(move || {
            let mut local = Vec::new();
            while let Some(m) = c.recv_timeout(Duration::from_millis(500)).unwrap() {
                let b = m.bytes().unwrap();
                let seq = u64::from_le_bytes(b[..8].try_into().unwrap());
                for _ in 0..50 {
                    std::hint::spin_loop();
                }
                if u64::from_le_bytes(b[..8].try_into().unwrap()) != seq {
                    torn.fetch_add(1, Ordering::Relaxed);
                }
                local.push(seq);
            }
            let mut g = seen.lock().unwrap();
            for q in local {
                g[q as usize] += 1;
            }
        }));
    }
    let mut p = s.producer().unwrap();
    let mut buf = vec![0u8; 40];
    for i in 0..N {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        p.send(&buf).unwrap();
    }
    for h in handles {
        h.join().unwrap();
    }
    let g = seen.lock().unwrap();
    let missing = g.iter().filter(|&&x| x == 0).count();
    let dup = g.iter().filter(|&&x| x > 1).count();
    assert_eq!((missing, dup, torn.load(Ordering::Relaxed)), (0, 0, 0));
}

/// A reader waiting at the tail of a large ring must not mistake bytes of
/// the previous lap for a damaged header.
#[test]
fn paced_reader_on_a_large_ring_sees_no_false_corruption() {
    for b in RINGS {
        paced_reader_sees_no_false_corruption_in(b);
    }
}

fn paced_reader_sees_no_false_corruption_in(b: Backend) {
    let root = TempRoot::new("lap");
    let s = b.create(&root, 1 << 20, same);
    let mut c = s.subscribe(StartAt::Start).unwrap();
    let mut p = s.producer().unwrap();
    for i in 0..60_000u64 {
        p.send(&payload(1, i, 12 + (i as usize % 50))).unwrap();
        // The reader polls the tail after every record.
        assert_eq!(check_payload(c.recv().unwrap().bytes().unwrap()).1, i);
        assert!(c.try_recv().unwrap().is_none());
    }
}

/// `skip_damaged` skips only what a read reported damaged: called out of
/// turn it skips nothing. (It used to skip the sound record at the
/// consumer's position, which was then lost.)
#[test]
fn skip_damaged_out_of_turn_skips_nothing() {
    for b in ALL {
        let root = TempRoot::new(b.tag());
        let s = b.create(&root, 1 << 16, same);
        let mut c = s.subscribe(StartAt::Start).unwrap();
        let mut p = s.producer().unwrap();
        p.send(b"good one").unwrap();
        p.send(b"good two").unwrap();
        assert_eq!(c.skip_damaged().unwrap(), 0, "{b:?}");
        assert_eq!(c.recv().unwrap().to_vec().unwrap(), b"good one", "{b:?}");
        assert_eq!(c.skip_damaged().unwrap(), 0, "{b:?}");
        assert_eq!(c.recv().unwrap().to_vec().unwrap(), b"good two", "{b:?}");
    }
}

/// A user slot has four words: a fifth is refused, not wrapped onto the
/// first (it used to write word `i % 4`).
#[test]
fn user_slot_words_out_of_range_are_refused() {
    let s = Stream::create_in_memory("s", &StreamOptions::ring(1 << 16)).unwrap();
    let slot = s.user_slot("u").unwrap();
    slot.set(3, 7);
    let wrapped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| slot.set(5, 9)));
    assert!(wrapped.is_err());
    assert_eq!((slot.get(0), slot.get(1), slot.get(3)), (0, 0, 7));
}

/// Every record of a format-4 stream carries its commit time: within
/// [before its send, after its receipt], never earlier than the record
/// before it from the same producer; whatever the codecs and policy.
#[test]
fn records_carry_their_commit_time() {
    use std::time::SystemTime;
    let tunes: [fn(StreamOptions) -> StreamOptions; 4] = [
        same,
        |o| o.checksum(Checksum::None),
        |o| o.compression(ipcress::Compression::Lz4),
        |o| o.policy(Policy::Overwrite),
    ];
    for b in ALL {
        for (k, tune) in tunes.iter().enumerate() {
            let tag = format!("{}-{k}", b.tag());
            let root = TempRoot::new(&tag);
            let s = b.create(&root, 1 << 16, tune);
            assert_eq!(s.format_version(), 4);
            let mut c = s.subscribe(StartAt::Start).unwrap();
            let mut p = s.producer().unwrap();
            let mut last = SystemTime::UNIX_EPOCH;
            for i in 0..300u64 {
                let before = SystemTime::now();
                let sent = payload(1, i, 12 + (i as usize * 37) % 900);
                match i % 3 {
                    0 => drop(p.send(&sent).unwrap()),
                    1 => {
                        let mut g = p.reserve(sent.len()).unwrap();
                        g.copy_from_slice(&sent);
                        g.commit().unwrap();
                    }
                    _ => {
                        let mut w = p.writer().unwrap();
                        w.write_all(&sent).unwrap();
                        w.finish().unwrap();
                    }
                }
                let m = c.recv().unwrap().into_owned().unwrap();
                let after = SystemTime::now();
                let t = m.time().expect("a format-4 record has a time");
                assert_eq!(&*m, &sent[..], "{tag} {i}");
                assert!(before <= t && t <= after, "{tag} {i}: {t:?}");
                assert!(t >= last, "{tag} {i}: went back in time");
                last = t;
            }
        }
    }
}

/// Sends `n` messages numbered from `first` (producer 1).
fn send_batch(p: &mut ipcress::Producer, first: u64, n: u64) {
    for i in first..first + n {
        p.send(&payload(1, i, 300)).unwrap();
    }
}

/// The numbers of every message a consumer started at `from` reads.
fn numbers_from(s: &Stream, from: StartAt) -> Vec<u64> {
    let mut c = s.subscribe(from).unwrap();
    let mut got = Vec::new();
    while let Some(m) = c.try_recv().unwrap() {
        got.push(check_payload(m.bytes().unwrap()).1);
    }
    got
}

/// `StartAt::Time` starts at the first record committed at or after the
/// time, across segments; `StartAt::Last(n)` at the last n messages.
#[test]
fn start_at_a_time_or_the_last_n() {
    use std::time::{SystemTime, UNIX_EPOCH};
    for b in ALL {
        let tag = b.tag();
        let root = TempRoot::new(tag);
        // 3 batches of 40 × 300-byte records: 3 segments of 16 KiB (the
        // log's are 16 KiB too), all retained.
        let s = b.create(&root, 1 << 16, same);
        let mut p = s.producer().unwrap();
        send_batch(&mut p, 0, 40);
        std::thread::sleep(Duration::from_millis(3));
        let t1 = SystemTime::now();
        std::thread::sleep(Duration::from_millis(3));
        send_batch(&mut p, 40, 40);
        std::thread::sleep(Duration::from_millis(3));
        let t2 = SystemTime::now();
        std::thread::sleep(Duration::from_millis(3));
        send_batch(&mut p, 80, 40);
        let all: Vec<u64> = (0..120).collect();
        assert_eq!(numbers_from(&s, StartAt::Time(UNIX_EPOCH)), all, "{tag}");
        assert_eq!(numbers_from(&s, StartAt::Time(t1)), all[40..], "{tag}");
        assert_eq!(numbers_from(&s, StartAt::Time(t2)), all[80..], "{tag}");
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(
            s.subscribe(StartAt::Time(later)).unwrap().position(),
            s.tail()
        );
        assert_eq!(numbers_from(&s, StartAt::Last(5)), all[115..], "{tag}");
        assert_eq!(numbers_from(&s, StartAt::Last(41)), all[79..], "{tag}");
        assert_eq!(numbers_from(&s, StartAt::Last(1000)), all, "{tag}");
        assert_eq!(s.subscribe(StartAt::Last(0)).unwrap().position(), s.tail());
        // A durable consumer and a group start there too.
        let mut d = s.consumer_from("d", StartAt::Last(2)).unwrap();
        assert_eq!(check_payload(d.recv().unwrap().bytes().unwrap()).1, 118);
        let mut g = s.group_from("g", StartAt::Time(t2)).unwrap();
        assert_eq!(check_payload(g.recv().unwrap().bytes().unwrap()).1, 80);
        // What a reader at the start of the third batch has left to read.
        let at = s.subscribe(StartAt::Time(t2)).unwrap().position();
        let left = s.backlog(at).unwrap();
        assert_eq!(left.records, 40, "{tag}");
        assert!(left.oldest.unwrap() >= t2 && left.oldest.unwrap() <= SystemTime::now());
    }
}

/// A stream of format 3 (records without time) is still read and written:
/// 16-byte headers, no times, `StartAt::Time` refused with a clear error.
#[test]
fn format_3_streams_are_still_read_and_written() {
    for b in ALL {
        let tag = b.tag();
        let root = TempRoot::new(tag);
        let s = b.create(&root, 1 << 16, |o| o.format_version(3));
        assert_eq!(s.format_version(), 3);
        let mut p = s.producer().unwrap();
        p.send(b"abc").unwrap();
        assert_eq!(s.tail(), 24, "{tag}: a 16-byte header, 3 bytes, aligned");
        send_batch(&mut p, 0, 10);
        let mut c = s.subscribe(StartAt::Start).unwrap();
        let m = c.recv_owned().unwrap();
        assert_eq!((&*m, m.time()), (&b"abc"[..], None));
        let err = s.subscribe(StartAt::Time(std::time::SystemTime::now()));
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("format version 3"), "{msg}");
        assert_eq!(numbers_from(&s, StartAt::Last(3)), [7, 8, 9], "{tag}");
        let left = s.backlog(0).unwrap();
        assert_eq!((left.records, left.oldest), (11, None));
        if !matches!(b, Memory) {
            // Reopened from its files by this build: still format 3.
            drop((c, p, s));
            let s = Stream::open_in(root.path(), "s").unwrap();
            assert_eq!(s.format_version(), 3);
            assert_eq!(numbers_from(&s, StartAt::Last(2)), [8, 9], "{tag}");
        }
    }
}
