//! The one seam behind which the ML-DSA-65 implementation sits.
//!
//! RustCrypto's `ml-dsa` is the default; the `libcrux-ml-dsa` feature switches
//! to libcrux. Both implement FIPS 204, so keys expand identically from the
//! same 32-byte seed ξ and each verifies the other's signatures; the tests
//! check exactly that. Keys and signatures cross the seam as fixed-size byte
//! arrays, so nothing outside this module sees either library's types.

use hybrid_array::Array;
use ml_dsa::{EncodedSignature, EncodedVerifyingKey, MlDsa65};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// An encoded ML-DSA-65 verifying key (1952 bytes).
pub(crate) type MlDsaVerifyingKeyBytes = EncodedVerifyingKey<MlDsa65>;
/// An encoded ML-DSA-65 signature (3309 bytes).
pub(crate) type MlDsaSignatureBytes = EncodedSignature<MlDsa65>;
/// The 32-byte ML-DSA key-generation seed ξ (FIPS 204, Algorithm 6).
pub(crate) type MlDsaSeed = [u8; 32];

/// One ML-DSA-65 implementation.
pub(crate) trait MlDsaBackend {
    /// The expanded signing key; zeroized on drop.
    type SigningKey: ZeroizeOnDrop;

    fn signing_key_from_seed(seed: &MlDsaSeed) -> Self::SigningKey;
    fn verifying_key(sk: &Self::SigningKey) -> MlDsaVerifyingKeyBytes;
    /// Hedged signing (FIPS 204 default) with the caller's 32 random bytes.
    fn sign(sk: &Self::SigningKey, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Option<MlDsaSignatureBytes>;
    /// A verifying key decoded once, with whatever the backend can precompute
    /// for repeated verification (RustCrypto expands the matrix `A` here).
    type VerifyingKey: Clone + Send + Sync;

    fn prepare(vk: &MlDsaVerifyingKeyBytes) -> Self::VerifyingKey;
    fn verify_prepared(vk: &Self::VerifyingKey, msg: &[u8], ctx: &[u8], sig: &MlDsaSignatureBytes) -> bool;
}

/// RustCrypto `ml-dsa`. With libcrux active it is only the cross-check in tests.
#[cfg_attr(feature = "libcrux-ml-dsa", allow(dead_code))]
#[derive(Debug)]
pub(crate) struct RustCrypto;

impl MlDsaBackend for RustCrypto {
    type SigningKey = ml_dsa::ExpandedSigningKey<MlDsa65>;

    fn signing_key_from_seed(seed: &MlDsaSeed) -> Self::SigningKey {
        ml_dsa::ExpandedSigningKey::from_seed(&Array::from(*seed))
    }

    fn verifying_key(sk: &Self::SigningKey) -> MlDsaVerifyingKeyBytes {
        sk.verifying_key().encode()
    }

    fn sign(sk: &Self::SigningKey, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Option<MlDsaSignatureBytes> {
        // The fallible entry point: rejection sampling that runs out is an
        // error here, where `sign_internal` would panic.
        let mut rng = OneShot(Some(*rnd));
        sk.sign_randomized(msg, ctx, &mut rng).ok().map(|sig| sig.encode())
    }

    type VerifyingKey = ml_dsa::VerifyingKey<MlDsa65>;

    fn prepare(vk: &MlDsaVerifyingKeyBytes) -> Self::VerifyingKey {
        ml_dsa::VerifyingKey::<MlDsa65>::decode(vk)
    }

    fn verify_prepared(vk: &Self::VerifyingKey, msg: &[u8], ctx: &[u8], sig: &MlDsaSignatureBytes) -> bool {
        let Some(sig) = ml_dsa::Signature::<MlDsa65>::decode(sig) else {
            return false;
        };
        vk.verify_with_context(msg, ctx, &sig)
    }
}

/// Hands `ml-dsa` exactly the 32 bytes of signing randomness the caller drew,
/// so both backends consume randomness the same way.
#[cfg_attr(feature = "libcrux-ml-dsa", allow(dead_code))]
struct OneShot(Option<[u8; 32]>);

#[cfg_attr(feature = "libcrux-ml-dsa", allow(dead_code))]
#[derive(Debug)]
struct Exhausted;

impl core::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("one-shot randomness already used")
    }
}

impl core::error::Error for Exhausted {}

impl rand_core::TryRng for OneShot {
    type Error = Exhausted;

    fn try_next_u32(&mut self) -> Result<u32, Exhausted> {
        Err(Exhausted)
    }

