//! Turning a stored frame into the bytes the caller sees: checksum,
//! decryption and decompression, with buffers reused from record to record.

use crate::sync::atomic::{Ordering::*, fence};

use crate::codec::{self};
use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::options::*;
use crate::protocol::read::*;
use crate::storage::HeldBytes;

impl Consumer {
    /// Check the frame's bytes and make them readable: borrow the mapping
    /// when safe, else copy, validate and decode into the buffer.
    #[inline(always)]
    pub(crate) fn decode(&mut self, p: u64, f: &Frame) -> Result<(Body, u64)> {
        let Frame {
            ref seg,
            off,
            len,
            flags,
            ..
        } = *f;
        // A timed frame's stored bytes start with its time word C, which
        // the CRC covers and the codecs do not see.
        let (body, data_len, time) = f.body();
        let time = time.unwrap_or(0);
        let len_us = data_len as usize;
        // (Model memory cannot be borrowed: under loom every record is copied.)
        let copy = self.s.opts.policy == Policy::Overwrite
            || flags & (F_COMPRESSED | F_ENCRYPTED) != 0
            || cfg!(loom);
        if !copy {
            // Block policy: this consumer's published position is at or
            // below `p`, so no producer writes this frame while it is held.
            let stored = HeldBytes::new(seg.clone(), off + HEADER_LEN, len as usize);
            if flags & F_CHECKSUM != 0 {
                let b = seg.region.u64_at(off + 8).load(Relaxed);
                if frame_crc(p, len, flags, stored.bytes()) != b_check(b) {
                    return Err(Error::corrupt(p, "checksum mismatch"));
                }
            }
            // The caller sees the record's bytes, after the time word.
            return Ok((Body::Mapped(stored.skip(body - (off + HEADER_LEN))), time));
        }
        // A compressed record is read into `zbuf` and decoded into `buf`;
        // any other is decoded in place in `buf`.
        let zipped = flags & F_COMPRESSED != 0;
        let mut buf = std::mem::take(if zipped {
            &mut self.zbuf
        } else {
            &mut self.buf
        });
        // No clear first: `read` overwrites every byte, so only growth is zeroed.
        buf.resize(len_us, 0);
        if self.s.opts.policy == Policy::Overwrite {
            // A producer may be overwriting the frame: atomic loads, then
            // the check below.
            seg.region.read_racy(body, &mut buf);
        } else {
            seg.region.read(body, &mut buf);
        }
        let b = seg.region.u64_at(off + 8).load(Relaxed);
        if self.s.opts.policy == Policy::Overwrite {
            // Seqlock-style validation: if a producer began overwriting
            // this frame, it raised the head first (FORMAT.md, "Overwrite").
            fence(Acquire);
            let a_now = seg.region.u64_at(off).load(Relaxed);
            if self.s.head_word().load(Relaxed) > p || a_now != word_a(flags, self.s.lap(p)) {
                self.put_back(zipped, buf);
                return Err(self.lagged(p));
            }
        }
        let crc = |buf: &[u8]| {
            if flags & F_TIMED != 0 {
                frame_crc_timed(p, len, flags, time, buf)
            } else {
                frame_crc(p, len, flags, buf)
            }
        };
        if flags & F_CHECKSUM != 0 && crc(&buf) != b_check(b) {
            self.put_back(zipped, buf);
            if flags & F_ENCRYPTED != 0 {
                return Err(Error::Decode {
                    stream: self.s.name.clone(),
                    position: p,
                    reason: "authentication failed (checksum of the sealed record does not match)"
                        .into(),
                });
            }
            return Err(Error::corrupt(p, "checksum mismatch"));
        }
        let r = self.decode_codecs(p, data_len, flags, &mut buf);
        self.put_back(zipped, buf);
        r.map(|()| (Body::Buffer, time))
    }

    /// Returns the buffer `decode` took.
    pub(crate) fn put_back(&mut self, zipped: bool, buf: Vec<u8>) {
        if zipped {
            self.zbuf = buf;
        } else {
            self.buf = buf;
        }
    }

    /// Opens and decompresses the stored bytes in `buf`. The plaintext ends
    /// up in `buf`, or in `self.buf` when the record is compressed.
    pub(crate) fn decode_codecs(
        &mut self,
        p: u64,
        len: u32,
        flags: u16,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let fail = |reason: &str| Error::Decode {
            stream: self.s.name.clone(),
            position: p,
            reason: reason.into(),
        };
        if flags & F_ENCRYPTED != 0 {
            let Some(cipher) = &self.s.cipher else {
                return Err(Error::KeyRequired {
                    stream: self.s.name.clone(),
                });
            };
            let (origin, opos, skip) = if flags & F_FOREIGN != 0 {
                let Some((id, opos)) = split_origin(buf) else {
                    return Err(fail("foreign frame shorter than its origin"));
                };
                if id == self.s.id {
                    return Err(fail("foreign frame claims to come from this stream"));
                }
                (id, opos, ORIGIN_LEN)
            } else {
                (self.s.id, p, 0)
            };
            let clen = (len as usize - skip) as u32;
            let aad = crate::protocol::claim::aad(clen, flags, opos);
            buf.drain(..skip);
            let n = cipher
                .open_with(origin, opos, &aad, buf)
                .map_err(|codec::OpenError| {
                    fail("authentication failed (wrong key, or the record was altered or moved)")
                })?;
            buf.truncate(n);
        } else if self.s.opts.encrypted {
            return Err(fail("record is not encrypted in an encrypted stream"));
        }
        if flags & F_COMPRESSED != 0 {
            // The codec is recognised by its bytes, so frames bridged from a
            // stream with another compression setting still decode.
            let c = if buf.len() >= 8 && buf[4..8] == [0x28, 0xB5, 0x2F, 0xFD] {
                codec::Compression::Zstd(3)
            } else {
                codec::Compression::Lz4
            };
            let mut out = std::mem::take(&mut self.buf);
            let r = codec::decompress(c, buf, &mut out, self.s.max_payload() * 64 + (64 << 20));
            self.buf = out;
            r.map_err(|e| fail(&format!("decompression failed: {e}")))?;
        }
        Ok(())
    }
}
