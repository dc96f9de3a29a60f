//! Runs one case: the parent makes the channel, re-executes this binary once
//! per role (`__child`), hands each child its fds over a control socket
//! (SCM_RIGHTS), waits until every child is ready, says "go", and collects
//! each child's JSON report.
//!
//! Control protocol, one Unix stream connection per child, in spawn order:
//! parent → child: one byte (the fd count) carrying the fds; child → parent:
//! `ready`; parent → child: `go`; child → parent: its report as one JSON line;
//! the parent then closes the connection and the child exits (a producer must
//! not tear down its side before every consumer is done).
//!
//! Throughput is timed by the parent, from just before `go` to the moment the
//! last consumer's report arrives; latency is timed by the pinger.

use std::io::{BufRead, BufReader, ErrorKind, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hdrhistogram::Histogram;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use rustix::process::{Signal, set_parent_process_death_signal};
use serde::{Deserialize, Serialize};

use crate::spec::{Case, ChildArgs, ChildReport, Kind, Latency, Role};
use crate::transport::{Endpoint, Rx, Tx};

/// The hidden subcommand a child runs.
pub const CHILD_CMD: &str = "__child";

/// Most fds one child receives (a fan-out producer's streams).
const MAX_FDS: usize = 16;

/// What one case measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub case: Case,
    /// Parent wall time from `go` to the last consumer's report.
    pub secs: f64,
    /// One per child, in spawn order (the producer, then the consumers; or the ponger, then the pinger).
    pub reports: Vec<ChildReport>,
}

impl Outcome {
    pub fn producer(&self) -> Option<&ChildReport> {
        self.reports.iter().find(|r| r.role == Some(Role::Producer))
    }

    pub fn consumers(&self) -> impl Iterator<Item = &ChildReport> {
        self.reports
            .iter()
            .filter(|r| r.role == Some(Role::Consumer))
    }

    pub fn latency(&self) -> Option<&Latency> {
        self.reports.iter().find_map(|r| r.latency.as_ref())
    }
}

struct Plan {
    args: ChildArgs,
    fds: Vec<OwnedFd>,
}

fn plans(case: &Case, dir: &Path) -> Result<Vec<Plan>> {
    let t = case.transport;
    let plan = |role, tx: Option<Endpoint>, rx: Option<Endpoint>| {
        let args = ChildArgs {
            case: *case,
            role,
            tx: tx.as_ref().map(Endpoint::desc),
            rx: rx.as_ref().map(Endpoint::desc),
        };
        let fds = tx.into_iter().chain(rx).flat_map(|e| e.fds).collect();
        Plan { args, fds }
    };
    Ok(match case.kind {
        Kind::Stream => {
            // The producer first: an iceoryx2 subscriber created after its
            // publisher is connected at once; one created before is connected
            // only at its first `receive`, and until then a publisher that
            // fills the buffer drops samples.
            let ch = t.channel(case, dir, "data", case.consumers)?;
            let mut v = vec![plan(Role::Producer, Some(ch.writer), None)];
            v.extend(
                ch.readers
                    .into_iter()
                    .map(|r| plan(Role::Consumer, None, Some(r))),
            );
            v
        }
        Kind::PingPong { .. } => {
            let ((ping_tx, ping_rx), (pong_tx, pong_rx)) = t.duplex(case, dir)?;
            vec![
                plan(Role::Pong, Some(pong_tx), Some(pong_rx)),
                plan(Role::Ping, Some(ping_tx), Some(ping_rx)),
            ]
        }
    })
}

