//! SIGINT and SIGTERM: the first sets a flag that loops poll (they wait in
//! short `recv_timeout` steps); another one at least `FORCE_AFTER` later
//! ends the process at once (exit 130). Signals that come closer together
//! are one request: GNU `timeout` sends its signal to the command and then
//! to its whole process group, so the command gets it twice, at once, and
//! a Ctrl-C in a shell pipeline can reach a process by more than one path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// How long after the first stop request a second one forces the exit.
pub const FORCE_AFTER: Duration = Duration::from_secs(1);

/// Start listening for SIGINT and SIGTERM and return the flag the first
/// one sets.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("install signal handler")?;
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first: Option<Instant> = None;
            for _ in signals.forever() {
                match first {
                    None => {
                        first = Some(Instant::now());
                        flag.store(true, Relaxed);
                    }
                    Some(t) if t.elapsed() >= FORCE_AFTER => std::process::exit(130),
                    Some(_) => {}
                }
            }
        })
        .context("start the signal thread")?;
    Ok(stop)
}
