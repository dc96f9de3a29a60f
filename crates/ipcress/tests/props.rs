//! Property tests: random frames round-trip; random damage to the shared
//! files is always detected or rejected, never a panic, never wrong bytes.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use common::TempRoot;
use ipcress::{Checksum, Compression, Error, StartAt, Stream, StreamOptions};
use proptest::prelude::*;

fn messages() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 64..3000),
            // Compressible.
            (1usize..4000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        ],
        1..60,
    )
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd(1))
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_frames_round_trip(
        msgs in messages(),
        cap_shift in 15u32..18,
        seg_shift in 1u32..4,
        crc in any::<bool>(),
        comp in compression(),
    ) {
        let root = TempRoot::new("prop");
        let opts = StreamOptions::ring(1 << cap_shift)
            .segments(1 << seg_shift)
            .checksum(if crc { Checksum::Crc32c } else { Checksum::None })
            .compression(comp);
        let s = Stream::create_in(root.path(), "s", &opts).unwrap();
        let mut c = s.subscribe(StartAt::Start).unwrap();
        let mut p = s.producer().unwrap();
        let max = s.max_message_len();
        for m in &msgs {
            if m.len() <= max {
                p.send(m).unwrap();
            } else {
                let mut w = p.writer().unwrap();
                std::io::Write::write_all(&mut w, m).unwrap();
                w.finish().unwrap();
            }
            let got = c.recv().unwrap().to_vec().unwrap();
            prop_assert_eq!(&got, m);
        }
        prop_assert!(c.try_recv().unwrap().is_none());
    }

    #[test]
    fn random_damage_is_detected(
        msgs in messages(),
        damage in prop::collection::vec((any::<u32>(), 1u8..=255), 1..8),
        comp in compression(),
    ) {
        let root = TempRoot::new("dmg");
        let opts = StreamOptions::ring(1 << 17).compression(comp);
        let s = Stream::create_in(root.path(), "s", &opts).unwrap();
        let mut p = s.producer().unwrap();
        let mut by_pos = HashMap::new();
        for m in &msgs {
            by_pos.insert(p.send(m).unwrap(), m.clone());
        }
        let tail = s.tail();
        let f = std::fs::OpenOptions::new().read(true).write(true)
            .open(root.path().join("s").join("data")).unwrap();
        for (off, x) in &damage {
            let off = *off as u64 % tail.max(1);
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, off).unwrap();
            b[0] ^= x;
            f.write_all_at(&b, off).unwrap();
        }
        let mut c = s.subscribe(StartAt::Start).unwrap();
        for _ in 0..msgs.len() + 4 {
            match c.try_recv() {
                Ok(Some(m)) => {
                    let pos = m.position();
                    let want = by_pos.get(&pos);
                    prop_assert!(want.is_some(), "phantom record at {}", pos);
                    let got = m.to_vec();
                    match got {
                        Ok(got) => prop_assert_eq!(&got, want.unwrap()),
                        Err(Error::Corrupt { .. } | Error::Decode { .. } | Error::Aborted { .. }) => break,
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                Ok(None) => break,
                Err(Error::Corrupt { .. } | Error::Decode { .. } | Error::Lagged { .. }) => break,
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
        }
    }
}

#[test]
fn damaged_meta_file_is_rejected() {
    let root = TempRoot::new("meta");
    drop(Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 16)).unwrap());
    let path = root.path().join("s").join("meta");
    let orig = std::fs::read(&path).unwrap();
    for off in [0usize, 9, 13, 17, 21, 25, 29, 33, 41, 81, 120, 125] {
        let mut b = orig.clone();
        b[off] ^= 0x5A;
        std::fs::write(&path, &b).unwrap();
        match Stream::open_in(root.path(), "s") {
            Err(Error::Corrupt { .. } | Error::Incompatible { .. }) => {}
            Err(e) => panic!("byte {off}: unexpected error {e}"),
            Ok(_) => panic!("byte {off}: damage not detected"),
        }
    }
    // Truncated meta file.
    std::fs::write(&path, &orig[..100]).unwrap();
    assert!(matches!(
        Stream::open_in(root.path(), "s"),
        Err(Error::Corrupt { .. })
    ));
}
