//! Record codecs: compression (none, lz4, zstd) and authenticated encryption
//! (XChaCha20-Poly1305), plus key-file handling. See DESIGN.md section 4.
//!
//! Everything here is a pure function of its inputs (apart from per-thread
//! zstd context caches and the key-file I/O). The producer compresses, then
//! encrypts; the consumer opens, then decompresses.
//!
//! ```
//! use ipcress::codec::{Cipher, Compression, TAG_LEN, compress, decompress};
//! let record = vec![b'r'; 1000];
//! let (mut stored, mut out) = (Vec::new(), Vec::new());
//! assert!(compress(Compression::Lz4, &record, &mut stored)); // the producer compresses,
//! let n = stored.len();
//! stored.resize(n + TAG_LEN, 0);
//! let cipher = Cipher::new(&ipcress::Key::from_bytes([3; 32]), [0; 16]);
//! cipher.seal(0, b"", &mut stored); // then encrypts;
//! assert_eq!(cipher.open(0, b"", &mut stored), Ok(n)); // the consumer opens,
//! decompress(Compression::Lz4, &stored[..n], &mut out, 1 << 20).expect("valid");
//! assert_eq!(out, record); // then decompresses
//! ```

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
