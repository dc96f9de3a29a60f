//! Log lines on stderr, one per event, in the command's own voice:
//! `ipcress: warning: bridge out: cannot connect to nats://...`. The filter
//! comes from `IPCRESS_LOG`, else `RUST_LOG` (the `tracing` directive
//! syntax: `info`, `ipcress_nats=debug`, ...), else warnings and errors.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Install the stderr logger. A filter that does not parse is reported
/// once and replaced by the default.
pub fn init() {
    let asked = std::env::var("IPCRESS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    let (filter, bad) = match asked.as_deref().map(EnvFilter::try_new) {
        None => (EnvFilter::new("warn"), None),
        Some(Ok(f)) => (f, None),
        Some(Err(e)) => (EnvFilter::new("warn"), Some(e)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed: `2>&1 | head`)
        // is dropped; reporting that with `eprintln!` would panic.
        .log_internal_errors(false)
        // Plain text: the lines go to files and pipes as often as to a
        // terminal.
        .with_ansi(false)
        .event_format(OneLine)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!("IPCRESS_LOG/RUST_LOG ignored: {e}");
    }
}

/// `ipcress: LEVEL: message key=value ...`, on one line.
struct OneLine;

impl<S, N> FormatEvent<S, N> for OneLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(w, "ipcress: {level}: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}
