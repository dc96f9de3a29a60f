//! The byte layout shared by every participant: frame headers and the meta
//! file. docs/FORMAT.md describes the same bytes in prose; keep them in step.
//!
//! ```
//! use ipcress::format::{Flags, HEADER_LEN, TIME_LEN, frame_len};
//! # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
//! let at = stream.producer()?.send(b"abc")?;
//! // The header, the commit time, 3 bytes, aligned to 8:
//! assert_eq!(stream.tail() - at, frame_len((TIME_LEN + 3) as u64));
//! assert_eq!(frame_len(8 + 3), 32);
//! assert_eq!(HEADER_LEN, 16);
//! # let mut c = stream.subscribe(ipcress::StartAt::Start)?;
//! let (_, raw) = c.recv_raw_timeout(std::time::Duration::from_millis(10))?.expect("sent");
//! assert_eq!(raw.flags, Flags::BEGIN | Flags::END); // a whole message in one frame
//! assert!(raw.time.is_some()); // committed at that time (ns since the epoch)
//! # Ok::<(), ipcress::Error>(())
//! ```

/// Magic at offset 0 of the meta file: "IPCRESS" then 0x00, little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"IPCRESS\0");
/// Format version this build writes by default: 4, whose data frames
/// carry their commit time (flag `TIMED`). It reads and writes
/// [`VERSION_UNTIMED`] streams too.
pub const VERSION: u32 = 4;
/// The previous format version (frames without time), still read and
/// written (`StreamOptions::format_version`).
pub const VERSION_UNTIMED: u32 = 3;
/// Length of the time word C of a frame with flag `TIMED`.
pub const TIME_LEN: usize = 8;

/// Frame header size in bytes; frames are aligned to [`ALIGN`].
pub const HEADER_LEN: usize = 16;
/// Frame alignment.
pub const ALIGN: usize = 8;

mod flags;
pub use flags::Flags;

// Frame flags (bits 0..16 of header word A), docs/FORMAT.md. The library's
// own: a caller sees the ones a raw frame carries as `Flags`.
/// The frame is committed: its length, flags and payload are final.
pub(crate) const F_COMMITTED: u16 = 0x0001;
/// Padding: no record, readers skip `total` bytes.
pub(crate) const F_PADDING: u16 = 0x0002;
/// First fragment of a message.
pub(crate) const F_BEGIN: u16 = 0x0004;
/// Last fragment of a message (a whole message has `F_BEGIN | F_END`).
pub(crate) const F_END: u16 = 0x0008;
/// The payload is compressed with the stream's compression.
pub(crate) const F_COMPRESSED: u16 = 0x0010;
/// The payload is sealed with the stream's key.
pub(crate) const F_ENCRYPTED: u16 = 0x0020;
/// Padding left by an aborted or dead claim (with `F_PADDING`).
pub(crate) const F_ABORTED: u16 = 0x0040;
/// Word B carries the CRC-32C of the frame.
pub(crate) const F_CHECKSUM: u16 = 0x0080;
/// Encrypted frame carried from another stream (by a bridge): the payload
/// starts with the origin stream id (16 bytes) and position (8 bytes, LE)
/// that its nonce was made from.
pub(crate) const F_FOREIGN: u16 = 0x0100;
/// An 8-byte padding frame: word A alone (with `F_PADDING`), no word B.
pub(crate) const F_PAD8: u16 = 0x0200;
/// The stored bytes start with word C, the commit time (u64 LE, ns since
/// the Unix epoch); `len` counts it. Every data frame of a version-4 stream.
pub(crate) const F_TIMED: u16 = 0x0400;
/// Every flag this version knows; a header with others is damaged.
pub(crate) const F_KNOWN: u16 = 0x07FF;
/// Flags bound into the AEAD associated data (they survive bridging).
pub(crate) const F_AAD_MASK: u16 = F_BEGIN | F_END | F_COMPRESSED | F_ENCRYPTED;
/// Length of the origin prefix of a foreign frame.
pub const ORIGIN_LEN: usize = 24;

