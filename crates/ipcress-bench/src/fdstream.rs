//! Byte streams over file descriptors (pipes and sockets): one `write(2)` per
//! message, and reads of up to [`READ_BUF`] bytes.

use std::io::{ErrorKind, Read, Write};

use anyhow::{Result, bail};

use crate::spec::Wait;
use crate::transport::{Rx, Tx};

/// The reader's buffer: each `read(2)` asks for this much.
pub const READ_BUF: usize = 64 << 10;

/// Writes every message to each of its streams in turn (fan-out is one
/// stream per consumer).
pub struct FdTx<W> {
    outs: Vec<W>,
}

impl<W: Write> FdTx<W> {
    pub fn new(outs: Vec<W>) -> FdTx<W> {
        FdTx { outs }
    }
}

impl<W: Write> Tx for FdTx<W> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        for out in &mut self.outs {
            write_all(out, msg)?;
        }
        Ok(())
    }
}

/// `write_all` that also rides out `EAGAIN` on a non-blocking socket.
fn write_all(out: &mut impl Write, mut msg: &[u8]) -> Result<()> {
    while !msg.is_empty() {
        match out.write(msg) {
            Ok(0) => bail!("peer closed the stream"),
            Ok(n) => msg = &msg[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                std::hint::spin_loop()
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub struct FdRx<R> {
    input: R,
    buf: Vec<u8>,
}

impl<R: Read> FdRx<R> {
    /// In [`Wait::Spin`] the caller has already made `input` non-blocking.
    pub fn new(input: R) -> FdRx<R> {
        FdRx {
            input,
            buf: vec![0; READ_BUF],
        }
    }
}

impl<R: Read> Rx for FdRx<R> {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        loop {
            match self.input.read(&mut self.buf) {
                Ok(0) => bail!("peer closed the stream"),
                Ok(n) => {
                    f(&self.buf[..n]);
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    std::hint::spin_loop()
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether a reader of this case polls a non-blocking fd.
pub fn nonblocking(wait: Wait) -> bool {
    wait == Wait::Spin
}
