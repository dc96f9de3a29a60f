//! Making a stream's directory and reading its meta file back.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::codec::Compression;
use crate::error::{Error, Result};
use crate::format::{self, *};
use crate::protocol::options::*;
use crate::storage::{self};
use crate::sync::Region;
use crate::sys;

/// Prefix of the directories `create` builds a stream in before it renames
/// it into place: `.tmp-NAME-PID-RAND`.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Open a directory without following a link, for its lock.
pub(crate) fn open_dir(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Whether `path` still names the file (or directory) `f` is open on.
pub(crate) fn same_inode(f: &fs::File, path: &Path) -> bool {
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// How many times (10 ms apart) a removal tries for an exclusive lock
/// that others hold only for a moment: the meta file's (a process opening
/// or closing the stream) and the directory's (a `create` just done).
pub(crate) const REMOVE_LOCK_TRIES: u32 = 20;

/// Take an exclusive `flock` on `f`, trying [`REMOVE_LOCK_TRIES`] times;
/// false if it stayed held.
pub(crate) fn lock_for_removal(f: &fs::File) -> bool {
    for _ in 1..REMOVE_LOCK_TRIES {
        if sys::try_lock(f, sys::Lock::Exclusive) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sys::try_lock(f, sys::Lock::Exclusive)
}

/// A fresh temporary name under `root` for stream `name`:
/// `.tmp-NAME-PID-RAND`, which `sweep_temp_dirs` recognises.
fn temp_dir_path(root: &Path, name: &str) -> PathBuf {
    root.join(format!(
        "{TEMP_PREFIX}{name}-{}-{:x}",
        std::process::id(),
        sys::random_u64()
    ))
}

/// Make a fresh temporary directory for stream `name` and take an
/// exclusive `flock` on it, held until the returned file is dropped. The
/// kernel drops the lock when its holder dies, however it dies: a temporary
/// directory nobody holds is abandoned (see `sweep_temp_dirs`). A sweeper
/// may take the lock between our mkdir and our flock; then the directory is
/// (being) removed and we try another name.
pub(crate) fn make_temp_dir(root: &Path, name: &str, mode: u32) -> Result<(PathBuf, fs::File)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let tmp = temp_dir_path(root, name);
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

/// Delete stream `name`'s directory under `root` so that, whenever this process
/// dies, the name is either whole or gone. Deleting the files under the
/// name itself would leave, after a kill midway, a directory with some of
/// them missing, which `create` refuses as existing and `open` reads as a
/// damaged stream. So the directory is locked (as `create` locks its
/// temporary one), renamed to a temporary name in one step, and deleted
/// there; if we die after the rename, our lock dies with us and the next
/// `sweep_temp_dirs` finishes the job. Another remover that holds the lock
/// longer than a creator would, or got there first, leaves the name gone:
/// `NotFound`.
pub(crate) fn delete_stream_dir(root: &Path, name: &str) -> Result<()> {
    let dir = &root.join(name);
    let gone = || Error::NotFound {
        what: "stream",
        name: name.into(),
    };
    let d = open_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => gone(),
        _ => Error::from_os(dir, "open", e),
    })?;
    // Only another remover holds this lock for long (a `create` holds it
    // from its rename until it drops it, a moment): wait as for the meta
    // lock, then leave the name to that remover.
    if !lock_for_removal(&d) || !same_inode(&d, dir) {
        return Err(gone());
    }
    let tmp = temp_dir_path(root, name);
    fs::rename(dir, &tmp).map_err(|e| Error::from_os(dir, "remove", e))?;
    fs::remove_dir_all(&tmp).map_err(|e| Error::from_os(&tmp, "remove", e))
}

/// Remove the temporary directories under `root` whose creator (or
/// remover) is gone: those whose `flock` we can take (a live creator holds
/// it until it has renamed the directory into place, a live remover until
/// the directory is deleted). Best effort: what we may not open or
/// remove stays for its owner to sweep.
pub(crate) fn sweep_temp_dirs(root: &Path) {
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
            tracing::warn!(dir = %path.display(), "removing a stream left half-created or half-removed by a process that died");
            let _ = fs::remove_dir_all(&path);
        }
    }
}

pub(crate) fn write_new_stream(dir: &Path, o: &StreamOptions) -> Result<()> {
    let meta_path = dir.join("meta");
    let meta_map = storage::MetaMap::create(&meta_path, o.mode)?;
    init_meta(&meta_map.region(), o)?;
    meta_map.flush().map_err(|e| Error::io("msync meta", e))?;
    if o.layout == Layout::Ring {
        let len = (o.segment_count as u64) << o.segment_shift;
        storage::create_file(&dir.join("data"), len, o.mode)?;
    }
    Ok(())
}

/// Write the options header of a new stream (with a fresh random id) into
/// the zeroed meta block `m`.
pub(crate) fn init_meta(m: &Region, o: &StreamOptions) -> Result<()> {
    let mut h = [0u8; meta::OPTIONS_CRC + 4];
    let mut put = |off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
    put(meta::MAGIC, &format::MAGIC.to_le_bytes());
    put(meta::VERSION, &o.format_version.to_le_bytes());
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
    Ok(())
}

pub(crate) fn read_options(m: &Region) -> Result<StreamOptions> {
    let mut h = [0u8; meta::OPTIONS_CRC + 4];
    m.read(0, &mut h);
    let u32_at = |off: usize| u32::from_le_bytes(h[off..off + 4].try_into().expect("4 bytes"));
    let u64_at = |off: usize| u64::from_le_bytes(h[off..off + 8].try_into().expect("8 bytes"));
    let bad = |reason: String| Err(Error::corrupt(0, format!("meta file: {reason}")));
    if u64_at(meta::MAGIC) != format::MAGIC {
        return bad("bad magic (not an ipcress stream)".into());
    }
    let version = u32_at(meta::VERSION);
    if version != format::VERSION && version != format::VERSION_UNTIMED {
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
        format_version: version,
    })
}

/// Check a stream or consumer name: `[A-Za-z0-9._-]{1,128}`, not `.`/`..`.
/// ```
/// assert!(ipcress::validate_name("orders.v2").is_ok());
/// assert!(ipcress::validate_name("..").is_err());
/// assert!(ipcress::validate_name("a/b").is_err());
/// ```
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