/// The origin (stream id, position) at the start of a foreign frame's
/// payload, or None if the payload is too short to hold it.
pub fn split_origin(payload: &[u8]) -> Option<([u8; 16], u64)> {
    let id: [u8; 16] = payload.get(..16)?.try_into().ok()?;
    let pos = u64::from_le_bytes(payload.get(16..ORIGIN_LEN)?.try_into().ok()?);
    Some((id, pos))
}

/// Bits of lap in header word A. Positions are below 2^63 and a ring is at
/// least 2^16 bytes, so a ring's lap never wraps: a header names its whole
/// position, and one left from any earlier lap never passes for this one.
pub const LAP_BITS: u32 = 48;

/// The lap of `pos` as header word A carries it: `pos >> lap_shift` (the
/// ring's capacity, or a log's segment size), modulo 2^48.
#[inline]
pub const fn lap_of(pos: u64, lap_shift: u32) -> u64 {
    (pos >> lap_shift) & ((1 << LAP_BITS) - 1)
}

/// Round `n` up to the frame alignment.
#[inline]
pub const fn align(n: u64) -> u64 {
    (n + (ALIGN as u64 - 1)) & !(ALIGN as u64 - 1)
}

/// Total frame size for a payload of `len` bytes.
#[inline]
pub const fn frame_len(len: u64) -> u64 {
    align(HEADER_LEN as u64 + len)
}

/// Header word A: `flags | lap << 16` (`lap` from [`lap_of`]). It is the
/// commit word: a frame exists once A carries flag `COMMITTED` and the lap of
/// its position.
#[inline]
pub const fn word_a(flags: u16, lap: u64) -> u64 {
    flags as u64 | lap << 16
}

/// Header word B: `len | check << 32`, where `check` is the frame's CRC
/// (flag `CHECKSUM`, the CRC covers the position) or else [`pos_check`].
/// Written before word A is published, read only after it.
#[inline]
pub const fn word_b(len: u32, check: u32) -> u64 {
    len as u64 | (check as u64) << 32
}

/// The check half of word B of a frame without flag `CHECKSUM`: bits 3..35
/// of its position.
#[inline]
pub const fn pos_check(position: u64) -> u32 {
    (position >> 3) as u32
}

/// Payload length in a header word B.
#[inline]
pub const fn b_len(b: u64) -> u32 {
    b as u32
}

/// Check half (CRC or [`pos_check`]) of a header word B.
#[inline]
pub const fn b_check(b: u64) -> u32 {
    (b >> 32) as u32
}

/// The fields of a header word A.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordA {
    /// Bits 0..16: the flag bits (docs/FORMAT.md; those of a raw frame
    /// are [`Flags`]).
    pub flags: u16,
    /// Bits 16..64: the lap the header was written in.
    pub lap: u64,
}

/// Split a word A into its fields.
#[inline]
pub const fn split_a(a: u64) -> WordA {
    WordA {
        flags: a as u16,
        lap: a >> 16,
    }
}

/// The 6 header bytes covered by the CRC and bound into the AEAD: payload
/// length and flags, little-endian.
#[inline]
pub fn header_bytes(len: u32, flags: u16) -> [u8; 6] {
    let mut b = [0u8; 6];
    b[..4].copy_from_slice(&len.to_le_bytes());
    b[4..].copy_from_slice(&flags.to_le_bytes());
    b
}

/// CRC-32C of the frame at `position`: over the position (8 bytes LE),
/// the 6 header bytes, then the payload. A frame copied to another
/// position fails it.
#[inline]
pub fn frame_crc(position: u64, len: u32, flags: u16, payload: &[u8]) -> u32 {
    let mut h = [0u8; 14];
    h[..8].copy_from_slice(&position.to_le_bytes());
    h[8..].copy_from_slice(&header_bytes(len, flags));
    crc32c::crc32c_append(crc32c::crc32c(&h), payload)
}

