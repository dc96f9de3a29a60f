//! Loom models of the protocol, over the protocol's own functions
//! (`frame.rs`, `run.rs`) on model memory ([`Region::model`]); the models
//! of whole producers and consumers are in `api/loom.rs`. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p ipcress
//! --lib --release loom`; each model prints how many executions it
//! explored (docs/ARCHITECTURE.md, "Model checking").

use loom::sync::Arc;
use loom::thread;

use crate::format::*;
use crate::protocol::{frame, run};
use crate::sync::Region;
use crate::sync::atomic::Ordering::*;
use crate::sync::loom_model::model;

/// A ring of two 64-byte segments with its tail word, as the producer
/// and readers see it.
const SEG: u64 = 64;
const CAP: u64 = 2 * SEG;
const LAP_SHIFT: u32 = 7;

#[derive(Clone, Copy)]
struct Ring {
    segs: [Region; 2],
    tail: Region,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            segs: [Region::model(SEG as usize), Region::model(SEG as usize)],
            tail: Region::model(8),
        }
    }

    /// The segment `pos` lies in, and its offset there.
    fn at(&self, pos: u64) -> (Region, usize) {
        (
            self.segs[((pos % CAP) / SEG) as usize],
            (pos % SEG) as usize,
        )
    }

    fn lap(pos: u64) -> u64 {
        lap_of(pos, LAP_SHIFT)
    }

    /// Pad `len` bytes at `pos` over what is there now, as a producer does
    /// with the pieces of a claim that crosses a segment end.
    fn pad(&self, pos: u64, len: u64) {
        let (seg, off) = self.at(pos);
        let stale = seg.u64_at(off).load(Relaxed);
        frame::write_pad(&seg, off, pos, len, Self::lap(pos), stale, 0);
    }

    /// Claim a frame for an 8-byte payload (the tail add and the segment
    /// rule of `Producer::claim_after_add`) and return its position and
    /// the word A it replaces.
    fn claim(&self) -> (u64, u64) {
        let total = frame_len(8);
        loop {
            let pos = self.tail.u64_at(0).fetch_add(total, AcqRel);
            let seg_end = (pos | (SEG - 1)) + 1;
            if pos + total > seg_end {
                self.pad(pos, seg_end - pos);
                self.pad(seg_end, pos + total - seg_end);
                continue;
            }
            let (seg, off) = self.at(pos);
            return (pos, frame::stale_word(&seg, off));
        }
    }

    /// Write the payload and publish, as `Producer::write_frame` does.
    fn commit(&self, pos: u64, stale: u64, value: u64) -> bool {
        let (seg, off) = self.at(pos);
        seg.write(off + HEADER_LEN, &value.to_le_bytes());
        let flags = F_COMMITTED | F_BEGIN | F_END;
        frame::publish(&seg, off, Self::lap(pos), 8, flags, pos_check(pos), stale)
    }

    /// What a reader finds at `pos`: None while nothing is committed there,
    /// else the frame's flags, total length and (for a data frame) payload.
    fn read(&self, pos: u64) -> Option<(u16, u64, Option<u64>)> {
        let (seg, off) = self.at(pos);
        let (slot, b) = frame::read(&seg, off, pos, Self::lap(pos), SEG);
        match slot.expect("a header the protocol wrote is never damaged") {
            Slot::Empty => None,
            Slot::Frame { len, flags, total } => {
                if flags & (F_PADDING | F_ABORTED) != 0 {
                    return Some((flags, total, None));
                }
                assert_eq!(b_check(b), pos_check(pos), "word B of another frame");
                assert_eq!(len, 8);
                let mut v = [0u8; 8];
                seg.read(off + HEADER_LEN, &mut v);
                Some((flags, total, Some(u64::from_le_bytes(v))))
            }
        }
    }

    /// Read `n` records in order from position 0, spinning (yielding) on
    /// what is not committed yet; padding is skipped.
    fn read_all(&self, n: usize) -> Vec<u64> {
        let mut pos = 0;
        let mut out = Vec::new();
        while out.len() < n {
            match self.read(pos) {
                None => thread::yield_now(),
                Some((_, total, value)) => {
                    out.extend(value);
                    pos += total;
                }
            }
        }
        out
    }
}

