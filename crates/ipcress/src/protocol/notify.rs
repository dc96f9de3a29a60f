//! The async side of waiting: one notifier thread per process sleeps on
//! every registered waiter's futex word at once (`futex_waitv`), and wakes
//! the matching `Waker`s when a word changes, or every `TICK` so that
//! waiting consumers still do their maintenance (heartbeat, unblocker,
//! dead members). docs/ARCHITECTURE.md, "Async waiting".
//!
//! A waiter first announces itself on the stream's waiter count
//! ([`Announce`]), then reads the word, re-checks its condition and only
//! then registers the word with the value it read ([`WordChange`]): the
//! same handshake as the blocking park, so a producer that commits after
//! the read bumps the word and the notifier's `futex_waitv` returns at
//! once (its expected value no longer matches).
//!
//! The notifier is per process ([`sys::PerProcess`]): a process forked
//! without `exec` after its parent's notifier started inherits that
//! notifier's memory but not its thread, so it starts its own on first use
//! and never touches the inherited one (whose lock the parent's thread may
//! have held at the fork instant).

use crate::sync::atomic::{AtomicU32, Ordering::*};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::protocol::shared::Inner;
use crate::sys::{self, PerProcess, Waitv};

/// Every registered waiter is woken at least this often: the blocking
/// park's timeout, so maintenance runs as often as it does there.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// Without `futex_waitv`, or with more distinct words than one call takes,
/// the notifier looks at the words this often (a bounded timed wait).
pub(crate) const POLL: Duration = Duration::from_millis(2);

/// Which futex word of a stream's meta block a waiter sleeps on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Word {
    /// `DATA_SEQ`, bumped by commits (consumers wait on it).
    Data,
    /// `SPACE_SEQ`, bumped by consumers moving on (producers wait on it).
    Space,
}

impl Word {
    pub(crate) fn seq(self, s: &Inner) -> &AtomicU32 {
        match self {
            Word::Data => s.data_seq(),
            Word::Space => s.space_seq(),
        }
    }

    fn waiters(self, s: &Inner) -> &AtomicU32 {
        match self {
            Word::Data => s.data_waiters(),
            Word::Space => s.space_waiters(),
        }
    }
}

/// A waiter counted on a stream's waiter word (so that producers, or
/// consumers, issue the wake syscall) for as long as it lives.
pub(crate) struct Announce {
    s: Arc<Inner>,
    word: Word,
}

impl Announce {
    pub(crate) fn new(s: &Arc<Inner>, word: Word) -> Announce {
        word.waiters(s).fetch_add(1, SeqCst);
        Announce { s: s.clone(), word }
    }
}

impl Drop for Announce {
    fn drop(&mut self) {
        self.word.waiters(&self.s).fetch_sub(1, SeqCst);
    }
}

struct Entry {
    s: Arc<Inner>,
    word: Word,
    seq: u32,
    waker: Waker,
}

#[derive(Default)]
struct Reg {
    next: u64,
    entries: HashMap<u64, Entry>,
}

struct Notifier {
    reg: Mutex<Reg>,
    /// Process-local: bumped (and woken) by every registration and
    /// cancellation, so that the thread's sleep takes them in.
    changed: AtomicU32,
}

impl Notifier {
    fn lock(&self) -> MutexGuard<'_, Reg> {
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poke(&self) {
        self.changed.fetch_add(1, SeqCst);
        sys::futex_wake_all(&self.changed);
    }
}

/// The notifier of this process, once it has one.
static N: PerProcess<Notifier> = PerProcess::new();

/// This process's notifier, its thread started on first use in the process
/// (again in a child forked after the parent's started: see the module).
fn notifier() -> &'static Notifier {
    N.get_or_init(
        || Notifier {
            reg: Mutex::new(Reg::default()),
            changed: AtomicU32::new(0),
        },
        |n| {
            std::thread::Builder::new()
                .name("ipcress-notify".into())
                .spawn(move || run(n))
                .expect("cannot start the ipcress notifier thread");
        },
    )
}

/// Waiters woken because their word moved, not by the tick (for tests: a
/// waiter nobody announced is woken by the tick only).
#[cfg(test)]
pub(crate) static WORD_FIRES: crate::sync::atomic::AtomicU64 =
    crate::sync::atomic::AtomicU64::new(0);

/// Waiters of stream `s` registered now (for tests).
#[cfg(test)]
pub(crate) fn registered(s: &Arc<Inner>) -> usize {
    let reg = notifier().lock();
    reg.entries
        .values()
        .filter(|e| Arc::ptr_eq(&e.s, s))
        .count()
}

