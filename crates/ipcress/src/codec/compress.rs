//! Compression of records: none, lz4 and zstd, behind one setting.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::str::FromStr;

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
///
/// It reads from and prints as the names the CLI takes:
/// ```
/// use ipcress::Compression;
/// let c: Compression = "zstd:9".parse().expect("a valid setting");
/// assert_eq!((c, c.to_string()), (Compression::Zstd(9), "zstd:9".to_string()));
/// assert_eq!("LZ4".parse(), Ok(Compression::Lz4));
/// assert!("gzip".parse::<Compression>().is_err());
/// ```
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

/// A compression setting that is not one of `none`, `lz4`, `zstd` or
/// `zstd:LEVEL`; its message says what was expected.
/// ```
/// let e = "zstd:99".parse::<ipcress::Compression>().unwrap_err();
/// assert!(e.to_string().contains("expected an integer from 1 to 22"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseCompressionError(String);

/// A compressed record that does not decode: what is wrong with it.
/// ```
/// use ipcress::codec::{decompress, Compression};
/// let mut out = Vec::new();
/// let e = decompress(Compression::Lz4, b"xy", &mut out, 1024).unwrap_err();
/// assert!(e.to_string().contains("too short") && out.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecompressError(String);

impl FromStr for Compression {
    type Err = ParseCompressionError;

    /// Accepts `none`, `lz4`, `zstd` (level 3) and `zstd:LEVEL` (1..=22),
    /// ASCII case-insensitively.
    fn from_str(s: &str) -> Result<Self, ParseCompressionError> {
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
                _ => Err(ParseCompressionError(format!(
                    "invalid zstd level {level:?} in {s:?}: expected an integer from \
                     {ZSTD_MIN_LEVEL} to {ZSTD_MAX_LEVEL}"
                ))),
            };
        }
        Err(ParseCompressionError(format!(
            "unknown compression {s:?}: expected none, lz4, zstd or zstd:LEVEL \
             (LEVEL {ZSTD_MIN_LEVEL}..={ZSTD_MAX_LEVEL})"
        )))
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
    /// ```
    /// use ipcress::Compression;
    /// assert_eq!(Compression::Zstd(5).to_code(), (2, 5));
    /// assert_eq!(Compression::None.to_code(), (0, 0));
    /// ```
    pub fn to_code(self) -> (u32, i32) {
        match self {
            Compression::None => (0, 0),
            Compression::Lz4 => (1, 0),
            Compression::Zstd(level) => (2, level),
        }
    }

    /// Inverse of [`Compression::to_code`]. Returns `None` for an unknown
    /// kind, a zstd level outside 1..=22, or a non-zero level for none/lz4.
    /// ```
    /// use ipcress::Compression;
    /// assert_eq!(Compression::from_code(1, 0), Some(Compression::Lz4));
    /// assert_eq!(Compression::from_code(2, 99), None); // no such zstd level
    /// ```
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
/// ```
/// use ipcress::codec::{compress, Compression};
/// let mut out = Vec::new();
/// assert!(compress(Compression::Lz4, &[b'a'; 1000], &mut out));
/// assert_eq!(&out[..4], 1000u32.to_le_bytes()); // the original length, then the block
/// assert!(out.len() < 100);
/// assert!(!compress(Compression::Lz4, b"abcdef", &mut out)); // no gain: store it raw
/// ```
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
/// ```
/// use ipcress::codec::{compress, decompress, Compression};
/// let (input, mut packed, mut out) = (vec![7u8; 5000], Vec::new(), Vec::new());
/// assert!(compress(Compression::Zstd(3), &input, &mut packed));
/// decompress(Compression::Zstd(3), &packed, &mut out, 5000).expect("round trip");
/// assert_eq!(out, input);
/// assert!(decompress(Compression::Zstd(3), &packed, &mut out, 4999).is_err()); // over the limit
/// ```
pub fn decompress(
    c: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
    max_len: usize,
) -> Result<(), DecompressError> {
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
) -> Result<(), DecompressError> {
    if c == Compression::None {
        return Err(DecompressError(
            "record is marked compressed but the stream has no compression".into(),
        ));
    }
    let Some((prefix, body)) = input.split_first_chunk::<LEN_PREFIX>() else {
        return Err(DecompressError(format!(
            "compressed record too short ({} bytes, need at least {LEN_PREFIX})",
            input.len()
        )));
    };
    let declared = u32::from_le_bytes(*prefix);
    if declared == 0 {
        // compress() never produces this: empty records are stored raw.
        return Err(DecompressError(
            "compressed record declares a length of 0".into(),
        ));
    }
    let len = match usize::try_from(declared) {
        Ok(len) if len <= max_len => len,
        _ => {
            return Err(DecompressError(format!(
                "compressed record declares {declared} bytes, more than the limit of {max_len}"
            )));
        }
    };
    // Only growth is zeroed; a successful decode overwrites all `len` bytes
    // (checked below), and any failure clears `out`.
    out.resize(len, 0);
    let got = match c {
        Compression::None => unreachable!("handled above"),
        Compression::Lz4 => lz4_flex::block::decompress_into(body, out)
            .map_err(|e| DecompressError(format!("lz4 decompression failed: {e}")))?,
        Compression::Zstd(_) => zstd_decompress(body, out)
            .map_err(|e| DecompressError(format!("zstd decompression failed: {e}")))?,
    };
    if got != len {
        return Err(DecompressError(format!(
            "compressed record declares {len} bytes but decodes to {got}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
