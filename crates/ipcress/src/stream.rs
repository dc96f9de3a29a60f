//! Streams: names, options, creating and opening, the meta file, and the
//! shared bookkeeping (consumer slots, flow control, retention).

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::Duration;

use crate::codec::{Cipher, Compression, Key};
use crate::error::{Error, Result};
use crate::format::{self, cslot, meta, pslot};
use crate::shm::Region;
use crate::storage::{self, Seg, Storage};
use crate::sys::{self, Mapping, SlotRef};

/// How the stream keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// One preallocated file of N segments reused in place.
    Ring,
    /// One file per segment, rolled and dropped by retention.
    Log,
}

/// What producers do when the ring is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Never overwrite what a holding consumer has not read; wait.
    #[default]
    Block,
    /// Never wait; lapped consumers get [`Error::Lagged`].
    Overwrite,
}

/// Per-record integrity check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Checksum {
    /// CRC-32C over header and payload (default).
    #[default]
    Crc32c,
    /// No checksum (zero-copy bulk path).
    None,
}

macro_rules! named_enum {
    ($t:ty { $($v:ident => $n:literal),* $(,)? }) => {
        impl $t {
            /// The name the CLI and `stat` use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$v => $n),*
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(Layout { Ring => "ring", Log => "log" });
named_enum!(Policy { Block => "block", Overwrite => "overwrite" });
named_enum!(Checksum { Crc32c => "crc32c", None => "none" });

/// Options fixed when a stream is created.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub(crate) layout: Layout,
    pub(crate) segment_shift: u32,
    pub(crate) segment_count: u32,
    pub(crate) policy: Policy,
    pub(crate) checksum: Checksum,
    pub(crate) compression: Compression,
    pub(crate) encrypted: bool,
    pub(crate) retain_bytes: u64,
    pub(crate) retain_age: Option<Duration>,
    pub(crate) durable_timeout: Option<Duration>,
    pub(crate) unblock_timeout: Duration,
    pub(crate) mode: u32,
    pub(crate) requested_capacity: u64,
}

fn log2_exact(n: u64) -> Option<u32> {
    n.is_power_of_two().then(|| n.trailing_zeros())
}

impl StreamOptions {
    /// A ring of `capacity` bytes (a power of two, at least 8 KiB), split
    /// into 4 segments unless [`segments`](Self::segments) says otherwise.
    pub fn ring(capacity: u64) -> StreamOptions {
        let mut o = StreamOptions::base(Layout::Ring);
        o.requested_capacity = capacity;
        o.segment_count = 4;
        o
    }

    /// A log of `segment_size`-byte segment files (a power of two).
    pub fn log(segment_size: u64) -> StreamOptions {
        let mut o = StreamOptions::base(Layout::Log);
        o.segment_shift = log2_exact(segment_size).unwrap_or(0);
        o.requested_capacity = segment_size;
        o
    }

    fn base(layout: Layout) -> StreamOptions {
        StreamOptions {
            layout,
            segment_shift: 0,
            segment_count: 0,
            policy: Policy::Block,
            checksum: Checksum::Crc32c,
            compression: Compression::None,
            encrypted: false,
            retain_bytes: 0,
            retain_age: None,
            durable_timeout: None,
            unblock_timeout: Duration::from_secs(1),
            mode: 0o600,
            requested_capacity: 0,
        }
    }

    /// Number of segments of a ring (a power of two, 2..=65536).
    pub fn segments(mut self, n: u32) -> Self {
        self.segment_count = n;
        self
    }
    /// Full-ring policy.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    /// Checksum setting.
    pub fn checksum(mut self, c: Checksum) -> Self {
        self.checksum = c;
        self
    }
    /// Compression applied per record.
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    /// Encrypt records with XChaCha20-Poly1305 (the key is given when the
    /// stream is opened, never stored).
    pub fn encrypted(mut self, on: bool) -> Self {
        self.encrypted = on;
        self
    }
    /// Log retention: keep at least this many newest bytes (0 = all).
    pub fn retain_bytes(mut self, n: u64) -> Self {
        self.retain_bytes = n;
        self
    }
    /// Log retention: drop segments whose data is older than this.
    pub fn retain_age(mut self, d: Duration) -> Self {
        self.retain_age = Some(d);
        self
    }
    /// A dead durable consumer stops holding producers back after this long.
    pub fn durable_timeout(mut self, d: Duration) -> Self {
        self.durable_timeout = Some(d);
        self
    }
    /// How long a reader waits on a dead producer's claim before aborting it.
    pub fn unblock_timeout(mut self, d: Duration) -> Self {
        self.unblock_timeout = d;
        self
    }
    /// File mode of the stream's files (0600 by default; 0660 shares with
    /// the group).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    fn resolve(&self) -> Result<StreamOptions> {
        let mut o = self.clone();
        let bad = |m: String| Err(Error::InvalidOptions(m));
        if o.mode & !0o660 != 0 || o.mode & 0o600 != 0o600 {
            return bad(format!("mode {:o} must be 0600 or 0660/0640", o.mode));
        }
        match o.layout {
            Layout::Ring => {
                let Some(cap_shift) = log2_exact(o.requested_capacity) else {
                    return bad(format!(
                        "ring capacity {} is not a power of two",
                        o.requested_capacity
                    ));
                };
                let Some(count_shift) = log2_exact(o.segment_count as u64) else {
                    return bad(format!(
                        "segment count {} is not a power of two",
                        o.segment_count
                    ));
                };
                if o.segment_count < 2 || o.segment_count > format::MAX_SEGMENTS {
                    return bad("a ring needs 2 to 65536 segments".into());
                }
                if cap_shift < count_shift + format::MIN_SEGMENT_SHIFT {
                    return bad(format!(
                        "ring capacity {} is too small for {} segments of at least 4 KiB",
                        o.requested_capacity, o.segment_count
                    ));
                }
                o.segment_shift = cap_shift - count_shift;
                if o.segment_shift > format::MAX_SEGMENT_SHIFT {
                    return bad("segments larger than 1 GiB: use more segments".into());
                }
            }
            Layout::Log => {
                if !(format::MIN_SEGMENT_SHIFT..=format::MAX_SEGMENT_SHIFT)
                    .contains(&o.segment_shift)
                {
                    return bad(format!(
                        "log segment size {} must be a power of two from 4 KiB to 1 GiB",
                        o.requested_capacity
                    ));
                }
                o.segment_count = 0;
            }
        }
        if o.layout == Layout::Ring && (o.retain_bytes != 0 || o.retain_age.is_some()) {
            return bad("retention applies to log streams only".into());
        }
        Ok(o)
    }
}

/// Bytes a producer or consumer faults in ahead of where it works on a
/// ring, at the least (`Inner::prefault_ahead`).
const PREFAULT_CHUNK: u64 = 2 << 20;
/// Chunks of a ring tracked per process, at most (larger rings use larger
/// chunks).
const MAX_FAULT_CHUNKS: u64 = 1 << 16;

/// Where streams live: `$IPCRESS_DIR`, else `/dev/shm/ipcress`.
pub fn default_root() -> PathBuf {
    std::env::var_os("IPCRESS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm/ipcress"))
}

