//! `ipcress get NAME`: write records to stdout.
//!
//! Stops at the tail seen at start (default), after `--count N` records, or
//! never (`-f`). SIGINT/SIGTERM and a closed stdout end it cleanly (exit 0)
//! with the consumer's position committed. A message whose producer died
//! in its middle is skipped with a one-line warning (docs/CLI.md).

use std::io::{self, BufWriter, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Result;
use ipcress::Consumer;

use crate::cli::GetArgs;
use crate::framing::{MoveError, lagged_or, write_message};
use crate::{Ctx, explain, load_key, signals};

/// How long one wait lasts before the stop flag is looked at again.
pub const POLL: Duration = Duration::from_millis(100);

pub fn run(ctx: &Ctx, a: GetArgs) -> Result<()> {
    let stop = signals::stop_flag()?;
    let key = load_key(a.key.as_deref())?;
    let s = ctx.open(&a.name, key.as_ref())?;
    let from = a.start.start_at();
    let c = match (&a.consumer, &a.group) {
        (Some(name), _) => s.consumer_from(name, from),
        (None, Some(g)) => s.group_from(g, from),
        (None, None) => s.subscribe(from),
    };
    let mut c = c.map_err(|e| explain(&a.name, e))?;
    let stop_at = (!a.follow && a.count.is_none()).then(|| s.tail());
    let framing = a.framing.framing();
    let mut out = BufWriter::with_capacity(256 << 10, io::stdout().lock());
    let mut n = 0u64;

    let result = (|| -> Result<(), MoveError> {
        loop {
            if stop.load(Relaxed) || a.count.is_some_and(|want| n >= want) {
                return Ok(());
            }
            if stop_at.is_some_and(|end| c.position() >= end) {
                return Ok(());
            }
            match c.try_recv() {
                Ok(Some(m)) => {
                    n += deliver(write_message(m, framing, &mut out), &a.name)?;
                    continue;
                }
                Ok(None) => {}
                Err(e) => lagged_or(e, &a.name)?,
            }
            // Nothing ready: hand what we have to the reader, then wait.
            out.flush().map_err(MoveError::Io)?;
            match c.recv_timeout(POLL) {
                Ok(Some(m)) => {
                    n += deliver(write_message(m, framing, &mut out), &a.name)?;
                }
                Ok(None) => {
                    if stdout_closed() {
                        return Err(MoveError::Io(io::ErrorKind::BrokenPipe.into()));
                    }
                }
                Err(e) => lagged_or(e, &a.name)?,
            }
        }
    })();
    let flushed = out.flush().map_err(MoveError::Io);
    finish(&mut c, &a.name)?;
    match result.and(flushed) {
        Ok(()) => Ok(()),
        Err(e) if e.is_broken_pipe() => Ok(()),
        Err(MoveError::Stream(e)) => Err(explain(&a.name, e)),
        Err(MoveError::Io(e)) => Err(anyhow::Error::new(e).context("write to standard output")),
        Err(e) => Err(e.into()),
    }
}

/// How many messages a `write_message` delivered: 1, or 0 for a skipped
/// one (a warning on stderr; the consumer is already past it). Other
/// errors stop.
pub fn deliver(written: Result<u64, MoveError>, stream: &str) -> Result<u64, MoveError> {
    match written {
        Ok(_) => Ok(1),
        Err(e) => match e.skip_warning(stream) {
            Some(w) => {
                crate::say(format_args!("{w}"));
                Ok(0)
            }
            None => Err(e),
        },
    }
}

fn finish(c: &mut Consumer, stream: &str) -> Result<()> {
    c.commit().map_err(|e| explain(stream, e))
}

/// Whether the reader of stdout went away (`get -f | head -1` while no
/// record comes): poll reports POLLERR on a pipe with no reader.
pub fn stdout_closed() -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use std::os::fd::AsFd;
    let out = io::stdout();
    let fd = out.as_fd();
    let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::empty())];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(n) if n > 0 => fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP),
        _ => false,
    }
}
