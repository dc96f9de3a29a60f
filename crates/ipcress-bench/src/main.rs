//! `ipcress-bench`: ipcress side by side with pipes, Unix sockets, TCP
//! loopback, iceoryx2 and a bare shared-memory ring, every producer and
//! consumer in a process of its own.
//!
//! ```text
//! ipcress-bench compare [--quick] [--reps N] [--out DIR] [--only T,T..] [--ring-mib N]
//! ipcress-bench case --transport T [--kind stream|pingpong] [--size N] [--count N]
//!                    [--consumers N] [--wait auto|spin|block] [--warmup N] [--ring-mib N]
//! ipcress-bench codecs [--quick] [--aead-only] [--reps N] [--out DIR] [--bytes N] [--only C,C..]
//! ipcress-bench bridge [--quick] [--records N] [--size BYTES] [--reps N] [--window N] [--out DIR]
//! ipcress-bench put-lines [--lines N] [--reps N] [--ipcress PATH] [--out DIR]
//! ipcress-bench scale [--quick] [--reps N] [--records N] [--max-procs N] [--work-ns N,N..]
//!                     [--sizes N,N..] [--codecs plain,lz4-enc] [--out DIR]
//! ```
//!
//! `compare` prints a Markdown table and writes bench.json, bench.svg and
//! bench.md into `--out` (default target/bench). `case` runs one case and
//! prints its outcome as JSON. `codecs` measures compression and encryption
//! between processes and writes codecs.json into `--out`. `bridge` starts
//! its own nats-server on loopback and compares the NATS bridge with a plain
//! async-nats JetStream publisher; it prints a Markdown table and writes
//! bridge.json into `--out`. Sizes take a K or M suffix (binary).

#![deny(unsafe_code)]

#[cfg(feature = "ipcress")]
mod aead;
mod asynch;
#[cfg(feature = "bridge")]
mod bridge;
#[cfg(feature = "ipcress")]
mod codecs;
mod compare;
mod fdstream;
mod harness;
mod iox;
#[cfg(feature = "ipcress")]
mod ipc;
mod pipe;
#[cfg(feature = "ipcress")]
mod putlines;
mod report;
#[cfg(feature = "ipcress")]
mod scale;
// The bare ring is the one place with `unsafe` (it allows it itself).
mod ring;
mod spec;
mod tcp;
mod transport;
mod uds;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use spec::{Case, Kind, Transport, Wait};

const USAGE: &str = "usage:
  ipcress-bench compare [--quick] [--reps N] [--out DIR] [--only T,T..] [--ring-mib N]
  ipcress-bench case --transport T [--kind stream|pingpong] [--size N] [--count N]
                     [--consumers N] [--wait auto|spin|block] [--warmup N] [--ring-mib N]
  ipcress-bench codecs [--quick] [--aead-only] [--reps N] [--out DIR] [--bytes N] [--only C,C..]
  ipcress-bench bridge [--quick] [--records N] [--size BYTES] [--reps N] [--window N] [--out DIR]
  ipcress-bench put-lines [--lines N] [--reps N] [--ipcress PATH] [--out DIR]
  ipcress-bench scale [--quick] [--reps N] [--records N] [--max-procs N] [--work-ns N,N..]
                      [--sizes N,N..] [--codecs plain,lz4-enc] [--out DIR]
transports: ipc-send ipc-reserve ipc-reserve-crc pipe pipe-1m uds uds-4m tcp iox ring ipc-async uds-tokio
codecs: none lz4 zstd3 enc lz4-enc";

/// No wait on a child lasts longer than this; it guards against hangs only
/// and bounds no measurement.
const WATCHDOG: Duration = Duration::from_secs(600);
const QUICK_WATCHDOG: Duration = Duration::from_secs(60);

fn main() {
    if let Err(e) = run() {
        eprintln!("ipcress-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(harness::CHILD_CMD) => {
            let [_, ctl, spec] = args.as_slice() else {
                bail!(
                    "{} takes a control socket and a JSON spec",
                    harness::CHILD_CMD
                )
            };
            harness::child_main(Path::new(ctl), spec)
        }
        #[cfg(feature = "ipcress")]
        Some(codecs::CHILD_CMD) => codecs::child_main(&args[1..]),
        #[cfg(feature = "ipcress")]
        Some("codecs") => codecs::run(&codecs::opts(&args[1..])?),
        #[cfg(feature = "ipcress")]
        Some(scale::CHILD_CMD) => scale::child_main(&args[1..]),
        #[cfg(feature = "ipcress")]
        Some("scale") => scale::run(&scale::opts(&args[1..])?),
        #[cfg(feature = "ipcress")]
        Some("put-lines") => putlines::run(&putlines::opts(&args[1..])?),
        Some("compare") => compare::run(&compare_opts(&args[1..])?),
        Some("case") => {
            let case = case_opts(&args[1..])?;
            let outcome = harness::run_case(&case, WATCHDOG)?;
            compare::verify(&outcome)?;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            Ok(())
        }
        #[cfg(feature = "bridge")]
        Some("bridge") => bridge::run(&bridge_opts(&args[1..])?),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

/// Splits `--flag value` pairs and bare `--switch`es.
struct Flags<'a> {
    args: &'a [String],
}

impl<'a> Flags<'a> {
    fn value(&self, name: &str) -> Result<Option<&'a str>> {
        match self.args.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) => self
                .args
                .get(i + 1)
                .map(|v| Some(v.as_str()))
                .with_context(|| format!("{name} needs a value")),
        }
    }

    fn switch(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }

    fn check(&self, switches: &[&str], valued: &[&str]) -> Result<()> {
        let mut i = 0;
        while i < self.args.len() {
            let a = self.args[i].as_str();
            if valued.contains(&a) {
                i += 2;
            } else if switches.contains(&a) {
                i += 1;
            } else {
                bail!("unexpected argument {a:?}\n{USAGE}");
            }
        }
        Ok(())
    }
}

