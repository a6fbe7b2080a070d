//! 32-byte values (SHA-256 digests, ed25519 public keys): hex for people, raw bytes on the wire.

use core::fmt;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

macro_rules! bytes32 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Serialised as a 64-character hex string in human-readable formats (TOML, JSON) and as
        /// 32 raw bytes in binary ones (postcard).
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Parses 64 hex digits (either case).
            pub fn from_hex(text: &str) -> Result<Self, crate::Error> {
                parse_hex(text).map(Self).ok_or_else(|| {
                    crate::Error::invalid(
                        $what,
                        alloc::format!("expected 64 hex digits, got {:?}", text),
                    )
                })
            }

            /// The value as 64 lowercase hex digits.
            pub fn to_hex(&self) -> alloc::string::String {
                to_hex(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serialize_bytes32(&self.0, serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_bytes32(deserializer).map(Self)
            }
        }
    };
}

bytes32!(
    /// A SHA-256 digest of a file.
    Sha256Digest,
    "sha256"
);
bytes32!(
    /// An ed25519 public key that verifies bundle signatures.
    PublicKey,
    "public_key"
);

fn to_hex(bytes: &[u8; 32]) -> alloc::string::String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = alloc::string::String::with_capacity(64);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn serialize_bytes32<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&to_hex(bytes))
    } else {
        let mut tuple = serializer.serialize_tuple(32)?;
        for b in bytes {
            tuple.serialize_element(b)?;
        }
        tuple.end()
    }
}

fn deserialize_bytes32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
    struct HexOrBytes;

    impl<'de> Visitor<'de> for HexOrBytes {
        type Value = [u8; 32];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("64 hex digits or 32 bytes")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse_hex(text).ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = [0u8; 32];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    if deserializer.is_human_readable() {
        deserializer.deserialize_str(HexOrBytes)
    } else {
        deserializer.deserialize_tuple(32, HexOrBytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_text() {
        let digest = Sha256Digest(core::array::from_fn(|i| (i * 7) as u8));
        assert_eq!(Sha256Digest::from_hex(&digest.to_hex()).unwrap(), digest);
        assert_eq!(
            Sha256Digest::from_hex(&digest.to_hex().to_uppercase()).unwrap(),
            digest
        );
        assert!(Sha256Digest::from_hex("abc").is_err());
        assert!(PublicKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn postcard_uses_raw_bytes() {
        let key = PublicKey([0xab; 32]);
        let bytes = postcard::to_allocvec(&key).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(postcard::from_bytes::<PublicKey>(&bytes).unwrap(), key);
    }
}