/// A spawned child, killed and reaped if the case fails half-way.
struct Kid {
    child: Child,
    role: Role,
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The parent's end of a child's control connection.
struct Ctl {
    conn: UnixStream,
    lines: BufReader<UnixStream>,
}

/// Runs one case end to end. `watchdog` bounds every wait on a child, so a
/// hung child fails the case instead of hanging the bench (it is not a
/// performance bound).
pub fn run_case(case: &Case, watchdog: Duration) -> Result<Outcome> {
    ensure!(
        case.transport.built(),
        "{} is not built in",
        case.transport.name()
    );
    ensure!(
        case.transport.supports(case),
        "{} cannot run this case",
        case.transport.name()
    );
    let dir = TempDir::new()?;
    let ctl = dir.path().join("ctl.sock");
    let listener = UnixListener::bind(&ctl)?;
    listener.set_nonblocking(true)?;
    let exe = std::env::current_exe()?;

    let mut kids = Vec::new();
    for plan in plans(case, dir.path())? {
        let child = Command::new(&exe)
            .arg(CHILD_CMD)
            .arg(&ctl)
            .arg(serde_json::to_string(&plan.args)?)
            .stdin(Stdio::null())
            .spawn()
            .context("spawn child")?;
        let mut kid = Kid {
            child,
            role: plan.args.role,
        };
        let conn = accept(&listener, &mut kid.child, watchdog)?;
        conn.set_read_timeout(Some(watchdog))?;
        let mut ctl = Ctl {
            lines: BufReader::new(conn.try_clone()?),
            conn,
        };
        send_fds(&ctl.conn, &plan.fds)?;
        drop(plan.fds);
        let what = format!("{:?} child", kid.role);
        expect_line(&mut ctl.lines, "ready").context(what)?;
        kids.push((kid, ctl));
    }

    let start = Instant::now();
    for (_, ctl) in &mut kids {
        ctl.conn.write_all(b"go\n")?;
    }
    let mut end = start;
    let mut reports = Vec::new();
    for (kid, ctl) in &mut kids {
        let line =
            read_line(&mut ctl.lines).with_context(|| format!("{:?} child report", kid.role))?;
        if matches!(kid.role, Role::Consumer | Role::Ping) {
            end = Instant::now();
        }
        reports.push(serde_json::from_str(&line).context("child report")?);
    }
    let secs = (end - start).as_secs_f64();
    for (mut kid, ctl) in kids {
        ctl.conn.shutdown(std::net::Shutdown::Both)?;
        let status = kid.child.wait()?;
        ensure!(
            status.success(),
            "{:?} child exited with {status}",
            kid.role
        );
    }
    Ok(Outcome {
        case: *case,
        secs,
        reports,
    })
}

fn accept(listener: &UnixListener, child: &mut Child, watchdog: Duration) -> Result<UnixStream> {
    let since = Instant::now();
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false)?;
                return Ok(conn);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait()? {
                    bail!("child exited with {status} before connecting (see its stderr)");
                }
                ensure!(
                    since.elapsed() < watchdog,
                    "child {} never connected",
                    child.id()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    let n = r.read_line(&mut line)?;
    ensure!(n > 0, "peer exited (see its stderr)");
    Ok(line.trim_end().to_owned())
}

fn expect_line(r: &mut impl BufRead, want: &str) -> Result<()> {
    let got = read_line(r)?;
    ensure!(got == want, "expected {want:?}, got {got:?}");
    Ok(())
}

fn send_fds(conn: &UnixStream, fds: &[OwnedFd]) -> Result<()> {
    ensure!(fds.len() <= MAX_FDS, "too many fds for one child");
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() {
        ensure!(
            control.push(SendAncillaryMessage::ScmRights(&borrowed)),
            "cmsg buffer too small"
        );
    }
    let count = [fds.len() as u8];
    let sent = sendmsg(
        conn,
        &[IoSlice::new(&count)],
        &mut control,
        SendFlags::empty(),
    )?;
    ensure!(sent == 1, "short sendmsg");
    Ok(())
}

fn recv_fds(conn: &UnixStream) -> Result<Vec<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut count = [0u8];
    let got = recvmsg(
        conn,
        &mut [IoSliceMut::new(&mut count)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    ensure!(got.bytes == 1, "parent closed the control socket");
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(passed) = msg {
            fds.extend(passed);
        }
    }
    ensure!(
        fds.len() == usize::from(count[0]),
        "expected {} fds, got {}",
        count[0],
        fds.len()
    );
    Ok(fds)
}

/// The child's whole life: connect, take the fds, open the ends, report ready,
/// wait for go, do the work, report, wait for the parent to hang up.
pub fn child_main(ctl: &Path, args: &str) -> Result<()> {
    // Die with the parent, so a killed bench leaves no spinning children.
    // (If the parent is already gone, the connect below fails.)
    set_parent_process_death_signal(Some(Signal::KILL))?;
    let args: ChildArgs = serde_json::from_str(args).context("child args")?;
    let case = args.case;
    let conn = UnixStream::connect(ctl).context("connect to parent")?;
    let mut fds = recv_fds(&conn)?;
    let mut take = |n: usize| -> Vec<OwnedFd> {
        let rest = fds.split_off(n.min(fds.len()));
        std::mem::replace(&mut fds, rest)
    };
    let tx = match &args.tx {
        Some(d) => Some(case.transport.open_tx(&case, d, take(d.fds))?),
        None => None,
    };
    let rx = match &args.rx {
        Some(d) => Some(case.transport.open_rx(&case, d, take(d.fds))?),
        None => None,
    };
    let mut out = conn.try_clone()?;
    let mut lines = BufReader::new(conn);
    out.write_all(b"ready\n")?;
    expect_line(&mut lines, "go")?;

    let mut report = match (args.role, tx, rx) {
        (Role::Producer, Some(mut tx), _) => produce(&case, tx.as_mut())?,
        (Role::Consumer, _, Some(mut rx)) => consume(&case, rx.as_mut())?,
        (Role::Ping, Some(mut tx), Some(mut rx)) => ping(&case, tx.as_mut(), rx.as_mut())?,
        (Role::Pong, Some(mut tx), Some(mut rx)) => pong(&case, tx.as_mut(), rx.as_mut())?,
        (role, ..) => bail!("{role:?} child is missing an endpoint"),
    };
    report.role = Some(args.role);
    report.peak_rss_kib = peak_rss_kib()?;
    out.write_all(format!("{}\n", serde_json::to_string(&report)?).as_bytes())?;
    // Hold every port open until the parent has every report.
    let mut rest = String::new();
    let _ = lines.read_line(&mut rest);
    Ok(())
}

/// The bytes every producer sends: a fixed, not-quite-periodic pattern.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect()
}

