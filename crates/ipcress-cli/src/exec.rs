//! `ipcress exec --in A --out B -- CMD...`: any program as a stage.
//!
//! Each worker is one child process between two threads: a feeder that
//! reads its member of the group on A and writes the child's stdin, and a
//! collector that reads the child's stdout and sends the records to B.
//! At the end (signal, `--count`, `--until-idle`) the feeders close the
//! children's stdin, the collectors drain their stdout, and the children
//! are waited for; the first one that failed gives the exit code. A worker
//! that was given its whole input, wrote nothing, and exits with status 1
//! is a filter that matched nothing (`grep`), not a failure.

use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipcress::{Consumer, Producer};

use crate::cli::ExecArgs;
use crate::framing::{Framing, MoveError, lagged_or, send_records, write_message};
use crate::get::{POLL, deliver};
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

/// What a worker's collector tells its feeder with `--one-to-one`: a
/// record handed to the worker counts as done (is acknowledged to the
/// group) once its answer is in B, not once the worker has read it.
#[derive(Default)]
struct Answers {
    /// Output records sent to B so far.
    sent: AtomicU64,
    /// The collector has finished (the worker closed its stdout).
    finished: AtomicBool,
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
    let in_flight = if a.one_to_one {
        IN_FLIGHT_ANSWERED
    } else {
        IN_FLIGHT
    };
    let mut ends = Vec::new();
    for _ in 0..a.workers {
        let mut members = Vec::with_capacity(in_flight);
        for _ in 0..in_flight {
            members.push(
                input
                    .group_from(&group, a.start.start_at())
                    .map_err(|e| explain(&a.input, e))?,
            );
        }
        let producer = output.producer().map_err(|e| explain(&a.output, e))?;
        ends.push((members, producer));
    }

