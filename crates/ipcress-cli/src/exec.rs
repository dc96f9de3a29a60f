//! `ipcress exec --in A --out B -- CMD...`: any program as a stage.
//!
//! Each worker is one child process between two threads: a feeder that
//! reads its member of the group on A and writes the child's stdin, and a
//! collector that reads the child's stdout and sends the records to B.
//! At the end (signal, `--count`, `--until-idle`) the feeders close the
//! children's stdin, the collectors drain their stdout, and the children
//! are waited for; the first one that failed gives the exit code.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipcress::{Consumer, Error, Producer};

use crate::cli::ExecArgs;
use crate::framing::{Framing, MoveError, send_records, write_message};
use crate::get::POLL;
use crate::{Ctx, ExitWith, explain, load_key, signals};

/// State the feeders share.
struct Shared {
    stop: Arc<AtomicBool>,
    /// Input records still allowed (`--count`).
    remaining: Option<AtomicU64>,
    /// Stop after this long without input (`--until-idle`).
    idle: Option<Duration>,
    started: Instant,
    /// Milliseconds since `started` of the last input record.
    last_input_ms: AtomicU64,
}

impl Shared {
    fn should_stop(&self) -> bool {
        if self.stop.load(Relaxed) {
            return true;
        }
        if let Some(idle) = self.idle {
            let now = self.started.elapsed().as_millis() as u64;
            if now.saturating_sub(self.last_input_ms.load(Relaxed)) >= idle.as_millis() as u64 {
                return true;
            }
        }
        false
    }