/// Sum of every byte, the work each consumer does on each payload byte.
pub fn byte_sum(bytes: &[u8]) -> u64 {
    // u32 lanes vectorise well; 64 KiB * 255 cannot overflow them.
    bytes
        .chunks(64 << 10)
        .map(|c| u64::from(c.iter().map(|&b| u32::from(b)).sum::<u32>()))
        .sum()
}

fn produce(case: &Case, tx: &mut dyn Tx) -> Result<ChildReport> {
    let msg = payload(case.size);
    for _ in 0..case.count {
        tx.send(&msg)?;
    }
    Ok(ChildReport {
        bytes: case.count * case.size as u64,
        sum: case.count * byte_sum(&msg),
        ..ChildReport::default()
    })
}

fn consume(case: &Case, rx: &mut dyn Rx) -> Result<ChildReport> {
    let want = case.count * case.size as u64;
    let (mut got, mut sum) = (0u64, 0u64);
    while got < want {
        got += rx.recv(&mut |b| sum += byte_sum(b))? as u64;
    }
    ensure!(got == want, "received {got} bytes, expected {want}");
    Ok(ChildReport {
        bytes: got,
        sum,
        ..ChildReport::default()
    })
}

/// Receives exactly one `size`-byte message (a byte stream may hand it over in pieces).
fn recv_one(rx: &mut dyn Rx, size: usize, sum: &mut u64) -> Result<u64> {
    let mut got = 0;
    while got < size {
        got += rx.recv(&mut |b| *sum += byte_sum(b))?;
    }
    ensure!(
        got == size,
        "round trip returned {got} bytes, expected {size}"
    );
    Ok(got as u64)
}

