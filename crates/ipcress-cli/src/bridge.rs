//! `ipcress bridge out|in`: carry a stream through NATS JetStream.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::Ctx;

#[derive(Args, Debug)]
pub struct BridgeArgs {
    #[command(subcommand)]
    pub dir: BridgeDir,
}

#[derive(Subcommand, Debug)]
pub enum BridgeDir {
    /// Publish every record of a local stream to a JetStream subject
    Out(OutArgs),
    /// Append the messages of a JetStream stream to a local stream
    In(InArgs),
}

#[derive(Args, Debug)]
pub struct OutArgs {
    /// Local stream to read (a durable consumer `bridge-out-<subject>`)
    #[arg(long)]
    pub stream: String,
    /// NATS server URL(s), comma separated
    #[arg(long)]
    pub nats: String,
    /// Subject to publish to
    #[arg(long)]
    pub subject: String,
    /// Create this JetStream stream for the subject if it does not exist
    #[arg(long)]
    pub create_stream: Option<String>,
    /// Replicas of the created JetStream stream
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Publishes in flight
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Pack consecutive records into NATS messages of up to this many bytes
    /// (0: one message per record, readable by any NATS client)
    #[arg(long, default_value_t = ipcress_nats::DEFAULT_BATCH_BYTES)]
    pub batch_bytes: usize,
    /// Key file of an encrypted stream (frames travel encrypted)
    #[arg(long, env = "IPCRESS_KEY_FILE")]
    pub key: Option<PathBuf>,
    /// Serve this bridge's metrics (its counters and its local stream's) in
    /// the Prometheus text format at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

#[derive(Args, Debug)]
pub struct InArgs {
    /// NATS server URL(s), comma separated
    #[arg(long)]
    pub nats: String,
    /// JetStream stream to read
    #[arg(long)]
    pub js_stream: String,
    /// Durable JetStream consumer name
    #[arg(long)]
    pub durable: String,
    /// Local stream to append to
    #[arg(long)]
    pub stream: String,
    /// Create the local stream (a log of 64 MiB segments) if missing
    #[arg(long)]
    pub create: bool,
    /// Key file of an encrypted local stream
    #[arg(long, env = "IPCRESS_KEY_FILE")]
    pub key: Option<PathBuf>,
    /// Serve this bridge's metrics (its counters and its local stream's) in
    /// the Prometheus text format at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

pub fn run(ctx: &Ctx, a: BridgeArgs) -> Result<()> {
    let stop = crate::signals::stop_flag()?;
    let (metrics, local) = match &a.dir {
        BridgeDir::Out(o) => (&o.metrics, &o.stream),
        BridgeDir::In(i) => (&i.metrics, &i.stream),
    };
    if let Some(addr) = metrics {
        // Bound here, so that an address in use fails before the bridge starts.
        let listener = crate::metrics::listen(addr)?;
        let (ctx, name, stop) = (
            Ctx {
                root: ctx.root.clone(),
            },
            local.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                if let Err(e) = crate::metrics::serve_on(&listener, &ctx, Some(&name), None, &stop)
                {
                    tracing::warn!("metrics: {e:#}");
                }
            })?;
    }
    match a.dir {
        BridgeDir::Out(o) => {
            let mut cfg = ipcress_nats::OutConfig::new(&ctx.root, &o.stream, &o.nats, &o.subject);
            cfg.create_stream = o.create_stream;
            cfg.replicas = o.replicas;
            cfg.window = o.window;
            cfg.batch_bytes = o.batch_bytes;
            cfg.key = o.key;
            ipcress_nats::run_out(cfg, stop)
        }
        BridgeDir::In(i) => {
            let mut cfg = ipcress_nats::InConfig::new(
                &ctx.root,
                &i.nats,
                &i.js_stream,
                &i.durable,
                &i.stream,
            );
            cfg.create_local = i.create;
            cfg.key = i.key;
            ipcress_nats::run_in(cfg, stop)
        }
    }
}
