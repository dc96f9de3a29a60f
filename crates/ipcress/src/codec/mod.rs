//! Record codecs: compression (none, lz4, zstd) and authenticated encryption
//! (XChaCha20-Poly1305), plus key-file handling. See DESIGN.md section 4.
//!
//! Everything here is a pure function of its inputs (apart from per-thread
//! zstd context caches and the key-file I/O). The producer compresses, then
//! encrypts; the consumer opens, then decompresses.

mod aead;
mod compress;
mod key;
#[cfg(test)]
mod testutil;

pub use aead::{Cipher, OpenError, TAG_LEN};
pub use compress::{
    Compression, DecompressError, ParseCompressionError, ZSTD_DEFAULT_LEVEL, ZSTD_MAX_LEVEL,
    ZSTD_MIN_LEVEL, compress, decompress,
};
pub use key::{KEY_LEN, Key, KeyError};
