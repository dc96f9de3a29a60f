//! `Stream`: create, open, remove and list streams, and what a stream is.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::{Cipher, Compression, Key};
use crate::error::{Error, Result};
pub use crate::protocol::attach::validate_name;
use crate::protocol::attach::*;
use crate::protocol::options::*;
use crate::protocol::shared::*;
use crate::storage::{self, Storage};
use crate::sys;

/// Where streams live: `$IPCRESS_DIR`, else `/dev/shm/ipcress`.
/// ```
/// # unsafe { std::env::remove_var("IPCRESS_DIR") } // this example's own process
/// assert_eq!(ipcress::default_root(), std::path::Path::new("/dev/shm/ipcress"));
/// ```
pub fn default_root() -> PathBuf {
    std::env::var_os("IPCRESS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm/ipcress"))
}

/// A handle on a stream, cheap to clone and to share between threads.
/// ```
/// let stream = ipcress::Stream::create_in_memory("orders", &ipcress::StreamOptions::ring(1 << 16))?;
/// stream.producer()?.send(b"one")?; // header 16 + payload 3, aligned to 8
/// assert_eq!((stream.name(), stream.head(), stream.tail()), ("orders", 0, 32));
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone)]
pub struct Stream {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.inner.name)
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl Stream {
    /// Create stream `name` under the default root.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-create-{}", std::process::id())); unsafe { std::env::set_var("IPCRESS_DIR", &root) } // this example's own process
    /// let stream = ipcress::Stream::create("events", &ipcress::StreamOptions::ring(1 << 16))?;
    /// assert_eq!(stream.dir(), ipcress::default_root().join("events"));
    /// # drop(stream); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn create(name: &str, opts: &StreamOptions) -> Result<Stream> {
        Stream::create_in(&default_root(), name, opts)
    }

    /// Open stream `name` under the default root.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-open-{}", std::process::id())); unsafe { std::env::set_var("IPCRESS_DIR", &root) } let made = ipcress::Stream::create("events", &ipcress::StreamOptions::ring(1 << 16))?;
    /// assert_eq!(ipcress::Stream::open("events")?.id(), made.id());
    /// # drop(made); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Stream> {
        Stream::open_in(&default_root(), name)
    }

    /// Create stream `name` under `root`.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-create-in-{}", std::process::id()));
    /// let stream = ipcress::Stream::create_in(&root, "events", &ipcress::StreamOptions::ring(1 << 16))?;
    /// assert_eq!(stream.dir(), root.join("events"));
    /// # drop(stream); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn create_in(root: &Path, name: &str, opts: &StreamOptions) -> Result<Stream> {
        validate_name(name)?;
        let o = opts.resolve()?;
        let dir_mode = if o.mode & 0o060 != 0 { 0o770 } else { 0o700 };
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .map_err(|e| Error::from_os(root, "create directory", e))?;
        let dest = root.join(name);
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(Error::AlreadyExists { name: name.into() });
        }
        sweep_temp_dirs(root);
        // Locked while we live: a sweeper never takes it for abandoned.
        let (tmp, _lock) = make_temp_dir(root, name, dir_mode)?;
        // The mode asked for, whatever the umask (0770 must not become 0750).
        if let Err(e) = fs::set_permissions(&tmp, fs::Permissions::from_mode(dir_mode)) {
            let _ = fs::remove_dir(&tmp);
            return Err(Error::from_os(&tmp, "chmod", e));
        }
        let made = write_new_stream(&tmp, &o);
        let made = made.and_then(|()| {
            // rename(2) of a directory onto an existing non-empty one fails.
            match fs::rename(&tmp, &dest) {
                Ok(()) => Ok(()),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EEXIST) | Some(libc::ENOTEMPTY) | Some(libc::EISDIR)
                    ) =>
                {
                    Err(Error::AlreadyExists { name: name.into() })
                }
                Err(e) => Err(Error::from_os(&dest, "rename into", e)),
            }
        });
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Under its name now: no sweeper looks at it, and a remover locks it.
        drop(_lock);
        Stream::open_in(root, name)
    }

    /// Create a ring in this process's memory: no files, no other process
    /// can open it, and it is gone with its last handle. Everything else
    /// behaves as in a ring on files (one conformance suite runs on both).
    ///
    /// ```
    /// use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("scratch", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"in memory")?;
    /// assert_eq!(consumer.recv()?.to_vec()?, b"in memory");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn create_in_memory(name: &str, opts: &StreamOptions) -> Result<Stream> {
        validate_name(name)?;
        let o = opts.resolve()?;
        if o.layout != Layout::Ring {
            return Err(Error::InvalidOptions(
                "a stream in memory is a ring (StreamOptions::ring)".into(),
            ));
        }
        let meta_map = storage::MetaMap::in_memory();
        init_meta(&meta_map.region(), &o)?;
        let inner = Inner::assemble(
            name,
            PathBuf::new(),
            meta_map,
            sys::Liveness::in_process(),
            false,
            |o| {
                Ok(Storage::in_memory(
                    o.segment_count as u64,
                    1 << o.segment_shift,
                ))
            },
        )?;
        Ok(Stream {
            inner: Arc::new(inner),
        })
    }

    /// Open stream `name` under `root`.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-open-in-{}", std::process::id())); use ipcress::{Stream, StreamOptions};
    /// let made = Stream::create_in(&root, "events", &StreamOptions::ring(1 << 16))?;
    /// assert_eq!(Stream::open_in(&root, "events")?.id(), made.id());
    /// # drop(made); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn open_in(root: &Path, name: &str) -> Result<Stream> {
        Stream::open_with(root, name, false)
    }

    /// Open stream `name` under `root` only to look at it (`ls`, `stat`,
    /// `top`): nothing of the stream is written, not even the repair of
    /// what a crash left (that belongs to the next opener that reads or
    /// writes records), and no lock is taken that would keep that opener
    /// from repairing it. Producers and consumers cannot be made from it.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-inspect-in-{}", std::process::id())); use ipcress::{Stream, StreamOptions}; Stream::create_in(&root, "events", &StreamOptions::ring(1 << 16))?.producer()?.send(b"x")?;
    /// let looked = Stream::inspect_in(&root, "events")?;
    /// assert!(looked.producer().is_err());
    /// # drop(looked); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn inspect_in(root: &Path, name: &str) -> Result<Stream> {
        Stream::open_with(root, name, true)
    }

    pub(crate) fn open_with(root: &Path, name: &str, inspect: bool) -> Result<Stream> {
        // A stream removed (and maybe made anew) while we waited for its
        // lock: look again, a few times, at what the name holds now.
        let gone = || Error::NotFound {
            what: "stream",
            name: name.into(),
        };
        for _ in 0..8 {
            match Stream::open_once(root, name, inspect) {
                Ok(Some(s)) => return Ok(s),
                Ok(None) => continue,
                // Its files went from under us: removed meanwhile.
                Err(e)
                    if !matches!(e, Error::InvalidName { .. })
                        && fs::symlink_metadata(root.join(name)).is_err() =>
                {
                    return Err(gone());
                }
                Err(e) => return Err(e),
            }
        }
        Err(gone())
    }

    /// Open what `name` holds now; None if it was removed while we waited
    /// for its lock.
    fn open_once(root: &Path, name: &str, inspect: bool) -> Result<Option<Stream>> {
        validate_name(name)?;
        let dir = root.join(name);
        let md = fs::symlink_metadata(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                what: "stream",
                name: name.into(),
            },
            _ => Error::from_os(&dir, "stat", e),
        })?;
        if !md.is_dir() {
            return Err(Error::corrupt(
                0,
                format!(
                    "{} is not a directory (symbolic links are refused)",
                    dir.display()
                ),
            ));
        }
        let meta_path = dir.join("meta");
        let meta_map = storage::MetaMap::open(&meta_path)?;
        let meta_file = meta_map.file().expect("opened from its file");
        let live = sys::Liveness::new(&meta_path, meta_file)?;
        let mode = md.mode() & 0o660;
        let inner = Inner::assemble(name, dir, meta_map, live, inspect, |opts| {
            let seg_size = 1u64 << opts.segment_shift;
            match opts.layout {
                Layout::Ring => {
                    Storage::open_ring(&root.join(name), opts.segment_count as u64, seg_size)
                }
                Layout::Log => Ok(Storage::open_log(&root.join(name), seg_size, mode)),
            }
        })?;
        let meta_file = inner.meta_map.file().expect("opened from its file");
        if inspect {
            return Ok(Some(Stream {
                inner: Arc::new(inner),
            }));
        }
        // Whoever opens a stream that nobody else has open repairs it.
        if sys::try_lock(meta_file, sys::Lock::Exclusive) {
            if !same_inode(meta_file, &meta_path) {
                return Ok(None);
            }
            crate::protocol::recovery::recover(&inner)?;
        }
        sys::lock(meta_file, sys::Lock::Shared);
        // `remove_in` holds the exclusive lock while it removes the
        // directory: if we waited for it, our meta file is no longer the
        // stream's (the name is gone, or names a stream made since).
        if !same_inode(meta_file, &meta_path) {
            return Ok(None);
        }
        Ok(Some(Stream {
            inner: Arc::new(inner),
        }))
    }

    /// Give the key of an encrypted stream. Must be called before producers
    /// and consumers are made.
    /// ```
    /// # use ipcress::{Error, Key, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("sealed", &StreamOptions::ring(1 << 16).encrypted(true))?;
    /// assert!(matches!(stream.producer(), Err(Error::KeyRequired { .. })));
    /// assert_eq!(stream.with_key(&Key::from_bytes([7; 32]))?.producer()?.send(b"secret")?, 0);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn with_key(self, key: &Key) -> Result<Stream> {
        let mut inner = Arc::try_unwrap(self.inner).map_err(|_| {
            Error::InvalidOptions("with_key must be called before the stream is shared".into())
        })?;
        if !inner.opts.encrypted {
            return Err(Error::InvalidOptions(format!(
                "stream {} is not encrypted",
                inner.name
            )));
        }
        inner.cipher = Some(Cipher::new(key, inner.id));
        Ok(Stream {
            inner: Arc::new(inner),
        })
    }

    /// Remove stream `name` under `root` and all its files.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-remove-in-{}", std::process::id())); use ipcress::{Stream, StreamOptions};
    /// drop(Stream::create_in(&root, "old", &StreamOptions::ring(1 << 16))?); // closed first
    /// Stream::remove_in(&root, "old")?;
    /// assert!(Stream::list_in(&root)?.is_empty());
    /// # std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn remove_in(root: &Path, name: &str) -> Result<()> {
        let Some(dir) = dir_to_remove(root, name)? else {
            return Ok(());
        };
        // Every process that has the stream open holds a shared `flock` on
        // its meta file (see `open_with`); the exclusive lock, held until
        // the directory is gone, proves nobody does and keeps a new opener
        // out. An opener that waited for it finds the meta file replaced
        // and reports the stream gone. A directory without a meta file is
        // no stream anyone can have open.
        let meta_path = dir.join("meta");
        let _lock = match storage::open_file(&meta_path, false) {
            Ok(meta) => {
                if !lock_for_removal(&meta) {
                    return Err(Error::StreamInUse { name: name.into() });
                }
                Some(meta)
            }
            // No meta file, or one `open_with` refuses too (a link): no
            // process can have this stream open.
            Err(_) => None,
        };
        delete_stream_dir(root, name)
    }

    /// Names of the streams under `root`, sorted. Temporary directories
    /// left by a `create` that died are removed on the way.
    /// ```
    /// # let root = std::env::temp_dir().join(format!("ipcress-doc-list-in-{}", std::process::id())); use ipcress::{Stream, StreamOptions}; let (b, a) = (Stream::create_in(&root, "b", &StreamOptions::ring(1 << 16))?, Stream::create_in(&root, "a", &StreamOptions::ring(1 << 16))?);
    /// assert_eq!(Stream::list_in(&root)?, ["a", "b"]);
    /// # drop((a, b)); std::fs::remove_dir_all(&root).unwrap(); Ok::<(), ipcress::Error>(())
    /// ```
    pub fn list_in(root: &Path) -> Result<Vec<String>> {
        sweep_temp_dirs(root);
        let rd = match fs::read_dir(root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::from_os(root, "list", e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_name(n).is_ok() && !n.starts_with(TEMP_PREFIX))
            .filter(|n| root.join(n).join("meta").exists())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The stream's name.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.name(), "s");
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// The stream's directory (empty for a stream in memory).
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.dir(), std::path::Path::new("")); // in memory; see create_in
    /// ```
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
    /// The random 128-bit stream id.
    /// ```
    /// # use ipcress::{Stream, StreamOptions}; let (s, t) = (Stream::create_in_memory("s", &StreamOptions::ring(1 << 16)).unwrap(), Stream::create_in_memory("s", &StreamOptions::ring(1 << 16)).unwrap());
    /// assert_ne!(s.id(), t.id());
    /// ```
    pub fn id(&self) -> [u8; 16] {
        self.inner.id
    }
    /// The stream id as 32 hex digits.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert!(s.id_hex().starts_with(&format!("{:02x}", s.id()[0])) && s.id_hex().len() == 32);
    /// ```
    pub fn id_hex(&self) -> String {
        self.inner.id.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// Position just past the last claimed frame.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// s.producer().unwrap().send(b"abc").unwrap();
    /// assert_eq!(s.tail(), 32);
    /// ```
    pub fn tail(&self) -> u64 {
        self.inner.tail()
    }
    /// Oldest retained position.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.head(), 0);
    /// ```
    pub fn head(&self) -> u64 {
        self.inner.head()
    }
    /// Layout.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.layout(), ipcress::Layout::Ring);
    /// ```
    pub fn layout(&self) -> Layout {
        self.inner.opts.layout
    }
    /// Policy.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.policy(), ipcress::Policy::Block);
    /// ```
    pub fn policy(&self) -> Policy {
        self.inner.opts.policy
    }
    /// Checksum setting.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.checksum(), ipcress::Checksum::Crc32c);
    /// ```
    pub fn checksum(&self) -> Checksum {
        self.inner.opts.checksum
    }
    /// Format version of the stream's files (4: records carry their
    /// commit time; 3: they do not).
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.format_version(), ipcress::format::VERSION);
    /// ```
    pub fn format_version(&self) -> u32 {
        self.inner.opts.format_version
    }
    /// What a reader at `position` has left to read: the messages
    /// committed from there to the tail (up to the first claim not yet
    /// committed; from the oldest retained record if `position` is older),
    /// and the commit time of the first of them (None: none left, or a
    /// stream of format 3). It walks the headers in between.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16))?;
    /// let mut producer = s.producer()?;
    /// let second = (producer.send(b"a")?, producer.send(b"b")?).1;
    /// producer.send(b"c")?;
    /// let b = s.backlog(second)?;
    /// assert_eq!(b.records, 2);
    /// assert!(b.oldest.is_some());
    /// assert_eq!(s.backlog(s.tail())?.records, 0);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn backlog(&self, position: u64) -> Result<Backlog> {
        let (records, t) = crate::protocol::seek::backlog(&self.inner, position)?;
        Ok(Backlog {
            records,
            oldest: t.map(|ns| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns)),
        })
    }
    /// Compression setting.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.compression(), ipcress::Compression::None);
    /// ```
    pub fn compression(&self) -> Compression {
        self.inner.opts.compression
    }
    /// Whether records are encrypted.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert!(!s.encrypted());
    /// ```
    pub fn encrypted(&self) -> bool {
        self.inner.opts.encrypted
    }
    /// Segment size in bytes.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.segment_size(), 1 << 14); // 4 segments by default
    /// ```
    pub fn segment_size(&self) -> u64 {
        self.inner.seg_size
    }
    /// Ring capacity in bytes (None for a log).
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert_eq!(s.capacity(), Some(1 << 16));
    /// ```
    pub fn capacity(&self) -> Option<u64> {
        (self.inner.opts.layout == Layout::Ring).then_some(self.inner.capacity)
    }
    /// Largest payload that `send`/`reserve` accept in one frame.
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert!(s.producer().unwrap().send(&vec![0; s.max_message_len() + 1]).is_err());
    /// ```
    pub fn max_message_len(&self) -> usize {
        self.inner.max_payload()
            - if self.inner.opts.encrypted {
                crate::codec::TAG_LEN
            } else {
                0
            }
    }
    /// Write mapped data back to disk (durable streams).
    /// ```
    /// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16)).unwrap();
    /// assert!(s.flush().is_ok()); // nothing to write back for a stream in memory
    /// ```
    pub fn flush(&self) -> Result<()> {
        self.inner.storage.flush()?;
        self.inner
            .meta_map
            .flush()
            .map_err(|e| Error::io("msync meta", e))
    }
}

/// The directory of stream `name` under `root`, to be removed; None when
/// the name was not a directory but a link or a file, which is removed
/// itself (a link out of the root is never followed).
pub(crate) fn dir_to_remove(root: &Path, name: &str) -> Result<Option<PathBuf>> {
    validate_name(name)?;
    let dir = root.join(name);
    let md = fs::symlink_metadata(&dir).map_err(|_| Error::NotFound {
        what: "stream",
        name: name.into(),
    })?;
    if !md.is_dir() {
        fs::remove_file(&dir).map_err(|e| Error::from_os(&dir, "remove", e))?;
        return Ok(None);
    }
    Ok(Some(dir))
}

/// What a reader has left to read ([`Stream::backlog`]).
/// ```
/// # let s = ipcress::Stream::create_in_memory("s", &ipcress::StreamOptions::ring(1 << 16))?;
/// let b: ipcress::Backlog = s.backlog(0)?;
/// assert_eq!((b.records, b.oldest), (0, None));
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backlog {
    /// Messages committed and not yet read.
    pub records: u64,
    /// Commit time of the oldest of them (None: none, or no times).
    pub oldest: Option<std::time::SystemTime>,
}
