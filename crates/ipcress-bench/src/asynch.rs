//! The async peers of the one-way latency rows: ipcress `recv_async` /
//! `send_async` and a tokio Unix domain socket pair, each awaited on a
//! current-thread tokio runtime in the child's thread (`block_on`), so
//! that a wait parks the thread inside the runtime as an async service's
//! would: ipcress's through the process's notifier thread (a futex wake,
//! then the runtime's unpark), the socket's through the runtime's epoll.

use std::os::fd::OwnedFd;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use crate::transport::{FnRx, FnTx, Rx, Tx};

fn runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn tokio_uds(rt: &Runtime, fd: OwnedFd) -> Result<tokio::net::UnixStream> {
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true)?;
    let _in = rt.enter();
    Ok(tokio::net::UnixStream::from_std(s)?)
}

pub fn uds_tx(mut fds: Vec<OwnedFd>) -> Result<Box<dyn Tx>> {
    anyhow::ensure!(
        fds.len() == 1,
        "uds-tokio writes one socket (ping-pong only)"
    );
    let rt = runtime()?;
    let mut s = tokio_uds(&rt, fds.pop().context("socket writer got no fd")?)?;
    Ok(Box::new(FnTx(move |msg: &[u8]| -> Result<()> {
        rt.block_on(s.write_all(msg))?;
        Ok(())
    })))
}

pub fn uds_rx(mut fds: Vec<OwnedFd>) -> Result<Box<dyn Rx>> {
    let rt = runtime()?;
    let mut s = tokio_uds(&rt, fds.pop().context("socket reader got no fd")?)?;
    let mut buf = vec![0u8; 64 << 10];
    Ok(Box::new(FnRx(
        move |f: &mut dyn FnMut(&[u8])| -> Result<usize> {
            let n = rt.block_on(s.read(&mut buf))?;
            if n == 0 {
                bail!("socket closed");
            }
            f(&buf[..n]);
            Ok(n)
        },
    )))
}

#[cfg(feature = "ipcress")]
pub fn ipc_tx(stream: &'static ipcress::Stream) -> Result<Box<dyn Tx>> {
    let rt = runtime()?;
    let mut p = stream.producer()?;
    Ok(Box::new(FnTx(move |msg: &[u8]| -> Result<()> {
        rt.block_on(p.send_async(msg))?;
        Ok(())
    })))
}

#[cfg(feature = "ipcress")]
pub fn ipc_rx(stream: &'static ipcress::Stream) -> Result<Box<dyn Rx>> {
    let rt = runtime()?;
    let mut c = stream.subscribe(ipcress::StartAt::Start)?;
    Ok(Box::new(FnRx(
        move |f: &mut dyn FnMut(&[u8])| -> Result<usize> {
            let m = rt.block_on(c.recv_async())?;
            f(&m);
            Ok(m.len())
        },
    )))
}
