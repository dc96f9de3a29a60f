//! Loom model of the claim / commit / read / padding protocol on an
//! in-memory backing, using the real header encoding of `ipcress::format`.
//! Run: RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p ipcress --test loom --release
#![cfg(loom)]

use ipcress::format::*;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering::*};
use loom::thread;

const SEG: u64 = 64;
const SEGS: u64 = 2;
const CAP: u64 = SEG * SEGS;
const LAP_SHIFT: u32 = 7; // log2(CAP)

struct Ring {
    tail: AtomicU64,
    words: Vec<AtomicU64>,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            tail: AtomicU64::new(0),
            words: (0..CAP / 8).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn word(&self, pos: u64) -> &AtomicU64 {
        &self.words[((pos % CAP) / 8) as usize]
    }
    fn lap(pos: u64) -> u64 {
        lap_of(pos, LAP_SHIFT)
    }

    fn pad(&self, pos: u64, len: u64) {
        let flags = F_COMMITTED | F_PADDING;
        let a = if len == 8 {
            word_a(flags | F_PAD8, Self::lap(pos))
        } else {
            self.word(pos + 8)
                .store(word_b((len - 16) as u32, pos_check(pos)), Relaxed);
            word_a(flags, Self::lap(pos))
        };
        let stale = self.word(pos).load(Relaxed);
        let _ = self.word(pos).compare_exchange(stale, a, SeqCst, Relaxed);
    }

    /// Append one 8-byte payload (the production claim loop, in small).
    fn send(&self, value: u64) {
        let total = frame_len(8);
        loop {
            let pos = self.tail.fetch_add(total, AcqRel);
            let seg_end = (pos | (SEG - 1)) + 1;
            if pos + total > seg_end {
                self.pad(pos, seg_end - pos);
                self.pad(seg_end, pos + total - seg_end);
                continue;
            }
            let stale = self.word(pos).load(Relaxed);
            self.word(pos + 16).store(value, Relaxed);
            // The value stands in for the CRC: the reader checks that it
            // sees the word B and payload of the frame it parsed.
            self.word(pos + 8).store(word_b(8, value as u32), Relaxed);
            let a = word_a(F_COMMITTED | F_BEGIN | F_END | F_CHECKSUM, Self::lap(pos));
            self.word(pos)
                .compare_exchange(stale, a, SeqCst, Relaxed)
                .expect("nobody else commits our claim");
            return;
        }
    }

    /// Read frames in order until `n` data frames were seen.
    fn read(&self, n: usize) -> Vec<u64> {
        let mut pos = 0u64;
        let mut out = Vec::new();
        while out.len() < n {
            let a = self.word(pos).load(Acquire);
            let off = pos % SEG;
            let b = if off + 16 <= SEG {
                self.word(pos + 8).load(Relaxed)
            } else {
                0
            };
            match parse(a, b, pos, Self::lap(pos), off, SEG).expect("valid header") {
                Slot::Empty => thread::yield_now(),
                Slot::Frame { flags, total, .. } => {
                    if flags & F_PADDING == 0 {
                        let v = self.word(pos + 16).load(Relaxed);
                        // The payload and word B were written before the
                        // commit: they must be visible and consistent.
                        assert_eq!(b_check(b), v as u32, "torn frame at {pos}");
                        out.push(v);
                    }
                    pos += total;
                }
            }
        }
        out
    }
}

#[test]
fn claim_commit_read_with_padding() {
    loom::model(|| {
        let ring = Arc::new(Ring::new());
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let r = ring.clone();
                thread::spawn(move || {
                    r.send(p * 100 + 1);
                    r.send(p * 100 + 2);
                })
            })
            .collect();
        let got = ring.read(4);
        for h in producers {
            h.join().unwrap();
        }
        // Every record exactly once, each producer's order kept.
        let mine = |p: u64| {
            got.iter()
                .filter(|v| **v / 100 == p)
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(mine(0), vec![1, 2]);
        assert_eq!(mine(1), vec![101, 102]);
    });
}
