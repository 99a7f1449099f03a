//! The key the device database is encrypted under (SQLCipher).

use zeroize::Zeroizing;

/// The 32-byte key a device's database is encrypted under. The application
/// keeps it in the platform's keychain or keystore and hands it over at
/// every open; it is used as SQLCipher's raw key (no passphrase
/// derivation: it is random already). Never printed, zeroized on drop.
pub struct DatabaseKey(Zeroizing<[u8; 32]>);

impl DatabaseKey {
    /// The key from its bytes (the caller zeroizes its own copy).
    #[must_use]
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Zeroizing::new(*bytes))
    }

    /// SQLCipher's spelling of a raw key: `x'` and 64 hex digits and `'`.
    pub(crate) fn sqlcipher_value(&self) -> Zeroizing<String> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut value = Zeroizing::new(String::with_capacity(67));
        value.push_str("x'");
        for byte in self.0.iter() {
            for nibble in [byte >> 4, byte & 0x0f] {
                value.push(char::from(HEX.get(usize::from(nibble)).copied().unwrap_or(b'0')));
            }
        }
        value.push('\'');
        value
    }
}

impl core::fmt::Debug for DatabaseKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DatabaseKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_key_is_spelled_as_sqlcipher_reads_it_and_never_printed() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xAB;
        bytes[31] = 0x01;
        let key = DatabaseKey::from_bytes(&bytes);
        let value = key.sqlcipher_value();
        assert_eq!(value.len(), 67);
        assert!(value.starts_with("x'ab00") && value.ends_with("0001'"));
        assert_eq!(format!("{key:?}"), "DatabaseKey(..)");
    }
}
