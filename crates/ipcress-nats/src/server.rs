//! Finding and starting a local `nats-server`, for the tests and the
//! benchmark that run their own (Debian's `nats-server` package).

use std::path::{Path, PathBuf};
use std::process::Command;

/// `nats-server` on `PATH`, else in `/usr/sbin`, `/usr/bin` or
/// `/usr/local/bin` (Debian installs it in `/usr/sbin`).
pub fn find() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join("nats-server"))
        .find(|c| c.is_file())
}

/// A command running `bin` that dies with the calling thread's process:
/// under util-linux's `setpriv --pdeathsig KILL` when it is there, so that
/// a server is not left behind if its owner is killed before stopping it.
pub fn command(bin: &Path) -> Command {
    let setpriv = Path::new("/usr/bin/setpriv");
    if setpriv.is_file() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", "KILL", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}
