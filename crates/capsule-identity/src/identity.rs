//! User identity keys (Ed25519 + ML-DSA-65) and device MLS signature keys.

use core::fmt;
use std::sync::OnceLock;

use ed25519_dalek::Signer as _;
use hkdf::Hkdf;
use hybrid_array::{Array, sizes::U64};
use rand_core::TryCryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ml_dsa::{Active, MlDsaBackend, MlDsaSeed, MlDsaSignatureBytes, MlDsaVerifyingKeyBytes};
use crate::{DecodeError, IdentityError, Result, encoding};

/// Format version of [`IdentityPublicKey`]'s encoding.
const PUBLIC_KEY_VERSION: u8 = 1;
/// HKDF info labels splitting one identity seed into the two signing keys.
const ED25519_LABEL: &[u8] = b"capsule identity v1 ed25519";
const ML_DSA_LABEL: &[u8] = b"capsule identity v1 ml-dsa-65";

/// Draws 32 bytes from `rng`.
pub(crate) fn random_32<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    rng.try_fill_bytes(out.as_mut()).map_err(|_| IdentityError::Rng)?;
    Ok(out)
}

/// The 32-byte secret from which a user's whole identity key pair is derived.
///
/// Keeping one seed (rather than two expanded keys) is what a backup or a
/// recovery path has to protect. Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct IdentitySeed([u8; 32]);

impl IdentitySeed {
    /// A fresh seed from the operating system's RNG.
    ///
    /// # Errors
    /// [`IdentityError::Rng`] if the OS RNG fails.
    pub fn generate() -> Result<Self> {
        Self::generate_with(&mut getrandom::SysRng)
    }

    /// A fresh seed from `rng` (a seeded RNG makes tests replayable).
    ///
    /// # Errors
    /// [`IdentityError::Rng`] if `rng` fails.
    pub fn generate_with<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self> {
        Ok(Self(*random_32(rng)?))
    }

    /// Wraps seed bytes restored from a backup.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The seed bytes, for the caller's backup. Handle with care.
    #[must_use]
    pub const fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    fn derive(&self, label: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let mut out = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, &self.0)
            .expand(label, out.as_mut())
            .map_err(|_| IdentityError::Internal("hkdf output length"))?;
        Ok(out)
    }
}

impl fmt::Debug for IdentitySeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySeed").finish_non_exhaustive()
    }
}

/// The public half of a user's identity: what a trust store holds per user.
#[derive(Clone, Serialize, Deserialize)]
pub struct IdentityPublicKey {
    version: u8,
    ed25519: [u8; 32],
    ml_dsa: MlDsaVerifyingKeyBytes,
    /// The ML-DSA key decoded and expanded on first use and kept: a trust store
    /// verifies many certificates against one key, and the expansion costs about
    /// as much as the verification itself. Not part of the encoding or equality.
    #[serde(skip)]
    prepared: OnceLock<<Active as MlDsaBackend>::VerifyingKey>,
    /// The Ed25519 point decompressed on first use and kept, for the same
    /// reason (`None`: not a valid point; `from_bytes` refuses those anyway).
    #[serde(skip)]
    ed25519_prepared: OnceLock<Option<ed25519_dalek::VerifyingKey>>,
}

impl PartialEq for IdentityPublicKey {
    fn eq(&self, other: &Self) -> bool {
        (self.version, &self.ed25519, &self.ml_dsa) == (other.version, &other.ed25519, &other.ml_dsa)
    }
}

impl Eq for IdentityPublicKey {}

impl IdentityPublicKey {
    /// The Ed25519 half.
    #[must_use]
    pub const fn ed25519(&self) -> &[u8; 32] {
        &self.ed25519
    }

    /// The encoded ML-DSA-65 half (1952 bytes).
    #[must_use]
    pub fn ml_dsa(&self) -> &[u8] {
        self.ml_dsa.as_slice()
    }

    /// Canonical encoding.
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(encoding::encode(self)?)
    }

    /// Decodes and checks a canonical encoding.
    ///
    /// # Errors
    /// [`DecodeError`] for malformed, trailing, non-canonical or unknown-version
    /// input, or an Ed25519 half that is not a valid point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let key: Self = encoding::decode_canonical(bytes)?;
        if key.version != PUBLIC_KEY_VERSION {
            return Err(DecodeError::UnknownVersion(key.version));
        }
        ed25519_dalek::VerifyingKey::from_bytes(&key.ed25519).map_err(|_| DecodeError::InvalidKey)?;
        Ok(key)
    }

    /// Verifies a hybrid signature: true only when both halves verify.
    pub(crate) fn verify_hybrid(&self, msg: &[u8], ml_dsa_context: &[u8], sig: &HybridSignature) -> bool {
        let prepared =
            self.ed25519_prepared.get_or_init(|| ed25519_dalek::VerifyingKey::from_bytes(&self.ed25519).ok());
        let Some(ed) = prepared else {
            return false;
        };
        let ed_ok = ed.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.ed25519.0)).is_ok();
        // Both halves are always checked, so timing does not reveal which failed.
        let prepared = self.prepared.get_or_init(|| Active::prepare(&self.ml_dsa));
        let ml_ok = Active::verify_prepared(prepared, msg, ml_dsa_context, &sig.ml_dsa);
        ed_ok & ml_ok
    }
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, ..] = self.ed25519;
        write!(f, "IdentityPublicKey(ed25519:{a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}

/// Ed25519 and ML-DSA-65 signatures over the same message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HybridSignature {
    pub(crate) ed25519: Array<u8, U64>,
    pub(crate) ml_dsa: MlDsaSignatureBytes,
}