/// [`frame_crc`] of a frame with flag `TIMED` whose stored bytes are the
/// time word `time` then `rest` (the same value, without joining them).
#[inline]
pub fn frame_crc_timed(position: u64, len: u32, flags: u16, time: u64, rest: &[u8]) -> u32 {
    let mut h = [0u8; 22];
    h[..8].copy_from_slice(&position.to_le_bytes());
    h[8..14].copy_from_slice(&header_bytes(len, flags));
    h[14..].copy_from_slice(&time.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&h), rest)
}

/// What a reader makes of the header at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Nothing committed here in this lap yet.
    Empty,
    /// A committed frame: payload length, flags, total frame length.
    Frame {
        /// Payload length.
        len: u32,
        /// The flag bits (docs/FORMAT.md; those of a raw frame are
        /// [`Flags`]).
        flags: u16,
        /// Frame length, header and padding included.
        total: u64,
    },
}

/// Validate the header words `a` (loaded first, with acquire ordering) and
/// `b` (loaded after it; ignored for an 8-byte padding) read at `position`
/// (of lap `lap`, from [`lap_of`]), at `offset` within a segment of
/// `segment_size` bytes. Every field is checked before it is trusted; the
/// CRC of a frame with flag `CHECKSUM` is left to the reader, who has the
/// payload.
#[inline(always)]
pub fn parse(
    a: u64,
    b: u64,
    position: u64,
    lap: u64,
    offset: u64,
    segment_size: u64,
) -> Result<Slot, &'static str> {
    let w = split_a(a);
    if w.flags & F_COMMITTED == 0 || w.lap != lap {
        return Ok(Slot::Empty);
    }
    if w.flags & !F_KNOWN != 0 {
        return Err("unknown frame flags");
    }
    if w.flags & (F_PADDING | F_PAD8) != 0
        && w.flags & (F_BEGIN | F_END | F_COMPRESSED | F_ENCRYPTED | F_TIMED) != 0
    {
        return Err("padding frame with data flags");
    }
    if w.flags & F_PAD8 != 0 {
        if w.flags & F_PADDING == 0 {
            return Err("8-byte padding flag on a data frame");
        }
        if offset + 8 > segment_size {
            return Err("padding runs past the end of its segment");
        }
        return Ok(Slot::Frame {
            len: 0,
            flags: w.flags,
            total: 8,
        });
    }
    let len = b_len(b);
    let total = frame_len(len as u64);
    if offset + total > segment_size {
        return Err("frame length runs past the end of its segment");
    }
    if w.flags & F_TIMED != 0 && (len as usize) < TIME_LEN {
        return Err("timed frame shorter than its time");
    }
    if w.flags & F_CHECKSUM == 0 && b_check(b) != pos_check(position) {
        return Err("frame header names another position");
    }
    Ok(Slot::Frame {
        len,
        flags: w.flags,
        total,
    })
}

// ---- meta file ----------------------------------------------------------

/// Size of the meta file.
pub const META_LEN: usize =
    4096 + CONSUMER_SLOTS * CONSUMER_SLOT_LEN + PRODUCER_SLOTS * PRODUCER_SLOT_LEN;

pub mod meta {
    //! Offsets inside the meta file.
    /// Magic word (u64).
    pub const MAGIC: usize = 0;
    /// Format version (u32).
    pub const VERSION: usize = 8;
    /// Layout (u32).
    pub const LAYOUT: usize = 12;
    /// log2 of the segment size (u32).
    pub const SEGMENT_SHIFT: usize = 16;
    /// Segments in a ring (u32).
    pub const SEGMENT_COUNT: usize = 20;
    /// Policy (u32).
    pub const POLICY: usize = 24;
    /// Checksum kind (u32).
    pub const CHECKSUM: usize = 28;
    /// Compression kind (u32).
    pub const COMPRESSION: usize = 32;
    /// Compression level (i32).
    pub const COMPRESSION_LEVEL: usize = 36;
    /// Encryption on (u32).
    pub const ENCRYPTION: usize = 40;
    /// Log retention by size (u64, 0 = none).
    pub const RETAIN_BYTES: usize = 48;
    /// Log retention by age in ms (u64, 0 = none).
    pub const RETAIN_AGE_MS: usize = 56;
    /// How long a durable consumer may hold a ring back (u64 ms, 0 = for ever).
    pub const DURABLE_TIMEOUT_MS: usize = 64;
    /// How long a claim may stay open before its holder is checked (u64 ms).
    pub const UNBLOCK_TIMEOUT_MS: usize = 72;
    /// Stream id (16 random bytes).
    pub const STREAM_ID: usize = 80;
    /// Creation time (u64 ms since the epoch).
    pub const CREATED_MS: usize = 96;
    /// Key check value of an encrypted stream (16 bytes).
    pub const KEY_CHECK: usize = 104;
    /// CRC-32C of bytes 0..OPTIONS_CRC.
    pub const OPTIONS_CRC: usize = 124;