/// Two producers claim and commit one record each while a reader reads
/// both: the reader sees each record once, with the bytes its producer
/// wrote, and never a header of another frame or lap.
#[test]
fn loom_two_producers_and_a_reader() {
    model("two_producers_and_a_reader", || {
        let ring = Ring::new();
        // Start near a segment end so that one claim crosses it and pads.
        ring.tail.u64_at(0).store(SEG - 24, Relaxed);
        ring.pad(0, SEG - 24);
        let producers: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|v| {
                thread::spawn(move || {
                    let (pos, stale) = ring.claim();
                    assert!(
                        ring.commit(pos, stale, v),
                        "nobody else publishes a live claim"
                    );
                })
            })
            .collect();
        let mut got = ring.read_all(2);
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

/// The unblocker pads a claim it takes for dead while its producer commits
/// late: exactly one of them wins, the reader sees the winner's frame (the
/// record with its bytes, or padding), and the loser is told.
#[test]
fn loom_unblocker_races_a_late_commit() {
    model("unblocker_races_a_late_commit", || {
        let ring = Ring::new();
        let (pos, stale) = ring.claim();
        let total = frame_len(8);
        let unblocker = thread::spawn(move || {
            // The unblocker's view: the hole at `pos`, the word it found.
            let (seg, off) = ring.at(pos);
            let seen = seg.u64_at(off).load(Acquire);
            seen == stale
                && frame::write_pad(&seg, off, pos, total, Ring::lap(pos), seen, F_ABORTED)
        });
        let committed = ring.commit(pos, stale, 7);
        let padded = unblocker.join().unwrap();
        assert!(
            committed != padded,
            "committed {committed}, padded {padded}"
        );
        let (flags, t, value) = loop {
            if let Some(f) = ring.read(pos) {
                break f;
            }
            thread::yield_now();
        };
        assert_eq!(t, total);
        if committed {
            assert_eq!(value, Some(7));
        } else {
            assert_eq!(flags & (F_PADDING | F_ABORTED), F_PADDING | F_ABORTED);
            assert_eq!(value, None);
        }
    });
}

/// A group of member slots `0..n` and its group word, in model memory.
struct Group {
    word: Region,
    slots: Vec<Region>,
}

impl Group {
    fn new(n: usize) -> Group {
        Group {
            word: Region::model(CONSUMER_SLOT_LEN),
            slots: (0..n).map(|_| Region::model(CONSUMER_SLOT_LEN)).collect(),
        }
    }

    /// Member `d` claims a run of `len` bytes from the group word, as
    /// `Consumer::claim_run` does: help the last claimer, announce, take,
    /// and record unless `dies` (the member is killed between its
    /// compare-and-swap and its record). A lost race is tried again, at
    /// most `tries` times. Returns the run taken.
    fn claim(&self, d: usize, len: u64, dies: bool, tries: u64) -> Option<(u64, u64)> {
        let me = &self.slots[d];
        let tag = d as u8 + 1;
        for seq in 1..=tries {
            let w = self.word.u64_at(cslot::POSITION).load(Acquire);
            let (next, _, t) = split_group(w);
            if t != 0 && t != tag {
                run::help(&self.slots[t as usize - 1], next);
            }
            run::announce(me, seq, next, next + len);
            if !run::take(me, &self.word, seq, w, group_word(next + len, false, tag)) {
                continue;
            }
            if !dies {
                run::record(me, seq);
            }
            return Some((next, next + len));
        }
        None
    }
}

/// Two members claim runs while one of them dies between its
/// compare-and-swap and its record: whatever the interleaving, the dead
/// member's run is found held (to be adopted and delivered again) exactly
/// when it took one, producers are held back at its first record, and the
/// runs taken never overlap.
#[test]
fn loom_group_hand_out_with_a_member_dying_mid_claim() {
    model("group_hand_out_with_a_member_dying_mid_claim", || {
        let g = Arc::new(Group::new(2));
        let g2 = g.clone();
        let dying = thread::spawn(move || g2.claim(0, 32, true, 1));
        let live = g.claim(1, 16, false, 2);
        let dead = dying.join().unwrap();
        let found = run::held_by(&g.slots[0], &g.word, 0);
        assert_eq!(found.map(|(_, b, e)| (b, e)), dead, "the dead member's run");
        assert_eq!(run::floor_of(&g.slots[0]), dead.map(|(b, _)| b));
        if let (Some(a), Some(b)) = (dead, live) {
            assert!(a.1 <= b.0 || b.1 <= a.0, "runs overlap: {a:?} {b:?}");
        }
        assert!(live.is_some(), "a live member that tries again takes a run");
        if let Some((_, e)) = live {
            let (seq, _) = split_run_state(g.slots[1].u64_at(cslot::RUN_STATE).load(Acquire));
            run::release(&g.slots[1], seq);
            assert_eq!(run::floor_of(&g.slots[1]), None);
            let (next, _, _) = split_group(g.word.u64_at(cslot::POSITION).load(Acquire));
            assert!(next >= e);
        }
    });
}
