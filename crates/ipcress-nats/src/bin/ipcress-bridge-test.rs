//! A small driver of the bridge for tests and manual runs (the `ipcress`
//! CLI has the real `bridge` command).
//!
//! ```text
//! ipcress-bridge-test out --root DIR --stream S --nats URL --subject SUBJ
//!                         [--create-stream JS --replicas N --window N --batch-bytes N
//!                          --unordered --key F]
//! ipcress-bridge-test in  --root DIR --nats URL --js-stream JS --durable NAME
//!                         --stream T [--create-local --key F]
//! ipcress-bridge-test bench --root DIR --nats URL [--records N --size B --window N]
//! ```
//! `out` and `in` stop cleanly when standard input reaches end of file.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use ipcress_nats::{BenchConfig, InConfig, OutConfig, bench_bridge, run_in, run_out};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IPCRESS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        anyhow::bail!("usage: ipcress-bridge-test out|in|bench --option value ...");
    };
    let mut opts: HashMap<String, String> = HashMap::new();
    let mut it = args[1..].iter();
    while let Some(k) = it.next() {
        let k = k.strip_prefix("--").context("options start with --")?;
        match k {
            "create-local" | "unordered" => {
                opts.insert(k.into(), "1".into());
            }
            _ => {
                let v = it.next().with_context(|| format!("--{k} needs a value"))?;
                opts.insert(k.into(), v.clone());
            }
        }
    }
    let get = |k: &str| {
        opts.get(k)
            .cloned()
            .with_context(|| format!("missing --{k}"))
    };
    let num = |k: &str, d: usize| -> anyhow::Result<usize> {
        opts.get(k)
            .map_or(Ok(d), |v| v.parse().context(format!("--{k}")))
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            stop.store(true, Ordering::SeqCst);
        });
    }
    match mode.as_str() {
        "out" => {
            let mut c = OutConfig::new(
                get("root")?,
                &get("stream")?,
                &get("nats")?,
                &get("subject")?,
            );
            c.create_stream = opts.get("create-stream").cloned();
            c.replicas = num("replicas", 1)?;
            c.window = num("window", 256)?;
            c.batch_bytes = num("batch-bytes", ipcress_nats::DEFAULT_BATCH_BYTES)?;
            c.ordered = !opts.contains_key("unordered");
            c.key = opts.get("key").map(Into::into);
            run_out(c, stop)
        }
        "in" => {
            let mut c = InConfig::new(
                get("root")?,
                &get("nats")?,
                &get("js-stream")?,
                &get("durable")?,
                &get("stream")?,
            );
            c.create_local = opts.contains_key("create-local");
            c.key = opts.get("key").map(Into::into);
            run_in(c, stop)
        }
        "bench" => {
            let mut c = BenchConfig::new(&get("nats")?, get("root")?);
            c.records = num("records", c.records)?;
            c.record_size = num("size", c.record_size)?;
            c.window = num("window", c.window)?;
            c.replicas = num("replicas", c.replicas)?;
            c.ordered = !opts.contains_key("unordered");
            let r = bench_bridge(&c)?;
            print!("{r}");
            Ok(())
        }
        m => anyhow::bail!("unknown mode {m}"),
    }
}
