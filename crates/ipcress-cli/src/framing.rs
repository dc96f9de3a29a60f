//! Framings: how records are cut from a byte stream (`put`, `exec` output)
//! and written back to one (`get`, `exec` input).
//!
//! - lines: one record per line, the newline not included;
//! - length-prefixed: a u32 little-endian length, then that many bytes;
//! - whole: the whole input is one record; on output, raw bytes.
//!
//! Records larger than one frame go through `Producer::writer()` and are
//! read back through `Message::reader()`. On output, a fragmented record
//! of up to `WHOLE_LIMIT` bytes is read whole before it is written, so that
//! one whose producer died in its middle is skipped without a trace;
//! larger ones are streamed and never sit in memory whole (except for
//! length-prefixed output, which needs the length first).

use std::io::{self, BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use ipcress::{Message, Producer};

/// How records are delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Newline-separated.
    Lines,
    /// u32 LE length, then bytes.
    LengthPrefixed,
    /// One record for the whole input / raw bytes.
    Whole,
    /// Records of exactly this many bytes, back to back (raw video
    /// frames); on output, raw bytes like `Whole`.
    Fixed(usize),
}

/// Why moving records stopped.
#[derive(Debug)]
pub enum MoveError {
    /// Reading input or writing output failed.
    Io(io::Error),
    /// The stream refused (full, corrupt, key, ...).
    Stream(ipcress::Error),
    /// The input ended inside a record.
    Truncated(String),
    /// SIGINT or SIGTERM.
    Interrupted,
    /// A message that cannot be delivered whole and is skipped: its
    /// producer died in the middle of it, or (Overwrite policy) it was
    /// overwritten while it was read. `written` bytes of it had already
    /// gone to the output (only for messages larger than `WHOLE_LIMIT`).
    /// The consumer is past it: warn and go on.
    Skipped {
        /// `Error::Aborted` or `Error::Lagged`.
        error: ipcress::Error,
        /// Bytes of the message written before it failed.
        written: u64,
    },
}

impl std::fmt::Display for MoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveError::Io(e) => e.fmt(f),
            MoveError::Stream(e) => e.fmt(f),
            MoveError::Truncated(m) => f.write_str(m),
            MoveError::Interrupted => f.write_str("interrupted"),
            MoveError::Skipped { error, .. } => error.fmt(f),
        }
    }
}

impl std::error::Error for MoveError {}

impl From<ipcress::Error> for MoveError {
    fn from(e: ipcress::Error) -> Self {
        match e {
            // A wait for space given up on SIGINT/SIGTERM (`interrupt_on`).
            ipcress::Error::Interrupted => MoveError::Interrupted,
            e => MoveError::Stream(e),
        }
    }
}

impl MoveError {
    /// Split an io::Error that may carry a library error (from a message
    /// reader or writer) into the right variant.
    fn from_io(e: io::Error) -> MoveError {
        if e.get_ref().is_some_and(|i| i.is::<ipcress::Error>()) {
            let inner = e.into_inner().expect("checked above");
            match inner.downcast::<ipcress::Error>() {
                Ok(le) => MoveError::from(*le),
                Err(other) => MoveError::Io(io::Error::other(other)),
            }
        } else {
            MoveError::Io(e)
        }
    }

    /// A library error met while reading a message: a skipped message
    /// (see `Skipped`) or a real failure.
    fn reading(e: io::Error, written: u64) -> MoveError {
        match MoveError::from_io(e) {
            MoveError::Stream(
                error @ (ipcress::Error::Aborted { .. } | ipcress::Error::Lagged { .. }),
            ) => MoveError::Skipped { error, written },
            other => other,
        }
    }

    /// The one-line warning for a skipped message, or None for any other
    /// error (which stops the command).
    pub fn skip_warning(&self, stream: &str) -> Option<String> {
        let MoveError::Skipped { error, written } = self else {
            return None;
        };
        let what = match error {
            ipcress::Error::Lagged { skipped_bytes } => format!(
                "a message was overwritten while it was read (fell behind, {skipped_bytes} bytes were skipped)"
            ),
            e => format!("{e}; it is skipped"),
        };
        let partial = if *written > 0 {
            format!(" ({written} bytes of it were already written out)")
        } else {
            String::new()
        };
        Some(format!(
            "ipcress: warning: stream {stream}: {what}{partial}"
        ))
    }

