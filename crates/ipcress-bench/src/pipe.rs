//! Anonymous pipes: `pipe(2)`, one per consumer, at the kernel's default size
//! or grown to [`BIG_PIPE`] with `F_SETPIPE_SZ`.

use std::fs::File;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use rustix::fs::{OFlags, fcntl_setfl};
use rustix::pipe::{PipeFlags, fcntl_getpipe_size, fcntl_setpipe_size, pipe_with};

use crate::fdstream::{FdRx, FdTx, nonblocking};
use crate::spec::{Case, Transport};
use crate::transport::{Channel, Endpoint, Rx, Tx};

/// The size `pipe-1m` asks for.
pub const BIG_PIPE: usize = 1 << 20;

pub fn channel(transport: Transport, readers: usize) -> Result<Channel> {
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..readers {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC)?;
        if transport == Transport::Pipe1m {
            let got = fcntl_setpipe_size(&w, BIG_PIPE).context("F_SETPIPE_SZ")?;
            anyhow::ensure!(got >= BIG_PIPE, "F_SETPIPE_SZ gave {got} bytes");
        }
        writes.push(w);
        reads.push(Endpoint::fds(vec![r]));
    }
    Ok(Channel {
        writer: Endpoint::fds(writes),
        readers: reads,
    })
}

pub fn tx(fds: Vec<OwnedFd>) -> Result<Box<dyn Tx>> {
    Ok(Box::new(FdTx::new(
        fds.into_iter().map(File::from).collect(),
    )))
}

pub fn rx(case: &Case, mut fds: Vec<OwnedFd>) -> Result<Box<dyn Rx>> {
    let fd = fds.pop().context("pipe reader got no fd")?;
    if nonblocking(case.wait) {
        fcntl_setfl(&fd, OFlags::NONBLOCK)?;
    }
    Ok(Box::new(FdRx::new(File::from(fd))))
}

/// The kernel's default pipe size, as `F_GETPIPE_SZ` reports it.
pub fn default_size() -> Result<usize> {
    let (_r, w) = pipe_with(PipeFlags::CLOEXEC)?;
    Ok(fcntl_getpipe_size(&w)?)
}