/// Parses `123`, `64K`, `8M` (binary multiples).
fn parse_size(s: &str) -> Result<u64> {
    let (num, shift) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    Ok(n << shift)
}

fn ring_bytes(flags: &Flags<'_>) -> Result<usize> {
    let mib = flags
        .value("--ring-mib")?
        .map(str::parse::<usize>)
        .transpose()?
        .unwrap_or(16);
    let bytes = mib << 20;
    anyhow::ensure!(bytes.is_power_of_two(), "--ring-mib must be a power of two");
    Ok(bytes)
}

fn compare_opts(args: &[String]) -> Result<compare::Opts> {
    let f = Flags { args };
    f.check(&["--quick"], &["--reps", "--out", "--only", "--ring-mib"])?;
    let quick = f.switch("--quick");
    let reps = match f.value("--reps")? {
        Some(n) => n.parse().context("--reps")?,
        None if quick => 3,
        None => 5,
    };
    anyhow::ensure!(reps >= 1, "--reps must be at least 1");
    let only = f
        .value("--only")?
        .map(|list| {
            list.split(',')
                .map(Transport::parse)
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(compare::Opts {
        quick,
        reps,
        out: f
            .value("--out")?
            .map_or_else(|| PathBuf::from("target/bench"), PathBuf::from),
        only,
        ring_bytes: ring_bytes(&f)?,
        watchdog: if quick { QUICK_WATCHDOG } else { WATCHDOG },
    })
}

#[cfg(feature = "bridge")]
fn bridge_opts(args: &[String]) -> Result<bridge::Opts> {
    let f = Flags { args };
    f.check(
        &["--quick"],
        &["--records", "--size", "--reps", "--window", "--out"],
    )?;
    let quick = f.switch("--quick");
    let num = |name: &str, default: u64| -> Result<u64> {
        Ok(f.value(name)?
            .map(parse_size)
            .transpose()?
            .unwrap_or(default))
    };
    let opts = bridge::Opts {
        quick,
        reps: num("--reps", if quick { 3 } else { 5 })? as usize,
        records: num("--records", if quick { 50_000 } else { 100_000 })? as usize,
        size: num("--size", 1024)? as usize,
        window: num("--window", 256)? as usize,
        out: f
            .value("--out")?
            .map_or_else(|| PathBuf::from("target/bench"), PathBuf::from),
    };
    anyhow::ensure!(
        opts.reps >= 1 && opts.records >= 1 && opts.size >= 1 && opts.window >= 1,
        "--reps, --records, --size and --window must be positive"
    );
    Ok(opts)
}

fn case_opts(args: &[String]) -> Result<Case> {
    let f = Flags { args };
    f.check(
        &[],
        &[
            "--transport",
            "--kind",
            "--size",
            "--count",
            "--consumers",
            "--wait",
            "--warmup",
            "--ring-mib",
        ],
    )?;
    let transport = Transport::parse(f.value("--transport")?.context("--transport is required")?)?;
    let warmup = f
        .value("--warmup")?
        .map(str::parse)
        .transpose()?
        .unwrap_or(0);
    let kind = match f.value("--kind")?.unwrap_or("stream") {
        "stream" => Kind::Stream,
        "pingpong" => Kind::PingPong { warmup },
        k => bail!("unknown kind {k:?}; known: stream, pingpong"),
    };
    let case = Case {
        transport,
        kind,
        size: parse_size(f.value("--size")?.unwrap_or("64"))? as usize,
        count: f
            .value("--count")?
            .map(parse_size)
            .transpose()?
            .unwrap_or(1000),
        consumers: f
            .value("--consumers")?
            .map(str::parse)
            .transpose()?
            .unwrap_or(1),
        wait: f
            .value("--wait")?
            .map(Wait::parse)
            .transpose()?
            .unwrap_or(Wait::Auto),
        ring_bytes: ring_bytes(&f)?,
    };
    anyhow::ensure!(
        case.size > 0 && case.consumers > 0,
        "--size and --consumers must be positive"
    );
    anyhow::ensure!(
        case.kind == Kind::Stream || case.consumers == 1,
        "ping-pong has exactly one peer"
    );
    Ok(case)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("64").unwrap(), 64);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("8m").unwrap(), 8 << 20);
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn case_flags_parse() {
        let args: Vec<String> =
            "--transport pipe --kind pingpong --wait spin --count 10 --warmup 2"
                .split(' ')
                .map(String::from)
                .collect();
        let c = case_opts(&args).unwrap();
        assert_eq!(c.transport, Transport::Pipe);
        assert_eq!(c.kind, Kind::PingPong { warmup: 2 });
        assert_eq!(c.wait, Wait::Spin);
        assert_eq!(c.count, 10);
        assert!(case_opts(&["--bogus".to_string()]).is_err());
    }
}
