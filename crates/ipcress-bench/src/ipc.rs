//! ipcress: a ring stream created by the parent in the case's /dev/shm temp
//! directory (`Stream::create_in`), `Policy::Block`, no checksum (CRC-32C for
//! `ipc-reserve-crc`), no compression. The producer writes with `send` (copy in) or `reserve` +
//! `commit` (in place); messages longer than `max_message_len()` go through
//! `writer()` as fragments. Each consumer is an ephemeral subscriber from the
//! start of the stream, created before the producer starts.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use ipcress::{Checksum, Compression, Policy, StartAt, Stream, StreamOptions};

use crate::spec::{Case, EndpointDesc, Transport, Wait};
use crate::transport::{Channel, Endpoint, FnRx, FnTx, Rx, Tx};

fn options(case: &Case) -> StreamOptions {
    let checksum = if case.transport == Transport::IpcReserveCrc {
        Checksum::Crc32c
    } else {
        Checksum::None
    };
    StreamOptions::ring(case.ring_bytes as _)
        .policy(Policy::Block)
        .checksum(checksum)
        .compression(Compression::None)
}

pub fn channel(case: &Case, dir: &Path, tag: &str, readers: usize) -> Result<Channel> {
    let name = format!("s-{tag}");
    Stream::create_in(dir, &name, &options(case))
        .with_context(|| format!("create stream {name}"))?;
    let path = dir.join(&name);
    let path = path.to_str().context("non-UTF-8 temp path")?.to_owned();
    Ok(Channel {
        writer: Endpoint::named(path.clone(), 0),
        readers: (0..readers)
            .map(|i| Endpoint::named(path.clone(), i))
            .collect(),
    })
}

/// Opens the stream named by `desc` and keeps it for the life of the process
/// (ports may borrow it).
fn open(desc: &EndpointDesc) -> Result<&'static Stream> {
    let path = Path::new(&desc.name);
    let dir = path.parent().context("stream path has no directory")?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("stream name")?;
    let stream = Stream::open_in(dir, name).with_context(|| format!("open stream {name}"))?;
    Ok(Box::leak(Box::new(stream)))
}

pub fn tx(transport: Transport, _case: &Case, desc: &EndpointDesc) -> Result<Box<dyn Tx>> {
    let stream = open(desc)?;
    let max = stream.max_message_len();
    let mut p = stream.producer()?;
    let in_place = matches!(transport, Transport::IpcReserve | Transport::IpcReserveCrc);
    Ok(Box::new(FnTx(move |msg: &[u8]| -> Result<()> {
        if msg.len() > max {
            let mut w = p.writer()?;
            w.write_all(msg)?;
            w.finish()?;
        } else if in_place {
            let mut grant = p.reserve(msg.len())?;
            grant[..].copy_from_slice(msg);
            grant.commit()?;
        } else {
            p.send(msg)?;
        }
        Ok(())
    })))
}

pub fn rx(case: &Case, desc: &EndpointDesc) -> Result<Box<dyn Rx>> {
    let stream = open(desc)?;
    let mut c = stream.subscribe(StartAt::Start)?;
    let spin = case.wait == Wait::Spin;
    let mut scratch = vec![0u8; 64 << 10];
    // Hands a message's bytes to `f`: in place when whole, else fragment by
    // fragment through its reader.
    macro_rules! deliver {
        ($m:expr, $f:expr) => {{
            let m = $m;
            match m.bytes() {
                Some(b) => {
                    $f(b);
                    Ok(b.len())
                }
                None => {
                    let mut r = m.reader();
                    let mut total = 0;
                    loop {
                        let n = r.read(&mut scratch)?;
                        if n == 0 {
                            break Ok(total);
                        }
                        $f(&scratch[..n]);
                        total += n;
                    }
                }
            }
        }};
    }
    Ok(Box::new(FnRx(
        move |f: &mut dyn FnMut(&[u8])| -> Result<usize> {
            if spin {
                loop {
                    if let Some(m) = c.try_recv()? {
                        return deliver!(m, f);
                    }
                    std::hint::spin_loop();
                }
            }
            deliver!(c.recv()?, f)
        },
    )))
}

/// The writing end of `ipc-async`: `send_async` on a tokio runtime.
pub fn async_tx(desc: &EndpointDesc) -> Result<Box<dyn Tx>> {
    crate::asynch::ipc_tx(open(desc)?)
}

/// The reading end of `ipc-async`: `recv_async` on a tokio runtime.
pub fn async_rx(desc: &EndpointDesc) -> Result<Box<dyn Rx>> {
    crate::asynch::ipc_rx(open(desc)?)
}
