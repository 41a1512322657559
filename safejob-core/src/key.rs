//! Idempotency keys and their digests.

use std::fmt;

use sha2::{Digest, Sha256};

/// The longest key accepted, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 255;

/// How many hex characters of a digest appear in logs and error messages.
const SHORT_HEX: usize = 12;

/// Why a text was refused as an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key was the empty string.
    #[error("idempotency key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error(
        "idempotency key is {len} bytes long; the limit is {max} bytes (for a long natural key, \
         use a hash of it, e.g. a hex SHA-256, as the key or as one of its parts)"
    )]
    TooLong {
        /// Length of the refused key in bytes.
        len: usize,
        /// The limit, [`MAX_KEY_BYTES`].
        max: usize,
    },
    /// The key contains a control character (newline, NUL, escape, ...).
    #[error("idempotency key has a control character at byte {position}")]
    ControlCharacter {
        /// Byte offset of the first control character.
        position: usize,
    },
    /// A key built from parts was given an empty part.
    #[error("idempotency key part {index} is empty (parts must be non-empty)")]
    EmptyPart {
        /// Zero-based index of the empty part.
        index: usize,
    },
    /// A key built from parts was given no parts at all.
    #[error("idempotency key has no parts: from_parts needs at least one non-empty part")]
    NoParts,
}

/// A validated idempotency key: non-empty, at most 255 bytes, no control characters.
///
/// The row that guards a key is identified by the key's SHA-256 [`KeyDigest`], so every store
/// indexes a fixed-width value, and logs show only the digest prefix: `Debug` never prints the raw
/// key, because keys can hold customer data.
///
/// ```
/// use safejob_core::IdempotencyKey;
///
/// let key = IdempotencyKey::new("charge:order-42")?;
/// assert_eq!(key.as_str(), "charge:order-42");
/// // Parts are joined unambiguously: a ':' inside a part is escaped.
/// let a = IdempotencyKey::from_parts(["charge", "a:b"])?;
/// let b = IdempotencyKey::from_parts(["charge:a", "b"])?;
/// assert_ne!(a.digest(), b.digest());
/// # Ok::<(), safejob_core::KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    text: String,
    digest: KeyDigest,
}

impl IdempotencyKey {
    /// Validates `text` and computes its digest.
    pub fn new(text: impl Into<String>) -> Result<Self, KeyError> {
        let text = text.into();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong {
                len: text.len(),
                max: MAX_KEY_BYTES,
            });
        }
        if let Some((position, _)) = text.char_indices().find(|(_, c)| c.is_control()) {
            return Err(KeyError::ControlCharacter { position });
        }
        let digest = KeyDigest::of(&text);
        Ok(Self { text, digest })
    }

    /// Builds a key from parts joined by `:`, escaping `\` and `:` inside each part, so that
    /// different part lists never produce the same key (`["a:b", "c"]` ≠ `["a", "b:c"]`).
    pub fn from_parts<I, S>(parts: I) -> Result<Self, KeyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut text = String::new();
        let mut count = 0;
        for (index, part) in parts.into_iter().enumerate() {
            let part = part.as_ref();
            if part.is_empty() {
                return Err(KeyError::EmptyPart { index });
            }
            if index > 0 {
                text.push(':');
            }
            for c in part.chars() {
                if c == '\\' || c == ':' {
                    text.push('\\');
                }
                text.push(c);
            }
            count += 1;
        }
        if count == 0 {
            return Err(KeyError::NoParts);
        }
        Self::new(text)
    }

    /// The key's text, exactly as validated. Treat it as customer data: do not log it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The SHA-256 digest that identifies the key's row.
    pub fn digest(&self) -> &KeyDigest {
        &self.digest
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.digest.short())
    }
}

/// SHA-256 of an idempotency key: the identity of its row in every store.
///
/// `Display` and `Debug` print the first 12 hex characters, which is what logs carry;
/// [`KeyDigest::to_hex`] gives all 64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of `text` (no validation: use [`IdempotencyKey::new`] for user input).
    pub fn of(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    /// Wraps 32 raw digest bytes, as read back from a store.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex characters, as stored by the text-keyed backends.
    pub fn from_hex(hex: &str) -> Result<Self, DigestParseError> {
        decode_hex32(hex).map(Self)
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// All 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// The 12-character prefix used in logs and messages.
    pub fn short(&self) -> String {
        let mut hex = self.to_hex();
        hex.truncate(SHORT_HEX);
        hex
    }
}

impl fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({})", self.short())
    }
}

