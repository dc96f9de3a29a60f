//! Bridge counters kept in a user slot of the local stream, for `ipcress stat`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipcress::{Stream, UserSlot};

/// Cumulative counters of one bridge, kept in the user slot
/// `bridge-stats-<bridge name>` of its local stream: word 0 records, word 1
/// bytes (stored, i.e. possibly compressed or encrypted), word 2 the time of
/// the last update (Unix milliseconds). Readers compute rates from two
/// samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Records moved (frames ending a message).
    pub records: u64,
    /// Payload bytes moved, as stored.
    pub bytes: u64,
    /// When the counters were last written (Unix ms).
    pub updated_ms: u64,
}

impl BridgeStats {
    /// The user slot holding the counters of bridge `bridge` (e.g.
    /// `bridge-out-events` or `bridge-in-mydurable`).
    pub fn slot_name(bridge: &str) -> String {
        format!("bridge-stats-{bridge}")
    }

    /// Read the counters of bridge `bridge` from `stream`, if it ever ran.
    pub fn read(stream: &Stream, bridge: &str) -> Option<BridgeStats> {
        stream
            .find_user_slot(&Self::slot_name(bridge))
            .map(|s| Self::from_slot(&s))
    }

    fn from_slot(s: &UserSlot) -> BridgeStats {
        BridgeStats {
            records: s.get(0),
            bytes: s.get(1),
            updated_ms: s.get(2),
        }
    }
}

/// Accumulates counters and writes them to the slot every 250 ms.
pub(crate) struct StatsWriter {
    slot: UserSlot,
    cur: BridgeStats,
    last: Instant,
}

impl StatsWriter {
    pub fn open(stream: &Stream, bridge: &str) -> ipcress::Result<StatsWriter> {
        let slot = stream.user_slot(&BridgeStats::slot_name(bridge))?;
        let cur = BridgeStats::from_slot(&slot);
        Ok(StatsWriter {
            slot,
            cur,
            last: Instant::now(),
        })
    }

    pub fn add(&mut self, records: u64, bytes: u64) {
        self.cur.records += records;
        self.cur.bytes += bytes;
        if self.last.elapsed() >= Duration::from_millis(250) {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        self.last = Instant::now();
        self.cur.updated_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.slot.set(0, self.cur.records);
        self.slot.set(1, self.cur.bytes);
        self.slot.set(2, self.cur.updated_ms);
    }
}

impl Drop for StatsWriter {
    fn drop(&mut self) {
        self.flush();
    }
}