    /// Whether this is the reader of our output going away (`| head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, MoveError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Send one record, through a streaming writer if it is too large for one
/// frame.
pub fn send_one(p: &mut Producer, data: &[u8]) -> Result<(), MoveError> {
    if data.len() <= p.max_message_len() {
        p.send(data)?;
    } else {
        let mut w = p.writer()?;
        w.write_all(data).map_err(MoveError::from_io)?;
        w.finish()?;
    }
    Ok(())
}

const CHUNK: usize = 256 << 10;

/// Fragmented messages up to this size are read whole before any byte of
/// them is written, so that an aborted one writes nothing. Larger ones are
/// streamed (a length-prefixed one cannot be: its length comes first; a
/// u32 bounds it anyway).
pub const WHOLE_LIMIT: usize = 64 << 20;

/// Copy up to `limit` bytes of `r` into one streamed record.
fn send_streamed(
    p: &mut Producer,
    r: &mut dyn Read,
    limit: Option<u64>,
    stop: &AtomicBool,
) -> Result<u64, MoveError> {
    let mut w = p.writer()?;
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        if stop.load(Relaxed) {
            // Dropping the writer closes the record as aborted.
            return Err(MoveError::Interrupted);
        }
        let want = match limit {
            Some(l) => (l - done).min(CHUNK as u64) as usize,
            None => CHUNK,
        };
        if want == 0 {
            break;
        }
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(MoveError::Io(e)),
        };
        w.write_all(&buf[..n]).map_err(MoveError::from_io)?;
        done += n as u64;
    }
    if let Some(l) = limit
        && done < l
    {
        return Err(MoveError::Truncated(format!(
            "input ends inside a length-prefixed record: expected {l} bytes, got {done}"
        )));
    }
    w.finish()?;
    Ok(done)
}

/// Read records from `r` in `framing` and send each. Returns the number of
/// records sent. `on_record` is called after each.
pub fn send_records(
    r: &mut dyn BufRead,
    framing: Framing,
    p: &mut Producer,
    stop: &AtomicBool,
    on_record: &mut dyn FnMut(),
) -> Result<u64, MoveError> {
    let mut n = 0u64;
    match framing {
        Framing::Whole => {
            send_streamed(p, r, None, stop)?;
            on_record();
            n += 1;
        }
        Framing::Lines => {
            let mut line = Vec::new();
            loop {
                if stop.load(Relaxed) {
                    return Err(MoveError::Interrupted);
                }
                line.clear();
                let got = match r.read_until(b'\n', &mut line) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(MoveError::Io(e)),
                };
                if got == 0 {
                    break;
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                send_one(p, &line)?;
                on_record();
                n += 1;
            }
        }
        Framing::Fixed(size) => {
            let mut rec = vec![0u8; size];
            loop {
                if stop.load(Relaxed) {
                    return Err(MoveError::Interrupted);
                }
                if !read_record(r, &mut rec)? {
                    break;
                }
                send_one(p, &rec)?;
                on_record();
                n += 1;
            }
        }
        Framing::LengthPrefixed => {
            let mut rec = Vec::new();
            loop {
                if stop.load(Relaxed) {
                    return Err(MoveError::Interrupted);
                }
                let Some(len) = read_prefix(r)? else { break };
                if len as usize <= p.max_message_len() {
                    rec.clear();
                    rec.resize(len as usize, 0);
                    read_full(r, &mut rec, len)?;
                    p.send(&rec)?;
                } else {
                    send_streamed(p, &mut *r, Some(len as u64), stop)?;
                }
                on_record();
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Fill `buf` with the next fixed-size record: Ok(false) at a clean end
/// of input, an error if the input ends inside the record.
fn read_record(r: &mut dyn BufRead, buf: &mut [u8]) -> Result<bool, MoveError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(MoveError::Truncated(format!(
                    "input ends inside a record: {got} of {} bytes (--record-size)",
                    buf.len()
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MoveError::Io(e)),
        }
    }
    Ok(true)
}

/// The next u32 LE length, or None at a clean end of input.
fn read_prefix(r: &mut dyn BufRead) -> Result<Option<u32>, MoveError> {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(MoveError::Truncated(format!(
                    "input ends inside a length prefix ({got} of 4 bytes)"
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MoveError::Io(e)),
        }
    }
    Ok(Some(u32::from_le_bytes(b)))
}

fn read_full(r: &mut dyn BufRead, buf: &mut [u8], len: u32) -> Result<(), MoveError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            MoveError::Truncated(format!(
                "input ends inside a length-prefixed record of {len} bytes"
            ))
        } else {
            MoveError::Io(e)
        }
    })
}

