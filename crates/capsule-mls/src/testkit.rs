//! Test fixtures shared by this crate's tests and the layers above: users with
//! hybrid identity keys, certified devices with their own memory storage, and a
//! trust store, all from one seed.

use std::collections::BTreeMap;

use capsule_identity::{
    DeviceCertificate, DeviceClaims, DeviceId, DeviceSigningKey, IdentityKeyPair, IdentityPublicKey, IdentitySeed,
    UnixTime, UserId, Validity,
};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::{DeviceIdentity, MemoryProvider, Result, Validation, key_package};

/// The time every fixture certificate is checked at.
pub const NOW: UnixTime = UnixTime(1_800_000_000);

/// A user id from one byte.
#[must_use]
pub const fn uid(n: u8) -> UserId {
    UserId::from_bytes([n; 16])
}

/// One test device: identity and its own storage.
#[derive(Debug)]
pub struct TestDevice {
    /// Its user.
    pub user: UserId,
    /// Its id.
    pub id: DeviceId,
    /// Its MLS identity.
    pub me: DeviceIdentity,
    /// Its OpenMLS provider (memory storage).
    pub provider: MemoryProvider,
}

impl TestDevice {
    /// A fresh KeyPackage of this device.
    ///
    /// # Errors
    /// As [`key_package`].
    pub fn key_package(&self) -> Result<Vec<u8>> {
        key_package(&self.provider, &self.me)
    }
}

/// Users, their identity keys, and the trust store everyone shares.
#[derive(Debug)]
pub struct Directory {
    rng: ChaCha20Rng,
    identities: BTreeMap<UserId, IdentityKeyPair>,
    /// Identity keys trusted per user.
    pub trust: BTreeMap<UserId, IdentityPublicKey>,
    devices: u32,
}

impl Directory {
    /// An empty directory; every key derives from `seed`.
    #[must_use]
    pub fn new(seed: u8) -> Self {
        Self {
            rng: ChaCha20Rng::from_seed([seed; 32]),
            identities: BTreeMap::new(),
            trust: BTreeMap::new(),
            devices: 0,
        }
    }

    /// Validation against this directory's trust store at [`NOW`].
    #[must_use]
    pub fn validation(&self) -> Validation<'_> {
        Validation { trust: &self.trust, now: NOW }
    }

    /// Registers user `n` with a fresh identity key, trusted by everyone (once:
    /// asking again returns the same user and key).
    ///
    /// # Errors
    /// Only on an RNG failure.
    pub fn user(&mut self, n: u8) -> Result<UserId> {
        let user = uid(n);
        // Asking again returns the same user: a second key would untrust its devices.
        if self.identities.contains_key(&user) {
            return Ok(user);
        }
        let identity = IdentityKeyPair::from_seed(&IdentitySeed::generate_with(&mut self.rng)?)?;
        self.trust.insert(user, identity.public_key().clone());
        self.identities.insert(user, identity);
        Ok(user)
    }

    /// A certificate from `user`'s identity key for `key`, valid forever.
    ///
    /// # Errors
    /// [`crate::MlsError::NotMember`] for an unknown user.
    pub fn certify(&mut self, user: UserId, device: DeviceId, key: &DeviceSigningKey) -> Result<DeviceCertificate> {
        self.certify_for(user, device, key, Validity::new(UnixTime(0), UnixTime(u64::MAX))?)
    }

    /// A certificate from `user`'s identity key for `key`, valid for `validity`.
    ///
    /// # Errors
    /// [`crate::MlsError::NotMember`] for an unknown user.
    pub fn certify_for(
        &mut self,
        user: UserId,
        device: DeviceId,
        key: &DeviceSigningKey,
        validity: Validity,
    ) -> Result<DeviceCertificate> {
        let claims = DeviceClaims { user, device, device_key: key.public_key(), validity };
        let identity = self.identities.get(&user).ok_or(crate::MlsError::NotMember("unknown test user"))?;
        Ok(identity.certify_device_with(&claims, &mut self.rng)?)
    }

    /// A new certified device of `user`.
    ///
    /// # Errors
    /// As [`Directory::certify`].
    pub fn device(&mut self, user: UserId) -> Result<TestDevice> {
        self.device_for(user, Validity::new(UnixTime(0), UnixTime(u64::MAX))?)
    }

    /// A new device of `user` whose certificate is valid for `validity`.
    ///
    /// # Errors
    /// As [`Directory::certify`].
    pub fn device_for(&mut self, user: UserId, validity: Validity) -> Result<TestDevice> {
        self.devices += 1;
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&self.devices.to_be_bytes());
        let id = DeviceId::from_bytes(id);
        let key = DeviceSigningKey::generate_with(&mut self.rng)?;
        let cert = self.certify_for(user, id, &key, validity)?;
        Ok(TestDevice { user, id, me: DeviceIdentity::new(key, cert)?, provider: MemoryProvider::in_memory()? })
    }
}

/// A commit made with OpenMLS directly from `device`'s stored group of
/// `album`, bypassing every check of Capsule's own: what a modified client
/// can send. It adds the KeyPackages `adds`, removes the members `removes`
/// and, with `context`, proposes that album context. The device's stored
/// group is left as it was (the commit is built, then cleared).
///
/// # Errors
/// [`crate::MlsError::NotMember`] for a group the device does not store or a
/// member it does not have; [`crate::MlsError::Malformed`] for a KeyPackage
/// that does not decode; OpenMLS refusing to build it.
pub fn forged_commit(
    device: &TestDevice,
    album: capsule_amk::AlbumId,
    adds: &[Vec<u8>],
    removes: &[crate::Member],
    context: Option<&crate::AlbumContext>,
) -> Result<Vec<u8>> {
    use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
    use openmls::prelude::{GroupId, KeyPackageIn, MlsGroup, ProtocolVersion};
    use openmls_traits::OpenMlsProvider as _;

    use crate::MlsError;
    use crate::boundary::During as _;

    let provider = &device.provider;
    let mut group = MlsGroup::load(provider.storage(), &GroupId::from_slice(album.as_bytes()))
        .map_err(|e| MlsError::storage("loading the group", e))?
        .ok_or(MlsError::NotMember("no stored group"))?;
    let mut key_packages = Vec::new();
    for kp in adds {
        let kp = KeyPackageIn::tls_deserialize_exact(kp.as_slice()).map_err(|_| MlsError::Malformed("key package"))?;
        key_packages.push(kp.validate(provider.crypto(), ProtocolVersion::Mls10).during("validating a key package")?);
    }
    let mut leaves = Vec::new();
    for member in removes {
        let leaf = group
            .members()
            .find(|m| crate::binding::claimed_identity(&m.credential).ok() == Some(*member))
            .ok_or(MlsError::NotMember("no such member"))?;
        leaves.push(leaf.index);
    }
    let mut builder = group.commit_builder().propose_adds(key_packages).propose_removals(leaves);
    if let Some(context) = context {
        builder = builder
            .propose_group_context_extensions(context.extensions()?)
            .map_err(|_| MlsError::Refused("group context extensions"))?;
    }
    let commit = builder
        .load_psks(provider.storage())
        .during("loading pre-shared keys")?
        .build(provider.rand(), provider.crypto(), &device.me, |_| true)
        .during("building a forged commit")?
        .stage_commit(provider)
        .during("staging a forged commit")?
        .commit()
        .tls_serialize_detached()
        .map_err(|_| MlsError::Internal("commit encoding"))?;
    group.clear_pending_commit(provider.storage()).map_err(|e| MlsError::storage("clearing the forged commit", e))?;
    Ok(commit)
}
