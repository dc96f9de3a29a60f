//! What a caller does when records are damaged or must be carried as
//! stored: skip a damaged record, read raw frames.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::raw::RawFrame;
use crate::protocol::read::*;
use crate::sync::atomic::Ordering::*;

impl Consumer {
    /// After a read reported damage at this consumer's position (`Corrupt`,
    /// `Decode`), move past the damaged record to the next valid frame
    /// header (or the segment end). Returns the number of bytes skipped:
    /// 0 when no damage was reported since the last record delivered, so a
    /// call out of turn never skips a sound record.
    /// ```
    /// # use ipcress::{Error, StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// match consumer.try_recv() {
    ///     Err(Error::Corrupt { .. } | Error::Decode { .. }) => {
    ///         consumer.skip_damaged()?;
    ///     }
    ///     other => assert!(other?.is_none()), // nothing here yet
    /// }
    /// assert_eq!(consumer.skip_damaged()?, 0); // at the tail: nothing to skip
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn skip_damaged(&mut self) -> Result<u64> {
        if !self.damaged {
            return Ok(0);
        }
        self.damaged = false;
        self.release_held();
        let p = self.position();
        let s = self.s.clone();
        let tail = s.tail();
        if p >= tail {
            return Ok(0);
        }
        let seg_end = (p | (s.seg_size - 1)) + 1;
        // Scan rather than trust the header: a damaged length field can
        // look sound. Headers are checked for lap, position and CRC.
        let next = match self.seg_for(p)? {
            Some(seg) => crate::protocol::unblock::next_valid(&s, &seg, p, tail.min(seg_end)),
            None => tail.min(seg_end),
        };
        match self.kind {
            Kind::Member { group, .. } => {
                let gr = s.cslot(group);
                let w = gr.u64_at(cslot::POSITION);
                let cur = w.load(Acquire);
                if split_group(cur).0 == p {
                    let _ = w.compare_exchange(cur, group_word(next, false, 0), AcqRel, Relaxed);
                }
            }
            _ => {
                self.msg_start = None;
                self.pos = next;
                self.publish(next);
            }
        }
        self.stuck = None;
        Ok(next - p)
    }

    /// Wait up to `timeout` for the next stored frame, returned exactly as
    /// stored (not decoded): every fragment of a large message separately.
    /// Non-group consumers only.
    /// ```
    /// use ipcress::Flags;
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut bridge = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"as stored")?;
    /// let (at, frame) = bridge.recv_raw_timeout(std::time::Duration::from_millis(10))?.expect("sent");
    /// assert_eq!((at, frame.flags, frame.origin), (0, Flags::BEGIN | Flags::END, stream.id()));
    /// assert_eq!(frame.data, b"as stored");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn recv_raw_timeout(&mut self, timeout: Duration) -> Result<Option<(u64, RawFrame)>> {
        if let Kind::Member { .. } = self.kind {
            return Err(Error::InvalidOptions(
                "raw frames are read by durable consumers and subscribers".into(),
            ));
        }
        self.release_held();
        let deadline = Instant::now() + timeout;
        self.wait_for(Some(deadline), Consumer::poll_raw)
    }
}
