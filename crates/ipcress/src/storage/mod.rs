//! The two storage layouts behind one interface: a preallocated ring file
//! reused in place, and a log of one file per segment.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::sync::Region;
use crate::sys::{self, Mapping};

mod span;
pub(crate) use span::{ClaimedBytes, HeldBytes};

/// One mapped segment: `region` is exactly `segment_size` bytes.
#[derive(Clone)]
pub(crate) struct Seg {
    pub index: u64,
    pub region: Region,
    // Keeps a log segment's mapping alive. A ring has one mapping, owned by
    // the stream's `Storage`; every `Seg` of a ring is held by a producer or
    // consumer that holds the stream (`Arc<Inner>`), or lives inside a call
    // that borrows it, so cloning a ring `Seg` on the hot path costs no
    // atomic reference count.
    _map: Option<Arc<Mapping>>,
}

pub(crate) enum Storage {
    Ring {
        map: Arc<Mapping>,
        count: u64,
        seg_size: u64,
    },
    /// A ring in this process's memory (`Stream::create_in_memory`).
    Memory {
        mem: crate::sync::Memory,
        count: u64,
        seg_size: u64,
    },
    Log {
        dir: PathBuf,
        seg_size: u64,
        mode: u32,
        cache: Mutex<BTreeMap<u64, Arc<Mapping>>>,
    },
}

/// How many log segments a process keeps mapped.
const LOG_CACHE: usize = 16;

pub(crate) fn open_file(path: &Path, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                Error::corrupt(0, format!("{} is a symbolic link", path.display()))
            }
            _ => Error::from_os(path, "open", e),
        })
}

/// Create `path` (exclusively) with `mode` and reserve `len` bytes.
pub(crate) fn create_file(path: &Path, len: u64, mode: u32) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::from_os(path, "create", e))?;
    // The mode asked for, whatever the umask (0660 must not become 0640).
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::from_os(path, "chmod", e))?;
    sys::reserve_space(&f, len, path)?;
    Ok(f)
}

pub(crate) fn segment_file_name(index: u64) -> String {
    format!("{index:016x}.seg")
}

pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

impl Storage {
    pub(crate) fn open_ring(dir: &Path, count: u64, seg_size: u64) -> Result<Storage> {
        let path = dir.join("data");
        let f = open_file(&path, true)?;
        let len = count * seg_size;
        let map = Mapping::map(&f, len as usize, &path)?;
        Ok(Storage::Ring {
            map: Arc::new(map),
            count,
            seg_size,
        })
    }

    /// A ring of `count` segments of `seg_size` bytes in this process's
    /// memory, zeroed.
    pub(crate) fn in_memory(count: u64, seg_size: u64) -> Storage {
        Storage::Memory {
            mem: crate::sync::Memory::zeroed((count * seg_size) as usize),
            count,
            seg_size,
        }
    }

    pub(crate) fn open_log(dir: &Path, seg_size: u64, mode: u32) -> Storage {
        Storage::Log {
            dir: dir.to_path_buf(),
            seg_size,
            mode,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    /// The segment holding stream segment `index`. For a log, `create` makes
    /// the file if it does not exist; otherwise a missing file is `None`.
    pub(crate) fn segment(&self, index: u64, create: bool) -> Result<Option<Seg>> {
        match self {
            Storage::Ring {
                map,
                count,
                seg_size,
            } => {
                let off = (index % count) * seg_size;
                // SAFETY: the mapping is `count * seg_size` bytes, page aligned,
                // and lives as long as this `Storage`, which outlives every
                // `Seg` of it (see `Seg::_map`).
                let whole = unsafe { Region::new(map.ptr(), map.len()) };
                Ok(Some(Seg {
                    index,
                    region: whole.sub(off as usize, *seg_size as usize),
                    _map: None,
                }))
            }
            Storage::Memory {
                mem,
                count,
                seg_size,
            } => {
                let off = (index % count) * seg_size;
                Ok(Some(Seg {
                    index,
                    region: mem.region().sub(off as usize, *seg_size as usize),
                    _map: None,
                }))
            }
            Storage::Log {
                dir,
                seg_size,
                mode,
                cache,
            } => {
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(m) = cache.get(&index) {
                    return Ok(Some(seg_of(index, m)));
                }
                let path = dir.join(segment_file_name(index));
                let file = match open_file(&path, true) {
                    Ok(f) => f,
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        if !create {
                            return Ok(None);
                        }
                        create_segment(dir, &path, *seg_size, *mode)?
                    }
                    Err(e) => return Err(e),
                };
                let map = Arc::new(Mapping::map(&file, *seg_size as usize, &path)?);
                if cache.len() >= LOG_CACHE {
                    // Drop the segment farthest from the one asked for.
                    let far = *cache
                        .keys()
                        .max_by_key(|k| k.abs_diff(index))
                        .expect("cache is not empty");
                    cache.remove(&far);
                }
                cache.insert(index, map.clone());
                Ok(Some(seg_of(index, &map)))
            }
        }
    }

    /// Fault in `len` bytes of the ring file at `offset` (see
    /// `Mapping::prefault`); logs map their segments as they come.
    pub(crate) fn prefault(&self, offset: u64, len: u64) {
        if let Storage::Ring { map, .. } = self {
            map.prefault(offset as usize, len as usize);
        }
    }

    /// Forget mappings of log segments below `index` (they were dropped).
    pub(crate) fn forget_below(&self, index: u64) {
        if let Storage::Log { cache, .. } = self {
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|&k, _| k >= index);
        }
    }

