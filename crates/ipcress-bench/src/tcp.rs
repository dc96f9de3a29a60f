//! TCP over loopback (127.0.0.1) with `TCP_NODELAY` on both ends and the
//! kernel's default (auto-tuned) buffers.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use rustix::net::sockopt;

use crate::fdstream::{FdRx, FdTx, nonblocking};
use crate::spec::Case;
use crate::transport::{Channel, Duplex, Endpoint, Rx, Tx};

fn pair() -> Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let a = TcpStream::connect(listener.local_addr()?)?;
    let (b, _) = listener.accept()?;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    Ok((a, b))
}

pub fn channel(readers: usize) -> Result<Channel> {
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..readers {
        let (w, r) = pair()?;
        writes.push(OwnedFd::from(w));
        reads.push(Endpoint::fds(vec![OwnedFd::from(r)]));
    }
    Ok(Channel {
        writer: Endpoint::fds(writes),
        readers: reads,
    })
}

/// One connection, both directions.
pub fn duplex() -> Result<Duplex> {
    let (a, b) = pair()?;
    let ends = |s: TcpStream| -> Result<(Endpoint, Endpoint)> {
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
        fds.into_iter().map(TcpStream::from).collect(),
    )))
}

pub fn rx(case: &Case, mut fds: Vec<OwnedFd>) -> Result<Box<dyn Rx>> {
    let s = TcpStream::from(fds.pop().context("socket reader got no fd")?);
    s.set_nonblocking(nonblocking(case.wait))?;
    Ok(Box::new(FdRx::new(s)))
}

/// (SO_SNDBUF, SO_RCVBUF) as the kernel reports them on a fresh connection.
pub fn buffer_sizes() -> Result<(usize, usize)> {
    let (a, _b) = pair()?;
    Ok((
        sockopt::socket_send_buffer_size(&a)?,
        sockopt::socket_recv_buffer_size(&a)?,
    ))
}
