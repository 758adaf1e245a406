//! Keys and values: NUL-free byte strings bounded by the fields that carry them.
//!
//! The bytes are UTF-8 when the kernel or a well-behaved program wrote them, but a pool
//! file can hold anything, so they are kept as bytes and compared exactly (the stock
//! daemon's case-sensitive first-match rule). Invariant: no NUL, and short enough that a
//! terminator still fits in the field. That makes every encoding of them terminated.

use crate::limits::{KVP_KEY_FIELD, KVP_VALUE_FIELD};

/// Why a byte string cannot be a key or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{len} bytes do not fit a {field}-byte field with its terminator")]
    TooLong { len: usize, field: usize },
    #[error("contains a NUL byte at {at}")]
    Nul { at: usize },
}

macro_rules! bounded_text {
    ($name:ident, $field:expr, $what:literal) => {
        #[doc = concat!("A ", $what, ": at most `", stringify!($field), " - 1` bytes, no NUL.")]
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(Box<[u8]>);

        impl $name {
            /// Size of the field that carries it, terminator included.
            pub const FIELD: usize = $field;

            pub fn new(bytes: &[u8]) -> Result<Self, TextError> {
                if bytes.len() >= Self::FIELD {
                    return Err(TextError::TooLong {
                        len: bytes.len(),
                        field: Self::FIELD,
                    });
                }
                // `contains` on bytes searches a word at a time; `position` only to
                // report where (every decoded record comes through here).
                if bytes.contains(&0) {
                    let at = bytes.iter().position(|&b| b == 0).unwrap_or_default();
                    return Err(TextError::Nul { at });
                }
                Ok(Self(bytes.into()))
            }

            /// Cuts at the first NUL and at the field limit: used for text we produce
            /// ourselves (system information), where cutting is the right answer.
            pub fn truncated(bytes: &[u8]) -> Self {
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                let end = end.min(Self::FIELD - 1);
                Self(bytes[..end].into())
            }

            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            pub fn len(&self) -> usize {
                self.0.len()
            }

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// Writes the bytes and zero-fills the rest of `field` (the NUL and padding).
            pub fn write_padded(&self, field: &mut [u8]) {
                debug_assert_eq!(field.len(), Self::FIELD);
                field[..self.0.len()].copy_from_slice(&self.0);
                field[self.0.len()..].fill(0);
            }

            /// UTF-16 code units the host will see after the kernel converts it.
            pub fn utf16_units(&self) -> usize {
                String::from_utf8_lossy(&self.0).encode_utf16().count()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", String::from_utf8_lossy(&self.0))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&String::from_utf8_lossy(&self.0))
            }
        }

        #[cfg(feature = "arbitrary")]
        impl<'a> arbitrary::Arbitrary<'a> for $name {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                let len = u.int_in_range(0..=Self::FIELD - 1)?;
                let raw = u.bytes(len.min(u.len()))?;
                Ok(Self::truncated(raw))
            }
        }
    };
}

bounded_text!(Key, KVP_KEY_FIELD, "KVP key");
bounded_text!(Value, KVP_VALUE_FIELD, "KVP value");

/// Reads a NUL-terminated string from a fixed field without looking past the field.
/// `None` when the field holds no terminator.
pub fn terminated(field: &[u8]) -> Option<&[u8]> {
    field.iter().position(|&b| b == 0).map(|end| &field[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_nul() {
        assert!(Key::new(&[b'a'; 511]).is_ok());
        assert_eq!(
            Key::new(&[b'a'; 512]),
            Err(TextError::TooLong {
                len: 512,
                field: 512
            })
        );
        assert_eq!(Value::new(b"a\0b"), Err(TextError::Nul { at: 1 }));
        assert_eq!(Value::truncated(b"ab\0cd").as_bytes(), b"ab");
        assert_eq!(Key::truncated(&[b'x'; 600]).len(), 511);
    }

    #[test]
    fn padding_clears_stale_bytes() {
        let mut field = [0xffu8; KVP_KEY_FIELD];
        Key::new(b"foo").unwrap().write_padded(&mut field);
        assert_eq!(&field[..4], b"foo\0");
        assert!(field[3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn utf16_units_count_what_the_host_sees() {
        assert_eq!(Key::new("é".as_bytes()).unwrap().utf16_units(), 1);
        assert_eq!(Key::new("😀".as_bytes()).unwrap().utf16_units(), 2);
    }
}
