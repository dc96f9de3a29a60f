//! What a Rust caller uses: `Stream`, its producers and consumers, grants,
//! writers, messages and readers. Everything here is a thin layer over
//! `protocol`; the rules live there.

#[cfg(all(feature = "tokio", not(loom)))]
pub(crate) mod asynch;
pub(crate) mod consumer;
pub(crate) mod grant;
#[cfg(all(test, loom))]
mod loom;
pub(crate) mod message;
pub(crate) mod open;
pub(crate) mod producer;
pub(crate) mod raw;
pub(crate) mod remove;
pub(crate) mod slots;
pub(crate) mod stream;
