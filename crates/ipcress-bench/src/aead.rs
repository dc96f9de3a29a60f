//! The per-record AEAD of encrypted streams, one backend beside the other,
//! in one thread of one process (part of `ipcress-bench codecs`).
//!
//! Every backend computes the same bytes: XChaCha20-Poly1305 with the
//! 24-byte nonce `stream id ‖ position (u64 LE)` (docs/FORMAT.md,
//! "Encryption"). The "before" row does it as RustCrypto's
//! `XChaCha20Poly1305` does, with an HChaCha20 and a key setup per record;
//! the others derive the HChaCha20 subkey once per stream and run IETF
//! ChaCha20-Poly1305 under it with the nonce `[0; 4] ‖ position`. The
//! library's own `Cipher` is measured as shipped. Before timing, each
//! backend's output for a few records is checked against the reference, and
//! every timed open must succeed.
//!
//! Measured per backend: a 100-byte record sealed, then opened (ns per
//! record, the pair), and 64 KiB records sealed, and sealed then opened
//! (GB/s of payload). Seal and open work in place on one buffer, so no copy
//! is timed beside the cipher. Times are the thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), so that other work on a shared machine
//! does not inflate them.

use anyhow::{Result, ensure};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use ipcress::Key;
use ipcress::codec::{Cipher, TAG_LEN};
use serde::Serialize;

/// The small record of the target (a log line).
pub const SMALL: usize = 100;
/// The large record.
pub const LARGE: usize = 64 << 10;

/// One AEAD implementation, set up for one stream.
trait Backend {
    fn name(&self) -> &'static str;
    /// `buf` = plaintext ‖ `TAG_LEN` bytes of room.
    fn seal(&self, pos: u64, aad: &[u8], buf: &mut [u8]);
    /// `buf` = ciphertext ‖ tag; true if it opened.
    fn open(&self, pos: u64, aad: &[u8], buf: &mut [u8]) -> bool;
}

fn xnonce(sid: [u8; 16], pos: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(&sid);
    n[16..].copy_from_slice(&pos.to_le_bytes());
    XNonce::from(n)
}

fn ietf_nonce(pos: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pos.to_le_bytes());
    n
}

fn subkey(key: &[u8; 32], sid: [u8; 16]) -> [u8; 32] {
    chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), (&sid).into()).into()
}

/// RustCrypto XChaCha20-Poly1305: HChaCha20 and key setup per record.
struct XChaChaPerRecord {
    aead: XChaCha20Poly1305,
    sid: [u8; 16],
}

impl Backend for XChaChaPerRecord {
    fn name(&self) -> &'static str {
        "RustCrypto XChaCha20-Poly1305, subkey per record (before)"
    }
    fn seal(&self, pos: u64, aad: &[u8], buf: &mut [u8]) {
        let (msg, tag) = buf.split_at_mut(buf.len() - TAG_LEN);
        let t = self
            .aead
            .encrypt_in_place_detached(&xnonce(self.sid, pos), aad, msg)
            .expect("seal");
        tag.copy_from_slice(&t);
    }
    fn open(&self, pos: u64, aad: &[u8], buf: &mut [u8]) -> bool {
        let (msg, tag) = buf.split_at_mut(buf.len() - TAG_LEN);
        self.aead
            .decrypt_in_place_detached(&xnonce(self.sid, pos), aad, msg, Tag::from_slice(tag))
            .is_ok()
    }
}

/// RustCrypto ChaCha20-Poly1305 under the subkey derived once.
struct RustCryptoSubkey {
    aead: ChaCha20Poly1305,
}

impl Backend for RustCryptoSubkey {
    fn name(&self) -> &'static str {
        "RustCrypto ChaCha20-Poly1305, subkey per stream"
    }
    fn seal(&self, pos: u64, aad: &[u8], buf: &mut [u8]) {
        let (msg, tag) = buf.split_at_mut(buf.len() - TAG_LEN);
        let t = self
            .aead
            .encrypt_in_place_detached(&ietf_nonce(pos).into(), aad, msg)
            .expect("seal");
        tag.copy_from_slice(&t);
    }
    fn open(&self, pos: u64, aad: &[u8], buf: &mut [u8]) -> bool {
        let (msg, tag) = buf.split_at_mut(buf.len() - TAG_LEN);
        self.aead
            .decrypt_in_place_detached(&ietf_nonce(pos).into(), aad, msg, Tag::from_slice(tag))
            .is_ok()
    }
}

