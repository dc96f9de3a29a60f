//! The one error type of the library.

use std::path::PathBuf;

/// Everything that can go wrong in ipcress, as variants a caller can act on.
///
/// ```
/// use ipcress::{Error, StartAt, Stream, StreamOptions};
/// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// match stream.consumer("bad/name") {
///     Err(Error::InvalidName { name, .. }) => assert_eq!(name, "bad/name"),
///     other => panic!("unexpected: {other:?}"),
/// }
/// let mut idle = stream.subscribe(StartAt::End)?;
/// assert!(idle.try_recv()?.is_none()); // not an error: nothing there yet
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ring is full (`try_send` under the `Block` policy).
    #[error("stream is full")]
    Full,
    /// The consumer was lapped (`Overwrite` policy, or retention dropped data);
    /// it resumes at the oldest retained record.
    #[error("consumer lagged behind: {skipped_bytes} bytes were overwritten or dropped")]
    Lagged {
        /// How many bytes of the stream the consumer lost.
        skipped_bytes: u64,
    },
    /// Data in the shared files is damaged or hostile.
    #[error("corrupt data at position {position}: {reason}")]
    Corrupt {
        /// Stream position of the damaged frame (or 0 for the meta file).
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// The stream was written by another, incompatible format version.
    #[error(
        "incompatible stream format: found version {found}, this build reads versions 3 and {expected}"
    )]
    Incompatible {
        /// Version found in the meta file.
        found: u32,
        /// Version this library reads and writes.
        expected: u32,
    },
    /// The file system is full (segments are reserved before use, so this is
    /// reported instead of a SIGBUS).
    #[error("no space left on the device holding {path}")]
    NoSpace {
        /// The file that could not be reserved.
        path: PathBuf,
    },
    /// The OS refused access to a stream file.
    #[error("permission denied: {path}")]
    PermissionDenied {
        /// The file or directory.
        path: PathBuf,
    },
    /// No stream (or consumer) of that name.
    #[error("no such {what}: {name}")]
    NotFound {
        /// "stream" or "consumer".
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A stream of that name exists already.
    #[error("stream already exists: {name}")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// The name is not `[A-Za-z0-9._-]{1,128}` (or is `.`/`..`).
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The stream options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The message is larger than `send`/`reserve` allow; use `writer()`.
    #[error(
        "message of {len} bytes is larger than the maximum of {max} bytes for one frame (use a writer)"
    )]
    TooLarge {
        /// Requested length.
        len: u64,
        /// The largest accepted length.
        max: u64,
    },
    /// A durable consumer of that name, or a member of that group, is held
    /// by a live process.
    #[error("consumer {name} is in use by process {pid}")]
    InUse {
        /// The consumer name.
        name: String,
        /// Its owner.
        pid: u32,
    },
    /// The stream is open in a live process (a producer, a consumer, a
    /// bridge): it is not removed from under it.
    #[error("stream {name} is open in a running process; stop it first")]
    StreamInUse {
        /// The stream name.
        name: String,
    },
    /// All consumer or producer slots of the meta file are taken.
    #[error("all {0} slots of the stream are in use")]
    SlotsExhausted(&'static str),
    /// A record could not be decoded (authentication failure, bad compression).
    #[error("cannot decode record at position {position} of stream {stream}: {reason}")]
    Decode {
        /// The stream name.
        stream: String,
        /// The record's position.
        position: u64,
        /// What failed.
        reason: String,
    },
    /// The stream is encrypted and no key was given.
    #[error("stream {stream} is encrypted: a key is required")]
    KeyRequired {
        /// The stream name.
        stream: String,
    },
    /// A key file problem.
    #[error(transparent)]
    Key(#[from] crate::codec::KeyError),
    /// A fragmented message was cut short by a producer that died. Not
    /// fatal: the consumer is already past the message (its position moved
    /// on, nothing of it is acknowledged as delivered data) and its next
    /// `recv` returns the next message; report it like
    /// [`Lagged`](Self::Lagged) and go on.
    #[error("message at position {position} was aborted by its producer")]
    Aborted {
        /// Position of the message's first fragment.
        position: u64,
    },
    /// A record of this producer was aborted by the unblocker because the
    /// producer took longer than `unblock_timeout` between claim and commit.
    #[error("record at position {position} was aborted after the unblock timeout")]
    Unblocked {
        /// Position of the record.
        position: u64,
    },
    /// A blocking call gave up because the flag given to
    /// [`Producer::interrupt_on`](crate::Producer::interrupt_on) was set
    /// while it waited (before it had claimed anything: nothing was
    /// written and the producer stays usable).
    #[error("interrupted while waiting for space")]
    Interrupted,
    /// The stream, durable consumer or group was removed (`rm --force`)
    /// while this handle used it.
    #[error("{what} {name} was removed")]
    Removed {
        /// "stream", "consumer" or "group".
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// Any other I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Result with [`Error`].
/// ```
/// fn first_word(stream: &ipcress::Stream) -> ipcress::Result<Vec<u8>> {
///     let mut consumer = stream.subscribe(ipcress::StartAt::Start)?;
///     consumer.recv()?.to_vec()
/// }
/// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
/// # stream.producer()?.send(b"hello")?;
/// assert_eq!(first_word(&stream)?, b"hello");
/// # Ok::<(), ipcress::Error>(())
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Map an OS error on `path` to the most useful variant.
    pub(crate) fn from_os(path: &std::path::Path, what: &str, e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
                path: path.to_path_buf(),
            },
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::NoSpace {
                path: path.to_path_buf(),
            },
            _ => Error::io(format!("{what} {}", path.display()), e),
        }
    }

    pub(crate) fn corrupt(position: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            position,
            reason: reason.into(),
        }
    }
}

/// An I/O error met while using the library (`?` on `io::Write` of a
/// [`MessageWriter`](crate::MessageWriter), on [`Key::generate`](crate::Key::generate)).
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        // An error that carries one of ours (a writer's) is ours again.
        match e.downcast::<Error>() {
            Ok(ours) => ours,
            Err(e) => Error::io("I/O", e),
        }
    }
}
