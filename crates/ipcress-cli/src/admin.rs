//! `create`, `ls`, `rm`.

use anyhow::Result;
use comfy_table::{Table, presets};
use ipcress::{Checksum, Key, Policy, Stream, StreamOptions};
use serde::Serialize;

use crate::cli::{ChecksumArg, CreateArgs, LsArgs, PolicyArg, RmArgs};
use crate::units::{Retain, human_bytes};
use crate::{Ctx, explain};

const DEFAULT_SIZE: u64 = 64 << 20;

pub fn create(ctx: &Ctx, a: CreateArgs) -> Result<()> {
    let mut o = if a.log {
        let mut o = StreamOptions::log(a.segment.unwrap_or(DEFAULT_SIZE));
        for r in &a.retain {
            o = match *r {
                Retain::Bytes(n) => o.retain_bytes(n),
                Retain::Age(d) => o.retain_age(d),
            };
        }
        o
    } else {
        let mut o = StreamOptions::ring(a.ring.unwrap_or(DEFAULT_SIZE));
        if let Some(n) = a.segments {
            o = o.segments(n);
        }
        o
    };
    o = o
        .policy(match a.policy {
            PolicyArg::Block => Policy::Block,
            PolicyArg::Overwrite => Policy::Overwrite,
        })
        .checksum(match a.checksum {
            ChecksumArg::Crc32c => Checksum::Crc32c,
            ChecksumArg::None => Checksum::None,
        })
        .compression(a.compress)
        .format_version(a.format_version);
    if let Some(path) = &a.encrypt_key {
        // The key is not stored: check now that it can be used later.
        Key::load(path)?;
        o = o.encrypted(true);
    }
    if let Some(m) = a.mode {
        o = o.mode(m);
    }
    if let Some(d) = a.durable_timeout {
        o = o.durable_timeout(d);
    }
    Stream::create_in(&ctx.root, &a.name, &o).map_err(|e| explain(&a.name, e))?;
    Ok(())
}

#[derive(Serialize)]
struct LsRow {
    name: String,
    layout: Option<&'static str>,
    capacity_bytes: Option<u64>,
    segment_bytes: Option<u64>,
    head: Option<u64>,
    tail: Option<u64>,
    consumers: Option<usize>,
    error: Option<String>,
}

pub fn ls(ctx: &Ctx, a: LsArgs) -> Result<()> {
    let names = Stream::list_in(&ctx.root).map_err(anyhow::Error::new)?;
    let rows: Vec<LsRow> = names
        .into_iter()
        .map(|name| match Stream::inspect_in(&ctx.root, &name) {
            Ok(s) => LsRow {
                layout: Some(s.layout().as_str()),
                capacity_bytes: s.capacity(),
                segment_bytes: Some(s.segment_size()),
                head: Some(s.head()),
                tail: Some(s.tail()),
                consumers: Some(s.consumers().len()),
                error: None,
                name,
            },
            Err(e) => LsRow {
                layout: None,
                capacity_bytes: None,
                segment_bytes: None,
                head: None,
                tail: None,
                consumers: None,
                error: Some(e.to_string()),
                name,
            },
        })
        .collect();
    if a.json {
        return crate::print_out(&format!("{}\n", serde_json::to_string_pretty(&rows)?));
    }
    if rows.is_empty() {
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(["NAME", "LAYOUT", "SIZE", "HEAD", "TAIL", "CONSUMERS"]);
    for r in rows {
        match r.error {
            Some(e) => t.add_row([r.name, format!("error: {e}")]),
            None => t.add_row([
                r.name,
                r.layout.unwrap_or("").to_string(),
                match (r.capacity_bytes, r.segment_bytes) {
                    (Some(c), _) => human_bytes(c),
                    (None, Some(s)) => format!("{}/segment", human_bytes(s)),
                    _ => String::new(),
                },
                r.head.unwrap_or(0).to_string(),
                r.tail.unwrap_or(0).to_string(),
                r.consumers.unwrap_or(0).to_string(),
            ]),
        };
    }
    crate::print_out(&format!("{}\n", trim_lines(&t.to_string())))
}

/// comfy-table pads every cell; drop the trailing and leading blanks.
pub fn trim_lines(s: &str) -> String {
    s.lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn rm(ctx: &Ctx, a: RmArgs) -> Result<()> {
    match &a.consumer {
        Some(c) => {
            let s = ctx.open(&a.name, None)?;
            s.remove_consumer(c).map_err(|e| explain(&a.name, e))
        }
        None if a.force => {
            Stream::remove_forced_in(&ctx.root, &a.name).map_err(|e| explain(&a.name, e))
        }
        None => Stream::remove_in(&ctx.root, &a.name).map_err(|e| explain(&a.name, e)),
    }
}