impl fmt::Debug for HybridSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridSignature").finish_non_exhaustive()
    }
}

/// A user's identity key pair: Ed25519 + ML-DSA-65. Secret halves are zeroized on drop.
pub struct IdentityKeyPair {
    ed25519: ed25519_dalek::SigningKey,
    ml_dsa: <Active as MlDsaBackend>::SigningKey,
    public: IdentityPublicKey,
}

impl IdentityKeyPair {
    /// A fresh key pair from the OS RNG.
    ///
    /// # Errors
    /// [`IdentityError::Rng`] if the OS RNG fails.
    pub fn generate() -> Result<Self> {
        Self::from_seed(&IdentitySeed::generate()?)
    }

    /// The key pair a seed determines.
    ///
    /// # Errors
    /// Only [`IdentityError::Internal`], on a key-derivation bug.
    pub fn from_seed(seed: &IdentitySeed) -> Result<Self> {
        let ed_secret = seed.derive(ED25519_LABEL)?;
        let ml_seed: Zeroizing<MlDsaSeed> = seed.derive(ML_DSA_LABEL)?;
        let ed25519 = ed25519_dalek::SigningKey::from_bytes(&ed_secret);
        let ml_dsa = Active::signing_key_from_seed(&ml_seed);
        let public = IdentityPublicKey {
            version: PUBLIC_KEY_VERSION,
            ed25519: ed25519.verifying_key().to_bytes(),
            ml_dsa: Active::verifying_key(&ml_dsa),
            prepared: OnceLock::new(),
            ed25519_prepared: OnceLock::new(),
        };
        Ok(Self { ed25519, ml_dsa, public })
    }

    /// The public half, to publish in the user directory.
    #[must_use]
    pub const fn public_key(&self) -> &IdentityPublicKey {
        &self.public
    }

    /// Signs `msg` with both halves; ML-DSA is hedged with 32 bytes from `rng`.
    pub(crate) fn sign_hybrid<R: TryCryptoRng + ?Sized>(
        &self,
        msg: &[u8],
        ml_dsa_context: &[u8],
        rng: &mut R,
    ) -> Result<HybridSignature> {
        let rnd = random_32(rng)?;
        let ml_dsa = Active::sign(&self.ml_dsa, msg, ml_dsa_context, &rnd)
            .ok_or(IdentityError::Internal("ml-dsa signing failed"))?;
        let ed25519 = Array::from(self.ed25519.sign(msg).to_bytes());
        Ok(HybridSignature { ed25519, ml_dsa })
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair").field("public", &self.public).finish_non_exhaustive()
    }
}

/// A device's Ed25519 MLS signature key: the key every leaf of this device carries.
///
/// The MLS wrapper implements OpenMLS's signer over it; this crate only
/// generates it and certifies its public half. Zeroized on drop.
pub struct DeviceSigningKey(ed25519_dalek::SigningKey);

impl DeviceSigningKey {
    /// A fresh key from the OS RNG.
    ///
    /// # Errors
    /// [`IdentityError::Rng`] if the OS RNG fails.
    pub fn generate() -> Result<Self> {
        Self::generate_with(&mut getrandom::SysRng)
    }

    /// A fresh key from `rng`.
    ///
    /// # Errors
    /// [`IdentityError::Rng`] if `rng` fails.
    pub fn generate_with<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self> {
        Ok(Self::from_secret_bytes(&*random_32(rng)?))
    }

    /// Restores a key from its 32 secret bytes.
    #[must_use]
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(secret))
    }

    /// The 32 secret bytes, for the device's own persistent store.
    #[must_use]
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key MLS puts in this device's leaves.
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// An Ed25519 signature over `msg` (what an MLS signer is asked for).
    #[must_use]
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

/// Verifies a device's Ed25519 signature (strictly: no malleable or weak-key
/// signatures), for whatever the device signs beside MLS (its requests to the
/// server, each with its own domain prefix).
///
/// # Errors
/// [`IdentityError::BadSignature`] when it does not verify.
pub fn verify_device_signature(device_key: &[u8; 32], msg: &[u8], signature: &[u8; 64]) -> Result<()> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(device_key).map_err(|_| IdentityError::BadSignature)?;
    key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(signature)).map_err(|_| IdentityError::BadSignature)
}

impl PartialEq for DeviceSigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for DeviceSigningKey {}

impl fmt::Debug for DeviceSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, ..] = self.public_key();
        write!(f, "DeviceSigningKey(public:{a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}