/// A stored digest or fingerprint that is not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex characters, found {found:?}")]
pub struct DigestParseError {
    /// The text that failed to parse (a digest, never a raw key).
    pub found: String,
}

pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

pub(crate) fn decode_hex32(hex: &str) -> Result<[u8; 32], DigestParseError> {
    let err = || DigestParseError {
        found: hex.chars().take(80).collect(),
    };
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(err());
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or_else(err)?;
        let lo = nibble(pair[1]).ok_or_else(err)?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_long_and_control_characters() {
        assert_eq!(IdempotencyKey::new(""), Err(KeyError::Empty));
        let long = "x".repeat(256);
        assert_eq!(
            IdempotencyKey::new(long),
            Err(KeyError::TooLong { len: 256, max: 255 })
        );
        assert!(IdempotencyKey::new("x".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::new("ab\ncd"),
            Err(KeyError::ControlCharacter { position: 2 })
        );
        assert_eq!(
            IdempotencyKey::new("\u{0}"),
            Err(KeyError::ControlCharacter { position: 0 })
        );
        // Multi-byte characters count in bytes.
        assert!(matches!(
            IdempotencyKey::new("é".repeat(128)),
            Err(KeyError::TooLong { len: 256, .. })
        ));
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(
            KeyError::TooLong { len: 300, max: 255 }.to_string(),
            "idempotency key is 300 bytes long; the limit is 255 bytes (for a long natural key, \
             use a hash of it, e.g. a hex SHA-256, as the key or as one of its parts)"
        );
    }

    #[test]
    fn parts_join_unambiguously() {
        let pairs = [
            (vec!["a:b", "c"], vec!["a", "b:c"]),
            (vec!["a\\", "b"], vec!["a", "\\b"]),
            (vec!["a\\:b"], vec!["a\\", "b"]),
            (vec!["ab"], vec!["a", "b"]),
        ];
        for (x, y) in pairs {
            let kx = IdempotencyKey::from_parts(&x).unwrap();
            let ky = IdempotencyKey::from_parts(&y).unwrap();
            assert_ne!(kx.as_str(), ky.as_str(), "{x:?} vs {y:?}");
            assert_ne!(kx.digest(), ky.digest());
        }
        assert_eq!(
            IdempotencyKey::from_parts(["charge", "42"])
                .unwrap()
                .as_str(),
            "charge:42"
        );
        assert_eq!(
            IdempotencyKey::from_parts(["a", ""]),
            Err(KeyError::EmptyPart { index: 1 })
        );
        // No parts at all is its own error, not "part 0 is empty" (issue #14).
        assert_eq!(
            IdempotencyKey::from_parts(Vec::<&str>::new()),
            Err(KeyError::NoParts)
        );
    }

    /// A key over the limit says how to make one that fits (issue #14: a 10 KB natural key gave
    /// no hint). Catches the hint dropped from `KeyError::TooLong`'s message.
    #[test]
    fn a_key_too_long_says_to_hash_it() {
        let error = IdempotencyKey::new("x".repeat(10_000)).unwrap_err();
        assert_eq!(
            error,
            KeyError::TooLong {
                len: 10_000,
                max: MAX_KEY_BYTES
            }
        );
        let message = error.to_string();
        assert!(message.contains("SHA-256"), "{message}");
    }

    #[test]
    fn debug_never_shows_the_raw_key() {
        let key = IdempotencyKey::new("customer-jane@example.com").unwrap();
        let shown = format!("{key:?} {}", key.digest());
        assert!(!shown.contains("jane"), "{shown}");
        assert!(shown.contains(&key.digest().short()));
    }

    #[test]
    fn digest_is_sha256_and_round_trips_hex() {
        let d = KeyDigest::of("abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyDigest::from_hex(&d.to_hex()).unwrap(), d);
        assert!(KeyDigest::from_hex("zz").is_err());
        assert!(KeyDigest::from_hex(&"g".repeat(64)).is_err());
    }
}