/// Check a stream or consumer name: `[A-Za-z0-9._-]{1,128}`, not `.`/`..`.
pub fn validate_name(name: &str) -> Result<()> {
    let err = |reason| {
        Err(Error::InvalidName {
            name: name.chars().take(200).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return err("empty");
    }
    if name.len() > 128 {
        return err("longer than 128 characters");
    }
    if name == "." || name == ".." {
        return err("reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return err("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// A handle on a stream, cheap to clone and to share between threads.
#[derive(Clone)]
pub struct Stream {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Opened by `Stream::inspect_in`: looks, never writes.
    pub inspect: bool,
    pub name: String,
    pub dir: PathBuf,
    _meta_file: fs::File,
    _meta_map: Mapping,
    pub meta: Region,
    pub opts: StreamOptions,
    pub storage: Storage,
    pub id: [u8; 16],
    pub seg_shift: u32,
    pub seg_size: u64,
    /// Ring capacity in bytes; u64::MAX for a log.
    pub capacity: u64,
    pub lap_shift: u32,
    pub cipher: Option<Cipher>,
    /// Ring: which chunks of the ring this process has faulted in, one bit
    /// per chunk of `1 << fault_shift` bytes (see `prefault_ahead`).
    faulted: Box<[AtomicU64]>,
    /// Chunks faulted in so far; all of them ends the bookkeeping.
    faulted_count: AtomicU64,
    fault_shift: u32,
    /// Who holds which slot (OFD locks on the meta file's lock bytes).
    pub live: sys::Liveness,
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
    pub fn create(name: &str, opts: &StreamOptions) -> Result<Stream> {
        Stream::create_in(&default_root(), name, opts)
    }

    /// Open stream `name` under the default root.
    pub fn open(name: &str) -> Result<Stream> {
        Stream::open_in(&default_root(), name)
    }

    /// Create stream `name` under `root`.
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
        Stream::open_in(root, name)
    }

    /// Open stream `name` under `root`.
    pub fn open_in(root: &Path, name: &str) -> Result<Stream> {
        Stream::open_with(root, name, false)
    }

    /// Open stream `name` under `root` only to look at it (`ls`, `stat`,
    /// `top`): nothing of the stream is written, not even the repair of
    /// what a crash left (that belongs to the next opener that reads or
    /// writes records), and no lock is taken that would keep that opener
    /// from repairing it. Producers and consumers cannot be made from it.
    pub fn inspect_in(root: &Path, name: &str) -> Result<Stream> {
        Stream::open_with(root, name, true)
    }

    fn open_with(root: &Path, name: &str, inspect: bool) -> Result<Stream> {
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
        let file = storage::open_file(&meta_path, true)?;
        let map = Mapping::map(&file, format::META_LEN, &meta_path)?;
        let live = sys::Liveness::new(&meta_path, &file)?;
        // SAFETY: the mapping is META_LEN bytes, page aligned, and lives in
        // Inner next to the region for the region's whole life.
        let meta = unsafe { Region::new(map.ptr(), map.len()) };
        let opts = read_options(&meta)?;
        let mut id = [0u8; 16];
        meta.read(meta::STREAM_ID, &mut id);
        let seg_shift = opts.segment_shift;
        let seg_size = 1u64 << seg_shift;
        let (capacity, lap_shift) = match opts.layout {
            Layout::Ring => {
                let cap = seg_size * opts.segment_count as u64;
                (cap, cap.trailing_zeros())
            }
            Layout::Log => (u64::MAX, seg_shift),
        };
        // One bit per chunk: at least PREFAULT_CHUNK bytes, at most
        // MAX_FAULT_CHUNKS chunks, at most the whole ring.
        let fault_shift = match opts.layout {
            Layout::Ring => PREFAULT_CHUNK
                .trailing_zeros()
                .max(lap_shift.saturating_sub(MAX_FAULT_CHUNKS.trailing_zeros()))
                .min(lap_shift),
            Layout::Log => 0,
        };
        let faulted = match opts.layout {
            Layout::Ring => (0..(capacity >> fault_shift).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            Layout::Log => Box::default(),
        };
        let storage = match opts.layout {
            Layout::Ring => Storage::open_ring(&dir, opts.segment_count as u64, seg_size)?,
            Layout::Log => Storage::open_log(&dir, seg_size, md.mode() & 0o660),
        };
        let inner = Inner {
            name: name.to_string(),
            dir,
            meta,
            _meta_map: map,
            _meta_file: file,
            opts,
            storage,
            id,
            seg_shift,
            seg_size,
            capacity,
            lap_shift,
            cipher: None,
            faulted,
            faulted_count: AtomicU64::new(0),
            fault_shift,
            live,
            inspect,
        };
        if inspect {
            return Ok(Some(Stream {
                inner: Arc::new(inner),
            }));
        }
        // Whoever opens a stream that nobody else has open repairs it.
        if sys::try_lock(&inner._meta_file, sys::Lock::Exclusive) {
            if !same_inode(&inner._meta_file, &meta_path) {
                return Ok(None);
            }
            crate::recovery::recover(&inner)?;
        }
        sys::lock(&inner._meta_file, sys::Lock::Shared);
        // `remove_in` holds the exclusive lock while it removes the
        // directory: if we waited for it, our meta file is no longer the
        // stream's (the name is gone, or names a stream made since).
        if !same_inode(&inner._meta_file, &meta_path) {
            return Ok(None);
        }
        Ok(Some(Stream {
            inner: Arc::new(inner),
        }))
    }

    /// Give the key of an encrypted stream. Must be called before producers
    /// and consumers are made.
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
    pub fn remove_in(root: &Path, name: &str) -> Result<()> {
        validate_name(name)?;
        let dir = root.join(name);
        let md = fs::symlink_metadata(&dir).map_err(|_| Error::NotFound {
            what: "stream",
            name: name.into(),
        })?;
        if !md.is_dir() {
            // Never follow a link out of the root: remove the link itself.
            return fs::remove_file(&dir).map_err(|e| Error::from_os(&dir, "remove", e));
        }
        // Every process that has the stream open holds a shared `flock` on
        // its meta file (see `open_with`); the exclusive lock, held until
        // the directory is gone, proves nobody does and keeps a new opener
        // out. An opener that waited for it finds the meta file replaced
        // and reports the stream gone. A directory without a meta file is
        // no stream anyone can have open.
        let meta_path = dir.join("meta");
        let _lock = match storage::open_file(&meta_path, false) {
            Ok(meta) => {
                let mut tries = 0;
                while !sys::try_lock(&meta, sys::Lock::Exclusive) {
                    tries += 1;
                    if tries >= REMOVE_LOCK_TRIES {
                        return Err(Error::StreamInUse { name: name.into() });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Some(meta)
            }
            // No meta file, or one `open_with` refuses too (a link): no
            // process can have this stream open.
            Err(_) => None,
        };
        fs::remove_dir_all(&dir).map_err(|e| Error::from_os(&dir, "remove", e))
    }

    /// Names of the streams under `root`, sorted. Temporary directories
    /// left by a `create` that died are removed on the way.
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
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
    /// The random 128-bit stream id.
    pub fn id(&self) -> [u8; 16] {
        self.inner.id
    }
    /// The stream id as 32 hex digits.
    pub fn id_hex(&self) -> String {
        self.inner.id.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// Position just past the last claimed frame.
    pub fn tail(&self) -> u64 {
        self.inner.tail()
    }
    /// Oldest retained position.
    pub fn head(&self) -> u64 {
        self.inner.head()
    }
    /// Layout.
    pub fn layout(&self) -> Layout {
        self.inner.opts.layout
    }
    /// Policy.
    pub fn policy(&self) -> Policy {
        self.inner.opts.policy
    }
    /// Checksum setting.
    pub fn checksum(&self) -> Checksum {
        self.inner.opts.checksum
    }
    /// Compression setting.
    pub fn compression(&self) -> Compression {
        self.inner.opts.compression
    }
    /// Whether records are encrypted.
    pub fn encrypted(&self) -> bool {
        self.inner.opts.encrypted
    }
    /// Segment size in bytes.
    pub fn segment_size(&self) -> u64 {
        self.inner.seg_size
    }
    /// Ring capacity in bytes (None for a log).
    pub fn capacity(&self) -> Option<u64> {
        (self.inner.opts.layout == Layout::Ring).then_some(self.inner.capacity)
    }
    /// Largest payload that `send`/`reserve` accept in one frame.
    pub fn max_message_len(&self) -> usize {
        self.inner.max_payload()
            - if self.inner.opts.encrypted {
                crate::codec::TAG_LEN
            } else {
                0
            }
    }
    /// Write mapped data back to disk (durable streams).
    pub fn flush(&self) -> Result<()> {
        self.inner.storage.flush()?;
        self.inner
            ._meta_map
            .flush()
            .map_err(|e| Error::io("msync meta", e))
    }
}

/// Prefix of the directories `create` builds a stream in before it renames
/// it into place: `.tmp-NAME-PID-RAND`.
const TEMP_PREFIX: &str = ".tmp-";

/// Open a directory without following a link, for its lock.
fn open_dir(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Whether `path` still names the file (or directory) `f` is open on.
fn same_inode(f: &fs::File, path: &Path) -> bool {
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// How many times (10 ms apart) `remove_in` tries for the meta file's
/// exclusive lock: a process that is opening or closing the stream holds
/// its shared lock only for a moment.
const REMOVE_LOCK_TRIES: u32 = 20;

/// Make a fresh temporary directory for stream `name` and take an
/// exclusive `flock` on it, held until the returned file is dropped. The
/// kernel drops the lock when its holder dies, however it dies: a temporary
/// directory nobody holds is abandoned (see `sweep_temp_dirs`). A sweeper
/// may take the lock between our mkdir and our flock; then the directory is
/// (being) removed and we try another name.
fn make_temp_dir(root: &Path, name: &str, mode: u32) -> Result<(PathBuf, fs::File)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let tmp = root.join(format!(
            "{TEMP_PREFIX}{name}-{}-{:x}",
            std::process::id(),
            random_u64()
        ));
        DirBuilder::new()
            .mode(mode)
            .create(&tmp)
            .map_err(|e| Error::from_os(&tmp, "create directory", e))?;
        let dir = open_dir(&tmp).map_err(|e| Error::from_os(&tmp, "open", e))?;
        if sys::try_lock(&dir, sys::Lock::Exclusive) && same_inode(&dir, &tmp) {
            return Ok((tmp, dir));
        }
        if tries >= 16 {
            return Err(Error::io(
                format!("lock {}", tmp.display()),
                std::io::Error::other("temporary directory taken away 16 times"),
            ));
        }
    }
}

/// Remove the temporary directories under `root` whose creator is gone:
/// those whose `flock` we can take (a live creator holds it until it has
/// renamed the directory into place). Best effort: what we may not open or
/// remove stays for its owner to sweep.
fn sweep_temp_dirs(root: &Path) {
    let Ok(rd) = fs::read_dir(root) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        if !e
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
            || !e.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let path = e.path();
        let Ok(dir) = open_dir(&path) else { continue };
        // Still the same directory once locked: not one renamed into a
        // stream meanwhile (its name changed) or made anew.
        if sys::try_lock(&dir, sys::Lock::Exclusive) && same_inode(&dir, &path) {
            tracing::warn!(dir = %path.display(), "removing a stream left half-created by a process that died");
            let _ = fs::remove_dir_all(&path);
        }
    }
}

fn write_new_stream(dir: &Path, o: &StreamOptions) -> Result<()> {
    let meta_path = dir.join("meta");
    let f = storage::create_file(&meta_path, format::META_LEN as u64, o.mode)?;
    let map = Mapping::map(&f, format::META_LEN, &meta_path)?;
    // SAFETY: fresh private mapping of META_LEN bytes, alive for this scope.
    let m = unsafe { Region::new(map.ptr(), map.len()) };
    let mut h = [0u8; meta::OPTIONS_CRC + 4];
    let mut put = |off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
    put(meta::MAGIC, &format::MAGIC.to_le_bytes());
    put(meta::VERSION, &format::VERSION.to_le_bytes());
    let layout = match o.layout {
        Layout::Ring => format::LAYOUT_RING,
        Layout::Log => format::LAYOUT_LOG,
    };
    put(meta::LAYOUT, &layout.to_le_bytes());
    put(meta::SEGMENT_SHIFT, &o.segment_shift.to_le_bytes());
    put(meta::SEGMENT_COUNT, &o.segment_count.to_le_bytes());
    let policy = match o.policy {
        Policy::Block => format::POLICY_BLOCK,
        Policy::Overwrite => format::POLICY_OVERWRITE,
    };
    put(meta::POLICY, &policy.to_le_bytes());
    let ck: u32 = match o.checksum {
        Checksum::None => 0,
        Checksum::Crc32c => 1,
    };
    put(meta::CHECKSUM, &ck.to_le_bytes());
    let (ckind, clevel) = o.compression.to_code();
    put(meta::COMPRESSION, &ckind.to_le_bytes());
    put(meta::COMPRESSION_LEVEL, &clevel.to_le_bytes());
    put(meta::ENCRYPTION, &(o.encrypted as u32).to_le_bytes());
    put(meta::RETAIN_BYTES, &o.retain_bytes.to_le_bytes());
    put(
        meta::RETAIN_AGE_MS,
        &o.retain_age
            .map_or(0, |d| d.as_millis() as u64)
            .to_le_bytes(),
    );
    put(
        meta::DURABLE_TIMEOUT_MS,
        &o.durable_timeout
            .map_or(0, |d| d.as_millis().max(1) as u64)
            .to_le_bytes(),
    );
    put(
        meta::UNBLOCK_TIMEOUT_MS,
        &(o.unblock_timeout.as_millis().max(1) as u64).to_le_bytes(),
    );
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| Error::io("random stream id", std::io::Error::other(e.to_string())))?;
    put(meta::STREAM_ID, &id);
    put(meta::CREATED_MS, &sys::now_ms().to_le_bytes());
    let crc = crc32c::crc32c(&h[..meta::OPTIONS_CRC]);
    h[meta::OPTIONS_CRC..].copy_from_slice(&crc.to_le_bytes());
    m.write(0, &h);
    map.flush().map_err(|e| Error::io("msync meta", e))?;
    if o.layout == Layout::Ring {
        let len = (o.segment_count as u64) << o.segment_shift;
        storage::create_file(&dir.join("data"), len, o.mode)?;
    }
    Ok(())
}

fn read_options(m: &Region) -> Result<StreamOptions> {
    let mut h = [0u8; meta::OPTIONS_CRC + 4];
    m.read(0, &mut h);
    let u32_at = |off: usize| u32::from_le_bytes(h[off..off + 4].try_into().expect("4 bytes"));
    let u64_at = |off: usize| u64::from_le_bytes(h[off..off + 8].try_into().expect("8 bytes"));
    let bad = |reason: String| Err(Error::corrupt(0, format!("meta file: {reason}")));
    if u64_at(meta::MAGIC) != format::MAGIC {
        return bad("bad magic (not an ipcress stream)".into());
    }
    let version = u32_at(meta::VERSION);
    if version != format::VERSION {
        return Err(Error::Incompatible {
            found: version,
            expected: format::VERSION,
        });
    }
    if crc32c::crc32c(&h[..meta::OPTIONS_CRC]) != u32_at(meta::OPTIONS_CRC) {
        return bad("options checksum mismatch".into());
    }
    let layout = match u32_at(meta::LAYOUT) {
        format::LAYOUT_RING => Layout::Ring,
        format::LAYOUT_LOG => Layout::Log,
        l => return bad(format!("unknown layout {l}")),
    };
    let shift = u32_at(meta::SEGMENT_SHIFT);
    if !(format::MIN_SEGMENT_SHIFT..=format::MAX_SEGMENT_SHIFT).contains(&shift) {
        return bad(format!("segment shift {shift} out of range"));
    }
    let count = u32_at(meta::SEGMENT_COUNT);
    match layout {
        Layout::Ring
            if !(2..=format::MAX_SEGMENTS).contains(&count) || !count.is_power_of_two() =>
        {
            return bad(format!("segment count {count} out of range"));
        }
        Layout::Ring if shift + count.trailing_zeros() > 40 => {
            return bad("ring larger than 1 TiB".into());
        }
        Layout::Log if count != 0 => return bad("log with a segment count".into()),
        _ => {}
    }
    let policy = match u32_at(meta::POLICY) {
        format::POLICY_BLOCK => Policy::Block,
        format::POLICY_OVERWRITE => Policy::Overwrite,
        p => return bad(format!("unknown policy {p}")),
    };
    let checksum = match u32_at(meta::CHECKSUM) {
        0 => Checksum::None,
        1 => Checksum::Crc32c,
        c => return bad(format!("unknown checksum {c}")),
    };
    let Some(compression) = Compression::from_code(
        u32_at(meta::COMPRESSION),
        u32_at(meta::COMPRESSION_LEVEL) as i32,
    ) else {
        return bad("unknown compression".into());
    };
    let encrypted = match u32_at(meta::ENCRYPTION) {
        0 => false,
        1 => true,
        e => return bad(format!("unknown encryption {e}")),
    };
    let ms = |v: u64| (v != 0).then(|| Duration::from_millis(v));
    Ok(StreamOptions {
        layout,
        segment_shift: shift,
        segment_count: count,
        policy,
        checksum,
        compression,
        encrypted,
        retain_bytes: u64_at(meta::RETAIN_BYTES),
        retain_age: ms(u64_at(meta::RETAIN_AGE_MS)),
        durable_timeout: ms(u64_at(meta::DURABLE_TIMEOUT_MS)),
        unblock_timeout: ms(u64_at(meta::UNBLOCK_TIMEOUT_MS)).unwrap_or(Duration::from_secs(1)),
        mode: 0o600,
        requested_capacity: 0,
    })
}

// ---- shared bookkeeping ------------------------------------------------

/// A live view of one consumer slot, for stats.
#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    /// Slot index.
    pub slot: usize,
    /// Name (durable consumer or group); empty for subscribers.
    pub name: String,
    /// "durable", "subscriber", "group", "member" or "user".
    pub kind: &'static str,
    /// Next position to read (for a group, the group's next unclaimed position).
    pub position: u64,
    /// Owner pid (0 if none).
    pub pid: u32,
    /// Whether the owner process is alive.
    pub alive: bool,
    /// Messages read through this slot.
    pub messages: u64,
    /// Last heartbeat, ms since the epoch.
    pub heartbeat_ms: u64,
}

impl Inner {
    /// Fault in the ring's pages from `from` (a position) to one chunk
    /// past `to`, the chunks this process has not faulted in yet, and
    /// return the position up to which claims and reads need not call
    /// again (the end of the chunk holding `to - 1`; `u64::MAX` once the
    /// whole ring is in, and for a log, whose segments are mapped as they
    /// come). Producers and consumers call it only when they pass the
    /// position it returned, so the first lap takes no page faults while
    /// a process touches only a bounded window ahead of where it works:
    /// attaching costs the same on a ring of any size (ARCHITECTURE.md).
    pub fn prefault_ahead(&self, from: u64, to: u64) -> u64 {
        let chunks = self.capacity >> self.fault_shift;
        if self.faulted.is_empty() || self.faulted_count.load(Relaxed) >= chunks {
            return u64::MAX;
        }
        // Saturating: a consumer's position may come from a damaged word.
        let first = from >> self.fault_shift;
        let last = to.max(from.saturating_add(1)).saturating_sub(1) >> self.fault_shift;
        // Whole chunks, wrapping around the ring, at most once each.
        for k in first..=last.saturating_add(1).min(first.saturating_add(chunks - 1)) {
            let c = k % chunks;
            let bit = 1u64 << (c % 64);
            if self.faulted[(c / 64) as usize].fetch_or(bit, Relaxed) & bit == 0 {
                self.storage
                    .prefault(c << self.fault_shift, 1 << self.fault_shift);
                self.faulted_count.fetch_add(1, Relaxed);
            }
        }
        last.saturating_add(1).saturating_mul(1 << self.fault_shift)
    }

    #[inline]
    pub fn tail_word(&self) -> &AtomicU64 {
        self.meta.u64_at(meta::TAIL)
    }
    #[inline]
    pub fn tail(&self) -> u64 {
        self.tail_word().load(Acquire) & !format::TAIL_LOCK
    }
    #[inline]
    pub fn head_word(&self) -> &AtomicU64 {
        self.meta.u64_at(meta::HEAD)
    }
    #[inline]
    pub fn head(&self) -> u64 {
        self.head_word().load(Acquire)
    }
    #[inline]
    pub fn gen_word(&self) -> &AtomicU64 {
        self.meta.u64_at(meta::EPOCH)
    }
    #[inline]
    pub fn data_seq(&self) -> &AtomicU32 {
        self.meta.u32_at(meta::DATA_SEQ)
    }
    #[inline]
    pub fn data_waiters(&self) -> &AtomicU32 {
        self.meta.u32_at(meta::DATA_WAITERS)
    }
    #[inline]
    pub fn space_seq(&self) -> &AtomicU32 {
        self.meta.u32_at(meta::SPACE_SEQ)
    }
    #[inline]
    pub fn space_waiters(&self) -> &AtomicU32 {
        self.meta.u32_at(meta::SPACE_WAITERS)
    }
    #[inline]
    pub fn frag_lock(&self) -> &AtomicU64 {
        self.meta.u64_at(meta::FRAG_LOCK)
    }
    #[inline]
    pub fn lap(&self, pos: u64) -> u64 {
        format::lap_of(pos, self.lap_shift)
    }
    #[inline]
    pub fn seg_index(&self, pos: u64) -> u64 {
        pos >> self.seg_shift
    }
    #[inline]
    pub fn seg_offset(&self, pos: u64) -> u64 {
        pos & (self.seg_size - 1)
    }
    /// Largest stored payload of one frame: frames are at most half a
    /// segment, so a claim that crossed a segment end always fits after it.
    pub fn max_payload(&self) -> usize {
        self.seg_size as usize / 2 - format::HEADER_LEN
    }
    pub fn checksummed(&self) -> bool {
        self.opts.checksum == Checksum::Crc32c
    }
    pub fn is_ring(&self) -> bool {
        self.opts.layout == Layout::Ring
    }

    /// Read the header at position `p` of `seg` (word A with acquire
    /// ordering, then word B if it lies in the segment) and validate it.
    /// Word B is returned too, for the CRC.
    #[inline(always)]
    pub fn read_header(&self, seg: &Seg, p: u64) -> (Result<format::Slot, &'static str>, u64) {
        let off = self.seg_offset(p) as usize;
        let a = seg.region.u64_at(off).load(Acquire);
        let b = if off + format::HEADER_LEN <= self.seg_size as usize {
            seg.region.u64_at(off + 8).load(Relaxed)
        } else {
            0
        };
        (
            format::parse(a, b, p, self.lap(p), off as u64, self.seg_size),
            b,
        )
    }

    pub fn segment(&self, index: u64, create: bool) -> Result<Option<Seg>> {
        self.storage.segment(index, create)
    }

    pub fn cslot(&self, i: usize) -> Region {
        self.meta.sub(
            meta::CONSUMERS + i * format::CONSUMER_SLOT_LEN,
            format::CONSUMER_SLOT_LEN,
        )
    }
    pub fn pslot(&self, i: usize) -> Region {
        self.meta.sub(
            format::PRODUCERS + i * format::PRODUCER_SLOT_LEN,
            format::PRODUCER_SLOT_LEN,
        )
    }

    /// Wake consumers parked on new data, if any.
    #[inline(always)]
    pub fn wake_data(&self) {
        if self.data_waiters().load(SeqCst) != 0 {
            self.data_seq().fetch_add(1, SeqCst);
            sys::futex_wake_all(self.data_seq());
        }
    }

    /// Wake producers parked on space, if any. Callers have published their
    /// new position first.
    #[inline]
    pub fn wake_space(&self) {
        std::sync::atomic::fence(SeqCst);
        if self.space_waiters().load(Relaxed) != 0 {
            self.space_seq().fetch_add(1, SeqCst);
            sys::futex_wake_all(self.space_seq());
        }
    }

    /// Read a slot's name (validated; garbage gives an empty name).
    pub fn slot_name(&self, s: &Region) -> String {
        let n = s.u32_at(cslot::NAME_LEN).load(Acquire) as usize;
        if n == 0 || n > cslot::NAME_MAX {
            return String::new();
        }
        let mut b = vec![0u8; n];
        s.read(cslot::NAME, &mut b);
        String::from_utf8(b)
            .ok()
            .filter(|n| validate_name(n).is_ok())
            .unwrap_or_default()
    }

    /// Take a free consumer slot (or one whose process is gone and that
    /// need not survive), fill it, and publish it. Returns its index and
    /// the hold on its lock byte: the slot is this process's while the hold
    /// lives.
    pub fn alloc_cslot(
        &self,
        kind: u32,
        name: &str,
        group: u32,
        position: u64,
    ) -> Result<(usize, sys::Hold)> {
        for reclaim in [false, true] {
            for i in 0..format::CONSUMER_SLOTS {
                let s = self.cslot(i);
                let owner = s.u64_at(cslot::OWNER).load(Acquire);
                let candidate = if reclaim {
                    let k = s.u32_at(cslot::KIND).load(Acquire);
                    let ready = s.u32_at(cslot::STATE).load(Acquire) == 1;
                    owner != 0
                        && (!ready || k == format::KIND_SUBSCRIBER)
                        && !self.live.is_alive(SlotRef::Consumer(i))
                } else {
                    owner == 0
                };
                if !candidate {
                    continue;
                }
                // Holding the lock byte, nobody else takes the slot.
                let Some(hold) = self.live.try_hold(SlotRef::Consumer(i))? else {
                    continue;
                };
                if s.u64_at(cslot::OWNER)
                    .compare_exchange(owner, sys::my_owner(), AcqRel, Relaxed)
                    .is_ok()
                {
                    self.fill_cslot(&s, kind, name, group, position);
                    return Ok((i, hold));
                }
            }
        }
        Err(Error::SlotsExhausted("consumer"))
    }

    fn fill_cslot(&self, s: &Region, kind: u32, name: &str, group: u32, position: u64) {
        s.u32_at(cslot::STATE).store(0, Release);
        s.u32_at(cslot::KIND).store(kind, Relaxed);
        s.u32_at(cslot::GROUP).store(group, Relaxed);
        let nb = name.as_bytes();
        s.write(cslot::NAME, nb);
        s.u32_at(cslot::NAME_LEN).store(nb.len() as u32, Relaxed);
        s.u64_at(cslot::HEARTBEAT_MS).store(sys::now_ms(), Relaxed);
        s.u64_at(cslot::CREATED_MS).store(sys::now_ms(), Relaxed);
        s.u64_at(cslot::MESSAGES).store(0, Relaxed);
        s.u64_at(cslot::POSITION).store(position, Relaxed);
        s.u64_at(cslot::RUN_BEGIN).store(0, Relaxed);
        s.u64_at(cslot::RUN_END).store(0, Relaxed);
        s.u64_at(cslot::RUN_STATE)
            .store(format::run_state(0, format::RUN_IDLE), Relaxed);
        s.u64_at(cslot::RELEASER).store(0, Relaxed);
        for w in 0..cslot::USER_WORDS {
            s.u64_at(cslot::USER + 8 * w).store(0, Relaxed);
        }
        s.u32_at(cslot::STATE).store(1, Release);
        self.gen_word().fetch_add(1, SeqCst);
    }

    /// Free a slot this process owns.
    pub fn free_cslot(&self, i: usize) {
        let s = self.cslot(i);
        s.u32_at(cslot::STATE).store(0, Release);
        s.u32_at(cslot::NAME_LEN).store(0, Release);
        s.u64_at(cslot::OWNER).store(0, Release);
        self.gen_word().fetch_add(1, SeqCst);
        self.wake_space();
    }

    /// Find the ready slot of `kind` named `name`.
    pub fn find_cslot(&self, kind: u32, name: &str) -> Option<usize> {
        (0..format::CONSUMER_SLOTS).find(|&i| {
            let s = self.cslot(i);
            s.u64_at(cslot::OWNER).load(Acquire) != 0
                && s.u32_at(cslot::STATE).load(Acquire) == 1
                && s.u32_at(cslot::KIND).load(Acquire) == kind
                && self.slot_name(&s) == name
        })
    }

    /// The one rule for who holds producers back (DESIGN.md §3, "When the
    /// ring is full"; FORMAT.md, "Who holds producers back"): the lowest
    /// position some holding consumer still needs, or None when nobody
    /// holds producers back. Every durable consumer holds, alive or not,
    /// unless it is dead and `durable_timeout` has passed since its
    /// heartbeat; a subscriber holds while its process lives (a dead one's
    /// slot is freed here); a group holds while one of its members lives.
    /// Every check (whether a claim must wait, whether to park, the
    /// unblocker's padding, log retention) asks this function, so they
    /// never disagree.
    pub fn floor(&self) -> Option<u64> {
        let mut floor: Option<u64> = None;
        let mut take = |p: u64| floor = Some(floor.map_or(p, |f: u64| f.min(p)));
        let now = sys::now_ms();
        let mut group_live = [false; format::CONSUMER_SLOTS];
        let mut members: Vec<(usize, u64)> = Vec::new();
        // Group words first: a claim made after this read is at or above
        // it; one made before is visible in the member's slot below.
        let mut group_next = [u64::MAX; format::CONSUMER_SLOTS];
        for (g, slot) in group_next.iter_mut().enumerate() {
            let s = self.cslot(g);
            if s.u32_at(cslot::KIND).load(SeqCst) == format::KIND_GROUP {
                *slot = format::split_group(s.u64_at(cslot::POSITION).load(SeqCst)).0;
            }
        }
        for i in 0..format::CONSUMER_SLOTS {
            let s = self.cslot(i);
            let owner = s.u64_at(cslot::OWNER).load(SeqCst);
            if owner == 0 || s.u32_at(cslot::STATE).load(Acquire) != 1 {
                continue;
            }
            let pos = s.u64_at(cslot::POSITION).load(SeqCst);
            match s.u32_at(cslot::KIND).load(Acquire) {
                format::KIND_DURABLE => {
                    if let Some(t) = self.opts.durable_timeout {
                        // The lock is asked only once the heartbeat is old.
                        let hb = s.u64_at(cslot::HEARTBEAT_MS).load(Relaxed);
                        if now.saturating_sub(hb) > t.as_millis() as u64
                            && !self.live.is_alive(SlotRef::Consumer(i))
                        {
                            continue;
                        }
                    }
                    take(pos);
                }
                format::KIND_SUBSCRIBER => {
                    if !self.live.is_alive(SlotRef::Consumer(i)) {
                        self.free_dead_subscriber(i, owner);
                        continue;
                    }
                    take(pos);
                }
                format::KIND_MEMBER => {
                    let g = s.u32_at(cslot::GROUP).load(Acquire) as usize;
                    if g < format::CONSUMER_SLOTS {
                        if self.live.is_alive(SlotRef::Consumer(i)) {
                            group_live[g] = true;
                        }
                        // A claim in progress or a run not yet acknowledged
                        // (FORMAT.md, "Groups").
                        let st = s.u64_at(cslot::RUN_STATE).load(SeqCst);
                        let mut m = u64::MAX;
                        if format::split_run_state(st).1 != format::RUN_IDLE {
                            m = s.u64_at(cslot::RUN_BEGIN).load(SeqCst);
                        }
                        members.push((g, m));
                    }
                }
                _ => {}
            }
        }
        for (g, m) in members {
            if group_live[g] && m != u64::MAX {
                take(m);
            }
        }
        for (g, live) in group_live.iter().enumerate() {
            if *live {
                let s = self.cslot(g);
                if s.u32_at(cslot::KIND).load(Acquire) == format::KIND_GROUP
                    && group_next[g] != u64::MAX
                {
                    take(group_next[g]);
                }
            }
        }
        // Bytes below the head are released already: a holder that fell
        // behind it (a group without live members, a durable consumer
        // past its timeout, both back now) finds them lapped and skips
        // ahead; it holds nothing below the head.
        floor.map(|f| f.max(self.head()))
    }

    /// Free subscriber slot `i` whose process is gone (its owner word was
    /// `owner`). Holding its lock byte, nobody takes the slot meanwhile.
    fn free_dead_subscriber(&self, i: usize, owner: u64) {
        let Ok(Some(_hold)) = self.live.try_hold(SlotRef::Consumer(i)) else {
            return;
        };
        let s = self.cslot(i);
        if s.u64_at(cslot::OWNER).load(Acquire) == owner
            && s.u32_at(cslot::KIND).load(Acquire) == format::KIND_SUBSCRIBER
        {
            s.u32_at(cslot::STATE).store(0, Release);
            s.u32_at(cslot::NAME_LEN).store(0, Release);
            s.u64_at(cslot::OWNER).store(0, Release);
            self.gen_word().fetch_add(1, SeqCst);
        }
    }

    /// Live snapshot of the consumer slots.
    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        let mut v = Vec::new();
        for i in 0..format::CONSUMER_SLOTS {
            let s = self.cslot(i);
            let owner = s.u64_at(cslot::OWNER).load(Acquire);
            if owner == 0 || s.u32_at(cslot::STATE).load(Acquire) != 1 {
                continue;
            }
            let kind = s.u32_at(cslot::KIND).load(Acquire);
            let raw = s.u64_at(cslot::POSITION).load(Acquire);
            let (kind_name, position) = match kind {
                format::KIND_DURABLE => ("durable", raw),
                format::KIND_SUBSCRIBER => ("subscriber", raw),
                format::KIND_GROUP => ("group", format::split_group(raw).0),
                format::KIND_MEMBER => ("member", raw),
                format::KIND_USER => ("user", raw),
                _ => continue,
            };
            v.push(ConsumerInfo {
                slot: i,
                name: self.slot_name(&s),
                kind: kind_name,
                position,
                pid: sys::owner_pid(owner),
                alive: self.live.is_alive(SlotRef::Consumer(i)),
                messages: s.u64_at(cslot::MESSAGES).load(Relaxed),
                heartbeat_ms: s.u64_at(cslot::HEARTBEAT_MS).load(Relaxed),
            });
        }
        v
    }

    /// Sum of messages and bytes written by registered producers.
    pub fn producer_totals(&self) -> (u64, u64, usize) {
        let (mut m, mut b, mut live) = (0, 0, 0);
        for i in 0..format::PRODUCER_SLOTS {
            let s = self.pslot(i);
            let owner = s.u64_at(pslot::OWNER).load(Acquire);
            // Counters in shared memory may hold anything: never overflow.
            m = s.u64_at(pslot::MESSAGES).load(Relaxed).saturating_add(m);
            b = s.u64_at(pslot::BYTES).load(Relaxed).saturating_add(b);
            if owner != 0 && self.live.is_alive(SlotRef::Producer(i)) {
                live += 1;
            }
        }
        (m, b, live)
    }
}
