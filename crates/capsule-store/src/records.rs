//! Capsule's own small records in the store, each encoded as its format byte
//! then its postcard body.
//!
//! Every format ever released has a decoder: the current one here, older ones
//! in the schema migration that upgraded them (a store of schema 1 wrote
//! them without a format byte, the device record as JSON). The album and
//! resilience records carry their own formats and are upgraded where their
//! crates read them. A format this build does not know is refused with
//! [`StoreError::UnknownFormat`], never guessed at.

use capsule_identity::encoding;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{KeyPackageRecord, Result, StoreError};

/// Format of the device record: 2 (format 1 was JSON without a format byte).
const DEVICE_FORMAT: u8 = 2;
/// Format of the key-package record: 2 (1 had no format byte).
const KEY_PACKAGE_FORMAT: u8 = 2;
/// Format of the re-bootstrap record: 2 (1 had no format byte).
const REBOOTSTRAP_FORMAT: u8 = 2;

/// This device's identity: its MLS signature key and certificate.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct DeviceRecord {
    pub(crate) secret: [u8; 32],
    pub(crate) certificate: Vec<u8>,
}

/// `format`, then `body`: what every record here is.
fn with_format(format: u8, body: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(body.len().saturating_add(1)));
    out.push(format);
    out.extend_from_slice(body);
    out
}

/// The body of a record of `format`, or why not.
fn body<'a>(bytes: &'a [u8], format: u8, record: &'static str) -> Result<&'a [u8]> {
    match bytes.split_first() {
        Some((&f, body)) if f == format => Ok(body),
        Some((&f, _)) => Err(StoreError::UnknownFormat { record, format: f }),
        None => Err(StoreError::Record(record)),
    }
}

impl DeviceRecord {
    pub(crate) fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        let body = encoding::encode_secret(self).map_err(|_| StoreError::Record("device"))?;
        Ok(with_format(DEVICE_FORMAT, &body))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        encoding::decode_canonical(body(bytes, DEVICE_FORMAT, "device")?).map_err(|_| StoreError::Record("device"))
    }
}

pub(crate) fn encode_key_package(record: &KeyPackageRecord) -> Result<Vec<u8>> {
    let body = encoding::encode(record).map_err(|_| StoreError::Record("key package"))?;
    Ok(with_format(KEY_PACKAGE_FORMAT, &body).to_vec())
}

pub(crate) fn decode_key_package(bytes: &[u8]) -> Result<KeyPackageRecord> {
    encoding::decode_canonical(body(bytes, KEY_PACKAGE_FORMAT, "key package")?)
        .map_err(|_| StoreError::Record("key package"))
}

pub(crate) fn encode_rebootstrap(record: &capsule_resilience::Discarded) -> Result<Vec<u8>> {
    let body = encoding::encode(record).map_err(|_| StoreError::Record("rebootstrap"))?;
    Ok(with_format(REBOOTSTRAP_FORMAT, &body).to_vec())
}

pub(crate) fn decode_rebootstrap(bytes: &[u8]) -> Result<capsule_resilience::Discarded> {
    encoding::decode_canonical(body(bytes, REBOOTSTRAP_FORMAT, "rebootstrap")?)
        .map_err(|_| StoreError::Record("rebootstrap"))
}

/// Schema 1 → 2, inside the migration's transaction: every record of schema 1
/// (written without a format byte; the device record as JSON) rewritten in
/// its format 2. A record that does not decode stops the migration, and the
/// store is refused unchanged.
pub(crate) fn upgrade_from_schema_1(conn: &Connection) -> Result<()> {
    for (kind, id, value) in rows(conn)? {
        let upgraded = match kind.as_str() {
            crate::store::KIND_DEVICE => {
                let record: DeviceRecord =
                    serde_json::from_slice(&value).map_err(|_| StoreError::Record("device (format 1)"))?;
                record.encode()?
            }
            crate::store::KIND_KEY_PACKAGE => {
                let record: KeyPackageRecord =
                    encoding::decode_canonical(&value).map_err(|_| StoreError::Record("key package (format 1)"))?;
                Zeroizing::new(encode_key_package(&record)?)
            }
            crate::store::KIND_REBOOTSTRAP => {
                let record: capsule_resilience::Discarded =
                    encoding::decode_canonical(&value).map_err(|_| StoreError::Record("rebootstrap (format 1)"))?;
                Zeroizing::new(encode_rebootstrap(&record)?)
            }
            _ => continue,
        };
        conn.execute(
            "UPDATE capsule_records SET value = ?3 WHERE kind = ?1 AND id = ?2",
            params![kind, id, upgraded.as_slice()],
        )?;
    }
    Ok(())
}

/// One stored record: kind, id, and its value (zeroized when dropped).
type Row = (String, Vec<u8>, Zeroizing<Vec<u8>>);

/// Every Capsule record.
fn rows(conn: &Connection) -> Result<Vec<Row>> {
    let mut statement = conn.prepare("SELECT kind, id, value FROM capsule_records ORDER BY kind, id")?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, Zeroizing::new(r.get::<_, Vec<u8>>(2)?))))?;
    Ok(rows.collect::<core::result::Result<_, _>>()?)
}
