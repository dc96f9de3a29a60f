//! Record codecs: compression (none, lz4, zstd) and authenticated encryption
//! (XChaCha20-Poly1305), plus key-file handling. See DESIGN.md section 4.
//!
//! Everything here is a pure function of its inputs (apart from per-thread
//! zstd context caches and the key-file I/O). The producer compresses, then
//! encrypts; the consumer opens, then decompresses.

use std::cell::RefCell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

// ---------------------------------------------------------------------------
// Compression setting
// ---------------------------------------------------------------------------

/// Lowest zstd level accepted from strings and meta files.
pub const ZSTD_MIN_LEVEL: i32 = 1;
/// Highest zstd level accepted from strings and meta files.
pub const ZSTD_MAX_LEVEL: i32 = 22;
/// zstd level used for a bare `"zstd"`.
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

/// Per-stream compression setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    #[default]
    /// Stored as written.
    None,
    /// LZ4 block compression (lz4_flex).
    Lz4,
    /// Zstandard at the given level (1..=22).
    Zstd(i32),
}

fn valid_zstd_level(level: i32) -> bool {
    (ZSTD_MIN_LEVEL..=ZSTD_MAX_LEVEL).contains(&level)
}

impl FromStr for Compression {
    type Err = String;

    /// Accepts `none`, `lz4`, `zstd` (level 3) and `zstd:LEVEL` (1..=22),
    /// ASCII case-insensitively.
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "none" => return Ok(Compression::None),
            "lz4" => return Ok(Compression::Lz4),
            "zstd" => return Ok(Compression::Zstd(ZSTD_DEFAULT_LEVEL)),
            _ => {}
        }
        if let Some(level) = lower.strip_prefix("zstd:") {
            return match level.parse::<i32>() {
                Ok(l) if valid_zstd_level(l) => Ok(Compression::Zstd(l)),
                _ => Err(format!(
                    "invalid zstd level {level:?} in {s:?}: expected an integer from \
                     {ZSTD_MIN_LEVEL} to {ZSTD_MAX_LEVEL}"
                )),
            };
        }
        Err(format!(
            "unknown compression {s:?}: expected none, lz4, zstd or zstd:LEVEL \
             (LEVEL {ZSTD_MIN_LEVEL}..={ZSTD_MAX_LEVEL})"
        ))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Lz4 => f.write_str("lz4"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
        }
    }
}

impl Compression {
    /// Codes stored in the meta file: `(kind, level)` with kind 0 = none,
    /// 1 = lz4, 2 = zstd. The level is 0 for none and lz4.
    pub fn to_code(self) -> (u32, i32) {
        match self {
            Compression::None => (0, 0),
            Compression::Lz4 => (1, 0),
            Compression::Zstd(level) => (2, level),
        }
    }

