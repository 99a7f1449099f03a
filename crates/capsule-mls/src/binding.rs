//! How Capsule's identity layer rides in MLS: the credential, the capabilities
//! every leaf advertises, and the check every leaf must pass.
//!
//! A leaf's credential is `CredentialType::Other(CREDENTIAL_TYPE)` carrying the
//! device certificate (about 3.4 KB: the ML-DSA-65 signature is 3309 bytes).
//! The identity public key (1984 bytes) does not travel: every verifier looks it
//! up in its trust store by user, which is also what makes it trusted.

use capsule_identity::{
    DeviceCertificate, DeviceClaims, DeviceId, DeviceSigningKey, IdentityError, TrustStore, UnixTime, UserId,
};
use openmls::prelude::{
    Capabilities, Credential, CredentialType, CredentialWithKey, ExtensionType, LeafNode, ProposalType,
    RequiredCapabilitiesExtension,
};
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;

use crate::{CIPHERSUITE, Member, MlsError, Result};

/// Credential type of a Capsule device certificate (private-use range).
pub const CREDENTIAL_TYPE: u16 = 0xF0C0;
/// Group-context extension type of the album context (private-use range).
pub const ALBUM_EXTENSION_TYPE: u16 = 0xF0C1;

/// The capabilities every Capsule leaf advertises: the suite, the album
/// extension, the last-resort KeyPackage extension, group-context-extension
/// proposals and Capsule credentials.
#[must_use]
pub fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[ExtensionType::Unknown(ALBUM_EXTENSION_TYPE), ExtensionType::LastResort]),
        Some(&[ProposalType::GroupContextExtensions]),
        Some(&[CredentialType::Other(CREDENTIAL_TYPE)]),
    )
}

/// What every member must support: the album extension and Capsule credentials.
pub(crate) fn required_capabilities() -> RequiredCapabilitiesExtension {
    RequiredCapabilitiesExtension::new(
        &[ExtensionType::Unknown(ALBUM_EXTENSION_TYPE)],
        &[ProposalType::GroupContextExtensions],
        &[CredentialType::Other(CREDENTIAL_TYPE)],
    )
}

/// One device: its MLS signature key and the certificate binding it to its user.
pub struct DeviceIdentity {
    key: DeviceSigningKey,
    certificate: DeviceCertificate,
}

impl core::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("user", &self.certificate.user())
            .field("device", &self.certificate.device())
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// Pairs a device key with its certificate.
    ///
    /// # Errors
    /// [`MlsError::LeafKeyMismatch`] if the certificate certifies another key.
    pub fn new(key: DeviceSigningKey, certificate: DeviceCertificate) -> Result<Self> {
        if certificate.device_key() != &key.public_key() {
            return Err(MlsError::LeafKeyMismatch);
        }
        Ok(Self { key, certificate })
    }

    /// The user this device belongs to.
    #[must_use]
    pub fn user(&self) -> UserId {
        self.certificate.user()
    }

    /// This device.
    #[must_use]
    pub fn device(&self) -> DeviceId {
        self.certificate.device()
    }

    /// The certificate.
    #[must_use]
    pub const fn certificate(&self) -> &DeviceCertificate {
        &self.certificate
    }

    /// The device key's secret bytes, for the device's own durable store.
    #[must_use]
    pub fn secret_key_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        self.key.to_secret_bytes()
    }

    pub(crate) fn credential_with_key(&self) -> Result<CredentialWithKey> {
        let cert = self.certificate.to_bytes().map_err(MlsError::Identity)?;
        Ok(CredentialWithKey {
            credential: Credential::new(CredentialType::Other(CREDENTIAL_TYPE), cert),
            signature_key: self.key.public_key().to_vec().into(),
        })
    }
}

/// OpenMLS asks the device key for Ed25519 signatures through this trait; the
/// key itself never leaves capsule-identity's zeroizing type.
impl Signer for DeviceIdentity {
    fn sign(&self, payload: &[u8]) -> core::result::Result<Vec<u8>, SignerError> {
        Ok(self.key.sign(payload).to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// Where and when identity bindings are checked.
#[derive(Clone, Copy)]
pub struct Validation<'a> {
    /// Identity keys trusted per user.
    pub trust: &'a dyn TrustStore,
    /// The current time, for certificate validity.
    pub now: UnixTime,
}

impl core::fmt::Debug for Validation<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Validation").field("now", &self.now).finish_non_exhaustive()
    }
}

/// Verifies a credential and the Ed25519 key that signs for it: the hybrid
/// certificate must verify under the user's trusted identity key and certify
/// exactly `signature_key`.
pub(crate) fn verify_credential(
    credential: &Credential,
    signature_key: &[u8],
    validation: Validation<'_>,
) -> Result<DeviceClaims> {
    if credential.credential_type() != CredentialType::Other(CREDENTIAL_TYPE) {
        return Err(MlsError::ForeignCredential);
    }
    let bytes = credential.serialized_content();
    let Ok(key) = <&[u8; 32]>::try_from(signature_key) else {
        // A certificate that does not decode is reported as such first.
        DeviceCertificate::from_bytes(bytes).map_err(|e| MlsError::Identity(e.into()))?;
        return Err(MlsError::LeafKeyMismatch);
    };
    DeviceCertificate::verify_bytes(bytes, key, validation.now, validation.trust).map_err(|e| match e {
        IdentityError::UntrustedUser => match DeviceCertificate::claimed_member(bytes) {
            Ok((user, _)) => MlsError::UnknownIdentity { user },
            Err(e) => MlsError::Identity(e.into()),
        },
        e => MlsError::Identity(e),
    })
}

/// [`verify_credential`] for a leaf node.
pub(crate) fn verify_leaf(leaf: &LeafNode, validation: Validation<'_>) -> Result<DeviceClaims> {
    verify_credential(leaf.credential(), leaf.signature_key().as_slice(), validation)
}

/// The member a credential names, without verifying it (for members already
/// verified when they joined).
pub(crate) fn claimed_identity(credential: &Credential) -> Result<Member> {
    if credential.credential_type() != CredentialType::Other(CREDENTIAL_TYPE) {
        return Err(MlsError::ForeignCredential);
    }
    let (user, device) =
        DeviceCertificate::claimed_member(credential.serialized_content()).map_err(|e| MlsError::Identity(e.into()))?;
    Ok(Member { user, device })
}
