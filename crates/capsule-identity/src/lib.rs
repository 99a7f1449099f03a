//! Capsule's identity layer: hybrid user identity keys and device certificates.
//!
//! MLS binds every leaf to an Ed25519 signature key (the ciphersuite
//! `MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519` fixes that), so the
//! post-quantum half of authentication lives here: a user's identity key is a
//! pair, Ed25519 + ML-DSA-65, and it certifies each of the user's devices by
//! signing the device's Ed25519 MLS key with **both** halves. A peer accepts a
//! device only when both signatures verify under the identity key it trusts for
//! that user, the key the device presents is the certified one and the
//! certificate is inside its validity window.
//!
//! - [`IdentitySeed`] → [`IdentityKeyPair`]: one 32-byte secret, split by HKDF-SHA256
//!   into the Ed25519 secret and the ML-DSA seed ξ.
//! - [`DeviceSigningKey`]: a device's Ed25519 MLS signature key.
//! - [`DeviceCertificate`]: `TBS = "capsule/device-certificate/v1\0" || postcard(version,
//!   user, device, device key, validity)`; Ed25519 signs TBS, ML-DSA-65 signs TBS with
//!   the context string `capsule-device-certificate-v1`.
//! - [`TrustStore`]: where a verifier finds the identity key it trusts for a user.
//! - [`encoding`]: the canonical postcard encoding every Capsule type uses.
//!
//! This crate knows nothing of MLS or OpenMLS. It does no I/O and reads no
//! clock: time is an argument, randomness comes from the OS or from the RNG the
//! caller passes.
//!
//! ```
//! use capsule_identity::*;
//!
//! let alice = IdentityKeyPair::generate()?;
//! let phone = DeviceSigningKey::generate()?;
//! let user = UserId::from_bytes([1; 16]);
//! let claims = DeviceClaims {
//!     user,
//!     device: DeviceId::from_bytes([2; 16]),
//!     device_key: phone.public_key(),
//!     validity: Validity::new(UnixTime(0), UnixTime(2_000_000_000))?,
//! };
//! let cert = alice.certify_device(&claims)?;
//!
//! // A peer that trusts Alice's identity key accepts the phone's MLS key...
//! let mut trust = std::collections::BTreeMap::new();
//! trust.insert(user, alice.public_key().clone());
//! let bytes = cert.to_bytes()?;
//! let received = DeviceCertificate::from_bytes(&bytes)?;
//! assert_eq!(received.verify(&phone.public_key(), UnixTime(1_800_000_000), &trust)?, claims);
//! // ...and refuses any other key.
//! let other = DeviceSigningKey::generate()?;
//! assert!(matches!(
//!     received.verify(&other.public_key(), UnixTime(1_800_000_000), &trust),
//!     Err(IdentityError::KeyMismatch)
//! ));
//! # Ok::<(), IdentityError>(())
//! ```
#![forbid(unsafe_code)]

mod cache;
mod certificate;
pub mod encoding;
mod error;
mod identity;
mod ids;
mod ml_dsa;

pub use cache::{CachingTrustStore, VerifiedCertificates};
pub use certificate::{CERTIFICATE_VERSION, DeviceCertificate, DeviceClaims, TrustStore};
pub use error::{DecodeError, IdentityError, Result};
pub use identity::{DeviceSigningKey, IdentityKeyPair, IdentityPublicKey, IdentitySeed, verify_device_signature};
pub use ids::{DeviceId, UnixTime, UserId, Validity};
