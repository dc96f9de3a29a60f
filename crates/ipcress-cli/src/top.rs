//! `ipcress top`: a live view of every stream under the root (ratatui on
//! crossterm): tail, rates and the largest consumer lag. `q` or Esc quits.
//! `--once` and `--batch` print the same table as text instead, for pipes,
//! logs and machines without a terminal.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipcress::Stream;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};

use crate::Ctx;
use crate::cli::TopArgs;
use crate::stat::{Sample, StreamStat, collect, sample};
use crate::units::{human_bytes, human_bytes_rate, human_rate};

struct Watched {
    stream: Stream,
    last: Sample,
    stat: StreamStat,
}

/// One row of the view: a stream, or one that could not be opened.
enum Entry {
    Ok(Box<Watched>),
    Failed(String),
}

pub fn run(ctx: &Ctx, a: TopArgs) -> Result<()> {
    let period = Duration::from_millis(a.interval.max(50));
    if a.once || a.batch {
        return batch(ctx, period, if a.once { Some(1) } else { a.count });
    }
    let mut terminal = ratatui::try_init().context("cannot start the terminal view")?;
    let r = view(&mut terminal, ctx, period);
    ratatui::restore();
    r
}

fn view(terminal: &mut DefaultTerminal, ctx: &Ctx, period: Duration) -> Result<()> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    loop {
        refresh(ctx, &mut entries);
        terminal
            .draw(|f| draw(f, ctx, &entries))
            .context("draw the terminal view")?;
        let next = Instant::now() + period;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !event::poll(left).context("read the terminal")? {
                continue;
            }
            if let Event::Key(k) = event::read().context("read the terminal")? {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if k.kind == KeyEventKind::Press
                    && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                {
                    return Ok(());
                }
            }
        }
    }
}

/// Print the table as text every `period` (rates over that period), `count`
/// times or until SIGINT/SIGTERM.
fn batch(ctx: &Ctx, period: Duration, count: Option<u64>) -> Result<()> {
    let stop = crate::signals::stop_flag()?;
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    refresh(ctx, &mut entries);
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        let next = Instant::now() + period;
        while Instant::now() < next {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10).min(period));
        }
        refresh(ctx, &mut entries);
        crate::print_out(&text_table(ctx, &entries))?;
        printed += 1;
    }
    Ok(())
}

const HEADER: [&str; 11] = [
    "STREAM", "LAYOUT", "SIZE", "TAIL", "BYTES/S", "MSG/S", "PROD", "CONS", "MAX LAG", "LAG MSGS",
    "LAG TIME",
];

/// The cells of a stream's row (one cell with the error for a stream that
/// could not be opened).
fn cells(name: &str, e: &Entry) -> Vec<String> {
    match e {
        Entry::Ok(w) => {
            let s = &w.stat;
            let max_lag = s.consumers.iter().map(|c| c.lag_bytes).max();
            let max_records = s.consumers.iter().map(|c| c.lag_records).max();
            let max_secs = s
                .consumers
                .iter()
                .filter_map(|c| c.lag_seconds)
                .max_by(f64::total_cmp);
            vec![
                name.to_string(),
                s.layout.to_string(),
                human_bytes(s.capacity_bytes.unwrap_or(s.segment_bytes)),
                s.tail.to_string(),
                human_bytes_rate(s.bytes_per_sec),
                human_rate(s.messages_per_sec),
                s.live_producers.to_string(),
                s.consumers.len().to_string(),
                max_lag.map_or("-".into(), human_bytes),
                max_records.map_or("-".into(), |n| n.to_string()),
                crate::stat::human_lag(max_secs),
            ]
        }
        Entry::Failed(msg) => vec![name.to_string(), format!("error: {msg}")],
    }
}

/// The table as text: a title line, the header, a row per stream, columns
/// as wide as their widest cell.
fn text_table(ctx: &Ctx, entries: &BTreeMap<String, Entry>) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(HEADER.iter().map(|h| h.to_string()).collect())
        .chain(entries.iter().map(|(n, e)| cells(n, e)))
        .collect();
    let mut width = [0usize; HEADER.len()];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!(
        "ipcress top  {}  {} streams\n",
        ctx.root.display(),
        entries.len()
    );
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Pick up new streams, drop removed ones, and sample every stream.
fn refresh(ctx: &Ctx, entries: &mut BTreeMap<String, Entry>) {
    let names = match Stream::list_in(&ctx.root) {
        Ok(n) => n,
        Err(e) => {
            entries.clear();
            entries.insert(String::new(), Entry::Failed(e.to_string()));
            return;
        }
    };
    entries.retain(|k, _| names.contains(k));
    for name in names {
        match entries.get_mut(&name) {
            Some(Entry::Ok(w)) => {
                let now = sample(&w.stream);
                w.stat = collect(&w.stream, Some(w.last));
                w.last = now;
            }
            Some(Entry::Failed(_)) | None => {
                let e = match Stream::inspect_in(&ctx.root, &name) {
                    Ok(stream) => {
                        let last = sample(&stream);
                        let stat = collect(&stream, None);
                        Entry::Ok(Box::new(Watched { stream, last, stat }))
                    }
                    Err(e) => Entry::Failed(e.to_string()),
                };
                entries.insert(name, e);
            }
        }
    }
}

fn draw(f: &mut Frame, ctx: &Ctx, entries: &BTreeMap<String, Entry>) {
    let [title, body] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(f.area());
    f.render_widget(
        Paragraph::new(Line::from(vec![
            "ipcress top".bold(),
            format!(
                "  {}  {} streams  (q to quit)",
                ctx.root.display(),
                entries.len()
            )
            .into(),
        ])),
        title,
    );
    let header = Row::new(HEADER).style(Style::new().add_modifier(Modifier::REVERSED));
    let rows = entries.iter().map(|(name, e)| Row::new(cells(name, e)));
    let widths = [
        Constraint::Min(12),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(14),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::new().borders(Borders::TOP));
    f.render_widget(table, body);
}
