//! `ipcress demo`: a real multi-process log pipeline on a temporary root.
//!
//! ```text
//! gen ──► logs ──► exec --workers N (ipcress demo-stage parse) ──► parsed
//!     ──► filter (CRITICAL only) ──► alerts ──► sink
//! ```
//!
//! Every stage is a separate process running this same binary. The
//! generator embeds a sequence number and its clock (ns since the epoch) in
//! each line; the filter and the sink measure latency from it and count
//! what they saw, and the demo checks that every CRITICAL line reached
//! `alerts` exactly once. Ends with an `END` record per stream so every
//! stage knows when it has everything.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use ipcress::{StartAt, Stream, StreamOptions};

use crate::cli::{DemoArgs, DemoStage, DemoStageArgs};
use crate::{Ctx, explain};

const LEVELS: [&str; 4] = ["INFO", "WARN", "ERROR", "CRITICAL"];
const HOSTS: [&str; 6] = ["web-01", "web-02", "web-03", "api-01", "api-02", "db-01"];
const MESSAGES: [&str; 6] = [
    "GET /api/items 200",
    "POST /api/orders 201",
    "slow request /api/search took 812ms",
    "connection reset by peer",
    "cache miss for key user:4711",
    "disk usage at 91% on /var",
];

/// How long the stages may take to catch up once the generator is done.
const DRAIN_LIMIT: Duration = Duration::from_secs(40);
/// How long a stage may take to start and register.
const START_LIMIT: Duration = Duration::from_secs(15);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Removes the temporary root and kills stages left running.
struct Scene {
    root: PathBuf,
    children: Vec<(String, Child)>,
    /// Set by SIGINT/SIGTERM: stop waiting, clean up, fail.
    stop: Arc<AtomicBool>,
}

