//! The encoding OpenMLS's values get inside SQLite.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// JSON: OpenMLS's types are serde types built with self-describing formats in
/// mind; our own records use the canonical postcard encoding instead.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonCodec;

impl openmls_sqlite_storage::Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}
