//! Liveness that does not rest on pids: every slot of the meta file (a
//! consumer slot, a producer slot, the fragment lock, the registration lock)
//! has one lock byte, beyond the end of the meta file, that its owner holds
//! with an open file description (OFD) write lock for as long as it owns the
//! slot. The kernel drops the lock when the owner closes it or dies (before
//! the process becomes a zombie), whatever pid namespace either side lives
//! in. Liveness is "is that byte write-locked by someone", asked with
//! `F_OFD_GETLK` through an open file description that holds no lock.
//!
//! Every holder opens its own file description, so holders in one process
//! exclude each other too (locks of one description never conflict).

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::{self, lock};

/// A slot whose owner is known by its lock byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotRef {
    /// Consumer slot `i` (durable, subscriber, group member, or a slot being
    /// set up or removed).
    Consumer(usize),
    /// Producer slot `i`.
    Producer(usize),
    /// The fragment lock (a fragmented message is being written).
    FragLock,
    /// The registration lock (finding or creating named slots).
    RegLock,
    /// The unblock lock (padding the claims of dead producers).
    UnblockLock,
}

impl SlotRef {
    /// Offset of this slot's lock byte in the meta file.
    fn byte(self) -> u64 {
        match self {
            SlotRef::Consumer(i) => {
                debug_assert!(i < format::CONSUMER_SLOTS);
                lock::BASE + lock::CONSUMERS + i as u64
            }
            SlotRef::Producer(i) => {
                debug_assert!(i < format::PRODUCER_SLOTS);
                lock::BASE + lock::PRODUCERS + i as u64
            }
            SlotRef::FragLock => lock::BASE + lock::FRAG_LOCK,
            SlotRef::RegLock => lock::BASE + lock::REG_LOCK,
            SlotRef::UnblockLock => lock::BASE + lock::UNBLOCK_LOCK,
        }
    }
}

/// Asks the kernel whether slots are held. One per open stream.
pub(crate) struct Liveness {
    locks: Locks,
}

enum Locks {
    /// The lock bytes of the meta file.
    File {
        /// A file description of the meta file that never holds a lock.
        probe: File,
        path: PathBuf,
        dev: u64,
        ino: u64,
    },
    /// An in-memory stream: only this process can hold its slots, so the
    /// bytes held are a set in its memory.
    InProcess(Arc<Mutex<HashSet<u64>>>),
}

/// A slot held by this process: the lock byte is write-locked through a
/// file description of its own, released when this is dropped (or the
/// process dies).
pub(crate) struct Hold {
    held: Held,
    slot: SlotRef,
}

enum Held {
    File(#[allow(dead_code)] File),
    InProcess(Arc<Mutex<HashSet<u64>>>),
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Held::InProcess(set) = &self.held {
            set.lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.slot.byte());
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hold({:?})", self.slot)
    }
}

fn flock_for(kind: libc::c_short, byte: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers; all zero is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    // OFD locks require l_pid = 0.
    fl.l_pid = 0;
    fl
}

impl Liveness {
    /// Liveness for the stream whose meta file `meta` was opened at `path`.
    pub(crate) fn new(path: &Path, meta: &File) -> Result<Liveness> {
        let probe = meta
            .try_clone()
            .map_err(|e| Error::from_os(path, "duplicate", e))?;
        let md = meta
            .metadata()
            .map_err(|e| Error::from_os(path, "stat", e))?;
        let l = Liveness {
            locks: Locks::File {
                probe,
                path: path.to_path_buf(),
                dev: md.dev(),
                ino: md.ino(),
            },
        };
        // Kernels before 3.15 lack OFD locks: say so now rather than
        // guess liveness later.
        l.query(SlotRef::RegLock).map_err(|e| {
            Error::io(
                format!(
                    "open file description locks on {} (Linux 3.15 or later is needed)",
                    path.display()
                ),
                e,
            )
        })?;
        Ok(l)
    }

    /// Liveness for an in-memory stream: slots held by this process.
    pub(crate) fn in_process() -> Liveness {
        Liveness {
            locks: Locks::InProcess(Arc::default()),
        }
    }

