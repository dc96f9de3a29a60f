//! `ipcress stat [NAME]`: positions, totals, rates and consumers, as a
//! table, JSON (`--json`) or the Prometheus text format (`--prometheus`).

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use comfy_table::{Table, presets};
use ipcress::Stream;
use serde::Serialize;

use crate::cli::StatArgs;
use crate::units::{human_bytes, human_bytes_rate, human_rate};
use crate::{Ctx, load_key};

/// One stream's numbers. Field names are stable (docs/CLI.md).
#[derive(Serialize, Clone, Debug)]
pub struct StreamStat {
    pub name: String,
    pub id: String,
    pub layout: &'static str,
    pub policy: &'static str,
    pub checksum: &'static str,
    pub compression: String,
    pub encrypted: bool,
    /// 4: records carry their commit time; 3: they do not.
    pub format_version: u32,
    pub capacity_bytes: Option<u64>,
    pub segment_bytes: u64,
    pub segments: Option<u64>,
    pub head: u64,
    pub tail: u64,
    pub bytes_written: u64,
    pub messages_written: u64,
    pub live_producers: usize,
    pub bytes_per_sec: f64,
    pub messages_per_sec: f64,
    pub interval_ms: u64,
    pub consumers: Vec<ConsumerStat>,
    /// NATS bridges working on this stream (from their stats slots).
    pub bridges: Vec<BridgeStat>,
}

/// One consumer slot.
#[derive(Serialize, Clone, Debug)]
pub struct ConsumerStat {
    pub slot: usize,
    pub name: String,
    pub kind: &'static str,
    pub position: u64,
    pub lag_bytes: u64,
    /// Messages committed and not yet read.
    pub lag_records: u64,
    /// Age of the oldest unread message (now minus its commit time), 0
    /// when there is none; null for a stream of format 3 (no times).
    pub lag_seconds: Option<f64>,
    pub pid: u32,
    pub alive: bool,
    pub messages: u64,
    pub heartbeat_ms: u64,
}

impl ConsumerStat {
    /// A label that tells slots apart: the name of a durable consumer or
    /// group, `subscriber#SLOT` or `GROUP#SLOT` for members.
    pub fn label(&self) -> String {
        match self.kind {
            "durable" | "group" if !self.name.is_empty() => self.name.clone(),
            _ if self.name.is_empty() => format!("{}#{}", self.kind, self.slot),
            _ => format!("{}#{}", self.name, self.slot),
        }
    }
}

/// A bridge's counters (`ipcress bridge` keeps them in a user slot named
/// `bridge-stats-<bridge>`: records, bytes, last update in ms).
#[derive(Serialize, Clone, Debug)]
pub struct BridgeStat {
    pub name: String,
    pub records: u64,
    pub bytes: u64,
    pub updated_ms: u64,
}

/// A first sample, for rates.
#[derive(Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub tail: u64,
    pub messages: u64,
}

pub fn sample(s: &Stream) -> Sample {
    Sample {
        at: Instant::now(),
        tail: s.tail(),
        messages: s.producer_totals().0,
    }
}

/// Everything about `s` now; rates since `before` when given.
pub fn collect(s: &Stream, before: Option<Sample>) -> StreamStat {
    let now = sample(s);
    let (messages, bytes, live) = s.producer_totals();
    let head = s.head();
    let (bps, mps, interval_ms) = match before {
        Some(b) => {
            let dt = now.at.duration_since(b.at).as_secs_f64().max(1e-9);
            (
                now.tail.saturating_sub(b.tail) as f64 / dt,
                now.messages.saturating_sub(b.messages) as f64 / dt,
                now.at.duration_since(b.at).as_millis() as u64,
            )
        }
        None => (0.0, 0.0, 0),
    };
    let infos = s.consumers();
    // Members read through their group: show the group's position.
    let group_pos = |name: &str| {
        infos
            .iter()
            .find(|g| g.kind == "group" && g.name == name)
            .map(|g| g.position)
    };
    let bridges = infos
        .iter()
        .filter(|c| c.kind == "user")
        .filter_map(|c| {
            let bridge = c.name.strip_prefix("bridge-stats-")?;
            let slot = s.find_user_slot(&c.name)?;
            Some(BridgeStat {
                name: bridge.to_string(),
                records: slot.get(0),
                bytes: slot.get(1),
                updated_ms: slot.get(2),
            })
        })
        .collect();
    // Records left and their age, once per distinct position (members
    // share their group's): a walk over the headers in between.
    let mut backlogs: std::collections::HashMap<u64, (u64, Option<f64>)> = Default::default();
    let timed = s.format_version() >= 4;
    let mut backlog = |position: u64| {
        *backlogs.entry(position).or_insert_with(|| {
            let b = s.backlog(position).ok();
            let records = b.map_or(0, |b| b.records);
            let age = b.and_then(|b| b.oldest).map_or(0.0, |t| {
                SystemTime::now()
                    .duration_since(t)
                    .map_or(0.0, |d| d.as_secs_f64())
            });
            (records, timed.then_some(age))
        })
    };
    let consumers = infos
        .iter()
        .filter(|c| c.kind != "user")
        .map(|c| {
            let position = if c.kind == "member" {
                group_pos(&c.name).unwrap_or(c.position)
            } else {
                c.position
            };
            // A group belongs to no process: it lives while a member does.
            let (pid, alive) = if c.kind == "group" {
                let live = infos
                    .iter()
                    .any(|m| m.kind == "member" && m.name == c.name && m.alive);
                (0, live)
            } else {
                (c.pid, c.alive)
            };
            let (lag_records, lag_seconds) = backlog(position);
            ConsumerStat {
                slot: c.slot,
                name: c.name.clone(),
                kind: c.kind,
                position,
                lag_bytes: now.tail.saturating_sub(position),
                lag_records,
                lag_seconds,
                pid,
                alive,
                messages: c.messages,
                heartbeat_ms: c.heartbeat_ms,
            }
        })
        .collect();
    StreamStat {
        name: s.name().to_string(),
        id: s.id_hex(),
        layout: s.layout().as_str(),
        policy: s.policy().as_str(),
        checksum: s.checksum().as_str(),
        compression: s.compression().to_string(),
        encrypted: s.encrypted(),
        format_version: s.format_version(),
        capacity_bytes: s.capacity(),
        segment_bytes: s.segment_size(),
        segments: s.capacity().map(|c| c / s.segment_size()),
        head,
        tail: now.tail,
        bytes_written: bytes,
        messages_written: messages,
        live_producers: live,
        bytes_per_sec: bps,
        messages_per_sec: mps,
        interval_ms,
        consumers,
        bridges,
    }
}

