//! Certificates already verified, recognised instead of checked again.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::{DeviceClaims, IdentityPublicKey, TrustStore, UserId};

/// How many certificates a cache holds; full, it starts over (a device meets
/// at most a few thousand leaves, so this is a bound, not a policy).
const CAPACITY: usize = 4096;

/// Certificates verified under a trust store, so one seen again (every leaf
/// of a Welcome, the committer of every commit) costs a lookup instead of an
/// Ed25519 and an ML-DSA verification.
///
/// An entry answers only for the very same bytes, only while the trust
/// store still holds the very identity key it was verified under (a
/// replaced or removed key makes it a miss, and the full check decides),
/// and the certificate's validity is checked against the time of each
/// lookup. It holds public data only.
#[derive(Debug, Default)]
pub struct VerifiedCertificates {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

#[derive(Debug)]
struct Entry {
    bytes: Box<[u8]>,
    identity: IdentityPublicKey,
    claims: DeviceClaims,
}

/// Where an encoding goes in the map: its last 32 bytes (inside the ML-DSA
/// signature). Only a place to look: a hit compares every byte.
fn slot(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.last_chunk::<32>().copied()
}

impl VerifiedCertificates {
    /// The claims of `bytes` if they were verified under the key `trust`
    /// holds now for the user they name.
    pub(crate) fn get(&self, bytes: &[u8], trust: &(impl TrustStore + ?Sized)) -> Option<DeviceClaims> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(&slot(bytes)?)?;
        let same = *entry.bytes == *bytes && trust.trusted_identity(&entry.claims.user) == Some(&entry.identity);
        same.then(|| entry.claims.clone())
    }

    /// Records that `bytes` verified under `identity`, the key trusted for
    /// `claims.user`.
    pub(crate) fn insert(&self, bytes: &[u8], identity: &IdentityPublicKey, claims: &DeviceClaims) {
        let Some(slot) = slot(bytes) else { return };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(slot, Entry { bytes: bytes.into(), identity: identity.clone(), claims: claims.clone() });
    }

    /// How many certificates it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A trust store with a cache of the certificates verified under it (see
/// [`VerifiedCertificates`]); `T` says which keys are trusted, as before.
#[derive(Debug, Default)]
pub struct CachingTrustStore<T> {
    inner: T,
    verified: VerifiedCertificates,
}

impl<T: TrustStore> CachingTrustStore<T> {
    /// `inner` with an empty cache.
    pub fn new(inner: T) -> Self {
        Self { inner, verified: VerifiedCertificates::default() }
    }

    /// The trusted keys.
    pub const fn inner(&self) -> &T {
        &self.inner
    }

    /// The trusted keys, to change: entries verified under a key that is
    /// replaced or removed stop answering at once.
    pub const fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The cache.
    pub const fn verified(&self) -> &VerifiedCertificates {
        &self.verified
    }
}

impl<T: TrustStore> TrustStore for CachingTrustStore<T> {
    fn trusted_identity(&self, user: &UserId) -> Option<&IdentityPublicKey> {
        self.inner.trusted_identity(user)
    }

    fn verified_certificates(&self) -> Option<&VerifiedCertificates> {
        Some(&self.verified)
    }
}
