//! `ipcress-bench bridge`: `bridge out` (local stream → JetStream) against
//! a plain async-nats JetStream publisher on the same, private nats-server,
//! in the same run (DESIGN.md §5 and §7).
//!
//! The server is started here with JetStream on a free 127.0.0.1 port and a
//! temporary store directory, and killed at the end, also on error. Every
//! repetition runs [`ipcress_nats::bench_bridge`]: bridge out, bridge in,
//! then the plain publisher without and with a `Nats-Msg-Id`, all with the
//! same window of publishes in flight and every ack awaited.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipcress_nats::{BenchConfig, BenchReport, bench_bridge};
use serde_json::{Value, json};

use crate::compare::median;
use crate::report;

pub struct Opts {
    pub quick: bool,
    pub reps: usize,
    pub records: usize,
    pub size: usize,
    pub window: usize,
    pub out: PathBuf,
}

/// A nats-server child process on loopback; killed (and its store
/// removed) when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Result<Server> {
        let bin = find_server()?;
        let dir = tempfile::Builder::new()
            .prefix("ipcress-bench-nats")
            .tempdir()
            .context("temporary store directory")?;
        // A free port: bound and released just before the server takes it.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = File::create(dir.path().join("nats-server.log"))?;
        let child = ipcress_nats::server::command(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-sd")
            .arg(dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut s = Server { child, port, dir };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = s.child.try_wait()? {
                bail!("nats-server exited with {st}; {}", s.log_tail());
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!(
                    "nats-server did not listen on port {port}; {}",
                    s.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(s)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn version(&self) -> String {
        find_server()
            .ok()
            .and_then(|b| Command::new(b).arg("--version").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let s =
            std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        format!(
            "log:\n{}",
            lines[lines.len().saturating_sub(10)..].join("\n")
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nats-server on PATH, else where Debian's package puts it.
fn find_server() -> Result<PathBuf> {
    ipcress_nats::server::find()
        .context("nats-server is not installed (apt-get install nats-server)")
}

/// Per-repetition figures.
struct Rep {
    plain: f64,
    plain_multi: f64,
    plain_current: f64,
    plain_msg_id: f64,
    plain_headers: f64,
    bridge_out: f64,
    bridge_out_single: f64,
    bridge_in: f64,
}

impl Rep {
    fn of(r: &BenchReport) -> Rep {
        Rep {
            // The faster of the two runtimes: the baseline is not weakened.
            plain: r.rate(r.plain).max(r.rate(r.plain_current_thread)),
            plain_multi: r.rate(r.plain),
            plain_current: r.rate(r.plain_current_thread),
            plain_msg_id: r.rate(r.plain_msg_id),
            plain_headers: r.rate(r.plain_bridge_headers),
            bridge_out: r.rate(r.bridge_out),
            bridge_out_single: r.rate(r.bridge_out_per_record),
            bridge_in: r.rate(r.bridge_in),
        }
    }
}

pub fn run(opts: &Opts) -> Result<()> {
    let server = Server::start()?;
    let root = tempfile::Builder::new()
        .prefix("ipcress-bench-bridge")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .context("temporary directory for the local streams")?;
    let mut cfg = BenchConfig::new(&server.url(), root.path());
    cfg.records = opts.records;
    cfg.record_size = opts.size;
    cfg.window = opts.window;
    let started = Instant::now();
    let mut reps = Vec::new();
    let mut raw = Vec::new();
    for rep in 0..opts.reps {
        // Alternate which side runs first on the server.
        cfg.plain_first = rep % 2 == 1;
        eprint!("rep {}/{} ", rep + 1, opts.reps);
        let r = bench_bridge(&cfg).with_context(|| format!("repetition {}", rep + 1))?;
        let x = Rep::of(&r);
        eprintln!(
            "plain {:.0} rec/s, bridge out {:.0} rec/s ({:.2}x), per record {:.0} rec/s ({:.2}x), \
             bridge in {:.0} rec/s",
            x.plain,
            x.bridge_out,
            x.bridge_out / x.plain,
            x.bridge_out_single,
            x.bridge_out_single / x.plain,
            x.bridge_in
        );
        raw.push(json!({
            "rep": rep,
            "plain_secs": r.plain.as_secs_f64(),
            "plain_msg_id_secs": r.plain_msg_id.as_secs_f64(),
            "plain_current_thread_secs": r.plain_current_thread.as_secs_f64(),
            "plain_bridge_headers_secs": r.plain_bridge_headers.as_secs_f64(),
            "plain_first": cfg.plain_first,
            "bridge_out_secs": r.bridge_out.as_secs_f64(),
            "bridge_out_per_record_secs": r.bridge_out_per_record.as_secs_f64(),
            "bridge_in_secs": r.bridge_in.as_secs_f64(),
            "plain_rec_s": x.plain,
            "plain_multi_thread_rec_s": x.plain_multi,
            "plain_current_thread_rec_s": x.plain_current,
            "plain_msg_id_rec_s": x.plain_msg_id,
            "plain_bridge_headers_rec_s": x.plain_headers,
            "bridge_out_rec_s": x.bridge_out,
            "bridge_out_per_record_rec_s": x.bridge_out_single,
            "bridge_in_rec_s": x.bridge_in,
        }));
        reps.push(x);
    }
    let setup = json!({
        "mode": if opts.quick { "quick" } else { "full" },
        "reps": opts.reps,
        "records": opts.records,
        "record_size": opts.size,
        "window": opts.window,
        "replicas": cfg.replicas,
        "ordered": cfg.ordered,
        "batch_bytes": cfg.batch_bytes,
        "cpus": report::cpus(),
        "kernel": report::kernel(),
        "nats_server": server.version(),
    });
    let (table, medians) = table(&reps, opts, &setup);
    println!("{table}");
    let doc = json!({
        "setup": setup,
        "medians": medians,
        "reps": raw,
        "elapsed_secs": started.elapsed().as_secs_f64(),
    });
    let path = report::write_out(
        &opts.out,
        "bridge.json",
        serde_json::to_string_pretty(&doc)?,
    )?;
    eprintln!(
        "wrote {} in {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    drop(server);
    Ok(())
}

/// The Markdown table (medians over repetitions) and the same medians as JSON.
fn table(reps: &[Rep], opts: &Opts, setup: &Value) -> (String, Value) {
    let col = |f: fn(&Rep) -> f64| median(&reps.iter().map(f).collect::<Vec<_>>());
    let mb = |recs: f64| recs * opts.size as f64 / 1e6;
    let plain = col(|r| r.plain);
    let plain_id = col(|r| r.plain_msg_id);
    let plain_m = col(|r| r.plain_multi);
    let plain_c = col(|r| r.plain_current);
    let plain_h = col(|r| r.plain_headers);
    let out = col(|r| r.bridge_out);
    let inb = col(|r| r.bridge_in);
    let ratio = col(|r| r.bridge_out / r.plain);
    let ratio_id = col(|r| r.bridge_out / r.plain_msg_id);
    let ratio_h = col(|r| r.bridge_out / r.plain_headers);
    let single = col(|r| r.bridge_out_single);
    let ratio_single = col(|r| r.bridge_out_single / r.plain);
    let mut s = format!(
        "## ipcress-bench bridge ({} mode, median of {} reps, {} records of {} B, window {}, \
         batches of {} B, {} CPUs)\n\n",
        setup["mode"].as_str().unwrap_or("?"),
        opts.reps,
        opts.records,
        opts.size,
        opts.window,
        setup["batch_bytes"],
        setup["cpus"],
    );
    s.push_str("| publisher | rec/s ↑ | MB/s ↑ | bridge out ÷ this |\n|---|---:|---:|---:|\n");
    let row = |s: &mut String, name: &str, v: f64, r: Option<f64>| {
        let r = r.map_or("–".to_string(), |r| format!("{r:.2}×"));
        s.push_str(&format!("| {name} | {v:.0} | {:.1} | {r} |\n", mb(v)));
    };
    row(
        &mut s,
        "plain async-nats JetStream publish, faster runtime per rep",
        plain,
        Some(ratio),
    );
    row(&mut s, "plain, multi-thread runtime", plain_m, None);
    row(&mut s, "plain, current-thread runtime", plain_c, None);
    row(&mut s, "plain, with Nats-Msg-Id", plain_id, Some(ratio_id));
    row(
        &mut s,
        "plain, with the bridge's headers (Nats-Msg-Id, Ipcress-Flags, Nats-Expected-Last-Sequence)",
        plain_h,
        Some(ratio_h),
    );
    row(
        &mut s,
        "ipcress bridge out (batched, the default)",
        out,
        None,
    );
    row(
        &mut s,
        "ipcress bridge out, one NATS message per record (--batch-bytes 0)",
        single,
        None,
    );
    row(&mut s, "ipcress bridge in (JetStream → local)", inb, None);
    s.push_str(&format!(
        "\nbridge out ÷ plain publisher = {ratio:.2} (median of per-rep ratios; target ≥ 0.80: {}); \
         one message per record: {ratio_single:.2}.\n",
        if ratio >= 0.8 { "met" } else { "not met" }
    ));
    let medians = json!({
        "plain_rec_s": plain,
        "plain_msg_id_rec_s": plain_id,
        "plain_multi_thread_rec_s": plain_m,
        "plain_current_thread_rec_s": plain_c,
        "plain_bridge_headers_rec_s": plain_h,
        "bridge_out_rec_s": out,
        "bridge_out_per_record_rec_s": single,
        "bridge_in_rec_s": inb,
        "plain_mb_s": mb(plain),
        "bridge_out_mb_s": mb(out),
        "ratio_bridge_out_to_plain": ratio,
        "ratio_bridge_out_to_plain_msg_id": ratio_id,
        "ratio_bridge_out_to_plain_bridge_headers": ratio_h,
        "ratio_bridge_out_per_record_to_plain": ratio_single,
    });
    (s, medians)
}