/// Write one message in `framing`. Returns the payload bytes written.
pub fn write_message(
    msg: Message<'_>,
    framing: Framing,
    out: &mut dyn Write,
) -> Result<u64, MoveError> {
    if let Some(b) = msg.bytes() {
        match framing {
            Framing::Lines => {
                out.write_all(b).map_err(MoveError::Io)?;
                out.write_all(b"\n").map_err(MoveError::Io)?;
            }
            Framing::LengthPrefixed => {
                let len = u32::try_from(b.len()).map_err(|_| too_long(b.len() as u64))?;
                out.write_all(&len.to_le_bytes()).map_err(MoveError::Io)?;
                out.write_all(b).map_err(MoveError::Io)?;
            }
            Framing::Whole | Framing::Fixed(_) => out.write_all(b).map_err(MoveError::Io)?,
        }
        return Ok(b.len() as u64);
    }
    // A fragmented message: read it whole first when it is not too large,
    // so that a message whose producer died in its middle leaves nothing
    // on the output (the consumer goes on with the next one).
    let mut r = msg.reader();
    let mut v = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    let mut streaming = false;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if streaming && framing == Framing::Lines {
                    // Keep the next record on a line of its own.
                    out.write_all(b"\n").map_err(MoveError::Io)?;
                }
                return Err(MoveError::reading(e, total));
            }
        };
        // Length-prefixed output needs the length first: always whole.
        if !streaming && (v.len() + n <= WHOLE_LIMIT || framing == Framing::LengthPrefixed) {
            v.extend_from_slice(&buf[..n]);
            continue;
        }
        if !streaming {
            // Too large to hold: write it as it comes.
            streaming = true;
            out.write_all(&v).map_err(MoveError::Io)?;
            total = v.len() as u64;
            v = Vec::new();
        }
        out.write_all(&buf[..n]).map_err(MoveError::Io)?;
        total += n as u64;
    }
    if !streaming {
        if framing == Framing::LengthPrefixed {
            let len = u32::try_from(v.len()).map_err(|_| too_long(v.len() as u64))?;
            out.write_all(&len.to_le_bytes()).map_err(MoveError::Io)?;
        }
        out.write_all(&v).map_err(MoveError::Io)?;
        total = v.len() as u64;
    }
    if framing == Framing::Lines {
        out.write_all(b"\n").map_err(MoveError::Io)?;
    }
    Ok(total)
}

fn too_long(len: u64) -> MoveError {
    MoveError::Truncated(format!(
        "a record of {len} bytes does not fit a u32 length prefix"
    ))
}

