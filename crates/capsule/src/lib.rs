//! Capsule's group-cryptography core, through one front door.
//!
//! A [`Device`] is one enrolled device with its durable store (SQLite) and the
//! post-quantum MLS suite (X-Wing, libcrux) as defaults: it creates and joins
//! albums, runs the membership ceremonies as durable intents against the
//! server's commit chain, processes what arrives, and hands out the AMK to
//! encrypt an upload with and the keyring to decrypt one. Every layer is also
//! reachable on its own: [`identity`], [`amk`], [`mls`], [`resilience`], [`store`].
//!
//! ```
//! use capsule::{Device, Photo};
//! use capsule::amk::{AlbumId, HistoryPolicy};
//! use capsule::identity::{DeviceId, IdentityKeyPair, UnixTime, UserId, Validity};
//! use capsule::mls::{Epoch, Validation};
//! use capsule::resilience::{Change, testkit::{MemoryServer, SimClock}};
//! use capsule::store::DatabaseKey;
//!
//! let dir = std::env::temp_dir().join(format!("capsule-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir); // a store is enrolled once: start clean
//! std::fs::create_dir_all(&dir)?;
//! let forever = Validity::new(UnixTime(0), UnixTime(u64::MAX))?;
//! let (alice_id, bob_id) = (IdentityKeyPair::generate()?, IdentityKeyPair::generate()?);
//! let (alice_user, bob_user) = (UserId::from_bytes([1; 16]), UserId::from_bytes([2; 16]));
//! // Each database's key comes from its platform's keychain.
//! let (alice_key, bob_key) = (DatabaseKey::from_bytes(&[0xA1; 32]), DatabaseKey::from_bytes(&[0xB0; 32]));
//! let alice = Device::enroll(&dir.join("a.db"), &alice_key, &alice_id, alice_user, DeviceId::from_bytes([1; 16]), forever)?;
//! let bob = Device::enroll(&dir.join("b.db"), &bob_key, &bob_id, bob_user, DeviceId::from_bytes([2; 16]), forever)?;
//! let trust: std::collections::BTreeMap<_, _> =
//!     [(alice_user, alice_id.public_key().clone()), (bob_user, bob_id.public_key().clone())].into();
//! let v = Validation { trust: &trust, now: UnixTime(1_800_000_000) };
//!
//! // Alice creates an album and adds Bob through the server's chain.
//! let album = AlbumId::from_bytes([9; 16]);
//! let server = MemoryServer::new();
//! server.create_album(album.as_bytes(), Epoch::ZERO);
//! let clock = SimClock::new();
//! alice.create_album(album, HistoryPolicy::Full, [alice_user].into())?;
//! alice.propose(album, Change::AddUser { user: bob_user, directory: vec![bob.key_package()?] })?;
//! alice.sync(album, &mut server.connect(album.as_bytes()), &clock, v)?;
//! let entry = &server.entries(album.as_bytes())[0];
//! bob.join(entry.welcome.as_deref().unwrap_or_default(), entry.bundle.as_deref().unwrap_or_default(), v)?;
//!
//! // A photo Alice uploads, Bob reads.
//! let photo = alice.seal_photo(album, b"sunset.jpg")?;
//! assert_eq!(bob.open_photo(album, &photo)?, b"sunset.jpg");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod device;
mod error;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use capsule_amk::SealedPhoto as Photo;
pub use device::{Device, KEY_PACKAGE_STOCK, Rebootstrap, Received};
pub use error::{Error, Result};

/// Hybrid identity keys and device certificates.
pub mod identity {
    pub use capsule_identity::*;
}
/// Album master keys, history policy and bundles.
pub mod amk {
    pub use capsule_amk::*;
}
/// The OpenMLS ceremony wrapper.
pub mod mls {
    pub use capsule_mls::*;
}
/// Recovery against the server's commit chain.
pub mod resilience {
    pub use capsule_resilience::*;
}
/// The durable device store.
pub mod store {
    pub use capsule_store::*;
}
