use super::*;
use crate::codec::testutil::{Rng, log_like};

const ALL: [Compression; 4] = [
    Compression::Lz4,
    Compression::Zstd(1),
    Compression::Zstd(3),
    Compression::Zstd(19),
];

fn round_trip(c: Compression, data: &[u8]) -> bool {
    let mut comp = Vec::new();
    let smaller = compress(c, data, &mut comp);
    if smaller {
        assert!(comp.len() < data.len(), "{c}: not smaller");
        let mut back = vec![1, 2, 3];
        decompress(c, &comp, &mut back, data.len()).unwrap();
        assert_eq!(back, data, "{c}: round trip mismatch");
        // Exactly-sized limit is fine, one less is refused.
        if !data.is_empty() {
            assert!(decompress(c, &comp, &mut back, data.len() - 1).is_err());
            assert!(back.is_empty());
        }
    }
    smaller
}

// -- Compression setting -------------------------------------------------

#[test]
fn compression_parse_and_display() {
    for (s, c) in [
        ("none", Compression::None),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd(3)),
        ("zstd:1", Compression::Zstd(1)),
        ("zstd:22", Compression::Zstd(22)),
        ("ZSTD:9", Compression::Zstd(9)),
    ] {
        assert_eq!(s.parse::<Compression>().unwrap(), c, "{s}");
        assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
    }
    assert_eq!(Compression::Zstd(3).to_string(), "zstd:3");
    assert_eq!(Compression::default(), Compression::None);
    for bad in [
        "", "gzip", "zstd:", "zstd:0", "zstd:23", "zstd:-1", "zstd:x", "lz4:1",
    ] {
        let e = bad.parse::<Compression>().unwrap_err();
        assert!(
            !e.to_string().is_empty() && !e.to_string().contains('\n'),
            "{bad}: {e}"
        );
    }
}

#[test]
fn compression_codes() {
    let mut all = vec![Compression::None, Compression::Lz4];
    all.extend((1..=22).map(Compression::Zstd));
    for c in all {
        let (k, l) = c.to_code();
        assert_eq!(Compression::from_code(k, l), Some(c));
    }
    assert_eq!(Compression::Lz4.to_code(), (1, 0));
    assert_eq!(Compression::Zstd(7).to_code(), (2, 7));
    for (k, l) in [
        (0, 1),
        (1, 3),
        (2, 0),
        (2, 23),
        (2, -5),
        (3, 0),
        (u32::MAX, 0),
    ] {
        assert_eq!(Compression::from_code(k, l), None, "({k}, {l})");
    }
}

// -- Compression ---------------------------------------------------------

#[test]
fn round_trips() {
    let mut rng = Rng::new(1);
    let log = log_like(500);
    let zeros = vec![0u8; 1 << 20];
    for c in ALL {
        assert!(!round_trip(c, b""), "{c}: empty must not compress");
        assert!(!round_trip(c, b"x"));
        assert!(!round_trip(c, b"hello"));
        round_trip(c, b"small record, small record, small record");
        assert!(round_trip(c, &log), "{c}: log-like data must compress");
        assert!(round_trip(c, &log[..300]), "{c}: short log must compress");
        assert!(round_trip(c, &zeros), "{c}: zeros must compress");
        for n in [6, 64, 4096, 100_000] {
            assert!(!round_trip(c, &rng.bytes(n)), "{c}: random {n} compressed");
        }
        // Mixed and odd sizes.
        for n in 0..200 {
            let mut d = log[..n * 7].to_vec();
            d.extend(rng.bytes(n % 13));
            round_trip(c, &d);
        }
    }
}

#[test]
fn none_never_compresses() {
    let mut out = vec![9];
    assert!(!compress(Compression::None, &log_like(100), &mut out));
    assert!(out.is_empty());
    let mut comp = Vec::new();
    assert!(compress(Compression::Lz4, &log_like(100), &mut comp));
    assert!(decompress(Compression::None, &comp, &mut out, 1 << 20).is_err());
}