    fn query(&self, r: SlotRef) -> std::io::Result<bool> {
        let probe = match &self.locks {
            Locks::File { probe, .. } => probe,
            Locks::InProcess(set) => {
                return Ok(set
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&r.byte()));
            }
        };
        let mut fl = flock_for(libc::F_WRLCK as libc::c_short, r.byte());
        // SAFETY: F_OFD_GETLK reads and writes the `flock` we pass, which
        // lives for the call; the descriptor is open.
        let rc = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
    }

    /// Is slot `r` held by a live process (this one included)?
    pub(crate) fn is_alive(&self, r: SlotRef) -> bool {
        // A failing query (it cannot fail on a kernel that passed `new`)
        // counts as alive: never take what may still be in use.
        self.query(r).unwrap_or(true)
    }

    /// A new file description of the meta file, checked to be the same
    /// file this stream opened (not a stream created since under its name).
    fn open(&self, path: &Path, dev: u64, ino: u64) -> Result<File> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path);
        let f = match f {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(removed(path));
            }
            Err(e) => return Err(Error::from_os(path, "open", e)),
        };
        let md = f.metadata().map_err(|e| Error::from_os(path, "stat", e))?;
        if md.dev() != dev || md.ino() != ino {
            return Err(removed(path));
        }
        Ok(f)
    }
}

fn removed(path: &Path) -> Error {
    let stream = path
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Error::Removed {
        what: "stream",
        name: stream,
    }
}

impl Liveness {
    fn set(&self, f: &File, path: &Path, r: SlotRef, wait: bool) -> Result<bool> {
        let fl = flock_for(libc::F_WRLCK as libc::c_short, r.byte());
        let cmd = if wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        loop {
            // SAFETY: F_OFD_SETLK(W) reads the `flock` we pass, which lives
            // for the call; the descriptor is open.
            let rc = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &fl) };
            if rc == 0 {
                return Ok(true);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
                _ => return Err(Error::io(format!("lock {}", path.display()), e)),
            }
        }
    }

    /// Take slot `r` if no live process holds it; None if one does.
    pub(crate) fn try_hold(&self, r: SlotRef) -> Result<Option<Hold>> {
        match &self.locks {
            Locks::File { path, dev, ino, .. } => {
                let f = self.open(path, *dev, *ino)?;
                Ok(self.set(&f, path, r, false)?.then_some(Hold {
                    held: Held::File(f),
                    slot: r,
                }))
            }
            Locks::InProcess(set) => {
                let fresh = set
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(r.byte());
                Ok(fresh.then(|| Hold {
                    held: Held::InProcess(set.clone()),
                    slot: r,
                }))
            }
        }
    }

    /// Take slot `r`, waiting for as long as a live process holds it.
    pub(crate) fn hold(&self, r: SlotRef) -> Result<Hold> {
        match &self.locks {
            Locks::File { path, dev, ino, .. } => {
                let f = self.open(path, *dev, *ino)?;
                self.set(&f, path, r, true)?;
                Ok(Hold {
                    held: Held::File(f),
                    slot: r,
                })
            }
            Locks::InProcess(_) => loop {
                if let Some(h) = self.try_hold(r)? {
                    return Ok(h);
                }
                wait_a_little();
            },
        }
    }
}

/// A holder of an in-memory stream's slot is a thread of this process:
/// let it run.
fn wait_a_little() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::sleep(std::time::Duration::from_millis(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exclude_each_other_and_drop_releases() {
        let dir = std::env::temp_dir().join(format!(
            "ipcress-liveness-{}-{:x}",
            std::process::id(),
            crate::sys::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meta");
        let f = File::create(&path).unwrap();
        let l = Liveness::new(&path, &f).unwrap();
        let r = SlotRef::Consumer(3);
        assert!(!l.is_alive(r));
        let h = l.try_hold(r).unwrap().expect("free");
        assert!(l.is_alive(r));
        // A second holder in the same process is refused.
        assert!(l.try_hold(r).unwrap().is_none());
        assert!(!l.is_alive(SlotRef::Consumer(4)));
        assert!(!l.is_alive(SlotRef::Producer(3)));
        drop(h);
        assert!(!l.is_alive(r));
        let _h = l.hold(SlotRef::RegLock).unwrap();
        assert!(l.try_hold(SlotRef::RegLock).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
