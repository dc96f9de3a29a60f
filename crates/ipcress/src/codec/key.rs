//! Keys: 32 random bytes, kept in files only their owner can read.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::codec::aead::{hchacha20, ietf_key, ietf_nonce};

use ring::aead::Aad;
use zeroize::{Zeroize, Zeroizing};

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// 32-byte XChaCha20-Poly1305 key. Its bytes are never printed and are
/// zeroed on drop.
///
/// ```
/// use ipcress::Key;
/// let key = Key::from_bytes([7; 32]);
/// assert_eq!(format!("{key:?}"), "Key(<redacted>)");
/// assert_eq!(key.clone().fingerprint(), key.fingerprint());
/// ```
pub struct Key {
    pub(super) bytes: [u8; KEY_LEN],
}

impl Clone for Key {
    /// A copy of the key, zeroed on drop like the original.
    fn clone(&self) -> Key {
        Key { bytes: self.bytes }
    }
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
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("ipcress-doc-key-error-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use ipcress::{Key, KeyError};
/// let path = dir.join("short.key");
/// std::fs::write(&path, b"not a key").unwrap(); // mode 0600 or not, too short
/// # std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
/// assert!(matches!(Key::load(&path), Err(KeyError::BadLength { len: 9, .. })));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
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
    /// ```
    /// use ipcress::Key;
    /// let (a, b) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
    /// assert_ne!(a.fingerprint(), b.fingerprint());
    /// ```
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Key {
        Key { bytes: b }
    }

    /// A fresh random key from the operating system's CSPRNG.
    /// ```
    /// use ipcress::Key;
    /// let (a, b) = (Key::generate()?, Key::generate()?);
    /// assert_ne!(a.fingerprint(), b.fingerprint());
    /// # Ok::<(), std::io::Error>(())
    /// ```
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
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("ipcress-doc-key-load-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use std::fs::{self, Permissions};
    /// use std::os::unix::fs::PermissionsExt;
    /// use ipcress::{Key, KeyError};
    /// let path = dir.join("hex.key");
    /// fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap(); // 64 hex digits
    /// fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
    /// assert!(matches!(Key::load(&path), Err(KeyError::Permissions { mode: 0o644, .. })));
    /// fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
    /// assert_eq!(Key::load(&path)?.fingerprint(), Key::from_bytes([0xab; 32]).fingerprint());
    /// # fs::remove_dir_all(&dir).unwrap(); Ok::<(), KeyError>(())
    /// ```
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
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("ipcress-doc-key-write-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use ipcress::{Key, KeyError};
    /// let path = dir.join("stream.key");
    /// let made = Key::write_new(&path)?;
    /// assert_eq!(Key::load(&path)?.fingerprint(), made.fingerprint());
    /// assert!(matches!(Key::write_new(&path), Err(KeyError::Exists { .. })));
    /// # std::fs::remove_dir_all(&dir).unwrap(); Ok::<(), KeyError>(())
    /// ```
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
    /// ```
    /// let fp = ipcress::Key::from_bytes([7; 32]).fingerprint();
    /// assert_eq!(fp.len(), 8);
    /// assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
    /// ```
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

#[cfg(test)]
mod tests;