impl Drop for Scene {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Scene {
    fn spawn(&mut self, label: &str, args: &[&str]) -> Result<()> {
        let exe = std::env::current_exe().context("find the ipcress binary")?;
        let mut cmd = Command::new(exe);
        // A killed demo takes its stages with it.
        crate::child::die_with_parent(&mut cmd);
        let child = cmd
            .args(args)
            .env("IPCRESS_DIR", &self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A Ctrl-C reaches only the demo, which then ends every stage
            // and removes the temporary root.
            .process_group(0)
            .spawn()
            .with_context(|| format!("start the {label} stage"))?;
        self.children.push((label.to_string(), child));
        Ok(())
    }

    fn child(&mut self, label: &str) -> &mut Child {
        &mut self
            .children
            .iter_mut()
            .find(|(l, _)| l == label)
            .expect("spawned")
            .1
    }

    /// Fail if any stage has already exited with an error, or if we were
    /// interrupted.
    fn check_alive(&mut self) -> Result<()> {
        if self.stop.load(Relaxed) {
            bail!("demo interrupted");
        }
        for (label, c) in &mut self.children {
            if let Some(st) = c.try_wait()?
                && !st.success()
            {
                bail!("the {label} stage failed ({st})");
            }
        }
        Ok(())
    }

    /// Wait until `stream` has at least `n` consumers registered.
    fn await_consumers(&mut self, stream: &Stream, n: usize) -> Result<()> {
        let t0 = Instant::now();
        while stream.consumers().iter().filter(|c| c.alive).count() < n {
            self.check_alive()?;
            if t0.elapsed() > START_LIMIT {
                bail!("the stages reading {} did not start", stream.name());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Wait for `label` to exit (successfully) and parse its report.
    fn finish(&mut self, label: &str, deadline: Instant) -> Result<BTreeMap<String, String>> {
        loop {
            self.check_alive()?;
            if self.child(label).try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the pipeline stalled: the {label} stage did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let idx = self
            .children
            .iter()
            .position(|(l, _)| l == label)
            .expect("spawned");
        let (_, mut child) = self.children.remove(idx);
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut out)?;
        }
        Ok(parse_report(&out))
    }
}

fn parse_report(s: &str) -> BTreeMap<String, String> {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(r: &BTreeMap<String, String>, k: &str) -> Result<u64> {
    r.get(k)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("a stage report lacks {k}"))
}

fn demo_root() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "ipcress-demo-{}-{:x}",
        std::process::id(),
        now_ns() & 0xffff_ffff
    ))
}

/// `println!` that ends the demo quietly when stdout's reader is gone
/// (`ipcress demo | head -3`), as `ls` and `stat` do.
macro_rules! say {
    ($($t:tt)*) => {
        crate::print_out(&format!("{}\n", format_args!($($t)*)))?
    };
}

pub fn run(a: DemoArgs) -> Result<()> {
    if a.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let mut scene = Scene {
        root: demo_root(),
        children: Vec::new(),
        stop: crate::signals::stop_flag()?,
    };
    let root = scene.root.clone();
    let mk = |name: &str, size: u64| {
        Stream::create_in(&root, name, &StreamOptions::ring(size)).map_err(|e| explain(name, e))
    };
    // Small rings: they stay in the CPU caches, and the Block policy keeps
    // the generator from running ahead of the stages.
    let logs = mk("logs", 512 << 10)?;
    let parsed = mk("parsed", 512 << 10)?;
    let alerts = mk("alerts", 256 << 10)?;
    say!(
        "ipcress demo: {} log lines{} through 5 kinds of processes, on {}",
        a.lines,
        a.seconds
            .map(|s| format!(" (at most {s} s)"))
            .unwrap_or_default(),
        root.display()
    );
    say!(
        "  gen ─► logs ─► exec --workers {} (ipcress demo-stage parse) ─► parsed ─► filter ─► alerts ─► sink",
        a.workers
    );

    // Downstream first, so every reader is registered before data flows.
    scene.spawn("sink", &["demo-stage", "sink", "--in", "alerts"])?;
    scene.await_consumers(&alerts, 1)?;
    scene.spawn(
        "filter",
        &["demo-stage", "filter", "--in", "parsed", "--out", "alerts"],
    )?;
    scene.await_consumers(&parsed, 1)?;
    let exe = std::env::current_exe().context("find the ipcress binary")?;
    let exe = exe.to_string_lossy().into_owned();
    let workers = a.workers.to_string();
    scene.spawn(
        "exec",
        &[
            "exec",
            "--in",
            "logs",
            "--out",
            "parsed",
            "--workers",
            &workers,
            "--",
            &exe,
            "demo-stage",
            "parse",
        ],
    )?;
    scene.await_consumers(&logs, a.workers as usize)?;

    let t0 = Instant::now();
    let lines = a.lines.to_string();
    let rate = a.rate.to_string();
    let seconds = a.seconds.map(|s| s.to_string());
    let mut gen_args = vec![
        "demo-stage",
        "gen",
        "--out",
        "logs",
        "--lines",
        &lines,
        "--rate",
        &rate,
    ];
    if let Some(s) = &seconds {
        gen_args.extend(["--seconds", s.as_str()]);
    }
    scene.spawn("gen", &gen_args)?;
    let gen_limit = a
        .seconds
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
        .unwrap_or(Duration::from_secs(3600));
    let gen_report = scene.finish("gen", t0 + gen_limit + DRAIN_LIMIT)?;
    let gen_secs = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + DRAIN_LIMIT;
    let filter = scene.finish("filter", deadline)?;
    let sink = scene.finish("sink", deadline)?;
    let total_secs = t0.elapsed().as_secs_f64();
    // The parsers follow `logs` forever: end them like a person would.
    let exec_pid = rustix::process::Pid::from_child(scene.child("exec"));
    rustix::process::kill_process(exec_pid, rustix::process::Signal::TERM)
        .context("stop the exec stage")?;
    scene.finish("exec", Instant::now() + DRAIN_LIMIT)?;

    let generated = num(&gen_report, "generated")?;
    let critical = num(&gen_report, "critical")?;
    let crit_sum = num(&gen_report, "critsum")?;
    let log_bytes = num(&gen_report, "bytes")?;
    let parsed_n = num(&filter, "parsed")?;
    let parsed_dups = num(&filter, "dups")?;
    let forwarded = num(&filter, "critical")?;
    let alerts_n = num(&sink, "alerts")?;
    let alerts_unique = num(&sink, "unique")?;
    let alerts_sum = num(&sink, "critsum")?;

    let count = |s: &Stream| (s.producer_totals().0.saturating_sub(1), s.tail());
    let rows = [
        ("logs", count(&logs)),
        ("parsed", count(&parsed)),
        ("alerts", count(&alerts)),
    ];
    say!("");
    say!("  {:<8} {:>10} {:>12}", "stream", "records", "bytes");
    for (name, (n, bytes)) in rows {
        say!("  {name:<8} {n:>10} {bytes:>12}");
    }
    say!("  (each stream also carried one END record)");
    say!("");
    say!(
        "  generated {generated} lines, {critical} CRITICAL; parsers passed {parsed_n}; \
         filter forwarded {forwarded}; sink received {alerts_n} ({alerts_unique} distinct)"
    );
    say!(
        "  throughput: {:.0} lines/s, {:.1} MB/s of logs (generator done in {gen_secs:.2} s, \
         last alert in {total_secs:.2} s)",
        generated as f64 / total_secs.max(1e-9),
        log_bytes as f64 / total_secs.max(1e-9) / 1e6
    );
    let lat = |r: &BTreeMap<String, String>| -> Result<String> {
        Ok(format!(
            "p50 {}  p99 {}  max {}  ({} samples)",
            micros(num(r, "p50")?),
            micros(num(r, "p99")?),
            micros(num(r, "max")?),
            num(r, "samples")?
        ))
    };
    say!("  latency gen → parsed (all lines):     {}", lat(&filter)?);
    say!("  latency gen → alerts (CRITICAL only): {}", lat(&sink)?);

    let ok = parsed_n == generated
        && parsed_dups == 0
        && forwarded == critical
        && alerts_n == critical
        && alerts_unique == critical
        && alerts_sum == crit_sum
        && rows[0].1.0 == generated
        && rows[1].1.0 == generated
        && rows[2].1.0 == critical;
    if !ok {
        bail!(
            "demo: counts do not match: generated {generated} ({critical} CRITICAL), parsed \
             {parsed_n} ({parsed_dups} duplicates), forwarded {forwarded}, received {alerts_n} \
             ({alerts_unique} distinct)"
        );
    }
    say!("  check: every CRITICAL line reached alerts exactly once: OK");
    drop(scene);
    Ok(())
}

fn micros(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0} ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}

