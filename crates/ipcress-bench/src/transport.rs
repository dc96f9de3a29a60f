//! The one seam between the harness and the transports: the parent makes a
//! channel (files, fds, service names), each child opens its end as a [`Tx`]
//! or an [`Rx`].

use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::Result;

use crate::spec::{Case, EndpointDesc, Transport, Wait};
use crate::{asynch, iox, pipe, ring, tcp, uds};

/// The sending end of a channel.
pub trait Tx {
    /// Sends one message (to every reader of a fan-out channel).
    fn send(&mut self, msg: &[u8]) -> Result<()>;
}

/// The receiving end of a channel.
pub trait Rx {
    /// Waits for the next message (or, on a byte stream, the next chunk),
    /// hands its bytes to `f`, and returns how many there were.
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> Result<usize>;
}

/// A [`Tx`] made of a closure, so transports need not name their port types.
pub struct FnTx<F>(pub F);

impl<F: FnMut(&[u8]) -> Result<()>> Tx for FnTx<F> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        (self.0)(msg)
    }
}

/// An [`Rx`] made of a closure.
pub struct FnRx<F>(pub F);

impl<F: FnMut(&mut dyn FnMut(&[u8])) -> Result<usize>> Rx for FnRx<F> {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        (self.0)(f)
    }
}

/// One end of a channel as the parent holds it before handing it to a child.
#[derive(Debug, Default)]
pub struct Endpoint {
    pub name: String,
    pub index: usize,
    pub fds: Vec<OwnedFd>,
}

impl Endpoint {
    pub fn named(name: impl Into<String>, index: usize) -> Endpoint {
        Endpoint {
            name: name.into(),
            index,
            fds: Vec::new(),
        }
    }

    pub fn fds(fds: Vec<OwnedFd>) -> Endpoint {
        Endpoint {
            fds,
            ..Endpoint::default()
        }
    }

    pub fn desc(&self) -> EndpointDesc {
        EndpointDesc {
            name: self.name.clone(),
            index: self.index,
            fds: self.fds.len(),
        }
    }
}

/// A one-way channel: one writer, `readers.len()` readers that each get every message.
pub struct Channel {
    pub writer: Endpoint,
    pub readers: Vec<Endpoint>,
}

/// Both ends of a ping-pong link: (tx, rx) for the pinger, (tx, rx) for the ponger.
pub type Duplex = ((Endpoint, Endpoint), (Endpoint, Endpoint));

impl Transport {
    /// Parent side: makes a channel with `readers` readers inside `dir`.
    pub fn channel(self, case: &Case, dir: &Path, tag: &str, readers: usize) -> Result<Channel> {
        match self {
            Transport::IpcSend
            | Transport::IpcReserve
            | Transport::IpcReserveCrc
            | Transport::IpcAsync => ipc_channel(case, dir, tag, readers),
            Transport::Pipe | Transport::Pipe1m => pipe::channel(self, readers),
            Transport::Uds | Transport::Uds4m | Transport::UdsTokio => {
                uds::channel(Transport::Uds, readers)
            }
            Transport::Tcp => tcp::channel(readers),
            Transport::Iox => iox::channel(dir, tag, readers),
            Transport::Ring => ring::channel(case, dir, tag, readers),
        }
    }

    /// Parent side: a two-way link for ping-pong. Sockets use one connection;
    /// the rest use two one-way channels.
    pub fn duplex(self, case: &Case, dir: &Path) -> Result<Duplex> {
        match self {
            Transport::Uds | Transport::Uds4m => uds::duplex(self),
            Transport::UdsTokio => uds::duplex(Transport::Uds),
            Transport::Tcp => tcp::duplex(),
            _ => {
                let mut there = self.channel(case, dir, "ping", 1)?;
                let mut back = self.channel(case, dir, "pong", 1)?;
                let ping = (there.writer, back.readers.remove(0));
                let pong = (back.writer, there.readers.remove(0));
                Ok((ping, pong))
            }
        }
    }

    /// Child side: opens the writing end.
    pub fn open_tx(
        self,
        case: &Case,
        desc: &EndpointDesc,
        fds: Vec<OwnedFd>,
    ) -> Result<Box<dyn Tx>> {
        match self {
            Transport::IpcSend | Transport::IpcReserve | Transport::IpcReserveCrc => {
                ipc_tx(self, case, desc)
            }
            Transport::IpcAsync => ipc_async_tx(desc),
            Transport::UdsTokio => asynch::uds_tx(fds),
            Transport::Pipe | Transport::Pipe1m => pipe::tx(fds),
            Transport::Uds | Transport::Uds4m => uds::tx(fds),
            Transport::Tcp => tcp::tx(fds),
            Transport::Iox => iox::tx(case, desc),
            Transport::Ring => ring::tx(case, desc),
        }
    }

    /// Child side: opens the reading end.
    pub fn open_rx(
        self,
        case: &Case,
        desc: &EndpointDesc,
        fds: Vec<OwnedFd>,
    ) -> Result<Box<dyn Rx>> {
        match self {
            Transport::IpcSend | Transport::IpcReserve | Transport::IpcReserveCrc => {
                ipc_rx(case, desc)
            }
            Transport::IpcAsync => ipc_async_rx(desc),
            Transport::UdsTokio => asynch::uds_rx(fds),
            Transport::Pipe | Transport::Pipe1m => pipe::rx(case, fds),
            Transport::Uds | Transport::Uds4m => uds::rx(case, fds),
            Transport::Tcp => tcp::rx(case, fds),
            Transport::Iox => iox::rx(case, desc),
            Transport::Ring => ring::rx(case, desc),
        }
    }
}

#[cfg(feature = "ipcress")]
use crate::ipc::{
    async_rx as ipc_async_rx, async_tx as ipc_async_tx, channel as ipc_channel, rx as ipc_rx,
    tx as ipc_tx,
};

#[cfg(not(feature = "ipcress"))]
fn ipc_async_tx(_: &EndpointDesc) -> Result<Box<dyn Tx>> {
    anyhow::bail!("built without the `ipcress` feature")
}

#[cfg(not(feature = "ipcress"))]
fn ipc_async_rx(_: &EndpointDesc) -> Result<Box<dyn Rx>> {
    anyhow::bail!("built without the `ipcress` feature")
}

#[cfg(not(feature = "ipcress"))]
fn ipc_channel(_: &Case, _: &Path, _: &str, _: usize) -> Result<Channel> {
    anyhow::bail!("built without the `ipcress` feature")
}

#[cfg(not(feature = "ipcress"))]
fn ipc_tx(_: Transport, _: &Case, _: &EndpointDesc) -> Result<Box<dyn Tx>> {
    anyhow::bail!("built without the `ipcress` feature")
}

#[cfg(not(feature = "ipcress"))]
fn ipc_rx(_: &Case, _: &EndpointDesc) -> Result<Box<dyn Rx>> {
    anyhow::bail!("built without the `ipcress` feature")
}

/// Polling back-off shared by the transports that poll: spin, and in
/// [`Wait::Auto`] yield the CPU after a while (there are only so many cores).
pub struct Backoff {
    spins: u32,
    yield_after: u32,
}

impl Backoff {
    pub fn new(wait: Wait) -> Backoff {
        let yield_after = if wait == Wait::Spin { u32::MAX } else { 128 };
        Backoff {
            spins: 0,
            yield_after,
        }
    }

    pub fn reset(&mut self) {
        self.spins = 0;
    }

    pub fn snooze(&mut self) {
        if self.spins < self.yield_after {
            self.spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
