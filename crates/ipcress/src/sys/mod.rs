//! The only module that makes raw OS calls: mappings, futex, liveness
//! (open file description locks, `liveness`), file locks and space
//! reservation.

use crate::sync::atomic::AtomicU32;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

mod liveness;
pub(crate) use liveness::{Hold, Liveness, SlotRef};
#[cfg(all(feature = "tokio", not(loom)))]
mod per_process;
#[cfg(all(feature = "tokio", not(loom)))]
pub(crate) use per_process::PerProcess;
#[cfg(all(feature = "tokio", not(loom)))]
mod waitv;
#[cfg(all(feature = "tokio", not(loom)))]
pub(crate) use waitv::{WAITV_MAX, Waitv, futex_waitv};

/// A shared, writable mapping of a whole file.
pub(crate) struct Mapping {
    map: memmap2::MmapRaw,
}

impl Mapping {
    /// Map `len` bytes of `file`, which must be at least that long.
    pub(crate) fn map(file: &File, len: usize, path: &Path) -> Result<Mapping> {
        let actual = file
            .metadata()
            .map_err(|e| Error::from_os(path, "stat", e))?
            .len();
        if actual < len as u64 {
            return Err(Error::corrupt(
                0,
                format!(
                    "{} is {actual} bytes, expected {len} (truncated file)",
                    path.display()
                ),
            ));
        }
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(file)
            .map_err(|e| Error::from_os(path, "map", e))?;
        Ok(Mapping { map })
    }

    /// Fault the pages of `len` bytes at `offset` in now, writable, so
    /// that the first lap over a ring takes no page fault per 4 KiB. Best
    /// effort: kernels before 5.14 lack `MADV_POPULATE_WRITE`, and then
    /// pages fault in on first touch as usual. `offset` is page aligned.
    pub(crate) fn prefault(&self, offset: usize, len: usize) {
        let len = len.min(self.map.len().saturating_sub(offset));
        if len == 0 {
            return;
        }
        // SAFETY: the range lies inside this live mapping (clamped above);
        // the advice only populates page tables and writes no byte.
        unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(offset).cast(),
                len,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }

    pub(crate) fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Write dirty pages of the mapping back to the file.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }
}

/// Sleep until `*word != expected`, a wake, or the timeout. Works across
/// processes (the futex is not private).
#[cfg(not(loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call and
    // `ts_ptr` is null or points at a live timespec; FUTEX_WAIT only reads them.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Under loom a futex wait is a yield: every caller waits in a loop that
/// looks again, so a wait that returns at once is a spurious wake-up.
#[cfg(loom)]
pub(crate) fn futex_wait(_word: &AtomicU32, _expected: u32, _timeout: Option<Duration>) {
    loom::thread::yield_now();
}

/// Under loom nobody sleeps (see `futex_wait`), so there is nobody to wake.
#[cfg(loom)]
pub(crate) fn futex_wake_all(_word: &AtomicU32) {}

/// Wake every process sleeping on `word`.
#[cfg(not(loom))]
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid aligned u32; FUTEX_WAKE does not dereference
    // anything else.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// This process's owner word: `pid | start_time_low32 << 32`. For display
/// and diagnostics only: liveness is decided by the slot's lock
/// ([`Liveness`]), never by the pid.
pub(crate) fn my_owner() -> u64 {
    static OWNER: OnceLock<u64> = OnceLock::new();
    *OWNER.get_or_init(|| {
        let pid = std::process::id();
        owner_word(pid, start_time(pid).unwrap_or(0))
    })
}

pub(crate) fn owner_word(pid: u32, start: u64) -> u64 {
    (pid as u64) | ((start & 0xFFFF_FFFF) << 32)
}

/// Owner word of a slot that belongs to no process: a closed durable
/// consumer, a group, a user slot. Not free, never alive.
pub(crate) const NOBODY: u64 = 1 << 32;

/// The pid part of an owner word.
pub(crate) fn owner_pid(owner: u64) -> u32 {
    owner as u32
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the command start at field 3; starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME, through the vDSO):
/// a record's commit time. One `clock_gettime` and no more (std's
/// `SystemTime::now().duration_since(..)` costs about 90 instructions
/// more per record, docs/BENCHMARKS.md "Hot path"); 0 before the epoch.
#[inline]
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always
    // exists, so the call cannot fail (on failure `ts` stays zero).
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
        * (ts.tv_sec >= 0) as u64
}

/// Reserve the blocks of `file` up to `len` so that writing through a
/// mapping can never hit a full file system (which would be a SIGBUS).
pub(crate) fn reserve_space(file: &File, len: u64, path: &Path) -> Result<()> {
    // SAFETY: plain syscall on an owned, open descriptor.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    match r {
        0 => Ok(()),
        // Some file systems cannot fallocate; fall back to set_len (sparse).
        libc::EOPNOTSUPP | libc::EINVAL => file
            .set_len(len)
            .map_err(|e| Error::from_os(path, "resize", e)),
        e => Err(Error::from_os(
            path,
            "reserve space for",
            std::io::Error::from_raw_os_error(e),
        )),
    }
}

/// Advisory lock kinds over the meta file.
#[derive(Clone, Copy)]
pub(crate) enum Lock {
    Shared,
    Exclusive,
}

/// Try to take a `flock` without blocking; true if taken.
pub(crate) fn try_lock(file: &File, kind: Lock) -> bool {
    let op = match kind {
        Lock::Shared => libc::LOCK_SH,
        Lock::Exclusive => libc::LOCK_EX,
    };
    // SAFETY: plain syscall on an owned, open descriptor.
    unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) == 0 }
}

/// Take a `flock`, waiting for it.
pub(crate) fn lock(file: &File, kind: Lock) {
    let op = match kind {
        Lock::Shared => libc::LOCK_SH,
        Lock::Exclusive => libc::LOCK_EX,
    };
    // SAFETY: plain syscall on an owned, open descriptor.
    unsafe {
        libc::flock(file.as_raw_fd(), op);
    }
}

pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// Give the processor to another runnable thread, if any (a yield under
/// loom).
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}
