//! The state one process shares about an open stream: its mappings, the
//! meta words, the cipher, and which pages this process has faulted in.

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::path::PathBuf;

use crate::codec::Cipher;
use crate::error::Result;
use crate::format::{self, *};
use crate::protocol::attach::read_options;
use crate::protocol::options::*;
use crate::storage::{Seg, Storage};
use crate::sync::Region;
use crate::sys;

/// Bytes a producer or consumer faults in ahead of where it works on a
/// ring, at the least (`Inner::prefault_ahead`).
pub(crate) const PREFAULT_CHUNK: u64 = 2 << 20;
/// Chunks of a ring tracked per process, at most (larger rings use larger
/// chunks).
pub(crate) const MAX_FAULT_CHUNKS: u64 = 1 << 16;

pub(crate) struct Inner {
    /// Opened by `Stream::inspect_in`: looks, never writes.
    pub inspect: bool,
    pub name: String,
    pub dir: PathBuf,
    /// The meta file and its mapping, which `meta` points into.
    pub(crate) meta_map: crate::storage::MetaMap,
    pub meta: Region,
    pub opts: StreamOptions,
    pub storage: Storage,
    pub id: [u8; 16],
    pub seg_shift: u32,
    pub seg_size: u64,
    /// Ring capacity in bytes; u64::MAX for a log.
    pub capacity: u64,
    pub lap_shift: u32,
    /// Bytes of time at the start of every data frame's stored bytes:
    /// `TIME_LEN` (format 4, frames with `F_TIMED`) or 0 (format 3).
    pub time_len: usize,
    pub cipher: Option<Cipher>,
    /// Ring: which chunks of the ring this process has faulted in, one bit
    /// per chunk of `1 << fault_shift` bytes (see `prefault_ahead`).
    pub(crate) faulted: Box<[AtomicU64]>,
    /// Chunks faulted in so far; all of them ends the bookkeeping.
    pub(crate) faulted_count: AtomicU64,
    pub(crate) fault_shift: u32,
    /// Who holds which slot (OFD locks on the meta file's lock bytes).
    pub live: sys::Liveness,
}

