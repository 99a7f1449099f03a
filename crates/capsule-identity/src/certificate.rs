//! Device certificates: a user's identity key vouching for one device's MLS key.

use rand_core::TryCryptoRng;
use serde::{Deserialize, Serialize};

use crate::identity::HybridSignature;
use crate::{
    DecodeError, DeviceId, IdentityError, IdentityKeyPair, IdentityPublicKey, Result, UnixTime, UserId, Validity,
    encoding,
};

/// Format version of [`DeviceCertificate`]; signed, so it cannot be downgraded.
pub const CERTIFICATE_VERSION: u8 = 1;
/// Prefix of the to-be-signed bytes: no other Capsule signature starts with it.
const TBS_DOMAIN: &[u8] = b"capsule/device-certificate/v1\0";
/// FIPS 204 context string for the ML-DSA half (must be non-empty, at most 255 bytes).
const ML_DSA_CONTEXT: &[u8] = b"capsule-device-certificate-v1";

/// The fields a certificate binds; signed as `TBS_DOMAIN || postcard(self)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Tbs {
    version: u8,
    user: UserId,
    device: DeviceId,
    device_key: [u8; 32],
    validity: Validity,
}

impl Tbs {
    fn signed_bytes(&self) -> Result<Vec<u8>> {
        let mut out = TBS_DOMAIN.to_vec();
        out.extend_from_slice(&encoding::encode(self)?);
        Ok(out)
    }
}

/// What a user's identity key says about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceClaims {
    /// The user the device belongs to.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// The device's Ed25519 MLS signature public key.
    pub device_key: [u8; 32],
    /// When the certificate may be used.
    pub validity: Validity,
}

/// A device certificate: [`DeviceClaims`] signed by both halves of the user's identity key.
///
/// It does not carry the identity public key (1984 bytes): verifiers look it
/// up in their [`TrustStore`] by user, which is also what makes it trusted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCertificate {
    tbs: Tbs,
    signature: HybridSignature,
}

/// Where a verifier finds the identity key it trusts for a user.
///
/// The user directory (and how keys come to be trusted) is out of scope here.
pub trait TrustStore {
    /// The identity key trusted for `user`, if any.
    fn trusted_identity(&self, user: &UserId) -> Option<&IdentityPublicKey>;

    /// Where [`DeviceCertificate::verify_bytes`] keeps the certificates it
    /// verified under this store, if anywhere (see [`crate::CachingTrustStore`]).
    fn verified_certificates(&self) -> Option<&crate::VerifiedCertificates> {
        None
    }
}

impl TrustStore for std::collections::BTreeMap<UserId, IdentityPublicKey> {
    fn trusted_identity(&self, user: &UserId) -> Option<&IdentityPublicKey> {
        self.get(user)
    }
}

impl IdentityKeyPair {
    /// Certifies `claims` with both halves, drawing ML-DSA randomness from the OS RNG.
    ///
    /// # Errors
    /// [`IdentityError::Rng`] if the RNG fails.
    pub fn certify_device(&self, claims: &DeviceClaims) -> Result<DeviceCertificate> {
        self.certify_device_with(claims, &mut getrandom::SysRng)
    }

    /// Certifies `claims`, drawing ML-DSA randomness from `rng`.
    ///
    /// # Errors
    /// [`IdentityError::Rng`] if `rng` fails.
    pub fn certify_device_with<R: TryCryptoRng + ?Sized>(
        &self,
        claims: &DeviceClaims,
        rng: &mut R,
    ) -> Result<DeviceCertificate> {
        let tbs = Tbs {
            version: CERTIFICATE_VERSION,
            user: claims.user,
            device: claims.device,
            device_key: claims.device_key,
            validity: claims.validity,
        };
        let signature = self.sign_hybrid(&tbs.signed_bytes()?, ML_DSA_CONTEXT, rng)?;
        Ok(DeviceCertificate { tbs, signature })
    }
}

impl DeviceCertificate {
    /// The user this certificate names.
    #[must_use]
    pub const fn user(&self) -> UserId {
        self.tbs.user
    }

    /// The device this certificate names.
    #[must_use]
    pub const fn device(&self) -> DeviceId {
        self.tbs.device
    }

    /// The certified Ed25519 MLS signature key.
    #[must_use]
    pub const fn device_key(&self) -> &[u8; 32] {
        &self.tbs.device_key
    }

    /// The validity window.
    #[must_use]
    pub const fn validity(&self) -> Validity {
        self.tbs.validity
    }

