//! `futex_waitv` (Linux 5.16): one sleep on many futex words at once, for
//! the async notifier (`protocol/notify.rs`).

use crate::sync::atomic::AtomicU32;
use std::time::Duration;

/// The kernel's limit on words per `futex_waitv` call.
pub(crate) const WAITV_MAX: usize = 128;

/// `__NR_futex_waitv`: the same number on every architecture with the
/// generic syscall table and on x86 (not in every `libc` target yet).
const SYS_FUTEX_WAITV: libc::c_long = 449;
/// `FUTEX2_SIZE_U32`, without `FUTEX2_PRIVATE`: the words are shared
/// between processes, and the producers wake them with `FUTEX_WAKE`.
const FUTEX2_SIZE_U32: u32 = 2;

/// `struct futex_waitv` of `<linux/futex.h>`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// How a `futex_waitv` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waitv {
    /// Word `i` was woken.
    Woken(usize),
    /// A word no longer held its expected value when the call began, the
    /// timeout passed, or a signal came: look at the words again.
    Again,
    /// The kernel has no `futex_waitv` (before 5.16, or a seccomp filter
    /// that refuses it).
    Unsupported,
}

/// Sleep until one of `words` (each with the value it is expected to
/// hold) is woken or differs, or `timeout` passes. At most
/// [`WAITV_MAX`] words.
pub(crate) fn futex_waitv(words: &[(&AtomicU32, u32)], timeout: Duration) -> Waitv {
    debug_assert!(!words.is_empty() && words.len() <= WAITV_MAX);
    let v: Vec<FutexWaitv> = words
        .iter()
        .take(WAITV_MAX)
        .map(|(w, expected)| FutexWaitv {
            val: u64::from(*expected),
            uaddr: w.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a live, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    // The timeout of futex_waitv is absolute, on the clock passed below.
    let nanos = now.tv_nsec as u64 + u64::from(timeout.subsec_nanos());
    let deadline = libc::timespec {
        tv_sec: now.tv_sec
            + timeout.as_secs().min(1 << 32) as libc::time_t
            + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `v` is a live array of `v.len()` `struct futex_waitv` whose
    // addresses are aligned u32 words the caller keeps mapped for the
    // call (they are borrowed); `deadline` is a live timespec; the kernel
    // only reads them.
    let r = unsafe {
        libc::syscall(
            SYS_FUTEX_WAITV,
            v.as_ptr(),
            v.len() as libc::c_uint,
            0 as libc::c_uint,
            &deadline as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r >= 0 {
        return Waitv::Woken(r as usize);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOSYS | libc::EPERM | libc::EINVAL) => Waitv::Unsupported,
        _ => Waitv::Again,
    }
}
