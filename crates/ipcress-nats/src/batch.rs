//! Several frames in one NATS message (`Ipcress-Batch: <count>`).
//!
//! `bridge out` packs consecutive frames into one message when it can, so
//! that JetStream does its per-message work (de-duplication id, expected
//! sequence, replication, ack) once per batch rather than once per record.
//! The payload is `count` entries, each:
//!
//! | bytes | field |
//! |-------|-------|
//! | 4     | data length (u32 LE) |
//! | 2     | frame flags ([`Flags::bits`], u16 LE) |
//! | 1     | 0: origin implied (the batch's source stream), 1: origin follows |
//! | 1     | 0 |
//! | 8     | implied: the frame's position in the source; else the origin position (u64 LE) |
//! | 0/16  | origin stream id (kind 1 only) |
//! | len   | data |
//!
//! The receiver trusts nothing: every length is checked against the
//! payload, the count against the header, and unknown flag bits and
//! trailing bytes are an error.

use anyhow::{bail, ensure};
use ipcress::Flags;

/// Bytes before the data of an entry with an implied origin.
pub const ENTRY_HEADER: usize = 16;
/// Extra bytes of an entry that carries its origin.
pub const ORIGIN_LEN: usize = 16;
/// At most this many frames in one batch.
pub const MAX_FRAMES: usize = 4096;

/// One frame of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Frame flags.
    pub flags: Flags,
    /// The origin stream id, when it is not the batch's source.
    pub origin: Option<[u8; 16]>,
    /// Implied origin: the position in the source; else the origin position.
    pub position: u64,
    /// The frame's data, as stored.
    pub data: &'a [u8],
}

/// Encoded size of an entry.
pub fn entry_len(data_len: usize, explicit_origin: bool) -> usize {
    ENTRY_HEADER + if explicit_origin { ORIGIN_LEN } else { 0 } + data_len
}

