//! Children that die with us: `demo`'s stages and `exec`'s workers get
//! SIGKILL from the kernel when the process that started them dies, however
//! it dies (SIGKILL included), so that no stage is left running on its own.

use std::io;
use std::process::Command;

use rustix::io::Errno;
use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};

/// Make the child that `cmd` spawns die with this process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends,
/// so call `spawn` from a thread that lives as long as the process does
/// (the main thread). If we die between the fork and the `prctl`, the
/// signal would never come: the child then sees a parent other than us and
/// gives up before it runs the program (`spawn` fails, nobody is left to
/// see it).
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    let parent = getpid();
    let hook = move || -> io::Result<()> {
        set_parent_process_death_signal(Some(Signal::KILL))?;
        if getppid() != Some(parent) {
            return Err(io::Error::from_raw_os_error(Errno::SRCH.raw_os_error()));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec. It makes
    // two raw system calls (prctl, getppid) through rustix, which neither
    // allocate nor take locks, and builds an error from a raw code (no
    // allocation either): all of it is async-signal-safe.
    unsafe { cmd.pre_exec(hook) }
}