    // Shared words, each on its own 128-byte pair of cache lines.
    /// Tail: next position to claim (u64).
    pub const TAIL: usize = 128;
    /// Head: oldest position still valid (u64).
    pub const HEAD: usize = 256;
    /// Futex word bumped when data arrives and someone waits.
    pub const DATA_SEQ: usize = 384;
    /// Consumers waiting on `DATA_SEQ`.
    pub const DATA_WAITERS: usize = 388;
    /// Futex word bumped when space frees and someone waits.
    pub const SPACE_SEQ: usize = 512;
    /// Producers waiting on `SPACE_SEQ`.
    pub const SPACE_WAITERS: usize = 516;
    /// Fragment lock: owner word of the producer writing a fragmented message.
    pub const FRAG_LOCK: usize = 640;
    /// Registry generation: bumped whenever a consumer slot is taken or freed.
    pub const EPOCH: usize = 768;
    /// Owner word of the lock that serialises creating named slots.
    pub const REG_LOCK: usize = 896;
    /// 1 once the stream was removed by force (`rm --force`): every holder
    /// stops with `Error::Removed` at its next wait or slow path.
    pub const REMOVED: usize = 1024;

    /// Offset of the first consumer slot.
    pub const CONSUMERS: usize = 4096;
}

/// Bit 63 of the tail word: a fragmented message is being written.
pub const TAIL_LOCK: u64 = 1 << 63;

/// Consumer slots in the meta file.
pub const CONSUMER_SLOTS: usize = 128;
/// Bytes per consumer slot.
pub const CONSUMER_SLOT_LEN: usize = 256;
/// Producer slots in the meta file.
pub const PRODUCER_SLOTS: usize = 64;
/// Bytes per producer slot.
pub const PRODUCER_SLOT_LEN: usize = 64;
/// Offset of the first producer slot.
pub const PRODUCERS: usize = meta::CONSUMERS + CONSUMER_SLOTS * CONSUMER_SLOT_LEN;

pub mod lock {
    //! Lock bytes (OFD write locks, beyond the end of the meta file): the
    //! owner of a slot holds its byte while it lives (FORMAT.md, "Liveness").
    /// Offset of the first lock byte in the meta file.
    pub const BASE: u64 = 1 << 20;
    /// Consumer slot `i` holds byte `BASE + CONSUMERS + i`.
    pub const CONSUMERS: u64 = 0;
    /// Producer slot `i` holds byte `BASE + PRODUCERS + i`.
    pub const PRODUCERS: u64 = 256;
    /// The fragment lock's holder.
    pub const FRAG_LOCK: u64 = 512;
    /// The registration lock's holder.
    pub const REG_LOCK: u64 = 513;
    /// The unblock lock's holder: one process at a time pads the claims
    /// of dead producers.
    pub const UNBLOCK_LOCK: u64 = 514;
}

