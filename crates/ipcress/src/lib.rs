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

pub mod codec;
mod consumer;
mod error;
#[doc(hidden)]
pub mod format;
mod producer;
mod recovery;
mod shm;
mod storage;
mod stream;
mod sys;

pub use codec::{Compression, Key, KeyError};
pub use consumer::{Consumer, Message, MessageReader, StartAt, UserSlot, Wait};
pub use error::{Error, Result};
pub use producer::{Grant, MessageWriter, Producer, RawFrame, RawGrant};
pub use stream::{
    Checksum, ConsumerInfo, Layout, Policy, Stream, StreamOptions, default_root, validate_name,
};