#[test]
fn switching_zstd_levels_on_one_thread() {
    let log = log_like(200);
    let mut comp = Vec::new();
    let mut back = Vec::new();
    for level in [1, 19, 3, 3, 22, 1] {
        assert!(compress(Compression::Zstd(level), &log, &mut comp));
        // Any zstd level decodes any zstd frame.
        decompress(Compression::Zstd(1), &comp, &mut back, log.len()).unwrap();
        assert_eq!(back, log);
    }
}

#[test]
fn decompress_rejects_garbage() {
    let mut out = Vec::new();
    for c in ALL {
        for bad in [
            &b""[..],
            b"\x01",
            b"\x05\0\0",
            b"\x05\0\0\0",
            b"\x05\0\0\0hello",
        ] {
            assert!(
                decompress(c, bad, &mut out, 1 << 20).is_err(),
                "{c} {bad:?}"
            );
            assert!(out.is_empty());
        }
        // Declared length 0 is never produced by compress().
        assert!(decompress(c, b"\0\0\0\0", &mut out, 16).is_err());
        let mut empty_frame = vec![0u8; 4];
        if let Compression::Zstd(_) = c {
            empty_frame.extend(zstd::bulk::compress(b"", 3).unwrap());
        } else {
            empty_frame.push(0);
        }
        assert!(decompress(c, &empty_frame, &mut out, 16).is_err());
    }
}

#[test]
fn decompress_oversized_declared_length_does_not_allocate() {
    for c in ALL {
        let mut comp = Vec::new();
        assert!(compress(c, &log_like(100), &mut comp));
        comp[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut out = Vec::new();
        let e = decompress(c, &comp, &mut out, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        assert_eq!(out.capacity(), 0, "allocated before checking the limit");
    }
}

#[test]
fn decompress_wrong_declared_length() {
    let log = log_like(100);
    for c in ALL {
        let mut comp = Vec::new();
        assert!(compress(c, &log, &mut comp));
        let mut out = Vec::new();
        for declared in [log.len() - 1, log.len() + 1, 0] {
            let mut bad = comp.clone();
            bad[..4].copy_from_slice(&(declared as u32).to_le_bytes());
            assert!(
                decompress(c, &bad, &mut out, 1 << 20).is_err(),
                "{c} {declared}"
            );
            assert!(out.is_empty());
        }
    }
}

#[test]
fn decompress_truncated_and_mutated_never_panics() {
    let mut rng = Rng::new(7);
    let log = log_like(300);
    let max_len = log.len() * 2;
    let mut out = Vec::new();
    for c in ALL {
        let mut comp = Vec::new();
        assert!(compress(c, &log, &mut comp));
        // Every truncation of the body fails.
        for cut in 0..comp.len() {
            assert!(
                decompress(c, &comp[..cut], &mut out, max_len).is_err(),
                "{c} {cut}"
            );
        }
        // Random mutations: must not panic; any success respects the limit.
        for _ in 0..1500 {
            let mut m = comp.clone();
            match rng.below(4) {
                0 => {
                    let i = rng.below(m.len());
                    m[i] ^= 1 << rng.below(8);
                }
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(m.len());
                        m[i] = rng.next() as u8;
                    }
                }
                2 => {
                    let i = 4 + rng.below(m.len() - 4);
                    m.insert(i, rng.next() as u8);
                }
                _ => {
                    let i = 4 + rng.below(m.len() - 4);
                    let j = (i + 1 + rng.below(16)).min(m.len());
                    m.drain(i..j);
                }
            }
            match decompress(c, &m, &mut out, max_len) {
                Ok(()) => {
                    let declared = u32::from_le_bytes(m[..4].try_into().unwrap());
                    assert_eq!(out.len(), declared as usize);
                    assert!(out.len() <= max_len);
                }
                Err(_) => assert!(out.is_empty()),
            }
        }
        // Pure garbage with plausible lengths.
        for _ in 0..500 {
            let n = rng.below(64);
            let mut g = rng.bytes(n + 4);
            g[..4].copy_from_slice(&(rng.below(4096) as u32).to_le_bytes());
            let _ = decompress(c, &g, &mut out, 4096);
        }
    }
}

// -- Keys ----------------------------------------------------------------
