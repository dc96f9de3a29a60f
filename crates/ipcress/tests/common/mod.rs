//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A temporary root directory removed on drop.
pub struct TempRoot(pub PathBuf);

impl TempRoot {
    pub fn new(tag: &str) -> TempRoot {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let n: u64 = rand::random();
        let p = base.join(format!("ipcress-test-{tag}-{}-{n:x}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempRoot(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic message content for (producer, sequence).
pub fn payload(producer: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(12));
    v.extend_from_slice(&producer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    let mut x = (producer as u64) << 32 ^ seq ^ 0x9E37_79B9_7F4A_7C15;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v.truncate(len.max(12));
    v
}

/// Check a message made by `payload`; returns (producer, seq).
pub fn check_payload(b: &[u8]) -> (u32, u64) {
    assert!(b.len() >= 12, "message too short: {}", b.len());
    let p = u32::from_le_bytes(b[..4].try_into().unwrap());
    let s = u64::from_le_bytes(b[4..12].try_into().unwrap());
    assert_eq!(
        b,
        &payload(p, s, b.len())[..],
        "payload bytes differ for producer {p} seq {s}"
    );
    (p, s)
}

/// Random size 12 B .. 64 KiB, most small.
pub fn random_len(rng: &mut impl rand::Rng) -> usize {
    match rng.random_range(0..100) {
        0..=79 => rng.random_range(12..256),
        80..=97 => rng.random_range(256..8192),
        _ => rng.random_range(8192..=65536),
    }
}