pub fn run(ctx: &Ctx, a: StatArgs) -> Result<()> {
    let key = load_key(a.key.as_deref())?;
    if let Some(addr) = &a.listen {
        return crate::metrics::serve(ctx, addr, a.name.as_deref(), key.as_ref());
    }
    let names = match &a.name {
        Some(n) => vec![n.clone()],
        None => Stream::list_in(&ctx.root)?,
    };
    let streams = names
        .iter()
        .map(|n| ctx.inspect(n, key.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    // Prometheus computes rates itself, and a script asking for JSON wants
    // the state now: rates (one interval of waiting) only when asked.
    let interval = match a.interval {
        _ if a.prometheus => 0,
        Some(ms) => ms,
        None if a.json => 0,
        None => 1000,
    };
    let before: Vec<Option<Sample>> = streams
        .iter()
        .map(|s| (interval > 0).then(|| sample(s)))
        .collect();
    if interval > 0 {
        std::thread::sleep(Duration::from_millis(interval));
    }
    let stats: Vec<StreamStat> = streams
        .iter()
        .zip(before)
        .map(|(s, b)| collect(s, b))
        .collect();
    if a.json {
        let text = if a.name.is_some() {
            serde_json::to_string_pretty(&stats[0])?
        } else {
            serde_json::to_string_pretty(&stats)?
        };
        crate::print_out(&format!("{text}\n"))
    } else if a.prometheus {
        crate::print_out(&crate::metrics::encode(&stats)?)
    } else {
        let tables: Vec<String> = stats.iter().map(table).collect();
        crate::print_out(&tables.join("\n"))
    }
}

fn new_table() -> Table {
    let mut t = Table::new();
    if std::io::stdout().is_terminal() {
        t.load_preset(presets::UTF8_FULL_CONDENSED);
    } else {
        t.load_preset(presets::ASCII_FULL_CONDENSED);
    }
    t
}

/// The stream as a key/value table, then its consumers.
pub fn table(st: &StreamStat) -> String {
    let mut t = new_table();
    let size = match (st.capacity_bytes, st.segments) {
        (Some(c), Some(n)) => format!(
            "{} in {n} segments of {}",
            human_bytes(c),
            human_bytes(st.segment_bytes)
        ),
        _ => format!("segments of {}", human_bytes(st.segment_bytes)),
    };
    let rates = if st.interval_ms > 0 {
        format!(
            "{}, {} msg/s",
            human_bytes_rate(st.bytes_per_sec),
            human_rate(st.messages_per_sec)
        )
    } else {
        "not sampled".into()
    };
    let rows: [(&str, String); 11] = [
        ("stream", st.name.clone()),
        ("format", format!("version {}", st.format_version)),
        ("layout", format!("{} ({size})", st.layout)),
        ("policy", st.policy.to_string()),
        (
            "codecs",
            format!(
                "checksum {}, compression {}, {}",
                st.checksum,
                st.compression,
                if st.encrypted {
                    "encrypted"
                } else {
                    "not encrypted"
                }
            ),
        ),
        ("head", st.head.to_string()),
        ("tail", st.tail.to_string()),
        ("bytes written", st.bytes_written.to_string()),
        ("messages written", st.messages_written.to_string()),
        ("producers", format!("{} live", st.live_producers)),
        ("rate", rates),
    ];
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    let mut out = format!("{t}\n");
    for b in &st.bridges {
        let _ = writeln!(
            out,
            "bridge {}: {} records, {} bytes",
            b.name, b.records, b.bytes
        );
    }
    if st.consumers.is_empty() {
        out.push_str("no consumers\n");
        return out;
    }
    let mut c = new_table();
    c.set_header([
        "CONSUMER", "KIND", "POSITION", "LAG", "LAG MSGS", "LAG TIME", "PID", "ALIVE", "READ",
    ]);
    for x in &st.consumers {
        c.add_row([
            x.label(),
            x.kind.to_string(),
            x.position.to_string(),
            x.lag_bytes.to_string(),
            x.lag_records.to_string(),
            human_lag(x.lag_seconds),
            x.pid.to_string(),
            if x.alive { "yes" } else { "no" }.to_string(),
            x.messages.to_string(),
        ]);
    }
    let _ = writeln!(out, "{c}");
    out
}

/// A lag in seconds for people: `0s`, `1.5s`, `2m03s`, `-` (no times).
pub fn human_lag(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 60.0 => format!("{s:.1}s"),
        Some(s) if s < 3600.0 => format!("{}m{:02}s", s as u64 / 60, s as u64 % 60),
        Some(s) => format!("{}h{:02}m", s as u64 / 3600, s as u64 % 3600 / 60),
    }
}
