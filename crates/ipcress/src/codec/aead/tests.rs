use super::*;
use crate::codec::key::Key;
use crate::codec::testutil::{Rng, log_like};

const SID: [u8; 16] = *b"stream-id-000001";

fn sealed(cipher: &Cipher, pos: u64, aad: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut buf = msg.to_vec();
    buf.resize(msg.len() + TAG_LEN, 0);
    cipher.seal(pos, aad, &mut buf);
    buf
}

#[test]
fn seal_open_round_trip() {
    let key = Key::from_bytes([42; 32]);
    let cipher = Cipher::new(&key, SID);
    for msg in [&b""[..], b"x", b"hello, world", &log_like(50)] {
        let aad = b"frame header bytes";
        let mut buf = sealed(&cipher, 17, aad, msg);
        if !msg.is_empty() {
            assert_ne!(&buf[..msg.len()], msg);
        }
        let n = cipher.open(17, aad, &mut buf).unwrap();
        assert_eq!(n, msg.len());
        assert_eq!(&buf[..n], msg);
    }
    // Same plaintext at two positions gives different ciphertexts.
    assert_ne!(
        sealed(&cipher, 1, b"", b"same"),
        sealed(&cipher, 2, b"", b"same")
    );
}

#[test]
fn any_flipped_bit_fails() {
    let cipher = Cipher::new(&Key::from_bytes([5; 32]), SID);
    let aad = b"hdr:v1:len=11".to_vec();
    let good = sealed(&cipher, 3, &aad, b"hello world");
    for i in 0..good.len() * 8 {
        let mut buf = good.clone();
        buf[i / 8] ^= 1 << (i % 8);
        let tag = buf[buf.len() - TAG_LEN..].to_vec();
        assert_eq!(cipher.open(3, &aad, &mut buf), Err(OpenError), "bit {i}");
        let (msg, t) = buf.split_at(buf.len() - TAG_LEN);
        assert!(
            msg.iter().all(|&b| b == 0),
            "plaintext left after a failed open"
        );
        assert_eq!(t, &tag[..], "tag changed on failed open");
    }
    for i in 0..aad.len() * 8 {
        let mut bad_aad = aad.clone();
        bad_aad[i / 8] ^= 1 << (i % 8);
        let mut buf = good.clone();
        assert_eq!(
            cipher.open(3, &bad_aad, &mut buf),
            Err(OpenError),
            "aad bit {i}"
        );
    }
    let mut buf = good.clone();
    assert_eq!(
        cipher.open(3, &aad[..aad.len() - 1], &mut buf),
        Err(OpenError)
    );
    let mut buf = good.clone();
    assert!(cipher.open(3, &aad, &mut buf).is_ok());
}

#[test]
fn wrong_position_stream_or_key_fails() {
    let key = Key::from_bytes([5; 32]);
    let cipher = Cipher::new(&key, SID);
    let good = sealed(&cipher, 100, b"aad", b"payload");
    for pos in [0, 99, 101, 100 + (1 << 32), u64::MAX] {
        let mut buf = good.clone();
        assert_eq!(
            cipher.open(pos, b"aad", &mut buf),
            Err(OpenError),
            "pos {pos}"
        );
    }
    let mut other_sid = SID;
    other_sid[15] ^= 1;
    let mut buf = good.clone();
    assert_eq!(
        Cipher::new(&key, other_sid).open(100, b"aad", &mut buf),
        Err(OpenError)
    );
    let mut buf = good.clone();
    let other_key = Cipher::new(&Key::from_bytes([6; 32]), SID);
    assert_eq!(other_key.open(100, b"aad", &mut buf), Err(OpenError));
    let mut buf = good.clone();
    assert_eq!(cipher.open(100, b"aad", &mut buf), Ok(7));
}

#[test]
fn open_short_or_truncated_buffer_fails() {
    let cipher = Cipher::new(&Key::from_bytes([5; 32]), SID);
    for n in 0..TAG_LEN {
        let mut buf = vec![0u8; n];
        assert_eq!(cipher.open(0, b"", &mut buf), Err(OpenError));
    }
    let good = sealed(&cipher, 0, b"", b"abc");
    for cut in 0..good.len() {
        let mut buf = good[..cut].to_vec();
        assert_eq!(cipher.open(0, b"", &mut buf), Err(OpenError));
    }
    let mut extended = good.clone();
    extended.push(0);
    assert_eq!(cipher.open(0, b"", &mut extended), Err(OpenError));
}

/// XChaCha20-Poly1305 as RustCrypto's `chacha20poly1305` computes it
/// with the 24-byte nonce of FORMAT.md: the construction the records
/// were sealed with before the subkey was derived once per stream.
fn reference_seal(key: &[u8; 32], origin: [u8; 16], pos: u64, aad: &[u8], msg: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(&origin);
    n[16..].copy_from_slice(&pos.to_le_bytes());
    let mut buf = msg.to_vec();
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(&XNonce::from(n), aad, &mut buf)
        .unwrap();
    buf.extend_from_slice(&tag);
    buf
}

