//! What a stream is made with: layout, policy, checksum, codecs, sizes
//! and timeouts, checked once when the stream is created; and where and how
//! a consumer reads (`StartAt`, `Wait`).

use std::time::Duration;

use crate::codec::Compression;
use crate::error::{Error, Result};
use crate::format::{self};

/// How the stream keeps its data.
///
/// ```
/// # use ipcress::{Layout, Stream, StreamOptions};
/// let ring = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// assert_eq!((ring.layout(), ring.layout().to_string()), (Layout::Ring, "ring".to_string()));
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// One preallocated file of N segments reused in place.
    Ring,
    /// One file per segment, rolled and dropped by retention.
    Log,
}

/// What producers do when the ring is full.
///
/// ```
/// # use ipcress::{Error, Policy, StartAt, Stream, StreamOptions};
/// let opts = StreamOptions::ring(1 << 16).policy(Policy::Overwrite);
/// let stream = Stream::create_in_memory("doc", &opts)?;
/// let mut slow = stream.subscribe(StartAt::Start)?;
/// let mut producer = stream.producer()?;
/// for _ in 0..200 {
///     producer.send(&[0; 1000])?; // never waits: laps the reader
/// }
/// assert!(matches!(slow.recv(), Err(Error::Lagged { .. })));
/// assert!(slow.try_recv()?.is_some()); // it goes on from the oldest record
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Never overwrite what a holding consumer has not read; wait.
    #[default]
    Block,
    /// Never wait; lapped consumers get [`Error::Lagged`].
    Overwrite,
}

/// Per-record integrity check.
///
/// ```
/// # use ipcress::{Checksum, Stream, StreamOptions};
/// let bulk = StreamOptions::ring(1 << 16).checksum(Checksum::None);
/// assert_eq!(Stream::create_in_memory("doc", &bulk)?.checksum(), Checksum::None);
/// assert_eq!(Checksum::default(), Checksum::Crc32c);
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Checksum {
    /// CRC-32C over header and payload (default).
    #[default]
    Crc32c,
    /// No checksum (zero-copy bulk path).
    None,
}