    let mut workers: Vec<Worker> = Vec::new();
    for (i, (members, producer)) in ends.into_iter().enumerate() {
        let mut cmd = Command::new(&a.cmd[0]);
        // A killed exec takes its workers with it: their input and output
        // are gone, and the records they had not read yet go back to the
        // group (see `feed`).
        crate::child::die_with_parent(&mut cmd);
        let spawned = cmd
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
        let answers: Option<Arc<Answers>> = a.one_to_one.then(Arc::default);
        let told = answers.clone();
        let feeder = std::thread::Builder::new()
            .name(format!("feeder-{i}"))
            .spawn(move || feed(members, stdin, framing, told, &sh, &name))
            .context("start a thread")?;
        let collector = std::thread::Builder::new()
            .name(format!("collector-{i}"))
            .spawn(move || collect(stdout, producer, framing, answers))
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
        // A filter that was given its whole input, wrote nothing and exits
        // with status 1 matched nothing (grep's convention): not a failure.
        let matched_nothing = fed.is_ok()
            && matches!(collected, Ok(0))
            && matches!(&status, Ok(s) if s.code() == Some(1));
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
            Ok(s) if !s.success() && !matched_nothing => {
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

/// Members per worker: each gives its next record once the worker has read
/// its last one, so this is how many records may sit in a worker's pipe.
/// One keeps the group's order (members hand out runs of records).
const IN_FLIGHT: usize = 1;

/// Members per worker with `--one-to-one`: records a worker may hold
/// unanswered. More than one, or every record would wait for the answer
/// to the one before it; the group's order is not kept across them.
const IN_FLIGHT_ANSWERED: usize = 4;

/// One record written to a worker's stdin and not acknowledged yet.
struct InFlight {
    /// The member that holds it.
    member: usize,
    /// Bytes written to the pipe up to and including this record.
    end: u64,
    /// How many records were written whole up to and including this one:
    /// it is answered once that many answers are in B (`--one-to-one`).
    seq: u64,
}

/// Feeder: the worker's members of the group on A -> child's stdin.
///
/// A record is acknowledged to the group only once the worker has read
/// all of it from its pipe: bytes written minus what the pipe still holds
/// (FIONREAD). A member is asked for its next record only once the worker
/// has read the last one it gave (so at most `IN_FLIGHT` records wait in
/// the pipe; with one member, in the group's order). Records the
/// worker has not read when it dies, or when `exec` stops, are left
/// unacknowledged: their members are never closed (closing would
/// acknowledge) and the group hands the records to another member once
/// this process is gone (docs/CLI.md).
///
/// With `--one-to-one` (`answers` given) a record is acknowledged only
/// once the collector has sent as many answers to B as records were
/// written up to it, so a record the worker read but had not answered when
/// it, or `exec`, died goes back to the group too.
fn feed(
    mut members: Vec<Consumer>,
    stdin: ChildStdin,
    framing: Framing,
    answers: Option<Arc<Answers>>,
    sh: &Shared,
    stream: &str,
) -> Result<(), MoveError> {
    let mut pipe = Pipe {
        w: stdin,
        written: 0,
        records: 0,
        answers,
    };
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut rec = Vec::with_capacity(64 << 10);
    let mut rr = 0usize;
    let result = (|| -> Result<(), MoveError> {
        loop {
            if sh.should_stop() {
                return Ok(());
            }
            // Acknowledge what the worker has read; find a free member.
            let mut waits = 0;
            let free = loop {
                pipe.ack_read(&mut members, &mut inflight)?;
                // Round robin: every member's run gets handed out.
                let n = members.len();
                if let Some(i) = (0..n)
                    .map(|k| (rr + k) % n)
                    .find(|i| inflight.iter().all(|f| f.member != *i))
                {
                    rr = i + 1;
                    break i;
                }
                // Input waits in the worker's pipe: the stage is not idle.
                sh.last_input_ms
                    .store(sh.started.elapsed().as_millis() as u64, Relaxed);
                if sh.should_stop() {
                    return Ok(());
                }
                pipe.wait_read(waits)?;
                waits += 1;
            };
            if !sh.reserve() {
                return Ok(());
            }
            let member = &mut members[free];
            let got = match member.try_recv() {
                Ok(Some(m)) => Some(write_message(m, framing, &mut rec)),
                Ok(None) => None,
                Err(e) => {
                    lagged_or(e, stream)?;
                    None
                }
            };
            let got = match got {
                Some(w) => Some(w),
                None => match member.recv_timeout(POLL / IN_FLIGHT as u32) {
                    Ok(Some(m)) => Some(write_message(m, framing, &mut rec)),
                    Ok(None) => None,
                    Err(e) => {
                        lagged_or(e, stream)?;
                        None
                    }
                },
            };
            let delivered = match got {
                Some(w) => deliver(w, stream)? > 0,
                None => false,
            };
            if !delivered {
                rec.clear();
                sh.unreserve();
                continue;
            }
            sh.last_input_ms
                .store(sh.started.elapsed().as_millis() as u64, Relaxed);
            let r = pipe.write(&rec);
            rec.clear();
            // A record not written whole is never acknowledged.
            let whole = r.is_ok();
            if whole {
                pipe.records += 1;
            }
            inflight.push_back(InFlight {
                member: free,
                end: if whole { pipe.written } else { u64::MAX },
                seq: if whole { pipe.records } else { u64::MAX },
            });
            r?;
        }
    })();
    if result.is_err() {
        // Let the other workers wind down too.
        sh.stop.store(true, Relaxed);
    }
    let pipe = match pipe.answers.clone() {
        None => {
            // Give the worker a moment to read what it has, acknowledge
            // that, and leave the rest to the group.
            let t0 = Instant::now();
            let mut waits = 0;
            while !inflight.is_empty() && t0.elapsed() < DRAIN_WAIT {
                if pipe.ack_read(&mut members, &mut inflight).is_err()
                    || pipe.wait_read(waits).is_err()
                {
                    break;
                }
                waits += 1;
            }
            let _ = pipe.ack_read(&mut members, &mut inflight);
            Some(pipe)
        }
        Some(answers) => {
            // End of input: the worker answers what it has and exits;
            // every answer it gives is in B once the collector finishes.
            let records = pipe.records;
            drop(pipe);
            while !answers.finished.load(Acquire) && answers.sent.load(Acquire) < records {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = ack_answered(&answers, &mut members, &mut inflight);
            None
        }
    };
    let unread: Vec<usize> = inflight.iter().map(|f| f.member).collect();
    for (i, mut m) in members.into_iter().enumerate() {
        if unread.contains(&i) {
            // Closing would acknowledge the record: keep the slot held
            // until this process ends, then the group redelivers it.
            std::mem::forget(m);
        } else {
            let _ = m.commit();
        }
    }
    drop(pipe); // closes the child's stdin (if not closed yet)
    result
}

/// Acknowledge, in order, every record whose answer is in B.
fn ack_answered(
    answers: &Answers,
    members: &mut [Consumer],
    inflight: &mut VecDeque<InFlight>,
) -> Result<(), MoveError> {
    let sent = answers.sent.load(Acquire);
    while let Some(f) = inflight.front() {
        if f.seq > sent {
            break;
        }
        members[f.member].commit().map_err(MoveError::Stream)?;
        inflight.pop_front();
    }
    Ok(())
}

/// How long a stopping feeder waits for its worker to read what it was
/// given before it leaves the rest unacknowledged.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// The write end of a worker's stdin, with the bytes and records written
/// to it and when they count as done.
struct Pipe {
    w: ChildStdin,
    written: u64,
    records: u64,
    /// With `--one-to-one`: records count as done when answered.
    answers: Option<Arc<Answers>>,
}

impl Pipe {
    /// Write all of `buf`, counting what went in even if the worker dies
    /// half-way.
    fn write(&mut self, mut buf: &[u8]) -> Result<(), MoveError> {
        while !buf.is_empty() {
            match self.w.write(buf) {
                Ok(0) => return Err(MoveError::Io(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.written += n as u64;
                    buf = &buf[n..];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(MoveError::Io(e)),
            }
        }
        Ok(())
    }

    /// Bytes the worker has read from the pipe.
    fn read_by_worker(&self) -> Result<u64, MoveError> {
        let queued = rustix::io::ioctl_fionread(&self.w).map_err(|e| MoveError::Io(e.into()))?;
        Ok(self.written.saturating_sub(queued))
    }

    /// Acknowledge every record the worker has read (or, with
    /// `--one-to-one`, answered).
    fn ack_read(
        &self,
        members: &mut [Consumer],
        inflight: &mut VecDeque<InFlight>,
    ) -> Result<(), MoveError> {
        if inflight.is_empty() {
            return Ok(());
        }
        if let Some(answers) = &self.answers {
            return ack_answered(answers, members, inflight);
        }
        let read = self.read_by_worker()?;
        while let Some(f) = inflight.front() {
            if f.end > read {
                break;
            }
            members[f.member].commit().map_err(MoveError::Stream)?;
            inflight.pop_front();
        }
        Ok(())
    }

    /// Wait a little for the worker to read (the `n`th wait in a row:
    /// yield first, then sleep longer and longer, up to 1 ms); an error
    /// once it is gone (its end of the pipe closed).
    fn wait_read(&self, n: u32) -> Result<(), MoveError> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.w, PollFlags::empty())];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if let Ok(n) = poll(&mut fds, Some(&zero))
            && n > 0
            && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
        {
            return Err(MoveError::Io(std::io::ErrorKind::BrokenPipe.into()));
        }
        if n < 32 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(20 << (n - 32).min(6)));
        }
        Ok(())
    }
}

/// Collector: child's stdout -> producer on B, until the child closes it.
/// With `--one-to-one` it counts the answers sent for the feeder.
fn collect(
    stdout: ChildStdout,
    mut producer: Producer,
    framing: Framing,
    answers: Option<Arc<Answers>>,
) -> Result<u64, MoveError> {
    let mut r = BufReader::with_capacity(256 << 10, stdout);
    // Never interrupted: whatever the child wrote is kept.
    let never = AtomicBool::new(false);
    let r = send_records(&mut r, framing, &mut producer, &never, &mut || {
        if let Some(a) = &answers {
            a.sent.fetch_add(1, Release);
        }
    });
    if let Some(a) = &answers {
        a.finished.store(true, Release);
    }
    r
}