/// ring's ChaCha20-Poly1305 (assembly) under the subkey derived once.
struct Ring {
    key: ring::aead::LessSafeKey,
}

impl Backend for Ring {
    fn name(&self) -> &'static str {
        "ring ChaCha20-Poly1305, subkey per stream"
    }
    fn seal(&self, pos: u64, aad: &[u8], buf: &mut [u8]) {
        use ring::aead::{Aad, Nonce};
        let (msg, tag) = buf.split_at_mut(buf.len() - TAG_LEN);
        let t = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(ietf_nonce(pos)),
                Aad::from(aad),
                msg,
            )
            .expect("seal");
        tag.copy_from_slice(t.as_ref());
    }
    fn open(&self, pos: u64, aad: &[u8], buf: &mut [u8]) -> bool {
        use ring::aead::{Aad, Nonce};
        self.key
            .open_in_place(
                Nonce::assume_unique_for_key(ietf_nonce(pos)),
                Aad::from(aad),
                buf,
            )
            .is_ok()
    }
}

/// aws-lc-rs's ChaCha20-Poly1305 (assembly) under the subkey derived once.
#[cfg(feature = "aws-lc")]
struct AwsLc {
    key: aws_lc_rs::aead::LessSafeKey,
}

#[cfg(feature = "aws-lc")]
impl Backend for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc-rs ChaCha20-Poly1305, subkey per stream"
    }
    fn seal(&self, pos: u64, aad: &[u8], buf: &mut [u8]) {
        use aws_lc_rs::aead::{Aad, Nonce};
        let (msg, tag) = buf.split_at_mut(buf.len() - TAG_LEN);
        let t = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(ietf_nonce(pos)),
                Aad::from(aad),
                msg,
            )
            .expect("seal");
        tag.copy_from_slice(t.as_ref());
    }
    fn open(&self, pos: u64, aad: &[u8], buf: &mut [u8]) -> bool {
        use aws_lc_rs::aead::{Aad, Nonce};
        self.key
            .open_in_place(
                Nonce::assume_unique_for_key(ietf_nonce(pos)),
                Aad::from(aad),
                buf,
            )
            .is_ok()
    }
}

/// The library as shipped (`ipcress::codec::Cipher`).
struct Shipped {
    cipher: Cipher,
}

impl Backend for Shipped {
    fn name(&self) -> &'static str {
        "ipcress Cipher (as shipped)"
    }
    fn seal(&self, pos: u64, aad: &[u8], buf: &mut [u8]) {
        self.cipher.seal(pos, aad, buf);
    }
    fn open(&self, pos: u64, aad: &[u8], buf: &mut [u8]) -> bool {
        self.cipher.open(pos, aad, buf).is_ok()
    }
}

fn backends(key: &[u8; 32], sid: [u8; 16]) -> Vec<Box<dyn Backend>> {
    let sub = subkey(key, sid);
    let mut v: Vec<Box<dyn Backend>> = vec![
        Box::new(XChaChaPerRecord {
            aead: XChaCha20Poly1305::new(key.into()),
            sid,
        }),
        Box::new(RustCryptoSubkey {
            aead: ChaCha20Poly1305::new((&sub).into()),
        }),
        Box::new(Ring {
            key: ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &sub)
                    .expect("32-byte key"),
            ),
        }),
    ];
    #[cfg(feature = "aws-lc")]
    v.push(Box::new(AwsLc {
        key: aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::CHACHA20_POLY1305, &sub)
                .expect("32-byte key"),
        ),
    }));
    v.push(Box::new(Shipped {
        cipher: Cipher::new(&Key::from_bytes(*key), sid),
    }));
    v
}

