//! A device's KeyPackages and Welcomes through a real `capsule-server`: it
//! keeps its stock filed, joins from its mailbox without reading the chain
//! for it, and deletes the private keys of KeyPackages used or expired (after
//! which a Welcome made for one can no longer be read).

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capsule::amk::{AlbumId, HistoryPolicy};
use capsule::identity::{DeviceId, IdentityKeyPair, UnixTime, UserId, Validity};
use capsule::mls::{Epoch, Validation};
use capsule::resilience::testkit::SimClock;
use capsule::resilience::{ChainError, Change, Delivery, Mailbox};
use capsule::{Device, Error, KEY_PACKAGE_STOCK, Received};
use capsule_client::{Credentials, HttpChain, HttpDirectory};
use capsule_server::{Database, Running, Settings};

const ALBUM: AlbumId = AlbumId::from_bytes([0x3C; 16]);
const T: Duration = Duration::from_secs(30);

fn real_now() -> UnixTime {
    UnixTime(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
}

fn credentials(device: &Device) -> Arc<Credentials> {
    Arc::new(Credentials::new(device.user(), device.id(), device.request_key()))
}

/// A mailbox whose next acknowledgement is lost, as if the device crashed
/// between joining and acknowledging.
struct LosesAck<M> {
    inner: M,
    lose: bool,
}

impl<M: Mailbox> Mailbox for LosesAck<M> {
    fn deliveries(&mut self) -> Result<Vec<Delivery>, ChainError> {
        self.inner.deliveries()
    }

    fn acknowledge(&mut self, delivery: &Delivery) -> Result<(), ChainError> {
        if std::mem::take(&mut self.lose) {
            return Err(ChainError::Unavailable);
        }
        self.inner.acknowledge(delivery)
    }
}

#[test]
fn devices_publish_key_packages_join_from_their_mailbox_and_delete_spent_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server =
        Running::start(&Database::Sqlite(tmp.path().join("chain.sqlite")), loopback, Settings::default()).unwrap();
    let open = HttpDirectory::new(&server.url(), T);
    let forever = Validity::new(UnixTime(0), UnixTime(u64::MAX)).unwrap();
    let (alice_id, bob_id) = (IdentityKeyPair::generate().unwrap(), IdentityKeyPair::generate().unwrap());
    let (alice, bob) = (UserId::from_bytes([1; 16]), UserId::from_bytes([2; 16]));
    let trust = BTreeMap::from([(alice, alice_id.public_key().clone()), (bob, bob_id.public_key().clone())]);
    let enroll = |name: &str, identity: &IdentityKeyPair, user, n| {
        let key = capsule::testkit::db_key();
        Device::enroll(&tmp.path().join(name), &key, identity, user, DeviceId::from_bytes([n; 16]), forever).unwrap()
    };
    let phone = enroll("alice-phone", &alice_id, alice, 1);
    let (bob_phone, bob_laptop) = (enroll("bob-phone", &bob_id, bob, 2), enroll("bob-laptop", &bob_id, bob, 3));
    open.register_user(alice_id.public_key(), phone.certificate()).unwrap();
    open.register_user(bob_id.public_key(), bob_phone.certificate()).unwrap();
    open.register_device(bob_laptop.certificate()).unwrap();
    let dir = |d: &Device| HttpDirectory::new(&server.url(), T).with_credentials(credentials(d));
    let now = real_now();
    let v = Validation { trust: &trust, now };

    // Bob's devices fill their stock: the regular ones and a last resort.
    for device in [&bob_phone, &bob_laptop] {
        let stock = device.refresh_key_packages(&mut dir(device), now).unwrap();
        assert_eq!(stock.available, KEY_PACKAGE_STOCK);
        assert!(stock.last_resort_until.is_some() && !stock.low);
        let held = device.key_packages_held().unwrap();
        assert_eq!(held.len(), 21);
        assert_eq!(held.iter().filter(|(_, _, last)| *last).count(), 1);
        // Nothing more while the stock is fine.
        assert_eq!(device.refresh_key_packages(&mut dir(device), now).unwrap(), stock);
        assert_eq!(device.key_packages_held().unwrap().len(), 21);
    }

    // Alice creates the album and adds Bob with KeyPackages she claims.
    phone.create_album(ALBUM, HistoryPolicy::Full, [alice].into()).unwrap();
    let mut chain = HttpChain::new(&server.url(), ALBUM.as_bytes(), T).with_credentials(credentials(&phone));
    chain.create_album(Epoch::ZERO, Some(&phone.album_genesis(ALBUM).unwrap())).unwrap();
    let claimed = dir(&phone).claim(ALBUM.as_bytes(), bob).unwrap();
    let directory = claimed.into_iter().map(|c| c.key_package).collect();
    phone.propose(ALBUM, Change::AddUser { user: bob, directory }).unwrap();
    phone.sync(ALBUM, &mut chain, &SimClock::new(), v).unwrap();

    // Each of Bob's devices joins from its mailbox. The phone's first
    // acknowledgement is lost: it joined anyway, and acknowledges next time.
    let mut lossy = LosesAck { inner: dir(&bob_phone), lose: true };
    assert!(matches!(bob_phone.receive_welcomes(&mut lossy, v), Err(Error::Chain(ChainError::Unavailable))));
    assert_eq!(bob_phone.epoch(ALBUM).unwrap(), phone.epoch(ALBUM).unwrap());
    let again = bob_phone.receive_welcomes(&mut lossy, v).unwrap();
    assert!(matches!(again.as_slice(), [Received::Joined { album: ALBUM, epoch: Epoch(0) }]), "{again:?}");
    assert_eq!(dir(&bob_phone).deliveries(), Ok(Vec::new()));
    // The laptop does not trust Alice's identity key yet: the Welcome waits
    // in its mailbox, and is joined once the trust store knows the key.
    let bob_only = BTreeMap::from([(bob, bob_id.public_key().clone())]);
    let untrusted = Validation { trust: &bob_only, now };
    let waiting = bob_laptop.receive_welcomes(&mut dir(&bob_laptop), untrusted).unwrap();
    assert!(matches!(waiting.as_slice(), [Received::Waiting { album: ALBUM, epoch: Epoch(0), .. }]), "{waiting:?}");
    assert!(bob_laptop.epoch(ALBUM).is_err());
    assert_eq!(dir(&bob_laptop).deliveries().unwrap().len(), 1);
    let laptop = bob_laptop.receive_welcomes(&mut dir(&bob_laptop), v).unwrap();
    assert!(matches!(laptop.as_slice(), [Received::Joined { album: ALBUM, epoch: Epoch(0) }]), "{laptop:?}");
    assert_eq!(bob_laptop.epoch(ALBUM).unwrap(), phone.epoch(ALBUM).unwrap());
    assert!(bob_phone.receive_welcomes(&mut dir(&bob_phone), v).unwrap().is_empty());

    // The KeyPackage each used is spent: its record goes at the next refresh.
    bob_phone.refresh_key_packages(&mut dir(&bob_phone), now).unwrap();
    assert_eq!(bob_phone.key_packages_held().unwrap().len(), 20);

    // A month and more later (by the tablet's clock) its KeyPackages have
    // expired: their private keys are deleted, and a fresh last resort made.
    let tablet = enroll("bob-tablet", &bob_id, bob, 4);
    open.register_device(tablet.certificate()).unwrap();
    tablet.refresh_key_packages(&mut dir(&tablet), now).unwrap();
    let before = tablet.key_packages_held().unwrap();
    let later = UnixTime(before.iter().map(|(_, end, _)| *end).max().unwrap() + 1);
    tablet.refresh_key_packages(&mut dir(&tablet), later).unwrap();
    let held = tablet.key_packages_held().unwrap();
    assert!(held.iter().all(|h| !before.contains(h)), "an expired KeyPackage kept its keys");
    assert_eq!((held.len(), held[0].2), (1, true), "only a new last resort");
    // The server, whose clock says today, hands one of the old ones to Bob's
    // phone, which adds the tablet with it: the Welcome can no longer be
    // read, so it is acknowledged as refused (the tablet needs a new add).
    let claimed = dir(&bob_phone).claim(ALBUM.as_bytes(), bob).unwrap();
    let old = claimed.into_iter().find(|c| c.device == *tablet.id().as_bytes()).unwrap();
    assert!(!old.last_resort);
    bob_phone.propose(ALBUM, Change::AddDevice { key_package: old.key_package }).unwrap();
    let mut bob_chain = HttpChain::new(&server.url(), ALBUM.as_bytes(), T).with_credentials(credentials(&bob_phone));
    bob_phone.sync(ALBUM, &mut bob_chain, &SimClock::new(), v).unwrap();
    assert_eq!(bob_phone.members(ALBUM).unwrap().len(), 4);
    let refused = tablet.receive_welcomes(&mut dir(&tablet), v).unwrap();
    assert!(
        matches!(refused.as_slice(), [Received::Refused { album: Some(ALBUM), epoch: Epoch(1), .. }]),
        "{refused:?}"
    );
    assert!(tablet.epoch(ALBUM).is_err(), "the tablet joined from a KeyPackage it deleted");
    assert_eq!(dir(&tablet).deliveries(), Ok(Vec::new()));

    // A device added, removed and added again before it looks at its
    // mailbox joins from the newest Welcome (tried first); the older one is
    // superseded once it joined.
    let tv = enroll("bob-tv", &bob_id, bob, 5);
    open.register_device(tv.certificate()).unwrap();
    tv.refresh_key_packages(&mut dir(&tv), now).unwrap();
    let add_tv = |bob_chain: &mut HttpChain| {
        let claimed = dir(&bob_phone).claim(ALBUM.as_bytes(), bob).unwrap();
        let kp = claimed.into_iter().find(|c| c.device == *tv.id().as_bytes()).unwrap().key_package;
        bob_phone.propose(ALBUM, Change::AddDevice { key_package: kp }).unwrap();
        bob_phone.sync(ALBUM, bob_chain, &SimClock::new(), v).unwrap();
    };
    add_tv(&mut bob_chain);
    bob_phone.propose(ALBUM, Change::RemoveDevice { device: tv.id() }).unwrap();
    bob_phone.sync(ALBUM, &mut bob_chain, &SimClock::new(), v).unwrap();
    add_tv(&mut bob_chain);
    let received = tv.receive_welcomes(&mut dir(&tv), v).unwrap();
    assert!(
        matches!(
            received.as_slice(),
            [
                Received::Joined { album: ALBUM, epoch: Epoch(4) },
                Received::Superseded { album: ALBUM, epoch: Epoch(2) }
            ]
        ),
        "{received:?}"
    );
    assert_eq!(tv.epoch(ALBUM).unwrap(), bob_phone.epoch(ALBUM).unwrap());
    assert_eq!(dir(&tv).deliveries(), Ok(Vec::new()));

    // Removed and re-added while it looked away, it is still a member of an
    // older epoch: the Welcome waits until the device has learned of its
    // removal from the chain, then it joins.
    bob_phone.propose(ALBUM, Change::RemoveDevice { device: tv.id() }).unwrap();
    bob_phone.sync(ALBUM, &mut bob_chain, &SimClock::new(), v).unwrap();
    add_tv(&mut bob_chain);
    let waiting = tv.receive_welcomes(&mut dir(&tv), v).unwrap();
    assert!(matches!(waiting.as_slice(), [Received::Waiting { album: ALBUM, epoch: Epoch(6), .. }]), "{waiting:?}");
    let mut tv_chain = HttpChain::new(&server.url(), ALBUM.as_bytes(), T).with_credentials(credentials(&tv));
    tv.reconcile_with_server(ALBUM, &mut tv_chain, v).unwrap();
    let joined = tv.receive_welcomes(&mut dir(&tv), v).unwrap();
    assert!(matches!(joined.as_slice(), [Received::Joined { album: ALBUM, epoch: Epoch(6) }]), "{joined:?}");
    assert_eq!(tv.epoch(ALBUM).unwrap(), bob_phone.epoch(ALBUM).unwrap());
}
