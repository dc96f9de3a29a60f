//! `ipcress put NAME [FILE...]`: append records from files or stdin.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ipcress::{Policy, Stream};

use crate::cli::PutArgs;
use crate::framing::{MoveError, send_records};
use crate::{Ctx, ExitWith, explain, load_key, signals};

enum Input {
    Stdin,
    File(PathBuf, File),
}

pub fn run(ctx: &Ctx, a: PutArgs) -> Result<()> {
    let stop = signals::stop_flag()?;
    let key = load_key(a.key.as_deref())?;
    // Open every input first: a missing file fails before anything is sent.
    let mut inputs = Vec::new();
    let mut total: Option<u64> = Some(0);
    if a.files.is_empty() {
        inputs.push(Input::Stdin);
        total = None;
    }
    for path in a.files {
        if path.as_os_str() == "-" {
            inputs.push(Input::Stdin);
            total = None;
            continue;
        }
        let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let md = f
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        if md.is_dir() {
            anyhow::bail!("cannot read {}: it is a directory", path.display());
        }
        total = match total {
            Some(t) if md.is_file() => Some(t + md.len()),
            _ => None,
        };
        inputs.push(Input::File(path, f));
    }
    let s = ctx.open(&a.name, key.as_ref())?;
    let mut p = s.producer().map_err(|e| explain(&a.name, e))?;
    // The first SIGINT/SIGTERM also ends a wait for space on a full ring.
    p.interrupt_on(stop.clone());
    let framing = a.framing.framing();
    let bar = progress_bar(total);
    let _watch = FullWatch::start(s.clone(), bar.clone());
    let mut records = 0u64;
    for input in inputs {
        let (label, reader): (String, Box<dyn Read>) = match input {
            Input::Stdin => ("standard input".into(), Box::new(io::stdin().lock())),
            Input::File(path, f) => (path.display().to_string(), Box::new(f)),
        };
        let mut r = BufReader::with_capacity(1 << 20, bar.wrap_read(reader));
        let bar2 = bar.clone();
        let mut on_record = || {
            records += 1;
            if records.is_multiple_of(1024) {
                bar2.set_message(format!("{records} records"));
            }
        };
        match send_records(&mut r, framing, &mut p, &stop, &mut on_record) {
            Ok(_) => {}
            Err(MoveError::Interrupted) => {
                bar.abandon();
                return Err(ExitWith {
                    code: 130,
                    message: format!("interrupted after {records} records"),
                }
                .into());
            }
            Err(MoveError::Stream(e)) => return Err(explain(&a.name, e)),
            Err(MoveError::Io(e)) => {
                return Err(anyhow::Error::new(e).context(format!("read {label}")));
            }
            Err(e @ (MoveError::Truncated(_) | MoveError::Skipped { .. })) => {
                return Err(anyhow::Error::new(e).context(label));
            }
        }
    }
    bar.finish_with_message(format!("{records} records"));
    Ok(())
}

/// How long the stream may stay full, its tail still, before `put` says
/// who holds it.
const FULL_WARN_AFTER: Duration = Duration::from_secs(5);

/// Watches, beside the writing thread, for a ring that stays full: a
/// producer waits there for as long as the consumer holding the oldest
/// byte does not read, which may be for ever (a durable consumer whose
/// process is gone). Then it says once, on stderr, who that consumer is
/// and how to release it. Dropped, it stops.
struct FullWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FullWatch {
    fn start(s: Stream, bar: ProgressBar) -> FullWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("full-watch".into())
            .spawn(move || {
                let (mut last, mut since) = (s.tail(), Instant::now());
                while !flag.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let t = s.tail();
                    if t != last {
                        (last, since) = (t, Instant::now());
                    } else if since.elapsed() >= FULL_WARN_AFTER {
                        if let Some(line) = full_holder(&s) {
                            bar.suspend(|| crate::say(format_args!("ipcress: warning: {line}")));
                            return;
                        }
                        since = Instant::now();
                    }
                }
            })
            .ok();
        FullWatch { stop, thread }
    }
}

impl Drop for FullWatch {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// If `s` is a Block ring that is full, the consumer that holds its oldest
/// byte, as one line naming it; None otherwise. The consumers are read as
/// `stat` shows them (a group is alive while a member is).
fn full_holder(s: &Stream) -> Option<String> {
    let cap = s.capacity()?;
    if s.policy() != Policy::Block {
        return None;
    }
    let st = crate::stat::collect(s, None);
    let c = st
        .consumers
        .iter()
        .filter(|c| matches!(c.kind, "durable" | "subscriber" | "group"))
        .min_by_key(|c| c.position)?;
    let behind = c.lag_bytes;
    // Full: no room left for a record of a 64 KiB frame, say.
    if behind + (64 << 10).min(cap / 2) < cap {
        return None;
    }
    let who = match c.kind {
        "subscriber" => format!("a subscriber (pid {})", c.pid),
        "group" if c.alive => format!("group {} (its members are slow)", c.name),
        "group" => format!("group {} (no member reads it)", c.name),
        _ if c.alive => format!("durable consumer {} (pid {})", c.name, c.pid),
        _ => format!("durable consumer {} (no process reads it)", c.name),
    };
    let fix = match c.kind {
        "subscriber" => String::new(),
        _ => format!(
            "; `ipcress rm {} --consumer {}` removes it",
            s.name(),
            c.name
        ),
    };
    Some(format!(
        "stream {} is full: waiting for {who}, {behind} bytes behind{fix}",
        s.name()
    ))
}

/// A bar with rate and ETA on a terminal; nothing otherwise.
fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec} {msg}")
                .expect("valid template"),
        ),
    };
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
