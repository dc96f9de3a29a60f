//! What a stream is made with: layout, policy, checksum, codecs, sizes
//! and timeouts, checked once when the stream is created.

use std::time::Duration;

use crate::codec::Compression;
use crate::error::{Error, Result};
use crate::format::{self};

/// How the stream keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// One preallocated file of N segments reused in place.
    Ring,
    /// One file per segment, rolled and dropped by retention.
    Log,
}

/// What producers do when the ring is full.
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
}

fn log2_exact(n: u64) -> Option<u32> {
    n.is_power_of_two().then(|| n.trailing_zeros())
}

impl StreamOptions {
    /// A ring of `capacity` bytes (a power of two, at least 8 KiB), split
    /// into 4 segments unless [`segments`](Self::segments) says otherwise.
    pub fn ring(capacity: u64) -> StreamOptions {
        let mut o = StreamOptions::base(Layout::Ring);
        o.requested_capacity = capacity;
        o.segment_count = 4;
        o
    }

    /// A log of `segment_size`-byte segment files (a power of two).
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
        }
    }

    /// Number of segments of a ring (a power of two, 2..=65536).
    pub fn segments(mut self, n: u32) -> Self {
        self.segment_count = n;
        self
    }
    /// Full-ring policy.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    /// Checksum setting.
    pub fn checksum(mut self, c: Checksum) -> Self {
        self.checksum = c;
        self
    }
    /// Compression applied per record.
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    /// Encrypt records with XChaCha20-Poly1305 (the key is given when the
    /// stream is opened, never stored).
    pub fn encrypted(mut self, on: bool) -> Self {
        self.encrypted = on;
        self
    }
    /// Log retention: keep at least this many newest bytes (0 = all).
    pub fn retain_bytes(mut self, n: u64) -> Self {
        self.retain_bytes = n;
        self
    }
    /// Log retention: drop segments whose data is older than this.
    pub fn retain_age(mut self, d: Duration) -> Self {
        self.retain_age = Some(d);
        self
    }
    /// A dead durable consumer stops holding producers back after this long.
    pub fn durable_timeout(mut self, d: Duration) -> Self {
        self.durable_timeout = Some(d);
        self
    }
    /// How long a reader waits on a dead producer's claim before aborting it.
    pub fn unblock_timeout(mut self, d: Duration) -> Self {
        self.unblock_timeout = d;
        self
    }
    /// File mode of the stream's files (0600 by default; 0660 shares with
    /// the group).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    pub(crate) fn resolve(&self) -> Result<StreamOptions> {
        let mut o = self.clone();
        let bad = |m: String| Err(Error::InvalidOptions(m));
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
