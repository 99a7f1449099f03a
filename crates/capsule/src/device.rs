//! One enrolled device: its store, its identity, and the album operations.

use std::collections::BTreeSet;
use std::path::Path;

use capsule_amk::{AlbumId, AlbumMetadata, AmkKeyring, AmkSlot, AmkVersion, HistoryPolicy};
use capsule_identity::{DeviceClaims, DeviceId, DeviceSigningKey, IdentityKeyPair, UserId, Validity};
use capsule_mls::{DeviceIdentity, Validation, key_package};
use capsule_resilience::{
    AlbumStatus, AmkEscrow, Change, Clock, CommitChain, Context, Event, IntentId, ReconcileOutcome, RekeyReason,
    RetryPolicy,
};
use capsule_store::Store;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A photo encrypted under one AMK version of one album.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Photo {
    /// The AMK version it was sealed under.
    pub version: AmkVersion,
    /// XChaCha20-Poly1305 nonce.
    pub nonce: [u8; 24],
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// Binds a photo to its album and version, so it cannot be replayed elsewhere.
fn photo_aad(album: AlbumId, version: AmkVersion) -> Vec<u8> {
    [b"capsule/photo/v1".as_slice(), album.as_bytes(), &version.get().to_be_bytes()].concat()
}

#[derive(Clone, Copy)]
enum Phase {
    Prepare,
    Exchange,
}

/// One enrolled device. Its state lives in its store; every call is one or more
/// durable transactions.
#[derive(Debug)]
pub struct Device {
    store: Store,
    me: DeviceIdentity,
    policy: RetryPolicy,
}

impl Device {
    /// Enrolls a new device of `user`: a fresh MLS signature key, certified by
    /// the user's identity key, saved in a new store at `path`.
    ///
    /// # Errors
    /// Identity or store errors.
    pub fn enroll(
        path: &Path,
        identity: &IdentityKeyPair,
        user: UserId,
        device: DeviceId,
        validity: Validity,
    ) -> Result<Self> {
        let key = DeviceSigningKey::generate()?;
        let claims = DeviceClaims { user, device, device_key: key.public_key(), validity };
        let me = DeviceIdentity::new(key, identity.certify_device(&claims)?)?;
        let store = Store::open(path)?;
        store.save_device(&me)?;
        Ok(Self { store, me, policy: RetryPolicy::default() })
    }

    /// Opens an enrolled device's store.
    ///
    /// # Errors
    /// Store errors (corrupted, newer schema, key material mismatch).
    pub fn open(path: &Path) -> Result<Self> {
        let store = Store::open(path)?;
        let me = store.load_device()?;
        Ok(Self { store, me, policy: RetryPolicy::default() })
    }

    /// Replaces the lost-commit schedule.
    pub fn set_retry_policy(&mut self, policy: RetryPolicy) {
        self.policy = policy;
    }

    /// This device's user.
    #[must_use]
    pub fn user(&self) -> UserId {
        self.me.user()
    }

    /// This device.
    #[must_use]
    pub fn id(&self) -> DeviceId {
        self.me.device()
    }

    /// A KeyPackage to publish in the device directory.
    ///
    /// # Errors
    /// MLS or store errors.
    pub fn key_package(&self) -> Result<Vec<u8>> {
        Ok(key_package(&self.store.provider()?, &self.me)?)
    }

    /// Creates an album with a fixed history policy and admin set.
    ///
    /// # Errors
    /// [`Error::Mls`] if this device's user is not among `admins`.
    pub fn create_album(&self, album: AlbumId, policy: HistoryPolicy, admins: BTreeSet<UserId>) -> Result<AlbumId> {
        let metadata = AlbumMetadata::new(album, policy, admins)?;
        Ok(self.store.create_album(&self.me, metadata)?)
    }

    /// Joins an album from a Welcome and the sealed history bundle beside it.
    ///
    /// # Errors
    /// Identity, AMK or MLS refusals; store errors.
    pub fn join(&self, welcome: &[u8], bundle: &[u8], validation: Validation<'_>) -> Result<AlbumId> {
        Ok(self.store.join_album(welcome, bundle, validation)?)
    }

    /// Records a membership change (add user, add device, remove user, remove a
    /// lost device, rotate the AMK) as a durable intent; [`Device::sync`] commits it.
    ///
    /// # Errors
    /// Store errors.
    pub fn propose(&self, album: AlbumId, change: Change) -> Result<IntentId> {
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, _| Ok(r.propose(change)))?)
    }

    /// Makes progress on the album's intents against the chain (commit, submit,
    /// retry on the backoff, surface). Call again at [`Device::next_deadline`].
    ///
    /// # Errors
    /// Quarantine, MLS or store errors.
    pub fn sync(
        &self,
        album: AlbumId,
        chain: &mut impl CommitChain,
        clock: &impl Clock,
        validation: Validation<'_>,
    ) -> Result<Vec<Event>> {
        // Three transactions: send what is staged, stage the next change, send it.
        // A commit never leaves before its pending state is durable.
        let mut events = Vec::new();
        for phase in [Phase::Exchange, Phase::Prepare, Phase::Exchange] {
            events.extend(self.store.with_resilient(album, self.policy.clone(), |r, p| {
                let cx = Context { provider: p, device: &self.me, validation };
                match phase {
                    Phase::Prepare => r.prepare(cx, clock),
                    Phase::Exchange => r.exchange(cx, chain, clock),
                }
            })?);
        }
        Ok(events)
    }

    /// When [`Device::sync`] next has work for this album.
    ///
    /// # Errors
    /// Store errors.
    pub fn next_deadline(&self, album: AlbumId) -> Result<Option<capsule_resilience::Instant>> {
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, _| Ok(r.next_deadline()))?)
    }

    /// The application reports connectivity again: surfaced changes are retried.
    ///
    /// # Errors
    /// Store errors.
    pub fn connectivity_restored(&self, album: AlbumId, clock: &impl Clock) -> Result<()> {
        let now = clock.now();
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, _| {
            r.connectivity_restored(now);
            Ok(())
        })?)
    }

    /// Brings the album to the chain's head; see [`ReconcileOutcome`].
    ///
    /// # Errors
    /// Chain, MLS or store errors.
    pub fn reconcile_with_server(
        &self,
        album: AlbumId,
        chain: &mut impl CommitChain,
        validation: Validation<'_>,
    ) -> Result<ReconcileOutcome> {
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, p| {
            r.reconcile_with_server(Context { provider: p, device: &self.me, validation }, chain)
        })?)
    }

    /// Starts (or resumes; a completed id is a no-op) the full re-key ceremony:
    /// quiesce → every member replaces its leaf → resume on a fresh AMK. It
    /// progresses with [`Device::sync`] on every member; the album's AMK lineage
    /// goes to `escrow` first.
    ///
    /// # Errors
    /// Another re-key in progress, an escrow refusal, quarantine, store errors.
    pub fn rekey_group(
        &self,
        album: AlbumId,
        id: u64,
        reason: RekeyReason,
        clock: &impl Clock,
        budget: core::time::Duration,
        escrow: &mut dyn AmkEscrow,
    ) -> Result<()> {
        let now = clock.now();
        Ok(self
            .store
            .with_resilient(album, self.policy.clone(), |r, _| r.rekey_group(id, reason, now, budget, escrow))?)
    }

    /// What the application shows for the album.
    ///
    /// # Errors
    /// Store errors.
    pub fn status(&self, album: AlbumId) -> Result<AlbumStatus> {
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, _| Ok(r.status()))?)
    }

    /// The album's current epoch and epoch authenticator.
    ///
    /// # Errors
    /// Store errors.
    pub fn epoch(&self, album: AlbumId) -> Result<(u64, Vec<u8>)> {
        let a = self.store.album(album)?;
        Ok((a.epoch(), a.epoch_authenticator()))
    }

    /// Members as (user, device).
    ///
    /// # Errors
    /// Store errors.
    pub fn members(&self, album: AlbumId) -> Result<Vec<(UserId, DeviceId)>> {
        Ok(self.store.album(album)?.members())
    }

    /// The AMK versions this device holds, to decrypt with.
    ///
    /// # Errors
    /// Store errors.
    pub fn keyring(&self, album: AlbumId) -> Result<AmkKeyring> {
        Ok(self.store.album(album)?.keyring().clone())
    }

    /// Encrypts a photo under the album's current AMK (refused while the album is
    /// quarantined or this device was removed).
    ///
    /// # Errors
    /// [`Error::Photo`] when the album does not accept writes.
    pub fn seal_photo(&self, album: AlbumId, photo: &[u8]) -> Result<Photo> {
        match self.status(album)? {
            AlbumStatus::Quarantined { .. } | AlbumStatus::NeedsRebootstrap | AlbumStatus::Rekeying { .. } => {
                return Err(Error::Photo("album does not accept writes now"));
            }
            _ => {}
        }
        let ring = self.keyring(album)?;
        let (version, amk) = ring.current();
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| Error::Photo("no randomness"))?;
        let ciphertext = XChaCha20Poly1305::new(amk.expose_secret().into())
            .encrypt(&XNonce::from(nonce), Payload { msg: photo, aad: &photo_aad(album, version) })
            .map_err(|_| Error::Photo("encryption failed"))?;
        Ok(Photo { version, nonce, ciphertext })
    }

    /// Decrypts a photo with the keyring; a withheld version is a placeholder.
    ///
    /// # Errors
    /// [`Error::Photo`] for a withheld or unknown version, or a photo that does not
    /// authenticate; [`Error::Amk`] for a version above the attested ceiling.
    pub fn open_photo(&self, album: AlbumId, photo: &Photo) -> Result<Vec<u8>> {
        let ring = self.keyring(album)?;
        ring.check_manifest(photo.version)?;
        let amk = match ring.lookup(photo.version) {
            AmkSlot::Held(amk) => amk,
            AmkSlot::Withheld => {
                return Err(Error::Photo("version withheld by the history policy"));
            }
            AmkSlot::NotHeld => return Err(Error::Photo("version not held by this device")),
        };
        XChaCha20Poly1305::new(amk.expose_secret().into())
            .decrypt(
                &XNonce::from(photo.nonce),
                Payload { msg: &photo.ciphertext, aad: &photo_aad(album, photo.version) },
            )
            .map_err(|_| Error::Photo("does not authenticate"))
    }
}