/// The notifier thread: sleep on `changed` and every registered word,
/// then wake whoever's word moved (all of them every `TICK`).
fn run(n: &'static Notifier) {
    let mut waitv = std::env::var_os("IPCRESS_NO_FUTEX_WAITV").is_none();
    let mut last_tick = Instant::now();
    loop {
        // Read before the snapshot: a registration after it bumps the word.
        let changed = n.changed.load(SeqCst);
        // One entry per (word, value seen): many waiters on one stream
        // cost one slot of the `futex_waitv` array.
        let snapshot: Vec<(Arc<Inner>, Word, u32)> = {
            let reg = n.lock();
            let mut seen = HashSet::new();
            reg.entries
                .values()
                // The address is an identity only, never dereferenced.
                .filter(|e| seen.insert((e.word.seq(&e.s).as_ptr() as usize, e.seq)))
                .map(|e| (e.s.clone(), e.word, e.seq))
                .collect()
        };
        if snapshot.is_empty() {
            sys::futex_wait(&n.changed, changed, None);
            last_tick = Instant::now();
            continue;
        }
        let wait = TICK.saturating_sub(last_tick.elapsed());
        if waitv {
            let mut words: Vec<(&AtomicU32, u32)> = vec![(&n.changed, changed)];
            words.extend(
                snapshot
                    .iter()
                    .take(sys::WAITV_MAX - 1)
                    .map(|(s, w, q)| (w.seq(s), *q)),
            );
            // Words past what one call takes are looked at every POLL.
            let t = if snapshot.len() >= sys::WAITV_MAX {
                wait.min(POLL)
            } else {
                wait
            };
            if sys::futex_waitv(&words, t) == Waitv::Unsupported {
                tracing::debug!("no futex_waitv: async waiters are looked at every 2 ms");
                waitv = false;
            }
        } else {
            sys::futex_wait(&n.changed, changed, Some(wait.min(POLL)));
        }
        drop(snapshot);
        let tick = last_tick.elapsed() >= TICK;
        if tick {
            last_tick = Instant::now();
        }
        let mut wake = Vec::new();
        n.lock().entries.retain(|_, e| {
            let moved = e.word.seq(&e.s).load(SeqCst) != e.seq;
            #[cfg(test)]
            if moved {
                WORD_FIRES.fetch_add(1, SeqCst);
            }
            let fire = tick || moved;
            if fire {
                wake.push(e.waker.clone());
            }
            !fire
        });
        for w in wake {
            w.wake();
        }
    }
}

/// Resolves when `word` of `s` no longer holds `seq`, or at the next tick.
/// Dropped before, it leaves no registration behind.
pub(crate) struct WordChange {
    s: Arc<Inner>,
    word: Word,
    seq: u32,
    /// The registration: the notifier it is in (this process's, unless the
    /// future was made before a fork) and its key there.
    id: Option<(&'static Notifier, u64)>,
}

impl WordChange {
    pub(crate) fn new(s: &Arc<Inner>, word: Word, seq: u32) -> WordChange {
        WordChange {
            s: s.clone(),
            word,
            seq,
            id: None,
        }
    }
}

impl Future for WordChange {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let n = notifier();
        if let Some((m, _)) = this.id
            && !std::ptr::eq(m, n)
        {
            // Registered with the parent's notifier before a fork: never
            // touched here (its lock may be held for ever). A spurious
            // wake-up: the caller checks again and registers anew.
            this.id = None;
            return Poll::Ready(());
        }
        let mut reg = n.lock();
        match this.id {
            Some((_, id)) => match reg.entries.get_mut(&id) {
                Some(e) if this.word.seq(&this.s).load(SeqCst) == this.seq => {
                    e.waker.clone_from(cx.waker());
                    Poll::Pending
                }
                Some(_) => {
                    reg.entries.remove(&id);
                    this.id = None;
                    Poll::Ready(())
                }
                // Fired: the word moved, or a tick.
                None => {
                    this.id = None;
                    Poll::Ready(())
                }
            },
            None => {
                if this.word.seq(&this.s).load(SeqCst) != this.seq {
                    return Poll::Ready(());
                }
                let id = reg.next;
                reg.next += 1;
                reg.entries.insert(
                    id,
                    Entry {
                        s: this.s.clone(),
                        word: this.word,
                        seq: this.seq,
                        waker: cx.waker().clone(),
                    },
                );
                drop(reg);
                this.id = Some((n, id));
                n.poke();
                Poll::Pending
            }
        }
    }
}

impl Drop for WordChange {
    fn drop(&mut self) {
        if let Some((n, id)) = self.id.take() {
            // Only from this process's notifier: one inherited across a
            // fork is left alone (see `poll`).
            if !N.get().is_some_and(|mine| std::ptr::eq(mine, n)) {
                return;
            }
            let gone = n.lock().entries.remove(&id).is_some();
            if gone {
                // Let the thread drop its reference to the stream now.
                n.poke();
            }
        }
    }
}
