//! Raw frames: stored bytes and flags as they are, for bridges that carry
//! a stream elsewhere without opening its records.

use crate::sync::atomic::{Ordering::*, fence};

use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::options::*;
use crate::protocol::read::*;

/// One stored frame exactly as written: possibly compressed and encrypted.
/// Bridges move these between streams without decoding them.
/// ```
/// # use ipcress::{Compression, Flags, StartAt, Stream, StreamOptions};
/// let opts = StreamOptions::ring(1 << 16).compression(Compression::Lz4);
/// let stream = Stream::create_in_memory("doc", &opts)?;
/// let mut bridge = stream.subscribe(StartAt::Start)?;
/// stream.producer()?.send(&[b'z'; 1000])?;
/// let (at, frame) = bridge.recv_raw_timeout(std::time::Duration::from_millis(10))?.expect("sent");
/// assert_eq!((at, frame.origin, frame.origin_position), (0, stream.id(), 0));
/// assert!(frame.flags.contains(Flags::COMPRESSED) && frame.data.len() < 1000);
/// assert!(frame.time.is_some()); // its commit time, in ns since the epoch
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// Which fragment of a message it is and how its data is stored.
    pub flags: Flags,
    /// Stream id where the frame was first written (its nonce, if encrypted).
    pub origin: [u8; 16],
    /// Position where the frame was first written.
    pub origin_position: u64,
    /// The stored payload (ciphertext and tag when encrypted).
    pub data: Vec<u8>,
    /// Commit time in the stream it was read from, in ns since the Unix
    /// epoch (None: a format-3 stream). Writing a raw frame ignores it:
    /// the frame gets its commit time in the stream it is written to.
    pub time: Option<u64>,
}

impl Consumer {
    /// The next stored frame at our position, if committed.
    pub(crate) fn poll_raw(&mut self) -> Result<Option<(u64, RawFrame)>> {
        loop {
            let (p, peek) = self.peek_here()?;
            match peek {
                Peek::Frame(f) => {
                    let Frame {
                        ref seg,
                        off,
                        len,
                        flags,
                        total,
                    } = f;
                    if flags & (F_PADDING | F_ABORTED) != 0 {
                        self.pos = p + total;
                        continue;
                    }
                    let (body, data_len, time) = f.body();
                    let mut data = vec![0u8; data_len as usize];
                    if self.s.opts.policy == Policy::Overwrite {
                        seg.region.read_racy(body, &mut data);
                    } else {
                        seg.region.read(body, &mut data);
                    }
                    let b = seg.region.u64_at(off + 8).load(Relaxed);
                    fence(Acquire);
                    if self.s.head_word().load(Relaxed) > p {
                        return Err(self.lagged(p));
                    }
                    let crc = match time {
                        Some(t) => frame_crc_timed(p, len, flags, t, &data),
                        None => frame_crc(p, len, flags, &data),
                    };
                    if flags & F_CHECKSUM != 0 && crc != b_check(b) {
                        return Err(Error::corrupt(p, "checksum mismatch"));
                    }
                    let (origin, origin_position) = if flags & F_FOREIGN != 0 {
                        let Some(origin) = split_origin(&data) else {
                            return Err(Error::corrupt(p, "foreign frame shorter than its origin"));
                        };
                        data.drain(..ORIGIN_LEN);
                        origin
                    } else {
                        (self.s.id, p)
                    };
                    self.pos = p + total;
                    self.msgs += 1;
                    return Ok(Some((
                        p,
                        RawFrame {
                            flags: Flags::from_bits_truncate(flags),
                            origin,
                            origin_position,
                            data,
                            time,
                        },
                    )));
                }
                Peek::Empty => {
                    self.check_hole(p)?;
                    return Ok(None);
                }
            }
        }
    }
}