/// Append `e` to `buf`.
pub fn encode(buf: &mut Vec<u8>, e: &Entry<'_>) {
    let len = u32::try_from(e.data.len()).expect("a frame is shorter than 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&e.flags.bits().to_le_bytes());
    buf.push(e.origin.is_some() as u8);
    buf.push(0);
    buf.extend_from_slice(&e.position.to_le_bytes());
    if let Some(o) = &e.origin {
        buf.extend_from_slice(o);
    }
    buf.extend_from_slice(e.data);
}

/// Split a batch payload into its `count` entries.
pub fn decode(payload: &[u8], count: usize) -> anyhow::Result<Vec<Entry<'_>>> {
    ensure!(
        (1..=MAX_FRAMES).contains(&count),
        "batch of {count} frames (1..={MAX_FRAMES})"
    );
    let mut out = Vec::with_capacity(count);
    let mut rest = payload;
    for i in 0..count {
        let Some((h, tail)) = rest.split_first_chunk::<ENTRY_HEADER>() else {
            bail!("batch entry {i} of {count}: truncated header");
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let bits = u16::from_le_bytes([h[4], h[5]]);
        let Some(flags) = Flags::from_bits(bits) else {
            bail!("batch entry {i}: unknown flag bits in {bits:#06x}");
        };
        let position = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        ensure!(h[7] == 0, "batch entry {i}: reserved byte is {}", h[7]);
        let (origin, tail) = match h[6] {
            0 => (None, tail),
            1 => match tail.split_first_chunk::<ORIGIN_LEN>() {
                Some((o, t)) => (Some(*o), t),
                None => bail!("batch entry {i} of {count}: truncated origin"),
            },
            k => bail!("batch entry {i}: unknown origin kind {k}"),
        };
        ensure!(
            len <= tail.len(),
            "batch entry {i} of {count}: {len} bytes of data, {} left",
            tail.len()
        );
        let (data, tail) = tail.split_at(len);
        out.push(Entry {
            flags,
            origin,
            position,
            data,
        });
        rest = tail;
    }
    ensure!(
        rest.is_empty(),
        "batch of {count} frames: {} bytes after the last",
        rest.len()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    /// flags, origin, position, data
    type Owned = (Flags, Option<[u8; 16]>, u64, Vec<u8>);

    fn entries(seed: u64, n: usize) -> Vec<Owned> {
        let mut x = seed | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|_| {
                let len = (next() % 300) as usize;
                let origin = (next() % 3 == 0).then(|| std::array::from_fn(|i| i as u8 ^ 0x5a));
                let data = (0..len).map(|_| next() as u8).collect();
                (
                    Flags::from_bits_truncate(next() as u16),
                    origin,
                    next(),
                    data,
                )
            })
            .collect()
    }

    fn encoded(es: &[Owned]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (flags, origin, position, data) in es {
            let before = buf.len();
            let e = Entry {
                flags: *flags,
                origin: *origin,
                position: *position,
                data,
            };
            encode(&mut buf, &e);
            assert_eq!(buf.len() - before, entry_len(data.len(), origin.is_some()));
        }
        buf
    }

    #[test]
    fn roundtrip() {
        for seed in 1..50 {
            let es = entries(seed, 1 + seed as usize % 40);
            let buf = encoded(&es);
            let got = decode(&buf, es.len()).unwrap();
            assert_eq!(got.len(), es.len());
            for (g, (flags, origin, position, data)) in got.iter().zip(&es) {
                assert_eq!(g.flags, *flags);
                assert_eq!(g.origin, *origin);
                assert_eq!(g.position, *position);
                assert_eq!(g.data, &data[..]);
            }
        }
    }

    #[test]
    fn rejects_damage() {
        let es = entries(7, 5);
        let buf = encoded(&es);
        // Wrong counts.
        assert!(decode(&buf, 4).is_err(), "trailing entry");
        assert!(decode(&buf, 6).is_err(), "missing entry");
        assert!(decode(&buf, 0).is_err());
        assert!(decode(&buf, MAX_FRAMES + 1).is_err());
        // Every truncation.
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut], 5).is_err(), "cut at {cut}");
        }
        // Bad kind and reserved byte.
        let mut b = buf.clone();
        b[6] = 2;
        assert!(decode(&b, 5).is_err());
        let mut b = buf.clone();
        b[7] = 1;
        assert!(decode(&b, 5).is_err());
        // A length pointing past the end.
        let mut b = buf.clone();
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&b, 5).is_err());
        // A flag bit a raw frame does not carry (committed, checksum...).
        for bit in [0x0001u16, 0x0080, 0x0400, 0x8000] {
            let mut b = buf.clone();
            b[4..6].copy_from_slice(&(es[0].0.bits() | bit).to_le_bytes());
            let e = decode(&b, 5).unwrap_err().to_string();
            assert!(e.contains("unknown flag bits"), "{e}");
        }
    }

    #[test]
    fn entry_bytes() {
        let mut buf = Vec::new();
        let e = Entry {
            flags: Flags::BEGIN | Flags::END | Flags::COMPRESSED,
            origin: None,
            position: 0x0102,
            data: b"xy",
        };
        encode(&mut buf, &e);
        let want: &[u8] = &[
            2, 0, 0, 0, 0x1c, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, b'x', b'y',
        ];
        assert_eq!(buf, want);
        assert_eq!(decode(&buf, 1).unwrap(), [e]);
    }

    proptest::proptest! {
        #[test]
        fn prop_roundtrip(es in proptest::collection::vec(
            (proptest::num::u16::ANY.prop_map(Flags::from_bits_truncate),
             proptest::option::of(proptest::array::uniform16(proptest::num::u8::ANY)),
             proptest::num::u64::ANY,
             proptest::collection::vec(proptest::num::u8::ANY, 0..200)),
            1..30,
        )) {
            let buf = encoded(&es);
            let got = decode(&buf, es.len()).unwrap();
            proptest::prop_assert_eq!(got.len(), es.len());
            for (g, (flags, origin, position, data)) in got.iter().zip(&es) {
                proptest::prop_assert_eq!(g.flags, *flags);
                proptest::prop_assert_eq!(g.origin, *origin);
                proptest::prop_assert_eq!(g.position, *position);
                proptest::prop_assert_eq!(g.data, &data[..]);
            }
        }

        #[test]
        fn prop_any_bytes_decode_or_err(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            count in 0usize..8,
        ) {
            // Never a panic; a success accounts for every byte.
            if let Ok(es) = decode(&bytes, count) {
                let total: usize = es
                    .iter()
                    .map(|e| entry_len(e.data.len(), e.origin.is_some()))
                    .sum();
                proptest::prop_assert_eq!(total, bytes.len());
                proptest::prop_assert_eq!(es.len(), count);
            }
        }
    }

    #[test]
    fn any_bytes_never_panic() {
        let mut x = 99u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
            let _ = decode(&bytes, 1 + (x % 5) as usize);
        }
    }
}