fn reference_open(
    key: &[u8; 32],
    origin: [u8; 16],
    pos: u64,
    aad: &[u8],
    sealed: &[u8],
) -> Option<Vec<u8>> {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(&origin);
    n[16..].copy_from_slice(&pos.to_le_bytes());
    let (ct, tag) = sealed.split_at(sealed.len().checked_sub(16)?);
    let mut buf = ct.to_vec();
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(&XNonce::from(n), aad, &mut buf, Tag::from_slice(tag))
        .ok()?;
    Some(buf)
}

/// The bytes on disk are exactly XChaCha20-Poly1305's (FORMAT.md,
/// "Encryption"): for many lengths (across the 64-byte block and the
/// 16-byte Poly1305 block boundaries, and the lengths where the
/// assembly switches strategies), positions (all 64 bits), AADs, keys
/// and stream ids, our seal equals the reference byte for byte, and each
/// side opens what the other sealed.
#[test]
fn same_bytes_as_xchacha20poly1305() {
    let mut rng = Rng::new(13);
    let mut lens: Vec<usize> = (0..=300).collect();
    lens.extend([
        383, 384, 385, 511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097,
    ]);
    lens.extend([16_383, 16_384, 65_535, 65_536, 65_537, 200_000]);
    let mut checked = 0;
    for (i, &len) in lens.iter().enumerate() {
        let mut key = [0u8; 32];
        key.copy_from_slice(&rng.bytes(32));
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&rng.bytes(16));
        let pos = match i % 5 {
            0 => rng.next(),
            1 => rng.next() & 0xFFFF_FFF8,
            2 => i as u64 * 8,
            3 => u64::MAX - i as u64,
            _ => (1u64 << 32) + i as u64 * 4096,
        };
        let aad_len = [0, 1, 14, 15, 16, 17, 64][i % 7];
        let aad = rng.bytes(aad_len);
        let msg = rng.bytes(len);
        let cipher = Cipher::new(&Key::from_bytes(key), sid);
        let ours = sealed(&cipher, pos, &aad, &msg);
        let theirs = reference_seal(&key, sid, pos, &aad, &msg);
        assert_eq!(ours, theirs, "len {len} pos {pos} aad {aad_len}");
        // Each opens the other's.
        assert_eq!(
            reference_open(&key, sid, pos, &aad, &ours).as_deref(),
            Some(&msg[..])
        );
        let mut buf = theirs.clone();
        assert_eq!(cipher.open(pos, &aad, &mut buf), Ok(len));
        assert_eq!(&buf[..len], &msg[..]);
        // A record first written to another stream (bridged): the
        // reference nonce starts with that stream's id.
        let mut origin = sid;
        origin[0] ^= 0x80;
        let foreign = reference_seal(&key, origin, pos, &aad, &msg);
        let mut buf = foreign.clone();
        assert_eq!(cipher.open_with(origin, pos, &aad, &mut buf), Ok(len));
        assert_eq!(&buf[..len], &msg[..]);
        let mut buf = foreign;
        assert_eq!(
            cipher.open(pos, &aad, &mut buf),
            Err(OpenError),
            "foreign opened as own"
        );
        let mut buf = ours.clone();
        assert_eq!(cipher.open_with(sid, pos, &aad, &mut buf), Ok(len));
        checked += 1;
    }
    assert_eq!(checked, lens.len());
}

/// The fingerprint printed by `keygen` is the one printed before the
/// change of backend (computed here with the reference crate).
#[test]
fn fingerprint_unchanged() {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
    let reference = |key: &[u8; 32]| -> String {
        let aead = XChaCha20Poly1305::new(key.into());
        let mut sub = [0u8; 32];
        aead.encrypt_in_place_detached(
            XNonce::from_slice(b"ipcress/key-fingerprint\0"),
            b"ipcress key fingerprint: subkey",
            &mut sub[..],
        )
        .unwrap();
        let tag = XChaCha20Poly1305::new((&sub).into())
            .encrypt_in_place_detached(&XNonce::default(), b"ipcress key fingerprint v1", &mut [])
            .unwrap();
        tag[..4].iter().map(|b| format!("{b:02x}")).collect()
    };
    let mut rng = Rng::new(99);
    for i in 0..64 {
        let mut key = [i as u8; 32];
        if i % 2 == 1 {
            key.copy_from_slice(&rng.bytes(32));
        }
        assert_eq!(Key::from_bytes(key).fingerprint(), reference(&key));
    }
}

#[test]
#[should_panic(expected = "no room")]
fn seal_short_buffer_panics() {
    let cipher = Cipher::new(&Key::from_bytes([5; 32]), SID);
    cipher.seal(0, b"", &mut [0u8; TAG_LEN - 1]);
}
