//! The Markdown table and the SVG bar chart, and what every report shares:
//! the machine it ran on and its files in the output directory.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::compare::{Row, human};
use crate::spec::Transport;

/// CPUs this process may run on, for every report's setup.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The kernel release, for every report's setup.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Writes `name` into the output directory `out` (created if missing).
pub fn write_out(out: &Path, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let path = out.join(name);
    std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// The transport every ratio is taken against.
const BASE: Transport = Transport::IpcSend;

fn fmt_value(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn column_title(t: Transport, setup: &Value) -> String {
    let bytes = |key: &str| setup[key].as_u64().map(human).unwrap_or_default();
    let pair = |key: &str| {
        let v = &setup[key];
        format!(
            "{}/{}",
            human(v[0].as_u64().unwrap_or(0)),
            human(v[1].as_u64().unwrap_or(0))
        )
    };
    match t {
        Transport::IpcSend => "ipcress send".into(),
        Transport::IpcReserve => "ipcress reserve".into(),
        Transport::IpcReserveCrc => "ipcress reserve, CRC-32C".into(),
        Transport::Pipe => format!("pipe {}", bytes("pipe_default_bytes")),
        Transport::Pipe1m => format!("pipe {}", bytes("pipe_1m_bytes")),
        Transport::Uds => format!("UDS {}", pair("uds_default_sndbuf_rcvbuf")),
        Transport::Uds4m => format!("UDS {}", pair("uds_4m_sndbuf_rcvbuf_reported")),
        Transport::Tcp => "TCP lo".into(),
        Transport::Iox => "iceoryx2".into(),
        Transport::Ring => "bare ring".into(),
        Transport::IpcAsync => "ipcress recv_async (tokio)".into(),
        Transport::UdsTokio => "UDS (tokio)".into(),
    }
}

pub fn markdown(
    rows: &[Row],
    columns: &[Transport],
    setup: &Value,
    ceilings: &Value,
    failed: usize,
) -> String {
    let mut s = String::new();
    let reps = setup["reps"].as_u64().unwrap_or(0);
    let _ = writeln!(
        s,
        "## ipcress-bench compare ({} mode, median of {reps} reps, {} CPUs, Linux {})\n",
        setup["mode"].as_str().unwrap_or("?"),
        setup["cpus"],
        setup["kernel"].as_str().unwrap_or("?"),
    );
    let _ = write!(s, "| workload | unit |");
    for &t in columns {
        let _ = write!(s, " {} |", column_title(t, setup));
    }
    let _ = write!(s, "\n|---|---|");
    for _ in columns {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    for row in rows {
        let arrow = if row.higher_is_better { "↑" } else { "↓" };
        let _ = write!(s, "| {} | {} {arrow} |", row.title, row.unit);
        let base = row.cells.get(&BASE).map(|c| c.median);
        for t in columns {
            match (row.cells.get(t), base) {
                (Some(c), Some(b)) if *t != BASE && b > 0.0 => {
                    let _ = write!(s, " {} ({:.2}×) |", fmt_value(c.median), c.median / b);
                }
                (Some(c), _) => {
                    let _ = write!(s, " {} |", fmt_value(c.median));
                }
                (None, _) => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\n(×) = this transport ÷ ipcress send, per row: above 1 is faster for ↑ rows, slower or bigger for ↓ rows. – = not run (the bare ring is single-consumer and only polls; (e) compares ipcress, pipes and the bare ring)."
    );
    if failed > 0 {
        let _ = writeln!(
            s,
            "\n**{failed} case(s) failed**; see `errors` in bench.json."
        );
    }
    let _ = writeln!(
        s,
        "\nCeilings, one thread in one process: memcpy {} GB/s, byte sum {} GB/s ({} buffers).",
        fmt_value(
            ceilings["memcpy_gbps"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN)
        ),
        fmt_value(
            ceilings["byte_sum_gbps"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN)
        ),
        human(ceilings["buffer_bytes"].as_u64().unwrap_or(0)),
    );
    let _ = writeln!(
        s,
        "Latency floor, two threads bouncing one cache line: {} ns per crossing ({} round trips).",
        fmt_value(
            ceilings["line_crossing_ns"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN)
        ),
        ceilings["line_crossing_round_trips"].as_u64().unwrap_or(0),
    );
    let v = &setup["volumes"];
    let _ = writeln!(
        s,
        "\nBuffers: ipcress and bare ring {} ({} in (e)), ipcress `Policy::Block`, no checksum, no compression; \
         pipe default {} and {} (`F_SETPIPE_SZ`); UDS SO_SNDBUF/SO_RCVBUF as reported {} default, {} after asking {} \
         (the kernel reports double); TCP loopback `TCP_NODELAY`, default auto-tuned buffers (initially {}); \
         fd readers read up to {} per `read(2)`, writers do one `write(2)` per message per consumer; \
         iceoryx2 subscriber buffer = ring size ÷ message size samples, 2..=4096 (64 B: 4096, 64 KiB: {}, 1 MiB: {}, 8 MiB: {}), \
         one loan at a time, `RetryUntilDelivered`.",
        human(setup["ring_bytes"].as_u64().unwrap_or(0)),
        human(setup["big_ring_bytes"].as_u64().unwrap_or(0)),
        human(setup["pipe_default_bytes"].as_u64().unwrap_or(0)),
        human(setup["pipe_1m_bytes"].as_u64().unwrap_or(0)),
        pair_str(&setup["uds_default_sndbuf_rcvbuf"]),
        pair_str(&setup["uds_4m_sndbuf_rcvbuf_reported"]),
        human(setup["uds_4m_requested"].as_u64().unwrap_or(0)),
        pair_str(&setup["tcp_default_sndbuf_rcvbuf"]),
        human(setup["fd_read_buffer_bytes"].as_u64().unwrap_or(0)),
        iox_samples(setup, 64 << 10),
        iox_samples(setup, 1 << 20),
        iox_samples(setup, 8 << 20),
    );
    let _ = writeln!(
        s,
        "\nWork per rep: (a) {} msgs; (b) {} round trips after {} warm-up, latency = RTT/2; (c) {} per size; \
         (d) {} msgs to each of 4 consumers; (e) {}. Every producer copies its payload from a private buffer \
         (into the loan / grant / ring for zero-copy transports); every consumer sums every byte it receives. \
         Waiting: throughput rows use each transport's normal wait (blocking reads, ipcress `recv`, \
         spin-then-yield polling for iceoryx2 and the bare ring); busy-spin = non-blocking polling everywhere (ipcress `try_recv`); \
         blocking = blocking `read(2)`, ipcress `recv()` (which spins briefly before its futex, so a quick \
         reply never sleeps), iceoryx2 event listener.",
        v["small_msgs"],
        v["round_trips"],
        v["warmup"],
        human(v["bulk_bytes"].as_u64().unwrap_or(0)),
        v["fanout_msgs"],
        human(v["big_stream_bytes"].as_u64().unwrap_or(0)),
    );
    s
}

fn pair_str(v: &Value) -> String {
    format!(
        "{}/{}",
        human(v[0].as_u64().unwrap_or(0)),
        human(v[1].as_u64().unwrap_or(0))
    )
}

fn iox_samples(setup: &Value, size: u64) -> u64 {
    (setup["ring_bytes"].as_u64().unwrap_or(0) / size).clamp(2, 4096)
}

const COLORS: [&str; 9] = [
    "#d62728", "#ff7f0e", "#1f77b4", "#6baed6", "#2ca02c", "#98df8a", "#9467bd", "#8c564b",
    "#7f7f7f",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel per row, one horizontal bar per transport, scaled to the row's largest value.
pub fn svg(rows: &[Row], columns: &[Transport]) -> String {
    const WIDTH: f64 = 960.0;
    const LABEL: f64 = 110.0;
    const BAR_H: f64 = 14.0;
    const GAP: f64 = 3.0;
    const TITLE_H: f64 = 24.0;
    let bars_w = WIDTH - LABEL - 110.0;
    let mut body = String::new();
    let mut y = 10.0;
    for row in rows.iter().filter(|r| !r.cells.is_empty()) {
        let arrow = if row.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        let _ = writeln!(
            body,
            r#"<text x="4" y="{:.1}" font-weight="bold">{} [{}; {arrow}]</text>"#,
            y + 16.0,
            escape(&row.title),
            escape(&row.unit)
        );
        y += TITLE_H;
        let max = row.cells.values().map(|c| c.median).fold(0.0, f64::max);
        for (i, t) in columns.iter().enumerate() {
            let Some(cell) = row.cells.get(t) else {
                continue;
            };
            let w = if max > 0.0 {
                cell.median / max * bars_w
            } else {
                0.0
            };
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{LABEL:.1}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                LABEL - 6.0,
                y + BAR_H - 3.0,
                t.name(),
                COLORS[i % COLORS.len()],
                LABEL + w + 4.0,
                y + BAR_H - 3.0,
                fmt_value(cell.median),
            );
            y += BAR_H + GAP;
        }
        y += 8.0;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        y + 10.0
    )
}
