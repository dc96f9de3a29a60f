//! SIGINT and SIGTERM: the first sets a flag that loops poll (they wait in
//! short `recv_timeout` steps), a second one ends the process at once.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// Register the handlers and return the flag they set.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the shutdown check runs before the flag is set,
        // so only a second signal exits.
        flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("install signal handler")?;
        flag::register(sig, Arc::clone(&stop)).context("install signal handler")?;
    }
    Ok(stop)
}
