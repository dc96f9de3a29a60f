//! Compression and encryption end to end: across processes for every
//! combination, and tampering with encrypted frames.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use ipcress::{Compression, Error, Key, StartAt, Stream, StreamOptions};

const KEY: [u8; 32] = [0x42; 32];

fn messages() -> Vec<Vec<u8>> {
    let log = b"2026-11-21T23:59:59.123Z INFO  api request done method=GET path=/v1/items/42 status=200 dur_ms=3\n"
        .repeat(20);
    vec![
        Vec::new(),
        b"x".to_vec(),
        log,
        payload(9, 1, 20_000), // incompressible
    ]
}

fn combos() -> Vec<(Compression, bool)> {
    let mut v = Vec::new();
    for c in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
        for e in [false, true] {
            v.push((c, e));
        }
    }
    v
}

fn open_with_key(root: &std::path::Path, name: &str) -> Stream {
    let s = Stream::open_in(root, name).unwrap();
    if s.encrypted() {
        s.with_key(&Key::from_bytes(KEY)).unwrap()
    } else {
        s
    }
}

#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    let root = PathBuf::from(env("ROOT"));
    match role.as_str() {
        "write_all" => {
            for (i, _) in combos().iter().enumerate() {
                let s = open_with_key(&root, &format!("s{i}"));
                let mut p = s.producer().unwrap();
                for m in messages() {
                    p.send(&m).unwrap();
                }
                // A fragmented message of 1 MiB, written in 256 KiB fragments.
                let mut w = p.writer().unwrap();
                for k in 0..256u64 {
                    w.write_all(&payload(5, k, 4096)).unwrap();
                }
                w.finish().unwrap();
            }
            println!("RESULT ok");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn every_codec_combination_round_trips_across_processes() {
    let root = TempRoot::new("codecs");
    for (i, (c, e)) in combos().into_iter().enumerate() {
        let opts = StreamOptions::ring(4 << 20).compression(c).encrypted(e);
        drop(Stream::create_in(root.path(), &format!("s{i}"), &opts).unwrap());
    }
    let child = spawn_child("write_all", &[("ROOT", root.path().display().to_string())]);
    wait_with_watchdog(child, Duration::from_secs(120));
    for (i, (c, e)) in combos().into_iter().enumerate() {
        let s = open_with_key(root.path(), &format!("s{i}"));
        let mut con = s.subscribe(StartAt::Start).unwrap();
        for m in messages() {
            assert_eq!(
                con.recv().unwrap().to_vec().unwrap(),
                m,
                "{c} encrypted={e}"
            );
        }
        let m = con.recv().unwrap();
        assert!(m.is_fragmented());
        let mut got = Vec::new();
        m.reader().read_to_end(&mut got).unwrap();
        let want: Vec<u8> = (0..256u64).flat_map(|k| payload(5, k, 4096)).collect();
        assert_eq!(got, want, "{c} encrypted={e}");
        // Encrypted data never appears in plaintext in the shared file.
        if e {
            let data = std::fs::read(root.path().join(format!("s{i}")).join("data")).unwrap();
            let needle = b"api request done";
            assert!(!data.windows(needle.len()).any(|w| w == needle));
        }
    }
}

/// Three encrypted records; the middle one is 48 bytes of payload so that
/// its frame (16 + 8 time + 48 + 16 tag = 88 bytes) has no alignment
/// padding.
fn three_records(root: &TempRoot) -> (Stream, [u64; 3]) {
    let opts = StreamOptions::ring(1 << 16)
        .encrypted(true)
        .unblock_timeout(Duration::from_millis(50));
    let s = Stream::create_in(root.path(), "t", &opts)
        .unwrap()
        .with_key(&Key::from_bytes(KEY))
        .unwrap();
    let mut p = s.producer().unwrap();
    let a = p.send(b"first record....").unwrap();
    let b = p.send(&[0xAB; 48]).unwrap();
    let c = p.send(b"third record....").unwrap();
    (s, [a, b, c])
}

fn flip(root: &TempRoot, name: &str, off: u64, x: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.path().join(name).join("data"))
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= x;
    f.write_all_at(&b, off).unwrap();
}

#[test]
fn any_flipped_byte_fails_exactly_that_record() {
    // Every byte of the frame: header, commit time (the CRC covers it),
    // ciphertext and tag.
    for byte in 0..88u64 {
        let root = TempRoot::new("tamper");
        let (s, [a, b, c]) = three_records(&root);
        assert_eq!(b - a, 56, "layout");
        flip(&root, "t", b + byte, 0x01);
        let mut con = s.subscribe(StartAt::Start).unwrap();
        assert_eq!(con.recv().unwrap().to_vec().unwrap(), b"first record....");
        match con.recv().map(|m| m.position()) {
            Err(Error::Decode {
                position,
                ref reason,
                ..
            }) => {
                assert_eq!(position, b, "byte {byte}");
                assert!(reason.contains("authentication"), "byte {byte}: {reason}");
            }
            Err(Error::Corrupt { position, .. }) => assert_eq!(position, b, "byte {byte}"),
            other => panic!("byte {byte}: expected an error for record {b}, got {other:?}"),
        }
        con.skip_damaged().unwrap();
        let m = con.recv().unwrap();
        assert_eq!(m.position(), c, "byte {byte}");
        assert_eq!(m.to_vec().unwrap(), b"third record....");
    }
}

#[test]
fn moved_or_replayed_frames_fail_authentication() {
    let root = TempRoot::new("move");
    let (s, [a, b, c]) = three_records(&root);
    let path = root.path().join("t").join("data");
    let mut data = std::fs::read(&path).unwrap();
    // Replay record a's frame in place of record c (same length), with the
    // position field fixed up so that the header itself looks right.
    let len = (b - a) as usize;
    let frame: Vec<u8> = data[a as usize..a as usize + len].to_vec();
    data[c as usize..c as usize + len].copy_from_slice(&frame);
    let pos32 = ((c >> 3) as u32).to_le_bytes();
    data[c as usize + 12..c as usize + 16].copy_from_slice(&pos32);
    // Recompute nothing else: the CRC covers header and ciphertext only, so
    // it still matches; the AEAD nonce (stream id, position) does not.
    std::fs::write(&path, &data).unwrap();
    let mut con = s.subscribe(StartAt::Position(c)).unwrap();
    match con.recv() {
        Err(Error::Decode {
            position, reason, ..
        }) => {
            assert_eq!(position, c);
            assert!(reason.contains("authentication"), "{reason}");
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
}

#[test]
fn wrong_key_missing_key_and_open_key_file() {
    let root = TempRoot::new("keys");
    let (_s, [a, ..]) = three_records(&root);
    // Wrong key.
    let s = Stream::open_in(root.path(), "t")
        .unwrap()
        .with_key(&Key::from_bytes([1; 32]))
        .unwrap();
    let mut con = s.subscribe(StartAt::Start).unwrap();
    match con.recv() {
        Err(e @ Error::Decode { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("stream t") && msg.contains(&format!("position {a}")),
                "{msg}"
            );
            assert!(!msg.contains("4242"), "no key material in errors");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    // Missing key.
    let s = Stream::open_in(root.path(), "t").unwrap();
    match s.subscribe(StartAt::Start) {
        Err(Error::KeyRequired { stream }) => assert_eq!(stream, "t"),
        other => panic!("expected KeyRequired, got {:?}", other.map(|_| ())),
    }
    // A key file readable by others is refused.
    use std::os::unix::fs::PermissionsExt;
    let kp = root.path().join("key.bin");
    std::fs::write(&kp, KEY).unwrap();
    std::fs::set_permissions(&kp, std::fs::Permissions::from_mode(0o644)).unwrap();
    match Key::load(&kp) {
        Err(e @ ipcress::KeyError::Permissions { .. }) => {
            assert!(e.to_string().contains("0644"), "{e}")
        }
        other => panic!("expected Permissions, got {other:?}"),
    }
    std::fs::set_permissions(&kp, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Key::load(&kp).is_ok());
}
