//! `OpenOptions`: where streams are, with which key, and whether only to
//! look, set once and used for any number of streams.

use std::path::PathBuf;

use crate::api::stream::{Stream, default_root};
use crate::codec::Key;
use crate::error::Result;
use crate::protocol::options::StreamOptions;

/// How to open or create a stream: under which root directory, with which
/// key, and whether only to look. Like `std::fs::OpenOptions`, it is
/// configured, then used for any number of streams.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("ipcress-doc-open-{}", std::process::id())); use ipcress::{Key, OpenOptions, StreamOptions};
/// let open = OpenOptions::new().root(&dir).key(Key::generate().expect("randomness"));
/// let stream = open.create("secrets", &StreamOptions::ring(1 << 16).encrypted(true))?;
/// open.open("secrets")?.producer()?.send(b"sealed")?; // keyed too, shared or not
/// assert_eq!(stream.tail(), 48); // header 16 + time 8 + payload 6 + tag 16, aligned to 8
/// # drop(stream); std::fs::remove_dir_all(&dir).unwrap(); Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    root: Option<PathBuf>,
    key: Option<Key>,
    inspect: bool,
}

impl OpenOptions {
    /// The default root ([`default_root`]), no key, for reading and writing.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-oo-new-{}", std::process::id())); unsafe { std::env::set_var("IPCRESS_DIR", &root) } // this example's own process
    /// let stream = ipcress::OpenOptions::new().create("events", &ipcress::StreamOptions::ring(1 << 16))?;
    /// assert_eq!(stream.dir(), ipcress::default_root().join("events"));
    /// # drop(stream); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Streams live under `root` instead of the default root.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-oo-root-{}", std::process::id()));
    /// let open = ipcress::OpenOptions::new().root(&root);
    /// assert_eq!(open.create("events", &ipcress::StreamOptions::ring(1 << 16))?.dir(), root.join("events"));
    /// # std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn root(mut self, root: impl Into<PathBuf>) -> OpenOptions {
        self.root = Some(root.into());
        self
    }

    /// The key of encrypted streams (ignored for a stream that is not).
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-oo-key-{}", std::process::id())); use ipcress::{Key, OpenOptions, StreamOptions};
    /// let (open, key) = (OpenOptions::new().root(&root), Key::from_bytes([7; 32]));
    /// drop(open.clone().key(key.clone()).create("s", &StreamOptions::ring(1 << 16).encrypted(true))?);
    /// assert!(open.open("s")?.producer().is_err() && open.key(key).open("s")?.producer().is_ok());
    /// # std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn key(mut self, key: Key) -> OpenOptions {
        self.key = Some(key);
        self
    }

    /// Open only to look (see [`Stream::inspect_in`]).
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-oo-inspect-{}", std::process::id())); let open = ipcress::OpenOptions::new().root(&root);
    /// # drop(open.create("events", &ipcress::StreamOptions::ring(1 << 16))?);
    /// assert!(open.inspect(true).open("events")?.producer().is_err());
    /// # std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn inspect(mut self, only_look: bool) -> OpenOptions {
        self.inspect = only_look;
        self
    }

    fn root_dir(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(default_root)
    }

    fn keyed(&self, s: Stream) -> Result<Stream> {
        match &self.key {
            Some(k) if s.encrypted() => s.with_key(k),
            _ => Ok(s),
        }
    }

    /// Open stream `name`.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-oo-open-{}", std::process::id())); let made = ipcress::Stream::create_in(&root, "events", &ipcress::StreamOptions::ring(1 << 16))?;
    /// assert_eq!(ipcress::OpenOptions::new().root(&root).open("events")?.id(), made.id());
    /// # drop(made); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn open(&self, name: &str) -> Result<Stream> {
        self.keyed(Stream::open_with(&self.root_dir(), name, self.inspect)?)
    }

    /// Create stream `name` with `opts` (and open it as [`open`](Self::open) would).
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-oo-create-{}", std::process::id()));
    /// let stream = ipcress::OpenOptions::new().root(&root).create("log", &ipcress::StreamOptions::log(1 << 16))?;
    /// assert_eq!((stream.layout(), stream.capacity()), (ipcress::Layout::Log, None));
    /// # drop(stream); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn create(&self, name: &str, opts: &StreamOptions) -> Result<Stream> {
        let made = Stream::create_in(&self.root_dir(), name, opts)?;
        if self.inspect {
            // Only to look: let go of the handle `create_in` opened.
            drop(made);
            return self.open(name);
        }
        self.keyed(made)
    }
}
