//! What a case is: the transport, the work, and each child's part in it.
//! Everything here crosses the process boundary as JSON.

use serde::{Deserialize, Serialize};

/// Every transport the bench knows, in the column order of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// ipcress `Producer::send` (copy in).
    IpcSend,
    /// ipcress `Producer::reserve` + `commit` (written in place).
    IpcReserve,
    /// As `IpcReserve`, on a stream with CRC-32C checksums on.
    IpcReserveCrc,
    /// Anonymous pipe, kernel default size.
    Pipe,
    /// Anonymous pipe grown to 1 MiB with `F_SETPIPE_SZ`.
    Pipe1m,
    /// Unix domain stream socket pair, default buffers.
    Uds,
    /// Unix domain stream socket pair, 4 MiB `SO_SNDBUF` / `SO_RCVBUF`.
    Uds4m,
    /// TCP over 127.0.0.1 with `TCP_NODELAY`.
    Tcp,
    /// iceoryx2 publish-subscribe, zero-copy loans.
    Iox,
    /// Bare single-producer single-consumer byte ring in shared memory (ceiling).
    Ring,
    /// ipcress `send_async` / `recv_async` awaited on a current-thread
    /// tokio runtime (ping-pong only).
    IpcAsync,
    /// A Unix domain socket pair read and written through tokio on a
    /// current-thread runtime (ping-pong only).
    UdsTokio,
}

impl Transport {
    pub const ALL: [Transport; 12] = [
        Transport::IpcSend,
        Transport::IpcReserve,
        Transport::IpcReserveCrc,
        Transport::Pipe,
        Transport::Pipe1m,
        Transport::Uds,
        Transport::Uds4m,
        Transport::Tcp,
        Transport::Iox,
        Transport::Ring,
        Transport::IpcAsync,
        Transport::UdsTokio,
    ];

    /// The name used on the command line and in bench.json.
    pub fn name(self) -> &'static str {
        match self {
            Transport::IpcSend => "ipc-send",
            Transport::IpcReserve => "ipc-reserve",
            Transport::IpcReserveCrc => "ipc-reserve-crc",
            Transport::Pipe => "pipe",
            Transport::Pipe1m => "pipe-1m",
            Transport::Uds => "uds",
            Transport::Uds4m => "uds-4m",
            Transport::Tcp => "tcp",
            Transport::Iox => "iox",
            Transport::Ring => "ring",
            Transport::IpcAsync => "ipc-async",
            Transport::UdsTokio => "uds-tokio",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Transport> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Transport::ALL.iter().map(|t| t.name()).collect();
                anyhow::anyhow!("unknown transport {s:?}; known: {}", names.join(", "))
            })
    }

    /// Whether this build carries the transport (ipcress is behind a feature).
    pub fn built(self) -> bool {
        !self.is_ipcress() || cfg!(feature = "ipcress")
    }

    /// One of the ipcress transports.
    pub fn is_ipcress(self) -> bool {
        matches!(
            self,
            Transport::IpcSend
                | Transport::IpcReserve
                | Transport::IpcReserveCrc
                | Transport::IpcAsync
        )
    }

    /// Whether the transport can run the case at all.
    pub fn supports(self, case: &Case) -> bool {
        match self {
            // The bare ring is single-consumer and only polls.
            Transport::Ring => case.consumers == 1 && case.wait != Wait::Block,
            // The async peers sleep until data comes, one runtime per end.
            Transport::IpcAsync | Transport::UdsTokio => {
                matches!(case.kind, Kind::PingPong { .. }) && case.wait == Wait::Block
            }
            _ => true,
        }
    }
}

/// How a reader waits for data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wait {
    /// Each transport's ordinary way: blocking `read(2)` for fds, `recv()` for
    /// ipcress (spin, then futex), spin-then-yield polling for iceoryx2 and the
    /// bare ring.
    Auto,
    /// Busy-poll, never sleep: `O_NONBLOCK` reads, `try_recv`, `receive`.
    Spin,
    /// Sleep in the kernel until data comes: blocking `read(2)`, `recv()`,
    /// iceoryx2 event listener.
    Block,
}

impl Wait {
    pub fn parse(s: &str) -> anyhow::Result<Wait> {
        match s {
            "auto" => Ok(Wait::Auto),
            "spin" => Ok(Wait::Spin),
            "block" => Ok(Wait::Block),
            _ => anyhow::bail!("unknown wait mode {s:?}; known: auto, spin, block"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// One producer sends `count` messages of `size` bytes to each of
    /// `consumers` consumers, who sum every byte.
    Stream,
    /// `count` round trips of one `size`-byte message; `warmup` more first.
    PingPong { warmup: u64 },
}

/// One measured run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub transport: Transport,
    pub kind: Kind,
    pub size: usize,
    pub count: u64,
    pub consumers: usize,
    pub wait: Wait,
    /// Ring capacity for ipcress and the bare ring; iceoryx2 buffers are sized from it.
    pub ring_bytes: usize,
}

impl Case {
    /// Samples each iceoryx2 subscriber buffers: about `ring_bytes` of payload,
    /// at least 2 and at most 4096 samples.
    pub fn iox_buffer(&self) -> usize {
        (self.ring_bytes / self.size.max(1)).clamp(2, 4096)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Producer,
    Consumer,
    Ping,
    Pong,
}

/// One end of a channel as a child sees it: a name (a path or a service name),
/// which reader it is, and how many of the passed fds belong to it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EndpointDesc {
    pub name: String,
    pub index: usize,
    pub fds: usize,
}

/// Everything a child process is told on its command line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildArgs {
    pub case: Case,
    pub role: Role,
    pub tx: Option<EndpointDesc>,
    pub rx: Option<EndpointDesc>,
}

/// What a child reports when it is done.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChildReport {
    pub role: Option<Role>,
    /// Payload bytes sent (producer, per consumer) or received (consumer).
    pub bytes: u64,
    /// Sum of every payload byte, as u64.
    pub sum: u64,
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Round-trip count and one-way latency (RTT / 2) percentiles, ns (ping only).
    pub latency: Option<Latency>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub round_trips: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}