    /// Take one record from the `--count` budget.
    fn reserve(&self) -> bool {
        match &self.remaining {
            None => true,
            Some(r) => r
                .fetch_update(AcqRel, Acquire, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    fn unreserve(&self) {
        if let Some(r) = &self.remaining {
            r.fetch_add(1, AcqRel);
        }
    }
}

struct Worker {
    child: Child,
    feeder: JoinHandle<Result<(), MoveError>>,
    collector: JoinHandle<Result<u64, MoveError>>,
}

pub fn run(ctx: &Ctx, a: ExecArgs) -> Result<()> {
    let stop = signals::stop_flag()?;
    let key = load_key(a.key.as_deref())?;
    let input = ctx.open(&a.input, key.as_ref())?;
    let output = ctx.open(&a.output, key.as_ref())?;
    let group = a
        .group
        .clone()
        .unwrap_or_else(|| format!("exec-{}", a.output));
    ipcress::validate_name(&group).context("group name (choose one with --group)")?;
    let framing = if a.length_prefixed {
        Framing::LengthPrefixed
    } else {
        Framing::Lines
    };
    let idle = match a.until_idle {
        Some(s) if !(s.is_finite() && s >= 0.0) => bail!("--until-idle needs a number of seconds"),
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let shared = Arc::new(Shared {
        stop,
        remaining: a.count.map(AtomicU64::new),
        idle,
        started: Instant::now(),
        last_input_ms: AtomicU64::new(0),
    });

    // Join the group and open the producers first: errors come before any
    // child runs.
    let mut ends = Vec::new();
    for _ in 0..a.workers {
        let member = input
            .group_from(&group, a.from)
            .map_err(|e| explain(&a.input, e))?;
        let producer = output.producer().map_err(|e| explain(&a.output, e))?;
        ends.push((member, producer));
    }

    let mut workers: Vec<Worker> = Vec::new();
    for (i, (member, producer)) in ends.into_iter().enumerate() {
        let spawned = Command::new(&a.cmd[0])
            .args(&a.cmd[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("IPCRESS_WORKER", i.to_string())
            // Its own process group: a Ctrl-C on the terminal reaches us
            // only, and we end the child by closing its stdin.
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                shared.stop.store(true, Relaxed);
                finish(workers, &a.cmd[0]).ok();
                return Err(anyhow::Error::new(e).context(format!("cannot run {}", a.cmd[0])));
            }
        };
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let sh = shared.clone();
        let name = a.input.clone();
        let feeder = std::thread::Builder::new()
            .name(format!("feeder-{i}"))
            .spawn(move || feed(member, stdin, framing, &sh, &name))
            .context("start a thread")?;
        let collector = std::thread::Builder::new()
            .name(format!("collector-{i}"))
            .spawn(move || collect(stdout, producer, framing))
            .context("start a thread")?;
        workers.push(Worker {
            child,
            feeder,
            collector,
        });
    }
    finish(workers, &a.cmd[0]).map_err(|e| match e.downcast::<MoveError>() {
        Ok(MoveError::Stream(le)) => explain(&a.input, le),
        Ok(other) => anyhow::Error::new(other),
        Err(e) => e,
    })
}

/// Wait for every worker; report the first failure.
fn finish(workers: Vec<Worker>, program: &str) -> Result<()> {
    let mut first_err: Option<anyhow::Error> = None;
    let mut failed: Option<(usize, ExitStatus)> = None;
    for (i, mut w) in workers.into_iter().enumerate() {
        let fed = w
            .feeder
            .join()
            .unwrap_or_else(|_| Err(MoveError::Truncated("feeder thread panicked".into())));
        let collected = w
            .collector
            .join()
            .unwrap_or_else(|_| Err(MoveError::Truncated("collector thread panicked".into())));
        let status = w.child.wait();
        if let Err(e) = fed {
            // The child going away is reported through its exit status.
            if !e.is_broken_pipe() && first_err.is_none() {
                first_err = Some(anyhow::Error::new(e).context(format!("worker {i}: input")));
            }
        }
        if let Err(e) = collected
            && first_err.is_none()
        {
            first_err = Some(anyhow::Error::new(e).context(format!("worker {i}: output")));
        }
        match status {
            Ok(s) if !s.success() => {
                if failed.is_none() {
                    failed = Some((i, s));
                }
            }
            Ok(_) => {}
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(anyhow::Error::new(e).context(format!("wait for worker {i}")));
                }
            }
        }
    }
    if let Some((i, s)) = failed {
        let (code, what) = match (s.code(), s.signal()) {
            (Some(c), _) => (c.clamp(1, 255) as u8, format!("exited with status {c}")),
            (None, Some(sig)) => (
                (128 + sig).clamp(1, 255) as u8,
                format!("was killed by signal {sig}"),
            ),
            _ => (1, "failed".to_string()),
        };
        return Err(ExitWith {
            code,
            message: format!("worker {i}: {program} {what}"),
        }
        .into());
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Feeder: group member on A -> child's stdin.
fn feed(
    mut member: Consumer,
    stdin: ChildStdin,
    framing: Framing,
    sh: &Shared,
    stream: &str,
) -> Result<(), MoveError> {
    let mut w = BufWriter::with_capacity(64 << 10, stdin);
    let result = (|| -> Result<(), MoveError> {
        loop {
            if sh.should_stop() {
                return Ok(());
            }
            if !sh.reserve() {
                return Ok(());
            }
            let mut got = match member.try_recv() {
                Ok(Some(m)) => {
                    write_message(m, framing, &mut w)?;
                    true
                }
                Ok(None) => false,
                Err(e) => lagged_or(e, stream)?,
            };
            if !got {
                // Nothing ready: let the child work on what it has.
                w.flush().map_err(MoveError::Io)?;
                got = match member.recv_timeout(POLL) {
                    Ok(Some(m)) => {
                        write_message(m, framing, &mut w)?;
                        true
                    }
                    Ok(None) => false,
                    Err(e) => lagged_or(e, stream)?,
                };
            }
            if got {
                sh.last_input_ms
                    .store(sh.started.elapsed().as_millis() as u64, Relaxed);
            } else {
                sh.unreserve();
            }
        }
    })();
    if result.is_err() {
        // Let the other workers wind down too.
        sh.stop.store(true, Relaxed);
    }
    let flushed = w.flush().map_err(MoveError::Io);
    // Acknowledge the last record handed to the child.
    let committed = member.commit().map_err(MoveError::Stream);
    drop(w); // closes the child's stdin
    result.and(flushed).and(committed)
}

fn lagged_or(e: Error, stream: &str) -> Result<bool, MoveError> {
    match e {
        Error::Lagged { skipped_bytes } => {
            eprintln!(
                "ipcress: warning: stream {stream}: fell behind, {skipped_bytes} bytes were skipped"
            );
            Ok(false)
        }
        e => Err(MoveError::Stream(e)),
    }
}

/// Collector: child's stdout -> producer on B, until the child closes it.
fn collect(
    stdout: ChildStdout,
    mut producer: Producer,
    framing: Framing,
) -> Result<u64, MoveError> {
    let mut r = BufReader::with_capacity(256 << 10, stdout);
    // Never interrupted: whatever the child wrote is kept.
    let never = AtomicBool::new(false);
    send_records(&mut r, framing, &mut producer, &never, &mut || {})
}