macro_rules! named_enum {
    ($t:ty { $($v:ident => $n:literal),* $(,)? }) => {
        impl $t {
            /// The name the CLI and `stat` use.
            ///
            /// ```
            /// use ipcress::{Checksum, Layout, Policy};
            /// assert_eq!(Layout::Log.as_str(), "log");
            /// assert_eq!(Policy::Overwrite.as_str(), "overwrite");
            /// assert_eq!(Checksum::Crc32c.as_str(), "crc32c");
            /// ```
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$v => $n),*
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(Layout { Ring => "ring", Log => "log" });
named_enum!(Policy { Block => "block", Overwrite => "overwrite" });
named_enum!(Checksum { Crc32c => "crc32c", None => "none" });

/// Options fixed when a stream is created.
///
/// Made with [`ring`](Self::ring) or [`log`](Self::log), then adjusted:
/// ```
/// use ipcress::{Compression, Policy, Stream, StreamOptions};
/// let opts = StreamOptions::ring(1 << 20)
///     .segments(16)
///     .policy(Policy::Overwrite)
///     .compression(Compression::Lz4);
/// let stream = Stream::create_in_memory("doc", &opts)?;
/// assert_eq!((stream.segment_size(), stream.policy()), (1 << 16, Policy::Overwrite));
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub(crate) layout: Layout,
    pub(crate) segment_shift: u32,
    pub(crate) segment_count: u32,
    pub(crate) policy: Policy,
    pub(crate) checksum: Checksum,
    pub(crate) compression: Compression,
    pub(crate) encrypted: bool,
    pub(crate) retain_bytes: u64,
    pub(crate) retain_age: Option<Duration>,
    pub(crate) durable_timeout: Option<Duration>,
    pub(crate) unblock_timeout: Duration,
    pub(crate) mode: u32,
    pub(crate) requested_capacity: u64,
    pub(crate) format_version: u32,
}

fn log2_exact(n: u64) -> Option<u32> {
    n.is_power_of_two().then(|| n.trailing_zeros())
}

impl StreamOptions {
    /// A ring of `capacity` bytes (a power of two, at least 8 KiB), split
    /// into 4 segments unless [`segments`](Self::segments) says otherwise.
    /// ```
    /// use ipcress::{Error, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// assert_eq!((stream.capacity(), stream.segment_size()), (Some(1 << 16), 1 << 14));
    /// let odd = Stream::create_in_memory("odd", &StreamOptions::ring(100_000));
    /// assert!(matches!(odd, Err(Error::InvalidOptions(_)))); // not a power of two
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn ring(capacity: u64) -> StreamOptions {
        let mut o = StreamOptions::base(Layout::Ring);
        o.requested_capacity = capacity;
        o.segment_count = 4;
        o
    }

    /// A log of `segment_size`-byte segment files (a power of two).
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-opt-log-{}", std::process::id()));
    /// use ipcress::{Layout, Stream, StreamOptions};
    /// let log = Stream::create_in(&root, "journal", &StreamOptions::log(1 << 16))?;
    /// assert_eq!((log.layout(), log.segment_size(), log.capacity()), (Layout::Log, 1 << 16, None));
    /// # drop(log); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn log(segment_size: u64) -> StreamOptions {
        let mut o = StreamOptions::base(Layout::Log);
        o.segment_shift = log2_exact(segment_size).unwrap_or(0);
        o.requested_capacity = segment_size;
        o
    }

    fn base(layout: Layout) -> StreamOptions {
        StreamOptions {
            layout,
            segment_shift: 0,
            segment_count: 0,
            policy: Policy::Block,
            checksum: Checksum::Crc32c,
            compression: Compression::None,
            encrypted: false,
            retain_bytes: 0,
            retain_age: None,
            durable_timeout: None,
            unblock_timeout: Duration::from_secs(1),
            mode: 0o600,
            requested_capacity: 0,
            format_version: format::VERSION,
        }
    }

    /// Number of segments of a ring (a power of two, 2..=65536).
    /// ```
    /// # use ipcress::{Stream, StreamOptions};
    /// let opts = StreamOptions::ring(1 << 16).segments(8);
    /// assert_eq!(Stream::create_in_memory("doc", &opts)?.segment_size(), 1 << 13);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn segments(mut self, n: u32) -> Self {
        self.segment_count = n;
        self
    }
    /// Full-ring policy.
    /// ```
    /// # use ipcress::{Policy, Stream, StreamOptions};
    /// let opts = StreamOptions::ring(1 << 16).policy(Policy::Overwrite);
    /// assert_eq!(Stream::create_in_memory("doc", &opts)?.policy(), Policy::Overwrite);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    /// Checksum setting.
    /// ```
    /// # use ipcress::{Checksum, Stream, StreamOptions};
    /// let opts = StreamOptions::ring(1 << 16).checksum(Checksum::None);
    /// assert_eq!(Stream::create_in_memory("doc", &opts)?.checksum(), Checksum::None);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn checksum(mut self, c: Checksum) -> Self {
        self.checksum = c;
        self
    }
    /// Compression applied per record.
    /// ```
    /// # use ipcress::{Compression, StartAt, Stream, StreamOptions};
    /// let opts = StreamOptions::ring(1 << 16).compression(Compression::Zstd(3));
    /// let stream = Stream::create_in_memory("doc", &opts)?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(&[b'a'; 4000])?;
    /// assert!(stream.tail() < 4000); // stored compressed
    /// assert_eq!(consumer.recv()?.to_vec()?, [b'a'; 4000]);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    /// Encrypt records with XChaCha20-Poly1305 (the key is given when the
    /// stream is opened, never stored).
    /// ```
    /// # use ipcress::{Key, StartAt, Stream, StreamOptions};
    /// let opts = StreamOptions::ring(1 << 16).encrypted(true);
    /// let stream = Stream::create_in_memory("doc", &opts)?.with_key(&Key::from_bytes([1; 32]))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"secret")?;
    /// assert!(stream.encrypted());
    /// assert_eq!(consumer.recv()?.to_vec()?, b"secret");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn encrypted(mut self, on: bool) -> Self {
        self.encrypted = on;
        self
    }
    /// Log retention: keep at least this many newest bytes (0 = all).
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-opt-retain-bytes-{}", std::process::id()));
    /// use ipcress::{Error, Stream, StreamOptions};
    /// let opts = StreamOptions::log(1 << 16).retain_bytes(1 << 20);
    /// assert!(Stream::create_in(&root, "journal", &opts).is_ok());
    /// let ring = StreamOptions::ring(1 << 16).retain_bytes(1 << 20);
    /// assert!(matches!(Stream::create_in_memory("ring", &ring), Err(Error::InvalidOptions(_))));
    /// # std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn retain_bytes(mut self, n: u64) -> Self {
        self.retain_bytes = n;
        self
    }
    /// Log retention: drop segments whose data is older than this.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-opt-retain-age-{}", std::process::id()));
    /// use std::time::Duration;
    /// # use ipcress::{Stream, StreamOptions};
    /// let a_day = StreamOptions::log(1 << 16).retain_age(Duration::from_secs(24 * 3600));
    /// assert!(Stream::create_in(&root, "journal", &a_day).is_ok());
    /// # std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn retain_age(mut self, d: Duration) -> Self {
        self.retain_age = Some(d);
        self
    }
    /// A dead durable consumer stops holding producers back after this long.
    /// ```
    /// # use ipcress::{Stream, StreamOptions};
    /// let opts = StreamOptions::ring(1 << 16).durable_timeout(std::time::Duration::from_secs(60));
    /// assert!(Stream::create_in_memory("doc", &opts).is_ok());
    /// ```
    pub fn durable_timeout(mut self, d: Duration) -> Self {
        self.durable_timeout = Some(d);
        self
    }
    /// How long a reader waits on a dead producer's claim before aborting it.
    /// ```
    /// # use ipcress::{Stream, StreamOptions};
    /// let opts = StreamOptions::ring(1 << 16).unblock_timeout(std::time::Duration::from_millis(100));
    /// assert!(Stream::create_in_memory("doc", &opts).is_ok());
    /// ```
    pub fn unblock_timeout(mut self, d: Duration) -> Self {
        self.unblock_timeout = d;
        self
    }
    /// File mode of the stream's files (0600 by default; 0660 shares with
    /// the group).
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-opt-mode-{}", std::process::id()));
    /// use std::os::unix::fs::PermissionsExt;
    /// # use ipcress::{Stream, StreamOptions};
    /// let shared = Stream::create_in(&root, "team", &StreamOptions::ring(1 << 16).mode(0o660))?;
    /// let meta = std::fs::metadata(shared.dir().join("meta")).unwrap();
    /// assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    /// assert!(Stream::create_in(&root, "world", &StreamOptions::ring(1 << 16).mode(0o666)).is_err());
    /// # drop(shared); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Format version to write: 4 (the default; records carry their
    /// commit time) or 3, which binaries from before 4 can read too (its
    /// records have no time). docs/FORMAT.md, "Versions".
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let old = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16).format_version(3))?;
    /// old.producer()?.send(b"untimed")?;
    /// let msg = old.subscribe(StartAt::Start)?.recv_owned()?;
    /// assert_eq!((old.format_version(), msg.time()), (3, None));
    /// assert!(Stream::create_in_memory("bad", &StreamOptions::ring(1 << 16).format_version(5)).is_err());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn format_version(mut self, v: u32) -> Self {
        self.format_version = v;
        self
    }

    pub(crate) fn resolve(&self) -> Result<StreamOptions> {
        let mut o = self.clone();
        let bad = |m: String| Err(Error::InvalidOptions(m));
        if o.format_version != format::VERSION && o.format_version != format::VERSION_UNTIMED {
            return bad(format!(
                "format version {} (this build writes {} or {})",
                o.format_version,
                format::VERSION_UNTIMED,
                format::VERSION
            ));
        }
        if o.mode & !0o660 != 0 || o.mode & 0o600 != 0o600 {
            return bad(format!("mode {:o} must be 0600 or 0660/0640", o.mode));
        }
        match o.layout {
            Layout::Ring => {
                let Some(cap_shift) = log2_exact(o.requested_capacity) else {
                    return bad(format!(
                        "ring capacity {} is not a power of two",
                        o.requested_capacity
                    ));
                };
                let Some(count_shift) = log2_exact(o.segment_count as u64) else {
                    return bad(format!(
                        "segment count {} is not a power of two",
                        o.segment_count
                    ));
                };
                if o.segment_count < 2 || o.segment_count > format::MAX_SEGMENTS {
                    return bad("a ring needs 2 to 65536 segments".into());
                }
                if cap_shift < count_shift + format::MIN_SEGMENT_SHIFT {
                    return bad(format!(
                        "ring capacity {} is too small for {} segments of at least 4 KiB",
                        o.requested_capacity, o.segment_count
                    ));
                }
                o.segment_shift = cap_shift - count_shift;
                if o.segment_shift > format::MAX_SEGMENT_SHIFT {
                    return bad("segments larger than 1 GiB: use more segments".into());
                }
            }
            Layout::Log => {
                if !(format::MIN_SEGMENT_SHIFT..=format::MAX_SEGMENT_SHIFT)
                    .contains(&o.segment_shift)
                {
                    return bad(format!(
                        "log segment size {} must be a power of two from 4 KiB to 1 GiB",
                        o.requested_capacity
                    ));
                }
                o.segment_count = 0;
            }
        }
        if o.layout == Layout::Ring && (o.retain_bytes != 0 || o.retain_age.is_some()) {
            return bad("retention applies to log streams only".into());
        }
        Ok(o)
    }
}

