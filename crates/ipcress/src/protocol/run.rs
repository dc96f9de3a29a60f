//! A group member's run, as steps on the slots in shared memory: announce
//! the run in its own slot, take it by compare-and-swap on the group word,
//! record it as held, release it when acknowledged; and what the others
//! read of it: help a claimer that has not recorded its run yet, adopt the
//! run of a dead member, hold producers back at its first record
//! (FORMAT.md, "Groups"). `group.rs` and the floor call these, and the loom
//! models (`protocol/loom.rs`) run them.

use crate::format::*;
use crate::sync::Region;
use crate::sync::atomic::Ordering::*;

/// Step 1: announce in our slot `me` the run `begin..end` we are about to
/// take, as the intent of attempt `seq`.
pub(crate) fn announce(me: &Region, seq: u64, begin: u64, end: u64) {
    me.u64_at(cslot::RUN_BEGIN).store(begin, SeqCst);
    me.u64_at(cslot::RUN_END).store(end, SeqCst);
    me.u64_at(cslot::RUN_STATE)
        .store(run_state(seq, RUN_INTENT), SeqCst);
}

/// Step 2: take the run by moving the group word of `group` from `seen` to
/// `new`. On failure the intent is withdrawn (the attempt starts over).
pub(crate) fn take(me: &Region, group: &Region, seq: u64, seen: u64, new: u64) -> bool {
    let taken = group
        .u64_at(cslot::POSITION)
        .compare_exchange(seen, new, SeqCst, Relaxed)
        .is_ok();
    if !taken {
        me.u64_at(cslot::RUN_STATE)
            .store(run_state(seq, RUN_IDLE), SeqCst);
    }
    taken
}

/// Step 3: record the run taken as held (a member that saw the group word
/// name us may have recorded it already).
pub(crate) fn record(me: &Region, seq: u64) {
    let _ = me.u64_at(cslot::RUN_STATE).compare_exchange(
        run_state(seq, RUN_INTENT),
        run_state(seq, RUN_HELD),
        SeqCst,
        Relaxed,
    );
}

/// The run of slot `slot` is acknowledged: it holds nothing back any more.
pub(crate) fn release(slot: &Region, seq: u64) {
    slot.u64_at(cslot::RUN_STATE)
        .store(run_state(seq, RUN_IDLE), SeqCst);
}

/// The group word names the member of slot `claimer` as the last to take
/// a run, ending at `next`: if that member's claim is still only an intent
/// ending there, it succeeded, so record it as held. Whoever moves the
/// group word on does this first, so that a member that dies between its
/// compare-and-swap and its own record loses nothing.
pub(crate) fn help(claimer: &Region, next: u64) {
    let state = claimer.u64_at(cslot::RUN_STATE);
    let st = state.load(SeqCst);
    let (seq, k) = split_run_state(st);
    if k != RUN_INTENT {
        return;
    }
    let end = claimer.u64_at(cslot::RUN_END).load(SeqCst);
    if state.load(SeqCst) == st && end == next {
        let _ = state.compare_exchange(st, run_state(seq, RUN_HELD), SeqCst, Relaxed);
    }
}

/// The run a dead member (slot `slot`, index `d`) of `group` holds, as
/// `(seq, begin, end)`, or None if it holds none. The group word is read
/// first: a claim that succeeded is then either named by it or was
/// recorded as held by whoever moved it on ([`help`]).
pub(crate) fn held_by(slot: &Region, group: &Region, d: usize) -> Option<(u64, u64, u64)> {
    let (next, _, t) = split_group(group.u64_at(cslot::POSITION).load(SeqCst));
    let (seq, k) = split_run_state(slot.u64_at(cslot::RUN_STATE).load(SeqCst));
    let begin = slot.u64_at(cslot::RUN_BEGIN).load(SeqCst);
    let end = slot.u64_at(cslot::RUN_END).load(SeqCst);
    let held = k == RUN_HELD || (k == RUN_INTENT && t as usize == d + 1 && next == end);
    held.then_some((seq, begin, end))
}

/// Where member slot `slot` holds producers back: the first record of a
/// run announced or held and not yet acknowledged, if any.
pub(crate) fn floor_of(slot: &Region) -> Option<u64> {
    let st = slot.u64_at(cslot::RUN_STATE).load(SeqCst);
    (split_run_state(st).1 != RUN_IDLE).then(|| slot.u64_at(cslot::RUN_BEGIN).load(SeqCst))
}