pub mod cslot {
    //! Offsets inside a consumer slot.
    /// Owner word: pid | start time << 32; 0 = free.
    pub const OWNER: usize = 0;
    /// 0 = being set up, 1 = ready.
    pub const STATE: usize = 8;
    /// Slot kind (`KIND_*`, u32).
    pub const KIND: usize = 12;
    /// Member: index of its group's slot (u32).
    pub const GROUP: usize = 16;
    /// Length of the name (u32).
    pub const NAME_LEN: usize = 20;
    /// Last sign of life (u64 ms).
    pub const HEARTBEAT_MS: usize = 24;
    /// Name bytes.
    pub const NAME: usize = 32;
    /// Longest name.
    pub const NAME_MAX: usize = 128;
    /// Messages counted (u64).
    pub const MESSAGES: usize = 160;
    /// When the slot was taken (u64 ms).
    pub const CREATED_MS: usize = 168;
    /// Hot line.
    pub const POSITION: usize = 192;
    /// Member: first position of the run it holds (FORMAT.md, "Groups").
    pub const RUN_BEGIN: usize = 200;
    /// Member: end of the run as claimed.
    pub const RUN_END: usize = 208;
    /// Member: `seq << 2 | state` ([`RUN_IDLE`](super::RUN_IDLE), [`RUN_INTENT`](super::RUN_INTENT), [`RUN_HELD`](super::RUN_HELD)).
    pub const RUN_STATE: usize = 216;
    /// Member: owner word of the member that released this slot's run
    /// because it could not decode a record (it does not take it back).
    pub const RELEASER: usize = 224;
    /// User slot: first application word.
    pub const USER: usize = 224;
    /// User slot: number of application words.
    pub const USER_WORDS: usize = 4;
}

pub mod pslot {
    //! Offsets inside a producer slot.
    /// Owner word: pid | start time << 32; 0 = free.
    pub const OWNER: usize = 0;
    /// Position + 1 of the claim in progress, 0 when idle, [`CLAIMING`]
    /// between the start of a claim and the tail add's result.
    pub const CLAIM: usize = 8;
    /// Value of `CLAIM` while the position is not known yet.
    pub const CLAIMING: u64 = u64::MAX;
    /// Length of the claim in progress.
    pub const CLAIM_LEN: usize = 16;
    /// Messages written (u64).
    pub const MESSAGES: usize = 24;
    /// Bytes written (u64).
    pub const BYTES: usize = 32;
}

/// Consumer slot kind: a durable named consumer.
pub const KIND_DURABLE: u32 = 1;
/// Consumer slot kind: an ephemeral subscriber.
pub const KIND_SUBSCRIBER: u32 = 2;
/// Consumer slot kind: a group (its shared word and position).
pub const KIND_GROUP: u32 = 3;
/// Consumer slot kind: a member of a group.
pub const KIND_MEMBER: u32 = 4;
/// Consumer slot kind: a user slot (application words, holds nothing back).
pub const KIND_USER: u32 = 5;

/// Meta `LAYOUT`: a ring.
pub const LAYOUT_RING: u32 = 1;
/// Meta `LAYOUT`: a log of segment files.
pub const LAYOUT_LOG: u32 = 2;
/// Meta `POLICY`: producers wait for consumers.
pub const POLICY_BLOCK: u32 = 1;
/// Meta `POLICY`: producers overwrite, readers may lag.
pub const POLICY_OVERWRITE: u32 = 2;

/// The smallest and largest segment sizes (log2).
#[cfg(not(loom))]
pub const MIN_SEGMENT_SHIFT: u32 = 12;
/// The smallest segment size (log2) under loom: the models use rings of a
/// few frames.
#[cfg(loom)]
pub const MIN_SEGMENT_SHIFT: u32 = 6;
/// Largest segment size (log2).
pub const MAX_SEGMENT_SHIFT: u32 = 30;
/// Largest number of segments in a ring.
pub const MAX_SEGMENTS: u32 = 1 << 16;

/// A member slot's run state: nothing held.
pub const RUN_IDLE: u64 = 0;
/// A claim is being made: `RUN_BEGIN..RUN_END` is the attempt.
pub const RUN_INTENT: u64 = 1;
/// `RUN_BEGIN..RUN_END` is claimed and not yet acknowledged.
pub const RUN_HELD: u64 = 2;