    /// Accepts the certificate only if every condition holds: the user has a
    /// trusted identity key, both signatures verify under it, `presented_key`
    /// is the certified key and `now` is inside the validity window.
    ///
    /// # Errors
    /// [`IdentityError::UntrustedUser`], [`IdentityError::BadSignature`],
    /// [`IdentityError::KeyMismatch`], [`IdentityError::NotYetValid`] or
    /// [`IdentityError::Expired`].
    pub fn verify(
        &self,
        presented_key: &[u8; 32],
        now: UnixTime,
        trust: &(impl TrustStore + ?Sized),
    ) -> Result<DeviceClaims> {
        let identity = trust.trusted_identity(&self.tbs.user).ok_or(IdentityError::UntrustedUser)?;
        if !identity.verify_hybrid(&self.tbs.signed_bytes()?, ML_DSA_CONTEXT, &self.signature) {
            return Err(IdentityError::BadSignature);
        }
        if presented_key != &self.tbs.device_key {
            return Err(IdentityError::KeyMismatch);
        }
        self.tbs.validity.check(now)?;
        Ok(self.claims())
    }

    fn claims(&self) -> DeviceClaims {
        DeviceClaims {
            user: self.tbs.user,
            device: self.tbs.device,
            device_key: self.tbs.device_key,
            validity: self.tbs.validity,
        }
    }

    /// Canonical encoding (3.4 KB: the ML-DSA signature dominates).
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(encoding::encode(self)?)
    }

    /// Decodes and verifies a certificate as [`DeviceCertificate::verify`]
    /// does, with the same errors; certificates the trust store's cache holds
    /// (same bytes, same trusted key) skip the decoding and the signatures,
    /// and the time is still checked against their validity.
    ///
    /// # Errors
    /// [`IdentityError::Decode`] for bytes [`DeviceCertificate::from_bytes`]
    /// refuses; as [`DeviceCertificate::verify`].
    pub fn verify_bytes(
        bytes: &[u8],
        presented_key: &[u8; 32],
        now: UnixTime,
        trust: &(impl TrustStore + ?Sized),
    ) -> Result<DeviceClaims> {
        let cache = trust.verified_certificates();
        if let Some(claims) = cache.and_then(|c| c.get(bytes, trust)) {
            if presented_key != &claims.device_key {
                return Err(IdentityError::KeyMismatch);
            }
            claims.validity.check(now)?;
            return Ok(claims);
        }
        let claims = Self::from_bytes(bytes)?.verify(presented_key, now, trust)?;
        if let (Some(cache), Some(identity)) = (cache, trust.trusted_identity(&claims.user)) {
            cache.insert(bytes, identity, &claims);
        }
        Ok(claims)
    }

    /// The user and device certificate bytes name, read from the signed
    /// fields alone: the signature after them is neither decoded nor checked,
    /// only its length. For a leaf whose certificate was verified when it
    /// entered the group: decoding the 3.4 KB signature was most of what
    /// naming a member cost.
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] if the fields do not decode or a
    /// signature's length does not follow them;
    /// [`DecodeError::UnknownVersion`] for another certificate format.
    pub fn claimed_member(bytes: &[u8]) -> Result<(UserId, DeviceId), DecodeError> {
        const SIGNATURE_LEN: usize = 64 + core::mem::size_of::<crate::ml_dsa::MlDsaSignatureBytes>();
        let (tbs, signature) = postcard::take_from_bytes::<Tbs>(bytes).map_err(|_| DecodeError::Malformed)?;
        if tbs.version != CERTIFICATE_VERSION {
            return Err(DecodeError::UnknownVersion(tbs.version));
        }
        if signature.len() != SIGNATURE_LEN {
            return Err(DecodeError::Malformed);
        }
        Ok((tbs.user, tbs.device))
    }

    /// Decodes a canonical encoding. Decoding checks shape only; call
    /// [`DeviceCertificate::verify`] before trusting anything in it.
    ///
    /// # Errors
    /// [`DecodeError`] for malformed, trailing, non-canonical or unknown-version
    /// input, or an empty validity window.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let cert: Self = encoding::decode_canonical(bytes)?;
        if cert.tbs.version != CERTIFICATE_VERSION {
            return Err(DecodeError::UnknownVersion(cert.tbs.version));
        }
        if cert.tbs.validity.not_after() < cert.tbs.validity.not_before() {
            return Err(DecodeError::Malformed);
        }
        Ok(cert)
    }
}
