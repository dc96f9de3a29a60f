//! The protocol between processes, over the bytes of `format` and the
//! memory of `storage`: claiming and publishing frames, reading and
//! validating them, waiting and waking, the consumer registry, the group
//! hand-out, the unblocker, recovery and retention. Nothing here makes a
//! system call except through `sys`, or touches shared memory except
//! through `sync`.

pub(crate) mod attach;
pub(crate) mod claim;
pub(crate) mod decode;
pub(crate) mod flow;
pub(crate) mod frame;
pub(crate) mod group;
#[cfg(all(test, loom))]
mod loom;
#[cfg(all(feature = "tokio", not(loom)))]
pub(crate) mod notify;
pub(crate) mod options;
pub(crate) mod raw;
pub(crate) mod read;
pub(crate) mod recovery;
pub(crate) mod registry;
pub(crate) mod run;
pub(crate) mod seek;
pub(crate) mod shared;
pub(crate) mod unblock;
pub(crate) mod wait;
#[cfg(all(feature = "tokio", not(loom)))]
pub(crate) mod wait_async;