    /// Inverse of [`Compression::to_code`]. Returns `None` for an unknown
    /// kind, a zstd level outside 1..=22, or a non-zero level for none/lz4.
    pub fn from_code(kind: u32, level: i32) -> Option<Compression> {
        match (kind, level) {
            (0, 0) => Some(Compression::None),
            (1, 0) => Some(Compression::Lz4),
            (2, l) if valid_zstd_level(l) => Some(Compression::Zstd(l)),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Compression functions
// ---------------------------------------------------------------------------

/// Length of the original-length prefix of compressed records.
const LEN_PREFIX: usize = 4;

thread_local! {
    // zstd contexts are large to allocate; keep one of each per thread.
    static ZSTD_ENC: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static ZSTD_DEC: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn zstd_compress(level: i32, src: &[u8], dst: &mut [u8]) -> io::Result<usize> {
    let cached = ZSTD_ENC.try_with(|cell| -> io::Result<Option<usize>> {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return Ok(None);
        };
        match slot.as_mut() {
            Some((l, _)) if *l == level => {}
            Some((l, c)) => {
                c.set_compression_level(level)?;
                *l = level;
            }
            None => *slot = Some((level, zstd::bulk::Compressor::new(level)?)),
        }
        let (_, c) = slot.as_mut().expect("slot filled above");
        c.compress_to_buffer(src, dst).map(Some)
    });
    match cached {
        Ok(Ok(Some(n))) => Ok(n),
        Ok(Err(e)) => Err(e),
        // TLS being torn down or (impossibly) re-entered: one-shot context.
        Ok(Ok(None)) | Err(_) => zstd::bulk::compress_to_buffer(src, dst, level),
    }
}

fn zstd_decompress(src: &[u8], dst: &mut [u8]) -> io::Result<usize> {
    let cached = ZSTD_DEC.try_with(|cell| -> io::Result<Option<usize>> {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return Ok(None);
        };
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        let d = slot.as_mut().expect("slot filled above");
        d.decompress_to_buffer(src, dst).map(Some)
    });
    match cached {
        Ok(Ok(Some(n))) => Ok(n),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) | Err(_) => zstd::bulk::decompress_to_buffer(src, dst),
    }
}

/// Compress `input` into `out` (cleared first).
///
/// Returns true only if the compressed form is strictly smaller than `input`;
/// when it returns false the contents of `out` are unspecified and the caller
/// stores the raw bytes. Compressed format: the original length as a `u32`
/// little-endian, then an lz4 block (lz4_flex block format) or a standard
/// zstd frame. `Compression::None` always returns false.
#[must_use]
pub fn compress(c: Compression, input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    // Can never be strictly smaller with the 4-byte prefix, and lengths
    // beyond u32 do not fit the prefix: store raw.
    if input.len() <= LEN_PREFIX + 1 || u32::try_from(input.len()).is_err() {
        return false;
    }
    let written = match c {
        Compression::None => return false,
        Compression::Lz4 => {
            // lz4_flex insists on room for the worst case.
            let cap = lz4_flex::block::get_maximum_output_size(input.len());
            out.resize(LEN_PREFIX + cap, 0);
            lz4_flex::block::compress_into(input, &mut out[LEN_PREFIX..]).ok()
        }
        Compression::Zstd(level) => {
            // Anything that does not fit here is not worth keeping; zstd
            // reports "destination too small" and we store raw.
            let cap = input.len() - LEN_PREFIX - 1;
            out.resize(LEN_PREFIX + cap, 0);
            zstd_compress(level, input, &mut out[LEN_PREFIX..]).ok()
        }
    };
    let Some(n) = written else {
        out.clear();
        return false;
    };
    let total = LEN_PREFIX + n;
    if total >= input.len() {
        out.clear();
        return false;
    }
    out.truncate(total);
    out[..LEN_PREFIX].copy_from_slice(&(input.len() as u32).to_le_bytes());
    true
}

/// Reverse of [`compress`]: decode `input` into `out`, replacing its
/// contents.
///
/// The declared original length must be at most `max_len` and must match the
/// decoded length exactly; at most `max_len` bytes are ever allocated. On
/// error `out` is left empty. Never panics on any input. `out` is not
/// cleared first, so reusing one buffer for records of similar size neither
/// allocates nor zero-fills.
pub fn decompress(
    c: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
    max_len: usize,
) -> Result<(), String> {
    let res = decompress_inner(c, input, out, max_len);
    if res.is_err() {
        out.clear();
    }
    res
}

fn decompress_inner(
    c: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
    max_len: usize,
) -> Result<(), String> {
    if c == Compression::None {
        return Err("record is marked compressed but the stream has no compression".into());
    }
    let Some((prefix, body)) = input.split_first_chunk::<LEN_PREFIX>() else {
        return Err(format!(
            "compressed record too short ({} bytes, need at least {LEN_PREFIX})",
            input.len()
        ));
    };
    let declared = u32::from_le_bytes(*prefix);
    if declared == 0 {
        // compress() never produces this: empty records are stored raw.
        return Err("compressed record declares a length of 0".into());
    }
    let len = match usize::try_from(declared) {
        Ok(len) if len <= max_len => len,
        _ => {
            return Err(format!(
                "compressed record declares {declared} bytes, more than the limit of {max_len}"
            ));
        }
    };
    // Only growth is zeroed; a successful decode overwrites all `len` bytes
    // (checked below), and any failure clears `out`.
    out.resize(len, 0);
    let got = match c {
        Compression::None => unreachable!("handled above"),
        Compression::Lz4 => lz4_flex::block::decompress_into(body, out)
            .map_err(|e| format!("lz4 decompression failed: {e}"))?,
        Compression::Zstd(_) => {
            zstd_decompress(body, out).map_err(|e| format!("zstd decompression failed: {e}"))?
        }
    };
    if got != len {
        return Err(format!(
            "compressed record declares {len} bytes but decodes to {got}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// 32-byte XChaCha20-Poly1305 key. Its bytes are never printed and are
/// zeroed on drop.
pub struct Key {
    bytes: [u8; KEY_LEN],
}

impl Drop for Key {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Errors reading or creating a key file. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("key file {}: {source}", path.display())]
    /// The key file could not be read or written.
    #[allow(missing_docs)]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "key file {} has mode {mode:04o}, which lets group or others access it; \
         run `chmod 600` on it",
        path.display()
    )]
    /// The key file is readable by group or others.
    #[allow(missing_docs)]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "key file {} is {len} bytes; expected exactly 32 raw bytes or 64 hex digits \
         (optionally followed by a newline)",
        path.display()
    )]
    /// The key file does not hold a 32-byte key.
    #[allow(missing_docs)]
    BadLength { path: PathBuf, len: u64 },
    #[error("key file {} already exists; refusing to overwrite it", path.display())]
    /// Refusing to overwrite an existing key file.
    #[allow(missing_docs)]
    Exists { path: PathBuf },
}