    fn try_next_u64(&mut self) -> Result<u64, Exhausted> {
        Err(Exhausted)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Exhausted> {
        match self.0.take() {
            Some(mut rnd) if dst.len() == rnd.len() => {
                dst.copy_from_slice(&rnd);
                rnd.zeroize();
                Ok(())
            }
            _ => Err(Exhausted),
        }
    }
}

impl rand_core::TryCryptoRng for OneShot {}

/// libcrux's formally verified ML-DSA.
#[cfg(feature = "libcrux-ml-dsa")]
#[derive(Debug)]
pub(crate) struct Libcrux;

/// libcrux's expanded key type does not zeroize itself; this wrapper does.
#[cfg(feature = "libcrux-ml-dsa")]
pub(crate) struct LibcruxSigningKey(libcrux_ml_dsa::ml_dsa_65::MLDSA65KeyPair);

#[cfg(feature = "libcrux-ml-dsa")]
impl Drop for LibcruxSigningKey {
    fn drop(&mut self) {
        self.0.signing_key.as_mut_slice().zeroize();
    }
}

#[cfg(feature = "libcrux-ml-dsa")]
impl ZeroizeOnDrop for LibcruxSigningKey {}

#[cfg(feature = "libcrux-ml-dsa")]
impl MlDsaBackend for Libcrux {
    type SigningKey = LibcruxSigningKey;

    fn signing_key_from_seed(seed: &MlDsaSeed) -> Self::SigningKey {
        LibcruxSigningKey(libcrux_ml_dsa::ml_dsa_65::generate_key_pair(*seed))
    }

    fn verifying_key(sk: &Self::SigningKey) -> MlDsaVerifyingKeyBytes {
        Array::from(*sk.0.verification_key.as_ref())
    }

    fn sign(sk: &Self::SigningKey, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Option<MlDsaSignatureBytes> {
        libcrux_ml_dsa::ml_dsa_65::sign(&sk.0.signing_key, msg, ctx, *rnd).ok().map(|sig| Array::from(*sig.as_ref()))
    }

    // libcrux verifies from the encoded key; nothing to precompute.
    type VerifyingKey = MlDsaVerifyingKeyBytes;

    fn prepare(vk: &MlDsaVerifyingKeyBytes) -> Self::VerifyingKey {
        *vk
    }

    fn verify_prepared(vk: &Self::VerifyingKey, msg: &[u8], ctx: &[u8], sig: &MlDsaSignatureBytes) -> bool {
        let vk = libcrux_ml_dsa::ml_dsa_65::MLDSA65VerificationKey::new(vk.0);
        let sig = libcrux_ml_dsa::ml_dsa_65::MLDSA65Signature::new(sig.0);
        libcrux_ml_dsa::ml_dsa_65::verify(&vk, msg, ctx, &sig).is_ok()
    }
}

/// The backend this build uses.
#[cfg(not(feature = "libcrux-ml-dsa"))]
pub(crate) type Active = RustCrypto;
/// The backend this build uses.
#[cfg(feature = "libcrux-ml-dsa")]
pub(crate) type Active = Libcrux;

#[cfg(all(test, feature = "libcrux-ml-dsa"))]
#[allow(clippy::unwrap_used)]
mod cross_backend {
    //! Both backends implement FIPS 204: they must agree on keys and on each other's signatures.
    use super::*;

    fn check<S: MlDsaBackend, V: MlDsaBackend>() {
        for i in 0..4u8 {
            let seed = [i; 32];
            let sk_s = S::signing_key_from_seed(&seed);
            let sk_v = V::signing_key_from_seed(&seed);
            let vk = S::verifying_key(&sk_s);
            assert_eq!(vk, V::verifying_key(&sk_v), "keygen disagrees for seed {i}");
            let msg = [i, 1, 2, 3];
            let sig = S::sign(&sk_s, &msg, b"capsule-test", &[7; 32]).unwrap();
            let vk = V::prepare(&vk);
            assert!(V::verify_prepared(&vk, &msg, b"capsule-test", &sig));
            assert!(!V::verify_prepared(&vk, &msg, b"capsule-tesu", &sig), "context must be bound");
            assert!(!V::verify_prepared(&vk, &[i, 1, 2, 4], b"capsule-test", &sig));
        }
    }

    #[test]
    fn rustcrypto_signs_libcrux_verifies() {
        check::<RustCrypto, Libcrux>();
    }

    #[test]
    fn libcrux_signs_rustcrypto_verifies() {
        check::<Libcrux, RustCrypto>();
    }

    #[test]
    fn same_randomness_gives_same_signature() {
        let seed = [9; 32];
        let a = RustCrypto::sign(&RustCrypto::signing_key_from_seed(&seed), b"m", b"c", &[3; 32]).unwrap();
        let b = Libcrux::sign(&Libcrux::signing_key_from_seed(&seed), b"m", b"c", &[3; 32]).unwrap();
        assert_eq!(a, b);
    }
}
