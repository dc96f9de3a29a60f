//! Unix domain stream sockets (`socketpair(AF_UNIX, SOCK_STREAM)`), at the
//! default buffer sizes or with [`BIG_BUF`] asked for in `SO_SNDBUF` and
//! `SO_RCVBUF` on both ends.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use anyhow::{Context, Result};
use rustix::net::sockopt;

use crate::fdstream::{FdRx, FdTx, nonblocking};
use crate::spec::{Case, Transport};
use crate::transport::{Channel, Duplex, Endpoint, Rx, Tx};

/// What `uds-4m` asks for (the kernel doubles it for its bookkeeping).
pub const BIG_BUF: usize = 4 << 20;

fn pair(transport: Transport) -> Result<(UnixStream, UnixStream)> {
    let (a, b) = UnixStream::pair()?;
    if transport == Transport::Uds4m {
        for s in [&a, &b] {
            sockopt::set_socket_send_buffer_size(s, BIG_BUF).context("SO_SNDBUF")?;
            sockopt::set_socket_recv_buffer_size(s, BIG_BUF).context("SO_RCVBUF")?;
        }
    }
    Ok((a, b))
}

pub fn channel(transport: Transport, readers: usize) -> Result<Channel> {
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..readers {
        let (w, r) = pair(transport)?;
        writes.push(OwnedFd::from(w));
        reads.push(Endpoint::fds(vec![OwnedFd::from(r)]));
    }
    Ok(Channel {
        writer: Endpoint::fds(writes),
        readers: reads,
    })
}

/// One connection, both directions: each side writes and reads the same socket.
pub fn duplex(transport: Transport) -> Result<Duplex> {
    let (a, b) = pair(transport)?;
    let ends = |s: UnixStream| -> Result<(Endpoint, Endpoint)> {
        let copy = s.try_clone()?;
        Ok((
            Endpoint::fds(vec![s.into()]),
            Endpoint::fds(vec![copy.into()]),
        ))
    };
    Ok((ends(a)?, ends(b)?))
}

pub fn tx(fds: Vec<OwnedFd>) -> Result<Box<dyn Tx>> {
    Ok(Box::new(FdTx::new(
        fds.into_iter().map(UnixStream::from).collect(),
    )))
}

pub fn rx(case: &Case, mut fds: Vec<OwnedFd>) -> Result<Box<dyn Rx>> {
    let s = UnixStream::from(fds.pop().context("socket reader got no fd")?);
    s.set_nonblocking(nonblocking(case.wait))?;
    Ok(Box::new(FdRx::new(s)))
}

/// (SO_SNDBUF, SO_RCVBUF) as the kernel reports them on a fresh pair.
pub fn buffer_sizes(transport: Transport) -> Result<(usize, usize)> {
    let (a, _b) = pair(transport)?;
    Ok((
        sockopt::socket_send_buffer_size(&a)?,
        sockopt::socket_recv_buffer_size(&a)?,
    ))
}