/// Largest key file content we look at (64 hex digits + "\r\n").
const KEY_FILE_MAX: usize = 2 * KEY_LEN + 2;

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parse key file contents: 32 raw bytes, or 64 hex digits with an optional
/// trailing "\n" or "\r\n".
fn parse_key_file(data: &[u8]) -> Option<Key> {
    let mut key = Key::from_bytes([0; KEY_LEN]);
    if data.len() == KEY_LEN {
        key.bytes.copy_from_slice(data);
        return Some(key);
    }
    let hex = data
        .strip_suffix(b"\r\n")
        .or_else(|| data.strip_suffix(b"\n"))
        .unwrap_or(data);
    if hex.len() != 2 * KEY_LEN {
        return None;
    }
    for (dst, pair) in key.bytes.iter_mut().zip(hex.chunks_exact(2)) {
        *dst = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(key)
}

impl Key {
    /// Wrap raw key bytes.
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Key {
        Key { bytes: b }
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> io::Result<Key> {
        let mut key = Key::from_bytes([0; KEY_LEN]);
        getrandom::fill(&mut key.bytes).map_err(|e| match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(format!("random number generator failed: {e}")),
        })?;
        Ok(key)
    }

    /// Load a key file: exactly 32 raw bytes, or 64 hex digits plus an
    /// optional newline. Refuses files whose mode grants any group or other
    /// permission.
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        // Pre-size so reading never reallocates (which would leave
        // un-zeroed copies of key material behind).
        let mut data = Zeroizing::new(Vec::with_capacity(KEY_FILE_MAX + 1));
        (&mut file)
            .take(KEY_FILE_MAX as u64 + 1)
            .read_to_end(&mut data)
            .map_err(io_err)?;
        parse_key_file(&data).ok_or_else(|| KeyError::BadLength {
            path: path.to_path_buf(),
            len: if data.len() > KEY_FILE_MAX {
                meta.len().max(data.len() as u64)
            } else {
                data.len() as u64
            },
        })
    }

    /// Generate a key and write it to a new file at `path` (mode 0600, 32 raw
    /// bytes, fsynced). Refuses to overwrite an existing file.
    pub fn write_new(path: &Path) -> Result<Key, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let key = Key::generate().map_err(io_err)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    KeyError::Exists {
                        path: path.to_path_buf(),
                    }
                } else {
                    io_err(e)
                }
            })?;
        let written = (|| {
            // The umask can only remove bits; make the mode exactly 0600.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(&key.bytes)?;
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            drop(file);
            // Don't leave a half-written key file behind; we created it.
            let _ = std::fs::remove_file(path);
            return Err(io_err(e));
        }
        Ok(key)
    }

    /// First 8 hex characters of a one-way function of the key, safe to
    /// print to tell keys apart. Never reveals the key.
    ///
    /// Computed as a keyed PRF: a subkey is derived from the key with
    /// XChaCha20 under a fixed nonce, and the fingerprint is the start of the
    /// Poly1305 tag of a fixed label under that subkey. Neither the subkey
    /// nor any tag under the record key itself is exposed.
    pub fn fingerprint(&self) -> String {
        const FP_NONCE: &[u8; 24] = b"ipcress/key-fingerprint\0";
        // XChaCha20-Poly1305 spelled out (HChaCha20 subkey, then IETF
        // ChaCha20-Poly1305), the same bytes as before the change of backend.
        let (prefix, rest) = FP_NONCE.split_first_chunk::<16>().expect("24 bytes");
        let tail = u64::from_le_bytes(rest.try_into().expect("8 bytes"));
        let aead = ietf_key(&hchacha20(&self.bytes, prefix));
        let mut sub = Zeroizing::new([0u8; KEY_LEN]);
        // Cannot fail: the buffer is tiny.
        let _ = aead.seal_in_place_separate_tag(
            ietf_nonce(tail),
            Aad::from(b"ipcress key fingerprint: subkey"),
            &mut sub[..],
        );
        let fp = ietf_key(&hchacha20(&sub, &[0; 16]));
        let tag = fp
            .seal_in_place_separate_tag(
                ietf_nonce(0),
                Aad::from(b"ipcress key fingerprint v1"),
                &mut [],
            )
            .expect("an empty message seals");
        tag.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Record encryption
// ---------------------------------------------------------------------------

/// Length of the Poly1305 tag appended to every encrypted record.
pub const TAG_LEN: usize = 16;

/// HChaCha20 of `key` and a 16-byte input: the subkey XChaCha20 uses for
/// every nonce that starts with `input`.
fn hchacha20(key: &[u8; KEY_LEN], input: &[u8; 16]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), input.into());
    let mut sub = Zeroizing::new([0u8; KEY_LEN]);
    sub.copy_from_slice(&out);
    out.as_mut_slice().zeroize();
    sub
}

/// IETF ChaCha20-Poly1305 (12-byte nonce) under `subkey`, run by `ring`'s
/// assembly.
fn ietf_key(subkey: &[u8; KEY_LEN]) -> LessSafeKey {
    // Cannot fail: the length is the algorithm's key length.
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, subkey).expect("ChaCha20-Poly1305 takes 32-byte keys"),
    )
}

