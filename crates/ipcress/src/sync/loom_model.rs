//! Running a loom model: the builder settings every model shares, and a
//! count of the executions it explored.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Run `f` under loom and print how many executions it took.
pub(crate) fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    model_bounded(name, None, f)
}

/// As [`model`], with at most `bound` preemptions (whatever
/// `LOOM_MAX_PREEMPTIONS` says): the models of whole producers and
/// consumers take minutes at a bound of 2.
pub(crate) fn model_bounded(
    name: &str,
    bound: Option<usize>,
    f: impl Fn() + Sync + Send + 'static,
) {
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let mut builder = loom::model::Builder::new();
    // The models over whole producers and consumers load many words per
    // execution (the registry scans every slot).
    builder.max_branches = builder.max_branches.max(100_000);
    if let Some(b) = bound {
        builder.preemption_bound = Some(builder.preemption_bound.map_or(b, |e| e.min(b)));
    }
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f()
    });
    println!(
        "loom model {name}: {} executions",
        runs.load(Ordering::Relaxed)
    );
}
