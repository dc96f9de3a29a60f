//! ipcress: streams of data between processes through shared memory.
//!
//! A stream is a named directory of memory-mapped files (see
//! docs/FORMAT.md). Any number of [`Producer`]s append records; each
//! [`Consumer`] reads at its own position: durable named consumers,
//! ephemeral subscribers, or members of a group that share the work.
//!
//! ```
//! use ipcress::{Stream, StreamOptions, StartAt};
//! # let dir = std::env::temp_dir().join(format!("ipcress-doc-{}", std::process::id()));
//! let stream = Stream::create_in(&dir, "events", &StreamOptions::ring(1 << 20))?;
//! let mut consumer = stream.subscribe(StartAt::Start)?;
//! let mut producer = stream.producer()?;
//! producer.send(b"hello")?;
//! let msg = consumer.recv()?;
//! assert_eq!(msg.bytes(), Some(&b"hello"[..]));
//! # drop(msg); drop(consumer); drop(producer); drop(stream);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), ipcress::Error>(())
//! ```
#![warn(missing_docs)]

// The layers, bottom up: sync, format, codec, error, sys, storage,
// protocol, api. Each uses only the layers before it in that list
// (tests/architecture.rs checks it; docs/ARCHITECTURE.md, "Code map").
mod api;
pub mod codec;
mod error;
pub mod format;
mod protocol;
mod storage;
mod sync;
mod sys;

#[cfg(all(feature = "tokio", not(loom)))]
pub use api::asynch::MessageStream;
pub use api::consumer::Messages;
pub use api::grant::{Grant, MessageWriter, RawGrant};
pub use api::message::{Message, MessageReader, OwnedMessage};
pub use api::open::OpenOptions;
pub use api::slots::UserSlot;
pub use api::stream::{Backlog, Stream, default_root, validate_name};
pub use codec::{Compression, Key, KeyError};
pub use error::{Error, Result};
pub use format::Flags;
pub use protocol::claim::Producer;
pub use protocol::options::{Checksum, Layout, Policy, StartAt, StreamOptions, Wait};
pub use protocol::raw::RawFrame;
pub use protocol::read::Consumer;
pub use protocol::registry::ConsumerInfo;
