//! [`PerProcess`]: a value made once per process, made again in a process
//! forked (without `exec`) from one that had it. For the async notifier
//! (`protocol/notify.rs`), whose thread does not survive `fork`.

use crate::sync::atomic::{AtomicU32, Ordering::*};
use std::sync::atomic::AtomicPtr;

/// A value of `T` and the process it was made in.
struct Made<T> {
    pid: u32,
    value: T,
}

/// A lazily made `&'static T` that belongs to the process that made it: a
/// `OnceLock` that a forked child does not share with its parent.
///
/// A child inherits its parent's memory but none of its other threads, so
/// whatever those threads were doing at the fork instant (holding a lock
/// inside the parent's value, or making the value) never finishes there.
/// The child therefore never waits for anything its parent left behind: it
/// recognises the parent's value by its pid and makes its own (the
/// parent's is leaked, as every value is: they live for the process).
///
/// The pid is the key: a descendant that got the pid of an ancestor whose
/// value it inherited (that ancestor gone, its pid given out again) would
/// take that value for its own. `getpid` is a system call (glibc caches it
/// no more), made once per `get`: for the notifier, once per park.
pub(crate) struct PerProcess<T: 'static> {
    /// The last value published, made by the process `(*ptr).pid`; never
    /// freed. Published with `Release` once complete, read with `Acquire`.
    ptr: AtomicPtr<Made<T>>,
    /// The pid whose thread has claimed the making of its process's value
    /// (0: nobody yet). A claim is a compare-exchange from the value read,
    /// so exactly one thread per process wins it; a claim inherited from
    /// the parent carries the parent's pid, which the child's first caller
    /// replaces: nothing here waits on a thread of another process.
    making: AtomicU32,
}

impl<T: Sync + 'static> PerProcess<T> {
    pub(crate) const fn new() -> PerProcess<T> {
        PerProcess {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            making: AtomicU32::new(0),
        }
    }

    /// This process's value, if it made one already.
    pub(crate) fn get(&self) -> Option<&'static T> {
        self.current(std::process::id())
    }

    fn current(&self, pid: u32) -> Option<&'static T> {
        let p = self.ptr.load(Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null `ptr` comes from `Box::leak` in
        // `get_or_init` and is never freed, so it is valid for 'static;
        // its `Release` store after the value was complete pairs with the
        // `Acquire` load above, so the value is fully visible. `T: Sync`:
        // shared between the threads of the process.
        let made: &'static Made<T> = unsafe { &*p };
        (made.pid == pid).then_some(&made.value)
    }

    /// This process's value, made by `init` on first use in this process
    /// (in the parent, or again in a forked child), then given to `start`
    /// before any other thread can see it. The common path is one `getpid`
    /// and one `Acquire` load.
    pub(crate) fn get_or_init(
        &self,
        init: impl FnOnce() -> T,
        start: impl FnOnce(&'static T),
    ) -> &'static T {
        let pid = std::process::id();
        let mut init = Some((init, start));
        loop {
            if let Some(v) = self.current(pid) {
                return v;
            }
            let claimed = self.making.load(Acquire);
            if claimed != pid
                && self
                    .making
                    .compare_exchange(claimed, pid, AcqRel, Acquire)
                    .is_ok()
            {
                // A panicking `init` or `start` gives the claim back, so
                // that a later call tries again instead of waiting for ever.
                let undo = Unclaim(&self.making);
                let (make, start) = init.take().expect("one claim per call");
                let made: &'static Made<T> = Box::leak(Box::new(Made { pid, value: make() }));
                start(&made.value);
                std::mem::forget(undo);
                self.ptr
                    .store(made as *const Made<T> as *mut Made<T>, Release);
                return &made.value;
            }
            // Another thread of this process is making it (its claim
            // carries our pid): only it can publish, briefly.
            std::thread::yield_now();
        }
    }
}

/// Gives up a claim on `making` if `init` panics.
struct Unclaim<'a>(&'a AtomicU32);

impl Drop for Unclaim<'_> {
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_per_process_and_again_for_another_pid() {
        static P: PerProcess<u64> = PerProcess::new();
        assert!(P.get().is_none());
        let a = P.get_or_init(|| 7, |_| ());
        assert_eq!(*a, 7);
        assert!(std::ptr::eq(a, P.get_or_init(|| unreachable!(), |_| ())));
        assert!(std::ptr::eq(a, P.get().unwrap()));
        // What a forked child sees: a value and a claim of another pid.
        let other = std::process::id() + 1;
        assert!(P.current(other).is_none());
        P.making.store(other, Release);
        let made: &'static Made<u64> = Box::leak(Box::new(Made {
            pid: other,
            value: 9,
        }));
        P.ptr
            .store(made as *const Made<u64> as *mut Made<u64>, Release);
        assert!(P.get().is_none());
        let b = P.get_or_init(|| 8, |_| ());
        assert_eq!(*b, 8);
        assert!(std::ptr::eq(b, P.get().unwrap()));
    }

    #[test]
    fn racing_first_callers_share_one_value() {
        static P: PerProcess<std::sync::Mutex<u32>> = PerProcess::new();
        static MADE: AtomicU32 = AtomicU32::new(0);
        let got: Vec<usize> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    let v = P.get_or_init(
                        || {
                            MADE.fetch_add(1, SeqCst);
                            std::sync::Mutex::new(0)
                        },
                        |_| std::thread::sleep(std::time::Duration::from_millis(20)),
                    );
                    *v.lock().unwrap() += 1;
                    v as *const _ as usize
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(MADE.load(SeqCst), 1);
        assert!(got.iter().all(|&p| p == got[0]));
        assert_eq!(*P.get().unwrap().lock().unwrap(), 8);
    }
}
