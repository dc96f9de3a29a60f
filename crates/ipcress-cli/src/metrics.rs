//! Metrics in the Prometheus/OpenMetrics text format, encoded with
//! `prometheus-client`: printed by `stat --prometheus`, served over HTTP by
//! `stat --listen ADDR` (GET /metrics; every scrape reads the streams
//! anew, so streams made since appear).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use ipcress::{Key, Stream};
use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Ctx;
use crate::stat::{ConsumerStat, StreamStat, collect};

type Labels = Vec<(&'static str, String)>;
type GaugeFamily = Family<Labels, Gauge<u64, AtomicU64>>;
type CounterFamily = Family<Labels, Counter<u64, AtomicU64>>;

/// A gauge family registered under `name`.
fn gauge(reg: &mut Registry, name: &str, help: &str) -> GaugeFamily {
    let f = GaugeFamily::default();
    reg.register(name, help, f.clone());
    f
}

/// A counter family registered under `name` (the encoder adds `_total`).
fn counter(reg: &mut Registry, name: &str, help: &str) -> CounterFamily {
    let f = CounterFamily::default();
    reg.register(name, help, f.clone());
    f
}

/// The text exposition of `stats`.
pub fn encode(stats: &[StreamStat]) -> Result<String> {
    let mut reg = Registry::default();
    let tail = gauge(
        &mut reg,
        "ipcress_tail_bytes",
        "Position just past the last record written, in bytes of the stream",
    );
    let head = gauge(
        &mut reg,
        "ipcress_head_bytes",
        "Oldest retained position, in bytes of the stream",
    );
    let capacity = gauge(
        &mut reg,
        "ipcress_capacity_bytes",
        "Capacity of a ring stream in bytes",
    );
    let messages = counter(
        &mut reg,
        "ipcress_messages",
        "Records written by producers that flushed their counters",
    );
    let bytes = counter(
        &mut reg,
        "ipcress_bytes",
        "Payload bytes written by producers that flushed their counters",
    );
    let producers = gauge(
        &mut reg,
        "ipcress_producers",
        "Producers whose process is alive",
    );
    let position = gauge(
        &mut reg,
        "ipcress_consumer_position_bytes",
        "Next position the consumer reads",
    );
    let lag = gauge(
        &mut reg,
        "ipcress_consumer_lag_bytes",
        "Bytes between the consumer's position and the tail",
    );
    let lag_records = gauge(
        &mut reg,
        "ipcress_consumer_lag_records",
        "Messages committed that the consumer has not read",
    );
    let lag_ms = gauge(
        &mut reg,
        "ipcress_consumer_lag_milliseconds",
        "Age of the oldest message the consumer has not read (format 4 streams)",
    );
    let alive = gauge(
        &mut reg,
        "ipcress_consumer_alive",
        "1 if the consumer's process is alive, else 0",
    );
    let read = counter(
        &mut reg,
        "ipcress_consumer_messages",
        "Records read through the consumer's slot",
    );
    let bridge_records = counter(
        &mut reg,
        "ipcress_bridge_records",
        "Records a NATS bridge moved (as of its last update, every 250 ms)",
    );
    let bridge_bytes = counter(
        &mut reg,
        "ipcress_bridge_bytes",
        "Payload bytes, as stored, a NATS bridge moved",
    );
    let bridge_updated = gauge(
        &mut reg,
        "ipcress_bridge_updated_seconds",
        "When the bridge last updated its counters (Unix time)",
    );
    for s in stats {
        for b in &s.bridges {
            let l: Labels = vec![("stream", s.name.clone()), ("bridge", b.name.clone())];
            bridge_records.get_or_create(&l).inc_by(b.records);
            bridge_bytes.get_or_create(&l).inc_by(b.bytes);
            bridge_updated.get_or_create(&l).set(b.updated_ms / 1000);
        }
        let l: Labels = vec![("stream", s.name.clone())];
        tail.get_or_create(&l).set(s.tail);
        head.get_or_create(&l).set(s.head);
        if let Some(c) = s.capacity_bytes {
            capacity.get_or_create(&l).set(c);
        }
        messages.get_or_create(&l).inc_by(s.messages_written);
        bytes.get_or_create(&l).inc_by(s.bytes_written);
        producers.get_or_create(&l).set(s.live_producers as u64);
        for c in &s.consumers {
            let l = consumer_labels(s, c);
            position.get_or_create(&l).set(c.position);
            lag.get_or_create(&l).set(c.lag_bytes);
            lag_records.get_or_create(&l).set(c.lag_records);
            if let Some(secs) = c.lag_seconds {
                lag_ms.get_or_create(&l).set((secs * 1000.0) as u64);
            }
            alive.get_or_create(&l).set(c.alive as u64);
            read.get_or_create(&l).inc_by(c.messages);
        }
    }
    let mut out = String::new();
    encode_text(&mut out, &reg).context("encode the metrics")?;
    Ok(out)
}

fn consumer_labels(s: &StreamStat, c: &ConsumerStat) -> Labels {
    vec![
        ("stream", s.name.clone()),
        ("consumer", c.label()),
        ("kind", c.kind.to_string()),
    ]
}

/// The metrics of stream `name`, or of every stream under the root.
fn scrape(ctx: &Ctx, name: Option<&str>, key: Option<&Key>) -> Result<String> {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => Stream::list_in(&ctx.root)?,
    };
    let mut stats = Vec::new();
    for n in &names {
        match ctx.inspect(n, key) {
            Ok(s) => stats.push(collect(&s, None)),
            // Removed between the listing and the look: not a stream now.
            Err(_) if name.is_none() => {}
            Err(e) => return Err(e),
        }
    }
    encode(&stats)
}

/// Serve GET /metrics at `addr` until SIGINT/SIGTERM, one request at a time.
pub fn serve(ctx: &Ctx, addr: &str, name: Option<&str>, key: Option<&Key>) -> Result<()> {
    let stop = crate::signals::stop_flag()?;
    let listener = listen(addr)?;
    serve_on(&listener, ctx, name, key, &stop)
}

/// Bind `addr` for [`serve_on`] and say where on stdout (`127.0.0.1:0`
/// picks a free port, so the line is how a caller learns it).
pub fn listen(addr: &str) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).with_context(|| format!("listen on {addr}"))?;
    listener.set_nonblocking(true).context("listen")?;
    let local = listener.local_addr().context("listen")?;
    crate::print_out(&format!("serving metrics on http://{local}/metrics\n"))?;
    Ok(listener)
}

/// Answer scrapes on `listener` until `stop` is raised.
pub fn serve_on(
    listener: &TcpListener,
    ctx: &Ctx,
    name: Option<&str>,
    key: Option<&Key>,
    stop: &AtomicBool,
) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                if let Err(e) = answer(conn, ctx, name, key) {
                    tracing::warn!("metrics: {e:#}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
    Ok(())
}

/// Read one request head (bounded in size and time) and answer it.
fn answer(conn: TcpStream, ctx: &Ctx, name: Option<&str>, key: Option<&Key>) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?).take(16 << 10);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The rest of the head, up to the empty line.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => match scrape(ctx, name, key) {
            Ok(b) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                b,
            ),
            Err(e) => (
                "500 Internal Server Error",
                "text/plain",
                format!("{e:#}\n"),
            ),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "see /metrics\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()?;
    Ok(())
}