// ---- the stages ---------------------------------------------------------

pub fn stage(ctx: &Ctx, a: DemoStageArgs) -> Result<()> {
    match a.stage {
        DemoStage::Gen {
            out,
            lines,
            seconds,
            rate,
            seed,
        } => generate(ctx, &out, lines, seconds, rate, seed),
        DemoStage::Parse => parse_stage(),
        DemoStage::Filter { input, output } => filter(ctx, &input, &output),
        DemoStage::Sink { input } => sink(ctx, &input),
    }
}

/// xorshift64*: a small deterministic generator for the synthetic logs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn level(r: u64) -> &'static str {
    match r % 100 {
        0 => LEVELS[3],
        1..=7 => LEVELS[2],
        8..=19 => LEVELS[1],
        _ => LEVELS[0],
    }
}

fn generate(
    ctx: &Ctx,
    out: &str,
    lines: u64,
    seconds: Option<f64>,
    rate: u64,
    seed: u64,
) -> Result<()> {
    let s = ctx.open(out, None)?;
    let mut p = s.producer().map_err(|e| explain(out, e))?;
    let mut rng = Rng(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let limit = seconds.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let t0 = Instant::now();
    let (mut sent, mut critical, mut crit_sum, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut line = String::with_capacity(160);
    'outer: while sent < lines {
        let elapsed = t0.elapsed();
        if limit.is_some_and(|l| elapsed >= l) {
            break;
        }
        let due = if rate == 0 {
            lines
        } else {
            ((elapsed.as_secs_f64() * rate as f64) as u64 + 1).min(lines)
        };
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        while sent < due {
            let r = rng.next();
            let lvl = level(r);
            line.clear();
            use std::fmt::Write as _;
            let _ = write!(
                line,
                "{} {} app[{}]: {lvl} seq={sent} {}",
                now_ns(),
                HOSTS[(r >> 8) as usize % HOSTS.len()],
                1000 + (r >> 16) % 9000,
                MESSAGES[(r >> 32) as usize % MESSAGES.len()],
            );
            p.send(line.as_bytes()).map_err(|e| explain(out, e))?;
            bytes += line.len() as u64;
            if lvl == "CRITICAL" {
                critical += 1;
                crit_sum = crit_sum.wrapping_add(sent);
            }
            sent += 1;
            if sent % 1024 == 0 && limit.is_some_and(|l| t0.elapsed() >= l) {
                break 'outer;
            }
        }
    }
    p.send(format!("END {sent} {critical}").as_bytes())
        .map_err(|e| explain(out, e))?;
    drop(p);
    say!(
        "generated={sent} critical={critical} critsum={crit_sum} bytes={bytes} secs={:.3}",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `ts host app[pid]: LEVEL seq=N msg` → `ts\tN\tLEVEL\thost\tmsg`; END
/// records pass unchanged.
fn parse_line(line: &str) -> Option<String> {
    let mut it = line.splitn(5, ' ');
    let ts = it.next()?;
    let host = it.next()?;
    let _app = it.next()?;
    let lvl = it.next()?;
    let rest = it.next()?;
    let (seq, msg) = rest.split_once(' ')?;
    let seq = seq.strip_prefix("seq=")?;
    Some(format!("{ts}\t{seq}\t{lvl}\t{host}\t{msg}"))
}

fn parse_stage() -> Result<()> {
    let mut r = BufReader::with_capacity(64 << 10, io::stdin().lock());
    let mut w = BufWriter::with_capacity(64 << 10, io::stdout().lock());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end_matches('\n');
        match parse_line(l) {
            Some(p) => writeln!(w, "{p}")?,
            None => writeln!(w, "{l}")?,
        }
        // Nothing more waiting: pass on what we have now.
        if r.buffer().is_empty() {
            w.flush()?;
        }
    }
    w.flush()?;
    Ok(())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

fn report_latency(h: &Histogram<u64>) -> String {
    format!(
        "p50={} p99={} max={} samples={}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
        h.len()
    )
}

/// Fields of a parsed line: (ts, seq, level).
fn fields(rec: &[u8]) -> Option<(u64, u64, &str)> {
    let s = std::str::from_utf8(rec).ok()?;
    let mut it = s.split('\t');
    let ts = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let lvl = it.next()?;
    Some((ts, seq, lvl))
}

fn filter(ctx: &Ctx, input: &str, output: &str) -> Result<()> {
    let src = ctx.open(input, None)?;
    let dst = ctx.open(output, None)?;
    let mut c = src
        .subscribe(StartAt::Start)
        .map_err(|e| explain(input, e))?;
    let mut p = dst.producer().map_err(|e| explain(output, e))?;
    let mut h = histogram();
    let mut seen = HashSet::new();
    let (mut parsed, mut dups, mut critical) = (0u64, 0u64, 0u64);
    let mut expected: Option<u64> = None;
    while expected != Some(parsed) {
        let m = c.recv().map_err(|e| explain(input, e))?;
        let rec = m
            .bytes()
            .ok_or_else(|| anyhow!("unexpected large record"))?;
        if let Some(end) = rec.strip_prefix(b"END ") {
            let n = std::str::from_utf8(end)
                .ok()
                .and_then(|s| s.split(' ').next()?.parse().ok())
                .ok_or_else(|| anyhow!("bad END record"))?;
            expected = Some(n);
            continue;
        }
        let (ts, seq, lvl) = fields(rec).ok_or_else(|| {
            anyhow!(
                "unparsable record: {:?}",
                String::from_utf8_lossy(&rec[..rec.len().min(80)])
            )
        })?;
        let _ = h.record(now_ns().saturating_sub(ts).max(1));
        parsed += 1;
        if !seen.insert(seq) {
            dups += 1;
        }
        if lvl == "CRITICAL" {
            p.send(rec).map_err(|e| explain(output, e))?;
            critical += 1;
        }
    }
    p.send(format!("END {critical}").as_bytes())
        .map_err(|e| explain(output, e))?;
    say!(
        "parsed={parsed} dups={dups} critical={critical} {}",
        report_latency(&h)
    );
    Ok(())
}

fn sink(ctx: &Ctx, input: &str) -> Result<()> {
    let src = ctx.open(input, None)?;
    let mut c = src
        .subscribe(StartAt::Start)
        .map_err(|e| explain(input, e))?;
    let mut h = histogram();
    let mut seen = HashSet::new();
    let (mut alerts, mut crit_sum) = (0u64, 0u64);
    loop {
        let m = c.recv().map_err(|e| explain(input, e))?;
        let rec = m
            .bytes()
            .ok_or_else(|| anyhow!("unexpected large record"))?;
        if rec.starts_with(b"END ") {
            break;
        }
        let (ts, seq, _) = fields(rec).ok_or_else(|| anyhow!("unparsable alert"))?;
        let _ = h.record(now_ns().saturating_sub(ts).max(1));
        alerts += 1;
        if seen.insert(seq) {
            crit_sum = crit_sum.wrapping_add(seq);
        }
    }
    say!(
        "alerts={alerts} unique={} critsum={crit_sum} {}",
        seen.len(),
        report_latency(&h)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_fields() {
        let p = parse_line("123 web-01 app[42]: CRITICAL seq=7 disk usage at 91% on /var").unwrap();
        assert_eq!(p, "123\t7\tCRITICAL\tweb-01\tdisk usage at 91% on /var");
        assert_eq!(fields(p.as_bytes()), Some((123, 7, "CRITICAL")));
        assert_eq!(parse_line("END 10 1"), None);
    }

    #[test]
    fn levels_mix() {
        let mut rng = Rng(12345);
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            let l = level(rng.next());
            counts[LEVELS.iter().position(|x| *x == l).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }
}
