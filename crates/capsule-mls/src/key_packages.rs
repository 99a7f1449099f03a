//! KeyPackages as a directory handles them: a device makes them (OpenMLS
//! keeps their private keys in the device's storage), a server checks them
//! before handing them out, and the Welcome of an add names the KeyPackages
//! it was made for, so a server can deliver it to each added device.
//!
//! A KeyPackage's lifetime is OpenMLS's: set from the system clock when it is
//! made, and checked by OpenMLS against the system clock wherever it is
//! validated, so an injected clock cannot stand in for it. Capsule's own
//! decisions about it (when a device deletes an expired one, when a server
//! stops handing one out) compare its end with the caller's clock.

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _, VLBytes};
use openmls::prelude::{KeyPackage, KeyPackageBundle, KeyPackageRef, Lifetime, MlsMessageBodyIn, MlsMessageIn};
use openmls_traits::OpenMlsProvider;
use openmls_traits::storage::StorageProvider as _;

use crate::binding::{DeviceIdentity, Validation, capabilities};
use crate::boundary::During as _;
use crate::outgoing::verified_key_package;
use crate::{CIPHERSUITE, Member, MlsError, Result};

/// How long a KeyPackage made by [`new_key_package`] lasts by default: four
/// weeks, well inside OpenMLS's longest accepted range.
pub const KEY_PACKAGE_LIFETIME_SECS: u64 = 28 * 24 * 3600;

/// A KeyPackage this device made, and what it keeps to track it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKeyPackage {
    /// The serialized KeyPackage, to publish.
    pub bytes: Vec<u8>,
    /// Its reference (RFC 9420 `KeyPackageRef`): how a Welcome names it.
    pub reference: Vec<u8>,
    /// The end of its lifetime, seconds since the Unix epoch.
    pub not_after: u64,
    /// Whether it is this device's last-resort KeyPackage (a directory hands
    /// it out again when nothing else is left; OpenMLS keeps its private keys
    /// after a join).
    pub last_resort: bool,
}

/// Makes a KeyPackage for `device`, lasting `lifetime_secs` from now (by the
/// system clock, as OpenMLS sets it); OpenMLS stores its private keys in
/// `provider`'s storage until a Welcome uses it (a last-resort one: until
/// [`forget_key_package`]).
///
/// # Errors
/// [`MlsError::Storage`] or [`MlsError::Internal`] from OpenMLS.
pub fn new_key_package<P: OpenMlsProvider>(
    provider: &P,
    device: &DeviceIdentity,
    last_resort: bool,
    lifetime_secs: u64,
) -> Result<NewKeyPackage> {
    let mut builder =
        KeyPackage::builder().leaf_node_capabilities(capabilities()).key_package_lifetime(Lifetime::new(lifetime_secs));
    if last_resort {
        builder = builder.mark_as_last_resort();
    }
    let bundle =
        builder.build(CIPHERSUITE, provider, device, device.credential_with_key()?).during("building a key package")?;
    let key_package = bundle.key_package();
    Ok(NewKeyPackage {
        bytes: key_package.tls_serialize_detached().map_err(|_| MlsError::Internal("key package encoding"))?,
        reference: reference(provider, key_package)?,
        not_after: key_package.life_time().not_after(),
        last_resort,
    })
}

fn reference<P: OpenMlsProvider>(provider: &P, key_package: &KeyPackage) -> Result<Vec<u8>> {
    Ok(key_package.hash_ref(provider.crypto()).during("hashing a key package")?.as_slice().to_vec())
}

/// Whether `provider`'s storage still holds the private keys of the
/// KeyPackage with `reference` (a Welcome that used it deleted them, unless
/// it is a last-resort one).
///
/// # Errors
/// [`MlsError::Storage`].
pub fn holds_key_package<P: OpenMlsProvider>(provider: &P, reference: &[u8]) -> Result<bool> {
    let bundle: Option<KeyPackageBundle> = provider
        .storage()
        .key_package(&key_package_ref(reference)?)
        .map_err(|e| MlsError::storage("reading a key package", e))?;
    Ok(bundle.is_some())
}

/// Deletes the private keys of the KeyPackage with `reference` (expired, or
/// replaced): a Welcome made for it can no longer be read.
///
/// # Errors
/// [`MlsError::Storage`].
pub fn forget_key_package<P: OpenMlsProvider>(provider: &P, reference: &[u8]) -> Result<()> {
    provider
        .storage()
        .delete_key_package(&key_package_ref(reference)?)
        .map_err(|e| MlsError::storage("deleting a key package", e))
}

/// A reference as OpenMLS types it (its TLS encoding is the bytes, length-prefixed).
fn key_package_ref(reference: &[u8]) -> Result<KeyPackageRef> {
    let encoded = VLBytes::new(reference.to_vec())
        .tls_serialize_detached()
        .map_err(|_| MlsError::Malformed("key package ref"))?;
    KeyPackageRef::tls_deserialize_exact(encoded).map_err(|_| MlsError::Malformed("key package ref"))
}

/// A KeyPackage a directory checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPackageInfo {
    /// The device it adds.
    pub member: Member,
    /// Its reference, as a Welcome names it.
    pub reference: Vec<u8>,
    /// The end of its lifetime, seconds since the Unix epoch.
    pub not_after: u64,
    /// Whether it is a last-resort KeyPackage.
    pub last_resort: bool,
}

/// Checks a KeyPackage as an adding member would (OpenMLS's validation:
/// signatures, lifetime, suite; Capsule's identity binding at
/// `validation.now`), without any group: what a directory runs before it
/// files one.
///
/// # Errors
/// [`MlsError::Malformed`], [`MlsError::Refused`] or [`MlsError::BadSignature`]
/// for a KeyPackage OpenMLS refuses; identity errors for its certificate.
pub fn inspect_key_package(bytes: &[u8], validation: Validation<'_>) -> Result<KeyPackageInfo> {
    let provider = crate::MemoryProvider::in_memory()?;
    let (key_package, member) = verified_key_package(&provider, bytes, validation)?;
    Ok(KeyPackageInfo {
        member,
        reference: reference(&provider, &key_package)?,
        not_after: key_package.life_time().not_after(),
        last_resort: key_package.last_resort(),
    })
}

/// The references of the KeyPackages a Welcome was made for (who can read it).
///
/// # Errors
/// [`MlsError::Malformed`] for bytes that are not a Welcome.
pub fn welcome_recipients(welcome: &[u8]) -> Result<Vec<Vec<u8>>> {
    let message = MlsMessageIn::tls_deserialize_exact(welcome).map_err(|_| MlsError::Malformed("welcome"))?;
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        return Err(MlsError::Malformed("not a welcome"));
    };
    Ok(welcome.secrets().iter().map(|s| s.new_member().as_slice().to_vec()).collect())
}