/// Where a new consumer starts.
/// ```
/// # use ipcress::{StartAt, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// let mut producer = stream.producer()?;
/// let (_, second) = (producer.send(b"one")?, producer.send(b"two")?);
/// let mut from_second = stream.subscribe(StartAt::Position(second))?;
/// assert_eq!(from_second.recv()?.bytes(), Some(&b"two"[..]));
/// assert_eq!(stream.subscribe(StartAt::End)?.position(), stream.tail());
/// let mut last = stream.subscribe(StartAt::Last(1))?;
/// assert_eq!(last.recv()?.bytes(), Some(&b"two"[..]));
/// let since = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
/// assert_eq!(stream.subscribe(StartAt::Time(since))?.position(), 0); // both are newer
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartAt {
    /// The oldest retained record.
    Start,
    /// The tail: only records written from now on.
    End,
    /// A record's position (must be retained).
    Position(u64),
    /// The first record committed at or after this time, walking from the
    /// oldest retained record (FORMAT.md, "Finding records by time"); the
    /// tail if there is none. A stream of format 3 has no times: an error.
    Time(std::time::SystemTime),
    /// The start of the last `n` messages (the oldest retained record if
    /// there are fewer).
    Last(u64),
}

/// How a consumer waits for data.
/// ```
/// # use ipcress::{StartAt, Stream, StreamOptions, Wait};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// let mut consumer = stream.subscribe(StartAt::End)?; // parks by default
/// consumer.set_wait(Wait::Spin);
/// assert!(consumer.recv_timeout(std::time::Duration::from_millis(1))?.is_none());
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Wait {
    /// Spin briefly, then sleep on a futex (lowest CPU).
    #[default]
    Park,
    /// Spin without sleeping (lowest latency, burns a core).
    Spin,
}