    /// Forget the mapping of log segment `index` (its file was removed:
    /// nothing may be written through it any more).
    pub(crate) fn forget(&self, index: u64) {
        if let Storage::Log { cache, .. } = self {
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.remove(&index);
        }
    }

    /// Flush every mapped segment to its file (durable streams).
    pub(crate) fn flush(&self) -> Result<()> {
        let maps: Vec<Arc<Mapping>> = match self {
            Storage::Ring { map, .. } => vec![map.clone()],
            Storage::Memory { .. } => Vec::new(),
            Storage::Log { cache, .. } => cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect(),
        };
        for m in maps {
            m.flush().map_err(|e| Error::io("msync", e))?;
        }
        Ok(())
    }
}

fn seg_of(index: u64, m: &Arc<Mapping>) -> Seg {
    // SAFETY: the mapping is alive while the Arc inside the Seg is, it is
    // page aligned and exactly one segment long.
    let region = unsafe { Region::new(m.ptr(), m.len()) };
    Seg {
        index,
        region,
        _map: Some(m.clone()),
    }
}

/// Create a segment file atomically: reserve a temporary file, then link it
/// into place, so that nobody ever maps a short file.
fn create_segment(dir: &Path, path: &Path, seg_size: u64, mode: u32) -> Result<File> {
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), sys::random_u64()));
    let f = create_file(&tmp, seg_size, mode);
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            // Name the segment, not the temporary file.
            return Err(match e {
                Error::NoSpace { .. } => Error::NoSpace {
                    path: path.to_path_buf(),
                },
                e => e,
            });
        }
    };
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => open_file(path, true),
        Err(e) => Err(Error::from_os(path, "create", e)),
    }
}

/// A stream's meta file, open and mapped (or, for an in-memory stream, a
/// block of this process's memory). Its [`Region`] may be used for as long
/// as this value lives (the stream's `Inner` keeps it).
pub(crate) struct MetaMap {
    backing: MetaBacking,
    region: Region,
}

enum MetaBacking {
    File { file: File, map: Mapping },
    Memory(#[allow(dead_code)] crate::sync::Memory),
}

impl MetaMap {
    /// Create the meta file at `path` (exclusively, with `mode`) and map it.
    pub(crate) fn create(path: &Path, mode: u32) -> Result<MetaMap> {
        let file = create_file(path, crate::format::META_LEN as u64, mode)?;
        MetaMap::map(file, path)
    }

    /// Open the meta file at `path` for reading and writing, and map it.
    pub(crate) fn open(path: &Path) -> Result<MetaMap> {
        MetaMap::map(open_file(path, true)?, path)
    }

    /// A zeroed meta block in this process's memory.
    pub(crate) fn in_memory() -> MetaMap {
        let mem = crate::sync::Memory::zeroed(crate::format::META_LEN);
        MetaMap {
            region: mem.region(),
            backing: MetaBacking::Memory(mem),
        }
    }

    fn map(file: File, path: &Path) -> Result<MetaMap> {
        let map = Mapping::map(&file, crate::format::META_LEN, path)?;
        // SAFETY: the mapping is META_LEN bytes and page aligned, and it
        // lives in this value next to the region; users of the region keep
        // this value (in the stream's `Inner`) for as long as they use it.
        let region = unsafe { Region::new(map.ptr(), map.len()) };
        Ok(MetaMap {
            backing: MetaBacking::File { file, map },
            region,
        })
    }

    pub(crate) fn region(&self) -> Region {
        self.region
    }

    /// The meta file, if the stream has one.
    pub(crate) fn file(&self) -> Option<&File> {
        match &self.backing {
            MetaBacking::File { file, .. } => Some(file),
            MetaBacking::Memory(_) => None,
        }
    }

    /// Write the mapped meta file back to disk.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        match &self.backing {
            MetaBacking::File { map, .. } => map.flush(),
            MetaBacking::Memory(_) => Ok(()),
        }
    }
}
