//! The bridge between ipcress streams and NATS JetStream (DESIGN.md §5).
//!
//! - [`run_out`]: a durable consumer of a local stream publishes every
//!   stored frame to a JetStream subject, with `Nats-Msg-Id =
//!   <stream id hex>:<position>`, a bounded window of pipelined publishes,
//!   and commits its local position only after the acks. Consecutive frames
//!   share one NATS message ([`batch`], id `<stream id hex>:<first>-<last>`)
//!   unless [`OutConfig::batch_bytes`] is 0; a restart resumes after the
//!   last frame JetStream's last message holds.
//! - [`run_in`]: a durable JetStream pull consumer appends to a local
//!   stream and acks after the local commit; how far it got (JetStream
//!   sequence and frame within a batch) is kept in the local stream, so a
//!   restart applies nothing twice.
//!
//! Frames travel as they are stored (raw: possibly compressed and
//! encrypted), so NATS never sees plaintext of an encrypted stream. A frame
//! larger than the server's max payload is split into several NATS messages
//! (`Ipcress-Part: i/n`) and joined on the far side.
//!
//! Both functions block: they build their own tokio runtime and run the
//! blocking ipcress calls on a dedicated thread.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod batch;
mod bench;
mod inbound;
mod outbound;
pub mod server;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use bench::{BenchConfig, BenchReport, bench_bridge};
pub use inbound::{InConfig, run_in};
pub use outbound::{DEFAULT_BATCH_BYTES, OutConfig, run_out};
pub use stats::BridgeStats;

/// Header: the number of frames packed into the message (see [`batch`]).
pub const H_BATCH: &str = "Ipcress-Batch";
/// Header: `i/n`, present when a frame is split into `n` NATS messages.
pub const H_PART: &str = "Ipcress-Part";
/// Header: the frame flags, [`ipcress::Flags::bits`] in decimal; `bridge
/// in` refuses other bits.
pub const H_FLAGS: &str = "Ipcress-Flags";
/// Header: the origin stream id (32 hex digits): where the frame was first
/// written (the nonce of an encrypted frame).
pub const H_ORIGIN: &str = "Ipcress-Origin";
/// Header: the position where the frame was first written (decimal).
pub const H_ORIGIN_POS: &str = "Ipcress-Origin-Pos";
/// The JetStream de-duplication header (`<stream id hex>:<position>`,
/// plus `:<part>` for split frames); it also implies the origin of a frame
/// sent without `Ipcress-Origin`.
pub const H_MSG_ID: &str = "Nats-Msg-Id";

/// Make a NATS subject or consumer name usable in an ipcress name
/// (`[A-Za-z0-9._-]`, at most 100 characters).
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if out.is_empty() || out == "." || out == ".." {
        out = format!("_{out}");
    }
    out
}

/// Name of the durable consumer (and its guard slot) of `bridge out` for
/// `subject`.
pub fn out_name(subject: &str) -> String {
    format!("bridge-out-{}", sanitize(subject))
}

/// Name of the user slot where `bridge in` with JetStream durable `durable`
/// keeps its applied sequence.
pub fn in_name(durable: &str) -> String {
    format!("bridge-in-{}", sanitize(durable))
}

pub(crate) fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

pub(crate) fn unhex16(s: &str) -> Option<[u8; 16]> {
    let s = s.as_bytes();
    if s.len() != 32 {
        return None;
    }
    let v = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = v(s[2 * i])? << 4 | v(s[2 * i + 1])?;
    }
    Some(out)
}

/// Exponential backoff between reconnect attempts: 100 ms doubling to 5 s.
pub(crate) struct Backoff {
    next: Duration,
    /// Waits since the last success.
    tries: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            tries: 0,
        }
    }
    pub fn reset(&mut self) {
        self.next = Duration::from_millis(100);
        self.tries = 0;
    }
    /// Is the failure before the next wait worth a log line? The first
    /// after a success, then one in eight (about every 40 s once the
    /// delay is 5 s), so that a bridge that cannot reach its server says
    /// so at once and then keeps saying it without flooding the log.
    pub fn report(&self) -> bool {
        self.tries.is_multiple_of(8)
    }
    /// Sleep for the next delay; false if `stop` was raised meanwhile.
    pub async fn wait(&mut self, stop: &AtomicBool) -> bool {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        self.tries = self.tries.saturating_add(1);
        sleep_unless_stopped(d, stop).await
    }
}

/// Sleep `d` in small steps; false if `stop` was raised.
pub(crate) async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = tokio::time::Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return true;
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(50))).await;
    }
}

/// Resolves once `stop` is raised.
pub(crate) async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Raise `to` once `from` is raised.
pub(crate) async fn forward_stop(from: Arc<AtomicBool>, to: Arc<AtomicBool>) {
    stopped(&from).await;
    to.store(true, Ordering::SeqCst);
}

/// Connect to one or more servers (`nats://a:4222,nats://b:4222`), with
/// the client's own unlimited reconnects after the first success.
/// `connects` counts (re)connections.
pub(crate) async fn connect(
    url: &str,
    name: &str,
    connects: Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<async_nats::Client> {
    let addrs = url
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!addrs.is_empty(), "no NATS server address in {url:?}");
    let label = name.to_string();
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(move |ev| {
            let label = label.clone();
            let connects = connects.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => {
                        connects.fetch_add(1, Ordering::SeqCst);
                        tracing::info!("{label}: connected")
                    }
                    async_nats::Event::Disconnected => tracing::warn!("{label}: disconnected"),
                    other => tracing::debug!("{label}: {other}"),
                }
            }
        })
        .connect(addrs)
        .await?;
    Ok(client)
}

/// Build the runtime used by `run_out` and `run_in`.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ipcress-bridge")
        .build()?)
}

/// A stop flag that is also raised when the owner is dropped.
pub(crate) struct RaiseOnDrop(pub Arc<AtomicBool>);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(out_name("events.>"), "bridge-out-events._");
        assert_eq!(in_name("d1"), "bridge-in-d1");
        assert!(ipcress::validate_name(&out_name(&"x".repeat(500))).is_ok());
        assert!(
            ipcress::validate_name(&BridgeStats::slot_name(&out_name(&"x".repeat(500)))).is_ok()
        );
    }

    #[test]
    fn hex_roundtrip() {
        let id: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(unhex16(&hex(&id)), Some(id));
        assert_eq!(unhex16("zz"), None);
    }
}
