//! Record encryption: XChaCha20-Poly1305 with the nonce made from the
//! stream id and the record's position, run as IETF ChaCha20-Poly1305 under
//! a subkey derived once per stream.
use crate::codec::key::{KEY_LEN, Key};

use std::fmt;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

// ---------------------------------------------------------------------------
// Record encryption
// ---------------------------------------------------------------------------

/// A sealed record did not open: it is damaged, or was sealed under
/// another key, stream or position. It carries no detail on purpose; the
/// caller knows the position.
/// ```
/// use ipcress::{codec::{Cipher, OpenError, TAG_LEN}, Key};
/// let cipher = Cipher::new(&Key::from_bytes([9; 32]), [1; 16]);
/// let mut buf = vec![0u8; 5 + TAG_LEN];
/// cipher.seal(0, b"", &mut buf);
/// buf[0] ^= 1; // damaged
/// assert_eq!(cipher.open(0, b"", &mut buf), Err(OpenError));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct OpenError;

/// Length of the Poly1305 tag appended to every encrypted record.
pub const TAG_LEN: usize = 16;

/// HChaCha20 of `key` and a 16-byte input: the subkey XChaCha20 uses for
/// every nonce that starts with `input`.
pub(crate) fn hchacha20(key: &[u8; KEY_LEN], input: &[u8; 16]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), input.into());
    let mut sub = Zeroizing::new([0u8; KEY_LEN]);
    sub.copy_from_slice(&out);
    out.as_mut_slice().zeroize();
    sub
}

/// IETF ChaCha20-Poly1305 (12-byte nonce) under `subkey`, run by `ring`'s
/// assembly.
pub(crate) fn ietf_key(subkey: &[u8; KEY_LEN]) -> LessSafeKey {
    // Cannot fail: the length is the algorithm's key length.
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, subkey).expect("ChaCha20-Poly1305 takes 32-byte keys"),
    )
}

/// The 12-byte IETF nonce that XChaCha20 uses with the subkey of a
/// 24-byte nonce `origin ‖ position (u64 LE)`: four zero bytes, then the
/// last eight bytes of that nonce.
pub(crate) fn ietf_nonce(position: u64) -> Nonce {
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
/// ```
/// use ipcress::{codec::{Cipher, TAG_LEN}, Key};
/// let cipher = Cipher::new(&Key::from_bytes([9; 32]), [1; 16]);
/// let mut buf = b"attack at dawn".to_vec();
/// buf.resize(buf.len() + TAG_LEN, 0); // room for the tag
/// cipher.seal(64, b"header", &mut buf);
/// assert_ne!(&buf[..14], b"attack at dawn");
/// assert_eq!(cipher.open(64, b"header", &mut buf), Ok(14));
/// assert_eq!(&buf[..14], b"attack at dawn");
/// ```
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
    /// ```
    /// use ipcress::{codec::{Cipher, TAG_LEN}, Key};
    /// let key = Key::from_bytes([9; 32]);
    /// let (a, b) = (Cipher::new(&key, [1; 16]), Cipher::new(&key, [2; 16]));
    /// let mut buf = vec![0u8; 3 + TAG_LEN];
    /// a.seal(0, b"", &mut buf);
    /// assert!(b.open(0, b"", &mut buf.clone()).is_err()); // another stream's record
    /// assert!(a.open(0, b"", &mut buf).is_ok());
    /// ```
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
    /// ```
    /// use ipcress::{codec::{Cipher, TAG_LEN}, Key};
    /// let key = Key::from_bytes([9; 32]);
    /// let (origin, here) = (Cipher::new(&key, [1; 16]), Cipher::new(&key, [2; 16]));
    /// let mut buf = vec![5u8; 3 + TAG_LEN];
    /// origin.seal(40, b"", &mut buf); // written to stream [1; 16] at position 40
    /// assert_eq!(here.open_with([1; 16], 40, b"", &mut buf), Ok(3)); // carried over
    /// assert_eq!(&buf[..3], [5, 5, 5]);
    /// ```
    pub fn open_with(
        &self,
        origin: [u8; 16],
        position: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, OpenError> {
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
    /// ```
    /// use ipcress::{codec::{Cipher, TAG_LEN}, Key};
    /// let cipher = Cipher::new(&Key::from_bytes([9; 32]), [1; 16]);
    /// let mut buf = vec![0u8; 4 + TAG_LEN];
    /// cipher.seal(8, b"", &mut buf);
    /// assert!(cipher.open(16, b"", &mut buf.clone()).is_err()); // moved to another position
    /// assert_eq!(cipher.open(8, b"", &mut buf), Ok(4));
    /// ```
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
    /// length (`buf.len() - TAG_LEN`). [`OpenError`] on a short buffer or any
    /// authentication failure. After a failure no plaintext is left: a
    /// buffer shorter than the tag is unchanged, any other has its first
    /// `buf.len() - TAG_LEN` bytes zeroed (the cipher decrypts while it
    /// authenticates, then wipes what it decrypted).
    /// ```
    /// use ipcress::{codec::{Cipher, TAG_LEN}, Key};
    /// let cipher = Cipher::new(&Key::from_bytes([9; 32]), [1; 16]);
    /// let mut buf = b"data".to_vec();
    /// buf.resize(4 + TAG_LEN, 0);
    /// cipher.seal(0, b"flags", &mut buf);
    /// assert!(cipher.open(0, b"other flags", &mut buf.clone()).is_err());
    /// assert_eq!(cipher.open(0, b"flags", &mut buf), Ok(4));
    /// assert_eq!(&buf[..4], b"data");
    /// ```
    // The interface deliberately carries no detail: callers report the position.
    #[inline]
    pub fn open(&self, position: u64, aad: &[u8], buf: &mut [u8]) -> Result<usize, OpenError> {
        open_ietf(&self.own, position, aad, buf)
    }
}

#[inline]
fn open_ietf(
    key: &LessSafeKey,
    position: u64,
    aad: &[u8],
    buf: &mut [u8],
) -> Result<usize, OpenError> {
    if buf.len() < TAG_LEN {
        return Err(OpenError);
    }
    key.open_in_place(ietf_nonce(position), Aad::from(aad), buf)
        .map(|plain| plain.len())
        .map_err(|_| OpenError)
}

#[cfg(test)]
mod tests;