/// A lapped consumer goes on (with a warning); other errors stop.
pub fn lagged_or(e: ipcress::Error, stream: &str) -> Result<(), MoveError> {
    match e {
        ipcress::Error::Lagged { skipped_bytes } => {
            crate::say(format_args!(
                "ipcress: warning: stream {stream}: fell behind, {skipped_bytes} bytes were skipped"
            ));
            Ok(())
        }
        e => Err(MoveError::Stream(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipcress::{StartAt, Stream, StreamOptions};

    struct Root(std::path::PathBuf);
    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn round_trip(framing: Framing, input: &[u8]) -> (u64, Vec<u8>) {
        let root = Root(std::env::temp_dir().join(format!(
            "ipcress-cli-framing-{}-{:?}-{}",
            std::process::id(),
            framing,
            input.len()
        )));
        // Larger than the input: one thread writes everything, then reads.
        let s = Stream::create_in(&root.0, "s", &StreamOptions::ring(1 << 20)).unwrap();
        let mut c = s.subscribe(StartAt::Start).unwrap();
        let mut p = s.producer().unwrap();
        let stop = AtomicBool::new(false);
        let n = send_records(&mut &input[..], framing, &mut p, &stop, &mut || {}).unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let m = c.recv().unwrap();
            write_message(m, framing, &mut out).unwrap();
        }
        (n, out)
    }

    #[test]
    fn lines() {
        let (n, out) = round_trip(Framing::Lines, b"a\n\nccc\n");
        assert_eq!(n, 3);
        assert_eq!(out, b"a\n\nccc\n");
        // A last line without newline gains one.
        let (n, out) = round_trip(Framing::Lines, b"a\nb");
        assert_eq!((n, &out[..]), (2, &b"a\nb\n"[..]));
        let (n, _) = round_trip(Framing::Lines, b"");
        assert_eq!(n, 0);
    }

    #[test]
    fn length_prefixed_with_large_records() {
        let mut input = Vec::new();
        for len in [0usize, 1, 5, 20_000, 100_000] {
            input.extend_from_slice(&(len as u32).to_le_bytes());
            input.extend((0..len).map(|i| (i * 7 + len) as u8));
        }
        let (n, out) = round_trip(Framing::LengthPrefixed, &input);
        assert_eq!(n, 5);
        assert_eq!(out, input);
    }

    #[test]
    fn whole() {
        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (n, out) = round_trip(Framing::Whole, &input);
        assert_eq!(n, 1);
        assert_eq!(out, input);
    }

    #[test]
    fn fixed_size_records() {
        // 7 records of 100,000 bytes: each is one record, in order, and the
        // output is the input (records larger than a frame go through a
        // writer).
        let input: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let (n, out) = round_trip(Framing::Fixed(100_000), &input);
        assert_eq!(n, 7);
        assert_eq!(out, input);
        let (n, out) = round_trip(Framing::Fixed(3), b"abcdef");
        assert_eq!((n, &out[..]), (2, &b"abcdef"[..]));
    }

    #[test]
    fn truncated_fixed_size_record() {
        let root = Root(std::env::temp_dir().join(format!(
            "ipcress-cli-framing-fixed-trunc-{}",
            std::process::id()
        )));
        let s = Stream::create_in(&root.0, "s", &StreamOptions::ring(1 << 16)).unwrap();
        let mut c = s.subscribe(StartAt::Start).unwrap();
        let mut p = s.producer().unwrap();
        let stop = AtomicBool::new(false);
        let e = send_records(
            &mut &b"abcdefg"[..],
            Framing::Fixed(3),
            &mut p,
            &stop,
            &mut || {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("1 of 3 bytes"), "{e}");
        // The two whole records were sent, the partial one was not.
        assert_eq!(c.recv().unwrap().to_vec().unwrap(), b"abc");
        assert_eq!(c.recv().unwrap().to_vec().unwrap(), b"def");
        assert!(c.try_recv().unwrap().is_none());
    }

    #[test]
    fn truncated_length_prefixed() {
        let root = Root(
            std::env::temp_dir().join(format!("ipcress-cli-framing-trunc-{}", std::process::id())),
        );
        let s = Stream::create_in(&root.0, "s", &StreamOptions::ring(1 << 16)).unwrap();
        let mut p = s.producer().unwrap();
        let stop = AtomicBool::new(false);
        let input = [10u8, 0, 0, 0, 1, 2];
        let e = send_records(
            &mut &input[..],
            Framing::LengthPrefixed,
            &mut p,
            &stop,
            &mut || {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("ends inside"), "{e}");
    }
}