fn ping(case: &Case, tx: &mut dyn Tx, rx: &mut dyn Rx) -> Result<ChildReport> {
    let Kind::PingPong { warmup } = case.kind else {
        bail!("ping in a stream case")
    };
    let msg = payload(case.size);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let (mut bytes, mut sum) = (0, 0);
    for i in 0..warmup + case.count {
        let t = Instant::now();
        tx.send(&msg)?;
        bytes += recv_one(rx, case.size, &mut sum)?;
        let one_way = (t.elapsed().as_nanos() / 2).max(1) as u64;
        if i >= warmup {
            hist.saturating_record(one_way);
        }
    }
    Ok(ChildReport {
        bytes,
        sum,
        latency: Some(Latency {
            round_trips: hist.len(),
            p50_ns: hist.value_at_quantile(0.50),
            p99_ns: hist.value_at_quantile(0.99),
            p999_ns: hist.value_at_quantile(0.999),
            max_ns: hist.max(),
        }),
        ..ChildReport::default()
    })
}

fn pong(case: &Case, tx: &mut dyn Tx, rx: &mut dyn Rx) -> Result<ChildReport> {
    let Kind::PingPong { warmup } = case.kind else {
        bail!("pong in a stream case")
    };
    let msg = payload(case.size);
    let (mut bytes, mut sum) = (0, 0);
    for _ in 0..warmup + case.count {
        bytes += recv_one(rx, case.size, &mut sum)?;
        tx.send(&msg)?;
    }
    Ok(ChildReport {
        bytes,
        sum,
        ..ChildReport::default()
    })
}

/// Peak resident set size of this process (VmHWM), KiB.
pub fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kib = line.split_whitespace().nth(1).context("malformed VmHWM")?;
    Ok(kib.parse()?)
}

/// A per-case directory under /dev/shm (RAM), removed with everything in it.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("ipcress-bench.{}.{seq}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child that runs `CMD ROLE JSON` (this binary re-executed), with its
/// stdin and stdout on one end of a Unix socket pair: the parent reads its
/// lines with the watchdog as a timeout, so a hung child fails the run
/// instead of hanging it. Killed and reaped if the run fails half-way.
/// Used by `codecs` and `scale`.
pub struct Worker {
    child: Child,
    role: &'static str,
    pub ctl: UnixStream,
    lines: BufReader<UnixStream>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Worker {
    pub fn spawn(
        cmd: &str,
        role: &'static str,
        case: &impl Serialize,
        watchdog: Duration,
    ) -> Result<Worker> {
        let (ctl, theirs) = UnixStream::pair()?;
        ctl.set_read_timeout(Some(watchdog))?;
        let stdin = OwnedFd::from(theirs.try_clone()?);
        let child = Command::new(std::env::current_exe()?)
            .arg(cmd)
            .arg(role)
            .arg(serde_json::to_string(case)?)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .with_context(|| format!("spawn {role}"))?;
        Ok(Worker {
            child,
            role,
            lines: BufReader::new(ctl.try_clone()?),
            ctl,
        })
    }

    pub fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .lines
            .read_line(&mut line)
            .with_context(|| format!("{} (watchdog)", self.role))?;
        ensure!(n > 0, "{} exited early (see its stderr)", self.role);
        Ok(line.trim_end().to_owned())
    }

    pub fn report<R: serde::de::DeserializeOwned>(&mut self) -> Result<R> {
        let line = self.line()?;
        serde_json::from_str(&line).with_context(|| format!("{} report {line:?}", self.role))
    }

    /// An error if the child has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early with {status} (see its stderr)", self.role);
        }
        Ok(())
    }

    /// Hangs up and waits for a clean exit.
    pub fn finish(mut self, watchdog: Duration) -> Result<()> {
        self.ctl.shutdown(std::net::Shutdown::Both)?;
        let since = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "{} exited with {status}", self.role);
                return Ok(());
            }
            ensure!(since.elapsed() < watchdog, "{} never exited", self.role);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sum_is_independent_of_chunking() {
        let data = payload(300_001);
        let whole = byte_sum(&data);
        let naive: u64 = data.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(whole, naive);
        let pieces: u64 = data.chunks(777).map(byte_sum).sum();
        assert_eq!(pieces, naive);
    }

    #[test]
    fn peak_rss_is_readable() {
        assert!(peak_rss_kib().unwrap() > 0);
    }
}