impl Inner {
    /// The state of a stream whose meta block `meta_map` holds valid
    /// options (they are read and checked here), with its data in the
    /// storage `storage` makes for those options.
    pub(crate) fn assemble(
        name: &str,
        dir: PathBuf,
        meta_map: crate::storage::MetaMap,
        live: sys::Liveness,
        inspect: bool,
        storage: impl FnOnce(&StreamOptions) -> Result<Storage>,
    ) -> Result<Inner> {
        let meta = meta_map.region();
        let opts = read_options(&meta)?;
        let mut id = [0u8; 16];
        meta.read(meta::STREAM_ID, &mut id);
        let seg_shift = opts.segment_shift;
        let seg_size = 1u64 << seg_shift;
        let (capacity, lap_shift) = match opts.layout {
            Layout::Ring => {
                let cap = seg_size * opts.segment_count as u64;
                (cap, cap.trailing_zeros())
            }
            Layout::Log => (u64::MAX, seg_shift),
        };
        // One bit per chunk: at least PREFAULT_CHUNK bytes, at most
        // MAX_FAULT_CHUNKS chunks, at most the whole ring.
        let fault_shift = match opts.layout {
            Layout::Ring => PREFAULT_CHUNK
                .trailing_zeros()
                .max(lap_shift.saturating_sub(MAX_FAULT_CHUNKS.trailing_zeros()))
                .min(lap_shift),
            Layout::Log => 0,
        };
        let faulted = match opts.layout {
            Layout::Ring => (0..(capacity >> fault_shift).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            Layout::Log => Box::default(),
        };
        let storage = storage(&opts)?;
        let time_len = if opts.format_version >= format::VERSION {
            format::TIME_LEN
        } else {
            0
        };
        Ok(Inner {
            name: name.to_string(),
            dir,
            meta,
            meta_map,
            opts,
            storage,
            id,
            seg_shift,
            seg_size,
            capacity,
            lap_shift,
            time_len,
            cipher: None,
            faulted,
            faulted_count: AtomicU64::new(0),
            fault_shift,
            live,
            inspect,
        })
    }

    /// Fault in the ring's pages from `from` (a position) to one chunk
    /// past `to`, the chunks this process has not faulted in yet, and
    /// return the position up to which claims and reads need not call
    /// again (the end of the chunk holding `to - 1`; `u64::MAX` once the
    /// whole ring is in, and for a log, whose segments are mapped as they
    /// come). Producers and consumers call it only when they pass the
    /// position it returned, so the first lap takes no page faults while
    /// a process touches only a bounded window ahead of where it works:
    /// attaching costs the same on a ring of any size (ARCHITECTURE.md).
    pub fn prefault_ahead(&self, from: u64, to: u64) -> u64 {
        let chunks = self.capacity >> self.fault_shift;
        if self.faulted.is_empty() || self.faulted_count.load(Relaxed) >= chunks {
            return u64::MAX;
        }
        // Saturating: a consumer's position may come from a damaged word.
        let first = from >> self.fault_shift;
        let last = to.max(from.saturating_add(1)).saturating_sub(1) >> self.fault_shift;
        // Whole chunks, wrapping around the ring, at most once each.
        for k in first..=last.saturating_add(1).min(first.saturating_add(chunks - 1)) {
            let c = k % chunks;
            let bit = 1u64 << (c % 64);
            if self.faulted[(c / 64) as usize].fetch_or(bit, Relaxed) & bit == 0 {
                self.storage
                    .prefault(c << self.fault_shift, 1 << self.fault_shift);
                self.faulted_count.fetch_add(1, Relaxed);
            }
        }
        last.saturating_add(1).saturating_mul(1 << self.fault_shift)
    }

    #[inline]
    pub fn tail_word(&self) -> &AtomicU64 {
        self.meta.u64_at(meta::TAIL)
    }
    #[inline]
    pub fn tail(&self) -> u64 {
        self.tail_word().load(Acquire) & !format::TAIL_LOCK
    }
    #[inline]
    pub fn head_word(&self) -> &AtomicU64 {
        self.meta.u64_at(meta::HEAD)
    }
    #[inline]
    pub fn head(&self) -> u64 {
        self.head_word().load(Acquire)
    }
    #[inline]
    /// Was the stream removed by force while we held it (`meta::REMOVED`)?
    pub fn removed(&self) -> crate::error::Result<()> {
        if self.meta.u64_at(meta::REMOVED).load(Acquire) != 0 {
            return Err(crate::error::Error::Removed {
                what: "stream",
                name: self.name.clone(),
            });
        }
        Ok(())
    }

    pub fn gen_word(&self) -> &AtomicU64 {
        self.meta.u64_at(meta::EPOCH)
    }
    #[inline]
    pub fn data_seq(&self) -> &AtomicU32 {
        self.meta.u32_at(meta::DATA_SEQ)
    }
    #[inline]
    pub fn data_waiters(&self) -> &AtomicU32 {
        self.meta.u32_at(meta::DATA_WAITERS)
    }
    #[inline]
    pub fn space_seq(&self) -> &AtomicU32 {
        self.meta.u32_at(meta::SPACE_SEQ)
    }
    #[inline]
    pub fn space_waiters(&self) -> &AtomicU32 {
        self.meta.u32_at(meta::SPACE_WAITERS)
    }
    #[inline]
    pub fn frag_lock(&self) -> &AtomicU64 {
        self.meta.u64_at(meta::FRAG_LOCK)
    }
    #[inline]
    pub fn lap(&self, pos: u64) -> u64 {
        format::lap_of(pos, self.lap_shift)
    }
    #[inline]
    pub fn seg_index(&self, pos: u64) -> u64 {
        pos >> self.seg_shift
    }
    #[inline]
    pub fn seg_offset(&self, pos: u64) -> u64 {
        pos & (self.seg_size - 1)
    }
    /// Frame length of a record of `stored` bytes (its time word added).
    #[inline(always)]
    pub fn frame_total(&self, stored: usize) -> u64 {
        format::frame_len((stored + self.time_len) as u64)
    }
    /// Largest stored payload of one frame: frames are at most half a
    /// segment, so a claim that crossed a segment end always fits after it.
    pub fn max_payload(&self) -> usize {
        self.seg_size as usize / 2 - format::HEADER_LEN - self.time_len
    }
    pub fn checksummed(&self) -> bool {
        self.opts.checksum == Checksum::Crc32c
    }
    pub fn is_ring(&self) -> bool {
        self.opts.layout == Layout::Ring
    }

    /// Read the header at position `p` of `seg` (word A with acquire
    /// ordering, then word B if it lies in the segment) and validate it.
    /// Word B is returned too, for the CRC.
    #[inline(always)]
    pub fn read_header(&self, seg: &Seg, p: u64) -> (Result<format::Slot, &'static str>, u64) {
        let off = self.seg_offset(p) as usize;
        crate::protocol::frame::read(&seg.region, off, p, self.lap(p), self.seg_size)
    }

    pub fn segment(&self, index: u64, create: bool) -> Result<Option<Seg>> {
        self.storage.segment(index, create)
    }

    pub fn cslot(&self, i: usize) -> Region {
        self.meta.sub(
            meta::CONSUMERS + i * format::CONSUMER_SLOT_LEN,
            format::CONSUMER_SLOT_LEN,
        )
    }
    pub fn pslot(&self, i: usize) -> Region {
        self.meta.sub(
            format::PRODUCERS + i * format::PRODUCER_SLOT_LEN,
            format::PRODUCER_SLOT_LEN,
        )
    }

    /// Wake consumers parked on new data, if any.
    #[inline(always)]
    pub fn wake_data(&self) {
        if self.data_waiters().load(SeqCst) != 0 {
            self.data_seq().fetch_add(1, SeqCst);
            sys::futex_wake_all(self.data_seq());
        }
    }

    /// Wake producers parked on space, if any. Callers have published their
    /// new position first.
    #[inline]
    pub fn wake_space(&self) {
        crate::sync::atomic::fence(SeqCst);
        if self.space_waiters().load(Relaxed) != 0 {
            self.space_seq().fetch_add(1, SeqCst);
            sys::futex_wake_all(self.space_seq());
        }
    }
}