/// The 12-byte IETF nonce that XChaCha20 uses with the subkey of a
/// 24-byte nonce `origin ‖ position (u64 LE)`: four zero bytes, then the
/// last eight bytes of that nonce.
fn ietf_nonce(position: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&position.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// AEAD for records: XChaCha20-Poly1305 with the 24-byte nonce
/// `stream_id (16 bytes) ‖ position (u64 LE)`, so a record moved to another
/// position or stream fails to open.
///
/// The first 16 bytes of the nonce are the same for every record of a
/// stream, so XChaCha20's subkey (HChaCha20 of the key and those bytes) is
/// derived once, here, and each record is sealed as IETF ChaCha20-Poly1305
/// under it with the nonce `[0; 4] ‖ position (u64 LE)`: the same bytes as
/// XChaCha20-Poly1305 (tested against the RustCrypto implementation), at
/// the speed of `ring`'s assembly.
pub struct Cipher {
    /// ChaCha20-Poly1305 under HChaCha20(key, stream_id).
    own: LessSafeKey,
    stream_id: [u8; 16],
    /// The key itself, for records first written to another stream (their
    /// nonce starts with that stream's id). Zeroed on drop.
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cipher")
            .field("stream_id", &self.stream_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Cipher {
    /// A cipher for one stream. The key and the derived subkey are zeroed
    /// when dropped, as far as this crate holds them (`ring` keeps its own
    /// copy of the subkey's words inside `LessSafeKey`, which it does not
    /// wipe; see docs/HARDENING.md).
    pub fn new(key: &Key, stream_id: [u8; 16]) -> Cipher {
        let sub = hchacha20(&key.bytes, &stream_id);
        Cipher {
            own: ietf_key(&sub),
            stream_id,
            key: Zeroizing::new(key.bytes),
        }
    }

    /// Like [`open`](Self::open), for a record first written to stream
    /// `origin` at `position` (a frame carried over by a bridge). A foreign
    /// origin costs one HChaCha20 per call.
    #[allow(clippy::result_unit_err)]
    pub fn open_with(
        &self,
        origin: [u8; 16],
        position: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, ()> {
        if origin == self.stream_id {
            return open_ietf(&self.own, position, aad, buf);
        }
        let key = ietf_key(&hchacha20(&self.key, &origin));
        open_ietf(&key, position, aad, buf)
    }

    /// `buf` = plaintext followed by `TAG_LEN` bytes of space; encrypts in
    /// place and writes the tag into the last `TAG_LEN` bytes.
    ///
    /// # Panics
    /// If `buf` is shorter than `TAG_LEN` (a caller bug).
    #[inline]
    pub fn seal(&self, position: u64, aad: &[u8], buf: &mut [u8]) {
        assert!(
            buf.len() >= TAG_LEN,
            "Cipher::seal: buffer of {} bytes has no room for the {TAG_LEN}-byte tag",
            buf.len()
        );
        let (msg, tag_space) = buf.split_at_mut(buf.len() - TAG_LEN);
        let tag = self
            .own
            .seal_in_place_separate_tag(ietf_nonce(position), Aad::from(aad), msg)
            .expect("ChaCha20-Poly1305 message length limit (256 GiB) exceeded");
        tag_space.copy_from_slice(tag.as_ref());
    }

    /// `buf` = ciphertext ‖ tag; decrypts in place and returns the plaintext
    /// length (`buf.len() - TAG_LEN`). `Err(())` on a short buffer or any
    /// authentication failure. After a failure no plaintext is left: a
    /// buffer shorter than the tag is unchanged, any other has its first
    /// `buf.len() - TAG_LEN` bytes zeroed (the cipher decrypts while it
    /// authenticates, then wipes what it decrypted).
    // The interface deliberately carries no detail: callers report the position.
    #[allow(clippy::result_unit_err)]
    #[inline]
    pub fn open(&self, position: u64, aad: &[u8], buf: &mut [u8]) -> Result<usize, ()> {
        open_ietf(&self.own, position, aad, buf)
    }
}

#[inline]
fn open_ietf(key: &LessSafeKey, position: u64, aad: &[u8], buf: &mut [u8]) -> Result<usize, ()> {
    if buf.len() < TAG_LEN {
        return Err(());
    }
    key.open_in_place(ietf_nonce(position), Aad::from(aad), buf)
        .map(|plain| plain.len())
        .map_err(|_| ())
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Small deterministic PRNG (xorshift64*), so tests need no extra deps.
    struct Rng(u64);
    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn log_like(lines: usize) -> Vec<u8> {
        let mut s = String::new();
        for i in 0..lines {
            s.push_str(&format!(
                "2024-05-01T12:{:02}:{:02}.{:03}Z INFO ipcress::producer: appended record \
                 position={} len={} stream=orders\n",
                (i / 60) % 60,
                i % 60,
                (i * 7) % 1000,
                i,
                (i * 37) % 4096
            ));
        }
        s.into_bytes()
    }

    const ALL: [Compression; 4] = [
        Compression::Lz4,
        Compression::Zstd(1),
        Compression::Zstd(3),
        Compression::Zstd(19),
    ];

    fn round_trip(c: Compression, data: &[u8]) -> bool {
        let mut comp = Vec::new();
        let smaller = compress(c, data, &mut comp);
        if smaller {
            assert!(comp.len() < data.len(), "{c}: not smaller");
            let mut back = vec![1, 2, 3];
            decompress(c, &comp, &mut back, data.len()).unwrap();
            assert_eq!(back, data, "{c}: round trip mismatch");
            // Exactly-sized limit is fine, one less is refused.
            if !data.is_empty() {
                assert!(decompress(c, &comp, &mut back, data.len() - 1).is_err());
                assert!(back.is_empty());
            }
        }
        smaller
    }

    // -- Compression setting -------------------------------------------------

    #[test]
    fn compression_parse_and_display() {
        for (s, c) in [
            ("none", Compression::None),
            ("lz4", Compression::Lz4),
            ("zstd", Compression::Zstd(3)),
            ("zstd:1", Compression::Zstd(1)),
            ("zstd:22", Compression::Zstd(22)),
            ("ZSTD:9", Compression::Zstd(9)),
        ] {
            assert_eq!(s.parse::<Compression>().unwrap(), c, "{s}");
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        assert_eq!(Compression::Zstd(3).to_string(), "zstd:3");
        assert_eq!(Compression::default(), Compression::None);
        for bad in [
            "", "gzip", "zstd:", "zstd:0", "zstd:23", "zstd:-1", "zstd:x", "lz4:1",
        ] {
            let e = bad.parse::<Compression>().unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn compression_codes() {
        let mut all = vec![Compression::None, Compression::Lz4];
        all.extend((1..=22).map(Compression::Zstd));
        for c in all {
            let (k, l) = c.to_code();
            assert_eq!(Compression::from_code(k, l), Some(c));
        }
        assert_eq!(Compression::Lz4.to_code(), (1, 0));
        assert_eq!(Compression::Zstd(7).to_code(), (2, 7));
        for (k, l) in [
            (0, 1),
            (1, 3),
            (2, 0),
            (2, 23),
            (2, -5),
            (3, 0),
            (u32::MAX, 0),
        ] {
            assert_eq!(Compression::from_code(k, l), None, "({k}, {l})");
        }
    }

    // -- Compression ---------------------------------------------------------

    #[test]
    fn round_trips() {
        let mut rng = Rng::new(1);
        let log = log_like(500);
        let zeros = vec![0u8; 1 << 20];
        for c in ALL {
            assert!(!round_trip(c, b""), "{c}: empty must not compress");
            assert!(!round_trip(c, b"x"));
            assert!(!round_trip(c, b"hello"));
            round_trip(c, b"small record, small record, small record");
            assert!(round_trip(c, &log), "{c}: log-like data must compress");
            assert!(round_trip(c, &log[..300]), "{c}: short log must compress");
            assert!(round_trip(c, &zeros), "{c}: zeros must compress");
            for n in [6, 64, 4096, 100_000] {
                assert!(!round_trip(c, &rng.bytes(n)), "{c}: random {n} compressed");
            }
            // Mixed and odd sizes.
            for n in 0..200 {
                let mut d = log[..n * 7].to_vec();
                d.extend(rng.bytes(n % 13));
                round_trip(c, &d);
            }
        }
    }

    #[test]
    fn none_never_compresses() {
        let mut out = vec![9];
        assert!(!compress(Compression::None, &log_like(100), &mut out));
        assert!(out.is_empty());
        let mut comp = Vec::new();
        assert!(compress(Compression::Lz4, &log_like(100), &mut comp));
        assert!(decompress(Compression::None, &comp, &mut out, 1 << 20).is_err());
    }

    #[test]
    fn switching_zstd_levels_on_one_thread() {
        let log = log_like(200);
        let mut comp = Vec::new();
        let mut back = Vec::new();
        for level in [1, 19, 3, 3, 22, 1] {
            assert!(compress(Compression::Zstd(level), &log, &mut comp));
            // Any zstd level decodes any zstd frame.
            decompress(Compression::Zstd(1), &comp, &mut back, log.len()).unwrap();
            assert_eq!(back, log);
        }
    }

    #[test]
    fn decompress_rejects_garbage() {
        let mut out = Vec::new();
        for c in ALL {
            for bad in [
                &b""[..],
                b"\x01",
                b"\x05\0\0",
                b"\x05\0\0\0",
                b"\x05\0\0\0hello",
            ] {
                assert!(
                    decompress(c, bad, &mut out, 1 << 20).is_err(),
                    "{c} {bad:?}"
                );
                assert!(out.is_empty());
            }
            // Declared length 0 is never produced by compress().
            assert!(decompress(c, b"\0\0\0\0", &mut out, 16).is_err());
            let mut empty_frame = vec![0u8; 4];
            if let Compression::Zstd(_) = c {
                empty_frame.extend(zstd::bulk::compress(b"", 3).unwrap());
            } else {
                empty_frame.push(0);
            }
            assert!(decompress(c, &empty_frame, &mut out, 16).is_err());
        }
    }

    #[test]
    fn decompress_oversized_declared_length_does_not_allocate() {
        for c in ALL {
            let mut comp = Vec::new();
            assert!(compress(c, &log_like(100), &mut comp));
            comp[..4].copy_from_slice(&u32::MAX.to_le_bytes());
            let mut out = Vec::new();
            let e = decompress(c, &comp, &mut out, 1 << 20).unwrap_err();
            assert!(e.contains("limit"), "{e}");
            assert_eq!(out.capacity(), 0, "allocated before checking the limit");
        }
    }

    #[test]
    fn decompress_wrong_declared_length() {
        let log = log_like(100);
        for c in ALL {
            let mut comp = Vec::new();
            assert!(compress(c, &log, &mut comp));
            let mut out = Vec::new();
            for declared in [log.len() - 1, log.len() + 1, 0] {
                let mut bad = comp.clone();
                bad[..4].copy_from_slice(&(declared as u32).to_le_bytes());
                assert!(
                    decompress(c, &bad, &mut out, 1 << 20).is_err(),
                    "{c} {declared}"
                );
                assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn decompress_truncated_and_mutated_never_panics() {
        let mut rng = Rng::new(7);
        let log = log_like(300);
        let max_len = log.len() * 2;
        let mut out = Vec::new();
        for c in ALL {
            let mut comp = Vec::new();
            assert!(compress(c, &log, &mut comp));
            // Every truncation of the body fails.
            for cut in 0..comp.len() {
                assert!(
                    decompress(c, &comp[..cut], &mut out, max_len).is_err(),
                    "{c} {cut}"
                );
            }
            // Random mutations: must not panic; any success respects the limit.
            for _ in 0..1500 {
                let mut m = comp.clone();
                match rng.below(4) {
                    0 => {
                        let i = rng.below(m.len());
                        m[i] ^= 1 << rng.below(8);
                    }
                    1 => {
                        for _ in 0..1 + rng.below(8) {
                            let i = rng.below(m.len());
                            m[i] = rng.next() as u8;
                        }
                    }
                    2 => {
                        let i = 4 + rng.below(m.len() - 4);
                        m.insert(i, rng.next() as u8);
                    }
                    _ => {
                        let i = 4 + rng.below(m.len() - 4);
                        let j = (i + 1 + rng.below(16)).min(m.len());
                        m.drain(i..j);
                    }
                }
                match decompress(c, &m, &mut out, max_len) {
                    Ok(()) => {
                        let declared = u32::from_le_bytes(m[..4].try_into().unwrap());
                        assert_eq!(out.len(), declared as usize);
                        assert!(out.len() <= max_len);
                    }
                    Err(_) => assert!(out.is_empty()),
                }
            }
            // Pure garbage with plausible lengths.
            for _ in 0..500 {
                let n = rng.below(64);
                let mut g = rng.bytes(n + 4);
                g[..4].copy_from_slice(&(rng.below(4096) as u32).to_le_bytes());
                let _ = decompress(c, &g, &mut out, 4096);
            }
        }
    }

    // -- Keys ----------------------------------------------------------------

    fn temp_path(name: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!(
            "ipcress-codec-test-{}-{n}-{name}",
            std::process::id()
        ))
    }

    fn write_with_mode(path: &Path, data: &[u8], mode: u32) {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .unwrap();
        f.write_all(data).unwrap();
    }

    fn same_key(a: &Key, b: &Key) -> bool {
        a.bytes == b.bytes
    }

    #[test]
    fn key_debug_is_redacted() {
        let key = Key::from_bytes([0xAB; 32]);
        let dbg = format!("{key:?}");
        assert_eq!(dbg, "Key(<redacted>)");
        let dbg = format!("{:?}", Cipher::new(&key, [0; 16]));
        assert!(
            !dbg.contains("171") && !dbg.to_lowercase().contains("ab"),
            "{dbg}"
        );
    }

    #[test]
    fn key_fingerprint() {
        let a = Key::from_bytes([1; 32]);
        let b = Key::from_bytes([2; 32]);
        let fa = a.fingerprint();
        assert_eq!(fa.len(), 8);
        assert!(fa.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(fa, Key::from_bytes([1; 32]).fingerprint());
        assert_ne!(fa, b.fingerprint());
        assert_ne!(fa, "01010101");
        let g1 = Key::generate().unwrap();
        let g2 = Key::generate().unwrap();
        assert!(!same_key(&g1, &g2));
        assert_ne!(g1.fingerprint(), g2.fingerprint());
    }

    #[test]
    fn key_write_new_and_load() {
        let path = temp_path("new.key");
        let key = Key::write_new(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.len(), 32);
        let loaded = Key::load(&path).unwrap();
        assert!(same_key(&key, &loaded));
        // Refuses to overwrite, and leaves the file alone.
        match Key::write_new(&path) {
            Err(e @ KeyError::Exists { .. }) => {
                assert!(e.to_string().contains("already exists"), "{e}")
            }
            other => panic!("expected Exists, got {other:?}"),
        }
        assert!(same_key(&key, &Key::load(&path).unwrap()));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn key_load_refuses_group_or_other_bits() {
        for mode in [0o644, 0o640, 0o604, 0o601, 0o610] {
            let path = temp_path("perm.key");
            write_with_mode(&path, &[7; 32], mode);
            match Key::load(&path) {
                Err(KeyError::Permissions { mode: m, path: p }) => {
                    assert_eq!(m, mode);
                    assert_eq!(p, path);
                }
                other => panic!("mode {mode:o}: expected Permissions, got {other:?}"),
            }
            std::fs::remove_file(&path).unwrap();
        }
        let path = temp_path("perm-ok.key");
        write_with_mode(&path, &[7; 32], 0o400);
        assert!(same_key(
            &Key::load(&path).unwrap(),
            &Key::from_bytes([7; 32])
        ));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn key_load_formats() {
        let raw: [u8; 32] = std::array::from_fn(|i| (i * 9 + 1) as u8);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        for (name, content) in [
            ("raw", raw.to_vec()),
            ("hex", hex.clone().into_bytes()),
            ("hexnl", format!("{hex}\n").into_bytes()),
            ("hexcrlf", format!("{hex}\r\n").into_bytes()),
            ("HEX", format!("{}\n", hex.to_uppercase()).into_bytes()),
        ] {
            let path = temp_path(name);
            write_with_mode(&path, &content, 0o600);
            let k = Key::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(same_key(&k, &Key::from_bytes(raw)), "{name}");
            std::fs::remove_file(&path).unwrap();
        }
        let mut bad_hex = hex.clone().into_bytes();
        bad_hex[10] = b'g';
        for (name, content, len) in [
            ("short", vec![1u8; 31], 31),
            ("long", vec![1u8; 33], 33),
            ("empty", vec![], 0),
            ("badhex", bad_hex, 64),
            ("twonl", format!("{hex}\n\n").into_bytes(), 66),
            ("huge", vec![b'a'; 10_000], 10_000),
        ] {
            let path = temp_path(name);
            write_with_mode(&path, &content, 0o600);
            match Key::load(&path) {
                Err(e @ KeyError::BadLength { .. }) => {
                    let KeyError::BadLength { len: l, .. } = &e else {
                        unreachable!()
                    };
                    assert_eq!(*l, len, "{name}");
                    let msg = e.to_string();
                    assert!(!msg.contains('\n') && msg.contains("32 raw bytes"), "{msg}");
                }
                other => panic!("{name}: expected BadLength, got {other:?}"),
            }
            std::fs::remove_file(&path).unwrap();
        }
        let missing = temp_path("missing");
        match Key::load(&missing) {
            Err(e @ KeyError::Io { .. }) => {
                assert!(e.to_string().contains(&*missing.to_string_lossy()))
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(matches!(
            Key::load(&std::env::temp_dir()),
            Err(KeyError::Io { .. } | KeyError::Permissions { .. })
        ));
    }

    // -- Cipher --------------------------------------------------------------

    const SID: [u8; 16] = *b"stream-id-000001";

    fn sealed(cipher: &Cipher, pos: u64, aad: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut buf = msg.to_vec();
        buf.resize(msg.len() + TAG_LEN, 0);
        cipher.seal(pos, aad, &mut buf);
        buf
    }

    #[test]
    fn seal_open_round_trip() {
        let key = Key::from_bytes([42; 32]);
        let cipher = Cipher::new(&key, SID);
        for msg in [&b""[..], b"x", b"hello, world", &log_like(50)] {
            let aad = b"frame header bytes";
            let mut buf = sealed(&cipher, 17, aad, msg);
            if !msg.is_empty() {
                assert_ne!(&buf[..msg.len()], msg);
            }
            let n = cipher.open(17, aad, &mut buf).unwrap();
            assert_eq!(n, msg.len());
            assert_eq!(&buf[..n], msg);
        }
        // Same plaintext at two positions gives different ciphertexts.
        assert_ne!(
            sealed(&cipher, 1, b"", b"same"),
            sealed(&cipher, 2, b"", b"same")
        );
    }

    #[test]
    fn any_flipped_bit_fails() {
        let cipher = Cipher::new(&Key::from_bytes([5; 32]), SID);
        let aad = b"hdr:v1:len=11".to_vec();
        let good = sealed(&cipher, 3, &aad, b"hello world");
        for i in 0..good.len() * 8 {
            let mut buf = good.clone();
            buf[i / 8] ^= 1 << (i % 8);
            let tag = buf[buf.len() - TAG_LEN..].to_vec();
            assert_eq!(cipher.open(3, &aad, &mut buf), Err(()), "bit {i}");
            let (msg, t) = buf.split_at(buf.len() - TAG_LEN);
            assert!(
                msg.iter().all(|&b| b == 0),
                "plaintext left after a failed open"
            );
            assert_eq!(t, &tag[..], "tag changed on failed open");
        }
        for i in 0..aad.len() * 8 {
            let mut bad_aad = aad.clone();
            bad_aad[i / 8] ^= 1 << (i % 8);
            let mut buf = good.clone();
            assert_eq!(cipher.open(3, &bad_aad, &mut buf), Err(()), "aad bit {i}");
        }
        let mut buf = good.clone();
        assert_eq!(cipher.open(3, &aad[..aad.len() - 1], &mut buf), Err(()));
        let mut buf = good.clone();
        assert!(cipher.open(3, &aad, &mut buf).is_ok());
    }

    #[test]
    fn wrong_position_stream_or_key_fails() {
        let key = Key::from_bytes([5; 32]);
        let cipher = Cipher::new(&key, SID);
        let good = sealed(&cipher, 100, b"aad", b"payload");
        for pos in [0, 99, 101, 100 + (1 << 32), u64::MAX] {
            let mut buf = good.clone();
            assert_eq!(cipher.open(pos, b"aad", &mut buf), Err(()), "pos {pos}");
        }
        let mut other_sid = SID;
        other_sid[15] ^= 1;
        let mut buf = good.clone();
        assert_eq!(
            Cipher::new(&key, other_sid).open(100, b"aad", &mut buf),
            Err(())
        );
        let mut buf = good.clone();
        let other_key = Cipher::new(&Key::from_bytes([6; 32]), SID);
        assert_eq!(other_key.open(100, b"aad", &mut buf), Err(()));
        let mut buf = good.clone();
        assert_eq!(cipher.open(100, b"aad", &mut buf), Ok(7));
    }

    #[test]
    fn open_short_or_truncated_buffer_fails() {
        let cipher = Cipher::new(&Key::from_bytes([5; 32]), SID);
        for n in 0..TAG_LEN {
            let mut buf = vec![0u8; n];
            assert_eq!(cipher.open(0, b"", &mut buf), Err(()));
        }
        let good = sealed(&cipher, 0, b"", b"abc");
        for cut in 0..good.len() {
            let mut buf = good[..cut].to_vec();
            assert_eq!(cipher.open(0, b"", &mut buf), Err(()));
        }
        let mut extended = good.clone();
        extended.push(0);
        assert_eq!(cipher.open(0, b"", &mut extended), Err(()));
    }

    /// XChaCha20-Poly1305 as RustCrypto's `chacha20poly1305` computes it
    /// with the 24-byte nonce of FORMAT.md: the construction the records
    /// were sealed with before the subkey was derived once per stream.
    fn reference_seal(
        key: &[u8; 32],
        origin: [u8; 16],
        pos: u64,
        aad: &[u8],
        msg: &[u8],
    ) -> Vec<u8> {
        use chacha20poly1305::aead::AeadInPlace;
        use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
        let mut n = [0u8; 24];
        n[..16].copy_from_slice(&origin);
        n[16..].copy_from_slice(&pos.to_le_bytes());
        let mut buf = msg.to_vec();
        let tag = XChaCha20Poly1305::new(key.into())
            .encrypt_in_place_detached(&XNonce::from(n), aad, &mut buf)
            .unwrap();
        buf.extend_from_slice(&tag);
        buf
    }

    fn reference_open(
        key: &[u8; 32],
        origin: [u8; 16],
        pos: u64,
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::AeadInPlace;
        use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
        let mut n = [0u8; 24];
        n[..16].copy_from_slice(&origin);
        n[16..].copy_from_slice(&pos.to_le_bytes());
        let (ct, tag) = sealed.split_at(sealed.len().checked_sub(16)?);
        let mut buf = ct.to_vec();
        XChaCha20Poly1305::new(key.into())
            .decrypt_in_place_detached(&XNonce::from(n), aad, &mut buf, Tag::from_slice(tag))
            .ok()?;
        Some(buf)
    }

    /// The bytes on disk are exactly XChaCha20-Poly1305's (FORMAT.md,
    /// "Encryption"): for many lengths (across the 64-byte block and the
    /// 16-byte Poly1305 block boundaries, and the lengths where the
    /// assembly switches strategies), positions (all 64 bits), AADs, keys
    /// and stream ids, our seal equals the reference byte for byte, and each
    /// side opens what the other sealed.
    #[test]
    fn same_bytes_as_xchacha20poly1305() {
        let mut rng = Rng::new(13);
        let mut lens: Vec<usize> = (0..=300).collect();
        lens.extend([
            383, 384, 385, 511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097,
        ]);
        lens.extend([16_383, 16_384, 65_535, 65_536, 65_537, 200_000]);
        let mut checked = 0;
        for (i, &len) in lens.iter().enumerate() {
            let mut key = [0u8; 32];
            key.copy_from_slice(&rng.bytes(32));
            let mut sid = [0u8; 16];
            sid.copy_from_slice(&rng.bytes(16));
            let pos = match i % 5 {
                0 => rng.next(),
                1 => rng.next() & 0xFFFF_FFF8,
                2 => i as u64 * 8,
                3 => u64::MAX - i as u64,
                _ => (1u64 << 32) + i as u64 * 4096,
            };
            let aad_len = [0, 1, 14, 15, 16, 17, 64][i % 7];
            let aad = rng.bytes(aad_len);
            let msg = rng.bytes(len);
            let cipher = Cipher::new(&Key::from_bytes(key), sid);
            let ours = sealed(&cipher, pos, &aad, &msg);
            let theirs = reference_seal(&key, sid, pos, &aad, &msg);
            assert_eq!(ours, theirs, "len {len} pos {pos} aad {aad_len}");
            // Each opens the other's.
            assert_eq!(
                reference_open(&key, sid, pos, &aad, &ours).as_deref(),
                Some(&msg[..])
            );
            let mut buf = theirs.clone();
            assert_eq!(cipher.open(pos, &aad, &mut buf), Ok(len));
            assert_eq!(&buf[..len], &msg[..]);
            // A record first written to another stream (bridged): the
            // reference nonce starts with that stream's id.
            let mut origin = sid;
            origin[0] ^= 0x80;
            let foreign = reference_seal(&key, origin, pos, &aad, &msg);
            let mut buf = foreign.clone();
            assert_eq!(cipher.open_with(origin, pos, &aad, &mut buf), Ok(len));
            assert_eq!(&buf[..len], &msg[..]);
            let mut buf = foreign;
            assert_eq!(
                cipher.open(pos, &aad, &mut buf),
                Err(()),
                "foreign opened as own"
            );
            let mut buf = ours.clone();
            assert_eq!(cipher.open_with(sid, pos, &aad, &mut buf), Ok(len));
            checked += 1;
        }
        assert_eq!(checked, lens.len());
    }

    /// The fingerprint printed by `keygen` is the one printed before the
    /// change of backend (computed here with the reference crate).
    #[test]
    fn fingerprint_unchanged() {
        use chacha20poly1305::aead::AeadInPlace;
        use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
        let reference = |key: &[u8; 32]| -> String {
            let aead = XChaCha20Poly1305::new(key.into());
            let mut sub = [0u8; 32];
            aead.encrypt_in_place_detached(
                XNonce::from_slice(b"ipcress/key-fingerprint\0"),
                b"ipcress key fingerprint: subkey",
                &mut sub[..],
            )
            .unwrap();
            let tag = XChaCha20Poly1305::new((&sub).into())
                .encrypt_in_place_detached(
                    &XNonce::default(),
                    b"ipcress key fingerprint v1",
                    &mut [],
                )
                .unwrap();
            tag[..4].iter().map(|b| format!("{b:02x}")).collect()
        };
        let mut rng = Rng::new(99);
        for i in 0..64 {
            let mut key = [i as u8; 32];
            if i % 2 == 1 {
                key.copy_from_slice(&rng.bytes(32));
            }
            assert_eq!(Key::from_bytes(key).fingerprint(), reference(&key));
        }
    }

    #[test]
    #[should_panic(expected = "no room")]
    fn seal_short_buffer_panics() {
        let cipher = Cipher::new(&Key::from_bytes([5; 32]), SID);
        cipher.seal(0, b"", &mut [0u8; TAG_LEN - 1]);
    }
}