/// A run state word.
#[inline]
pub const fn run_state(seq: u64, state: u64) -> u64 {
    seq << 2 | state
}

/// (seq, state) of a run state word.
#[inline]
pub const fn split_run_state(w: u64) -> (u64, u64) {
    (w >> 2, w & 3)
}

/// Group word: next position (>> 3) in the high 55 bits, then the "open"
/// bit (a fragmented message straddles the end of the last claimed run:
/// its claimer goes on with it), then the claimer tag (member slot index +
/// 1, 0 = none) in the low 8 bits.
#[inline]
pub const fn group_word(next: u64, open: bool, tag: u8) -> u64 {
    (next >> 3) << 9 | (open as u64) << 8 | tag as u64
}

/// (next, open, tag) of a group word.
#[inline]
pub const fn split_group(w: u64) -> (u64, bool, u8) {
    ((w >> 9) << 3, w & (1 << 8) != 0, w as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let lap = (1 << LAP_BITS) - 2;
        let a = word_a(F_COMMITTED | F_BEGIN | F_END, lap);
        assert_eq!(
            split_a(a),
            WordA {
                flags: F_COMMITTED | F_BEGIN | F_END,
                lap
            }
        );
        let p = 4096 * 9 + 8;
        let b = word_b(123, pos_check(p));
        assert_eq!((b_len(b), b_check(b)), (123, pos_check(p)));
        assert_eq!(
            parse(a, b, p, lap, 8, 4096),
            Ok(Slot::Frame {
                len: 123,
                flags: F_COMMITTED | F_BEGIN | F_END,
                total: 144
            })
        );
        // Another lap, however far: nothing committed here yet.
        assert_eq!(parse(a, b, p, lap - 1, 8, 4096), Ok(Slot::Empty));
        assert_eq!(parse(a, b, p, lap - (1 << 16), 8, 4096), Ok(Slot::Empty));
        // Word B of another position (no CRC to bind it): refused.
        assert!(parse(a, b, p + 8, lap, 16, 4096).is_err());
        // With a CRC, the CRC (over the position) is the check.
        let ck = word_a(F_COMMITTED | F_BEGIN | F_END | F_CHECKSUM, lap);
        assert!(parse(ck, word_b(123, 77), p + 8, lap, 16, 4096).is_ok());
        assert_ne!(frame_crc(p, 3, 0, b"abc"), frame_crc(p + 8, 3, 0, b"abc"));
        let timed = [&7u64.to_le_bytes()[..], b"abc"].concat();
        assert_eq!(
            frame_crc(p, 11, F_TIMED, &timed),
            frame_crc_timed(p, 11, F_TIMED, 7, b"abc")
        );
        let t = word_a(F_COMMITTED | F_BEGIN | F_END | F_TIMED, lap);
        assert!(parse(t, word_b(7, pos_check(p)), p, lap, 8, 4096).is_err());
        assert!(parse(t, word_b(8, pos_check(p)), p, lap, 8, 4096).is_ok());
        assert!(parse(a, b, p, lap, 4000, 4096).is_err());
        // 8-byte padding: word A alone; the flag only with PADDING.
        let pad8 = word_a(F_COMMITTED | F_PADDING | F_PAD8, lap);
        assert_eq!(
            parse(pad8, u64::MAX, p, lap, 4088, 4096),
            Ok(Slot::Frame {
                len: 0,
                flags: F_COMMITTED | F_PADDING | F_PAD8,
                total: 8
            })
        );
        assert!(parse(word_a(F_COMMITTED | F_PAD8, lap), b, p, lap, 8, 4096).is_err());
        assert_eq!(lap_of(u64::MAX >> 1, 16), (u64::MAX >> 17));
        assert_eq!(
            split_group(group_word(1 << 40, false, 9)),
            (1 << 40, false, 9)
        );
        assert_eq!(split_group(group_word(8, true, 128)), (8, true, 128));
        assert_eq!(split_run_state(run_state(77, RUN_HELD)), (77, RUN_HELD));
        assert_eq!(META_LEN, 4096 + 32768 + 4096);
    }
}
