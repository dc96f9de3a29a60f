//! [`Flags`]: the frame flags a caller sees and sets (a raw frame's).

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

use super::{F_AAD_MASK, F_BEGIN, F_COMPRESSED, F_ENCRYPTED, F_END};

/// The flags of a stored frame that a [`RawFrame`](crate::RawFrame)
/// carries: which fragment of a message it is ([`BEGIN`](Self::BEGIN),
/// [`END`](Self::END); a whole message has both, a middle fragment
/// neither) and how its bytes are stored ([`COMPRESSED`](Self::COMPRESSED),
/// [`ENCRYPTED`](Self::ENCRYPTED)).
///
/// A set of these four only: the other bits of a frame header (committed,
/// padding, checksum, ...) belong to the stream that stores the frame, and
/// [`from_bits`](Self::from_bits) refuses them. [`bits`](Self::bits) are the
/// header's bits (docs/FORMAT.md), which is also how the NATS bridge
/// carries them.
/// ```
/// use ipcress::Flags;
/// let whole = Flags::BEGIN | Flags::END;
/// assert!(whole.contains(Flags::BEGIN) && !whole.contains(Flags::COMPRESSED));
/// assert_eq!(format!("{whole:?}"), "Flags(BEGIN | END)");
/// assert_eq!(Flags::from_bits(whole.bits()), Some(whole));
/// assert_eq!(Flags::from_bits(0x0001), None); // not a raw frame's flag
/// assert!(Flags::default().is_empty()); // a middle fragment
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    /// First fragment of a message.
    pub const BEGIN: Flags = Flags(F_BEGIN);
    /// Last fragment of a message.
    pub const END: Flags = Flags(F_END);
    /// The data is compressed with the source stream's compression.
    pub const COMPRESSED: Flags = Flags(F_COMPRESSED);
    /// The data is sealed with the source stream's key (the nonce is made
    /// from the frame's origin).
    pub const ENCRYPTED: Flags = Flags(F_ENCRYPTED);

    /// The names, for `Debug`.
    const NAMED: [(Flags, &'static str); 4] = [
        (Flags::BEGIN, "BEGIN"),
        (Flags::END, "END"),
        (Flags::COMPRESSED, "COMPRESSED"),
        (Flags::ENCRYPTED, "ENCRYPTED"),
    ];

    /// No flag: a middle fragment, stored as is.
    #[inline]
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// Every flag.
    #[inline]
    pub const fn all() -> Flags {
        Flags(F_AAD_MASK)
    }

    /// The header bits (bits 0..16 of word A, docs/FORMAT.md).
    #[inline]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The flags of header bits `bits`; None if a bit is not one of
    /// these flags.
    #[inline]
    pub const fn from_bits(bits: u16) -> Option<Flags> {
        if bits & !F_AAD_MASK == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// The flags among header bits `bits`, the others dropped (a stored
    /// header's committed, padding, checksum... bits).
    #[inline]
    pub const fn from_bits_truncate(bits: u16) -> Flags {
        Flags(bits & F_AAD_MASK)
    }

    /// Whether every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags of both.
    #[inline]
    #[must_use]
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// The flags in both.
    #[inline]
    #[must_use]
    pub const fn intersection(self, other: Flags) -> Flags {
        Flags(self.0 & other.0)
    }

    /// Set the flags of `other`.
    #[inline]
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    /// Clear the flags of `other`.
    #[inline]
    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }
}

impl BitOr for Flags {
    type Output = Flags;
    #[inline]
    fn bitor(self, other: Flags) -> Flags {
        self.union(other)
    }
}

impl BitOrAssign for Flags {
    #[inline]
    fn bitor_assign(&mut self, other: Flags) {
        self.insert(other);
    }
}

impl BitAnd for Flags {
    type Output = Flags;
    #[inline]
    fn bitand(self, other: Flags) -> Flags {
        self.intersection(other)
    }
}

impl fmt::Debug for Flags {
    /// `Flags(BEGIN | END)`, `Flags(empty)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Flags(")?;
        if self.is_empty() {
            f.write_str("empty")?;
        }
        let names = Flags::NAMED.iter().filter(|(v, _)| self.contains(*v));
        for (i, (_, name)) in names.enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            f.write_str(name)?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_bits_takes_exactly_the_raw_frame_flags() {
        for bits in 0..=u16::MAX {
            match Flags::from_bits(bits) {
                Some(f) => {
                    assert_eq!(bits & !F_AAD_MASK, 0, "{bits:#06x} accepted");
                    assert_eq!(f.bits(), bits, "round trip");
                    assert_eq!(Flags::from_bits_truncate(bits), f);
                }
                None => assert_ne!(bits & !F_AAD_MASK, 0, "{bits:#06x} refused"),
            }
            assert_eq!(Flags::from_bits_truncate(bits).bits(), bits & F_AAD_MASK);
        }
        // Every header bit that is not one of these is refused alone.
        for bit in (0..16).map(|i| 1u16 << i) {
            let ours = [F_BEGIN, F_END, F_COMPRESSED, F_ENCRYPTED].contains(&bit);
            assert_eq!(Flags::from_bits(bit).is_some(), ours, "{bit:#06x}");
        }
    }

    #[test]
    fn bits_are_the_header_bits() {
        assert_eq!(Flags::BEGIN.bits(), 0x0004);
        assert_eq!(Flags::END.bits(), 0x0008);
        assert_eq!(Flags::COMPRESSED.bits(), 0x0010);
        assert_eq!(Flags::ENCRYPTED.bits(), 0x0020);
        assert_eq!(Flags::all().bits(), F_AAD_MASK);
        assert_eq!(Flags::empty(), Flags::default());
        assert_eq!(Flags::empty().bits(), 0);
    }

    #[test]
    fn set_operations() {
        let mut f = Flags::BEGIN;
        assert!(f.contains(Flags::BEGIN) && !f.contains(Flags::END));
        assert!(f.contains(Flags::empty()));
        f |= Flags::END;
        assert_eq!(f, Flags::BEGIN | Flags::END);
        assert_eq!(f & Flags::END, Flags::END);
        assert_eq!(f & Flags::COMPRESSED, Flags::empty());
        f.insert(Flags::ENCRYPTED);
        f.remove(Flags::BEGIN);
        assert_eq!(f, Flags::END.union(Flags::ENCRYPTED));
        assert!(!f.is_empty());
        f.remove(Flags::all());
        assert!(f.is_empty());
    }

    #[test]
    fn debug_names_the_flags() {
        assert_eq!(format!("{:?}", Flags::empty()), "Flags(empty)");
        assert_eq!(format!("{:?}", Flags::END), "Flags(END)");
        assert_eq!(
            format!("{:?}", Flags::BEGIN | Flags::END),
            "Flags(BEGIN | END)"
        );
        assert_eq!(
            format!("{:?}", Flags::all()),
            "Flags(BEGIN | END | COMPRESSED | ENCRYPTED)"
        );
    }
}