/// One backend's figures, one repetition.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub backend: &'static str,
    /// A 100-byte record sealed, then opened: ns for the pair.
    pub small_seal_open_ns: f64,
    /// A 100-byte record sealed: ns.
    pub small_seal_ns: f64,
    /// 64 KiB records sealed, GB/s of payload.
    pub large_seal_gbps: f64,
    /// 64 KiB records sealed then opened, GB/s of payload (each byte
    /// counted once).
    pub large_seal_open_gbps: f64,
}

/// Checks every backend against the reference on records of many lengths,
/// then times each. `budget_ms` is the time given to each measurement.
pub fn measure(budget_ms: u64) -> Result<Vec<Sample>> {
    let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
    let sid: [u8; 16] = *b"aead-bench-sid-1";
    let aad: [u8; 14] = std::array::from_fn(|i| i as u8);
    let all = backends(&key, sid);
    let reference = &all[0];
    for len in [0, 1, 63, 64, 65, SMALL, 255, 256, 4096, LARGE] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        let mut want = plain.clone();
        want.resize(len + TAG_LEN, 0);
        let pos = 0x1234_5678_9ABC_DEF0 ^ len as u64;
        reference.seal(pos, &aad, &mut want);
        for b in &all {
            let mut got = plain.clone();
            got.resize(len + TAG_LEN, 0);
            b.seal(pos, &aad, &mut got);
            ensure!(
                got == want,
                "{}: {len}-byte record sealed differently",
                b.name()
            );
            ensure!(b.open(pos, &aad, &mut got), "{}: does not open", b.name());
            ensure!(got[..len] == plain[..], "{}: opened wrong", b.name());
        }
    }
    let mut out = Vec::new();
    for b in &all {
        let b = b.as_ref();
        let small_seal_ns = per_record(budget_ms, SMALL, |pos, buf| {
            b.seal(pos, &aad, buf);
            true
        })?;
        let small_seal_open_ns = per_record(budget_ms, SMALL, |pos, buf| {
            b.seal(pos, &aad, buf);
            b.open(pos, &aad, buf)
        })?;
        let large_seal = per_record(budget_ms, LARGE, |pos, buf| {
            b.seal(pos, &aad, buf);
            true
        })?;
        let large_seal_open = per_record(budget_ms, LARGE, |pos, buf| {
            b.seal(pos, &aad, buf);
            b.open(pos, &aad, buf)
        })?;
        out.push(Sample {
            backend: b.name(),
            small_seal_open_ns,
            small_seal_ns,
            large_seal_gbps: LARGE as f64 / large_seal,
            large_seal_open_gbps: LARGE as f64 / large_seal_open,
        });
    }
    Ok(out)
}

/// This thread's CPU time in ns: time slices lost to other processes on a
/// shared machine are not counted.
fn cpu_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// Runs `op` on one record buffer of `len` bytes (plus the tag) at
/// increasing positions for about `budget_ms` of this thread's CPU time, and
/// returns CPU ns per call.
fn per_record(
    budget_ms: u64,
    len: usize,
    mut op: impl FnMut(u64, &mut [u8]) -> bool,
) -> Result<f64> {
    let mut buf: Vec<u8> = (0..len + TAG_LEN).map(|i| (i % 251) as u8).collect();
    let budget = u128::from(budget_ms) * 1_000_000;
    // Calibrate: double the batch until it takes a tenth of the budget.
    let mut batch = 16u64;
    let mut pos = 0u64;
    loop {
        let t = cpu_ns();
        for _ in 0..batch {
            ensure!(op(pos, &mut buf), "a record did not open");
            pos += 8;
        }
        if (cpu_ns() - t) * 10 >= budget || batch >= 1 << 30 {
            break;
        }
        batch *= 2;
    }
    let t = cpu_ns();
    let mut n = 0u64;
    while cpu_ns() - t < budget {
        for _ in 0..batch {
            ensure!(
                op(pos, std::hint::black_box(&mut buf)),
                "a record did not open"
            );
            pos += 8;
        }
        n += batch;
    }
    Ok((cpu_ns() - t) as f64 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_computes_the_same_bytes() {
        let s = measure(1).unwrap();
        assert!(s.len() >= 4);
        assert!(s.iter().all(|s| s.small_seal_open_ns > 0.0));
    }
}
