//! The server's KeyPackage directory and Welcome mailbox: a device files its
//! own checked KeyPackages, each is handed out once (the last-resort one only
//! when nothing else is left, none that ends too soon), only to a member that
//! may add its user; an accepted commit's Welcome goes to the mailbox of each
//! device it adds, and only that device reads and acknowledges it. The
//! fingerprint board files a member's own fingerprint only. On SQLite and on
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_chain::wire::{KeyPackageRefusal, KeyPackageUpload};
use capsule_chain::{
    ChainError, CommitChain, Epoch, Invalid, KeyPackageDirectory, Mailbox, Refused, Submission, SubmitAnswer,
};
use capsule_client::{HttpChain, HttpDirectory};
use capsule_identity::{UnixTime, UserId, Validity};
use capsule_mls::rules::Violation;
use capsule_mls::testkit::{Directory, TestDevice};
use capsule_mls::{Album, Change, holds_key_package, inspect_key_package, new_key_package};
use capsule_server::{Database, Running, Settings};
use common::{LOOPBACK, credentials, databases};

const ALBUM: AlbumId = AlbumId::from_bytes([0x6B; 16]);
const T: Duration = Duration::from_secs(30);
const MONTH: u64 = 30 * 24 * 3600;

/// `device`'s view of the directory and its mailbox: every request signed.
fn directory_of(server: &Running, device: &TestDevice) -> HttpDirectory {
    HttpDirectory::new(&server.url(), T).with_credentials(credentials(device))
}

fn chain_of(server: &Running, device: &TestDevice) -> HttpChain {
    HttpChain::new(&server.url(), ALBUM.as_bytes(), T).with_credentials(credentials(device))
}

/// Alice, Bob (a phone and a laptop) and Carol, registered in the directory.
struct People {
    dir: Directory,
    alice: UserId,
    bob: UserId,
    carol: UserId,
    a0: TestDevice,
    b0: TestDevice,
    b1: TestDevice,
    c0: TestDevice,
}

fn people(open: &HttpDirectory, seed: u8) -> People {
    let mut dir = Directory::new(seed);
    let (alice, bob, carol) = (dir.user(1).unwrap(), dir.user(2).unwrap(), dir.user(3).unwrap());
    let (a0, b0, b1, c0) =
        (dir.device(alice).unwrap(), dir.device(bob).unwrap(), dir.device(bob).unwrap(), dir.device(carol).unwrap());
    for device in [&a0, &b0, &c0] {
        open.register_user(&dir.trust[&device.user], device.me.certificate()).unwrap();
    }
    open.register_device(b1.me.certificate()).unwrap();
    People { dir, alice, bob, carol, a0, b0, b1, c0 }
}

fn kp(device: &TestDevice, last_resort: bool, lifetime: u64) -> Vec<u8> {
    new_key_package(&device.provider, &device.me, last_resort, lifetime).unwrap().bytes
}

fn reference(dir: &Directory, key_package: &[u8]) -> Vec<u8> {
    inspect_key_package(key_package, dir.validation()).unwrap().reference
}

#[test]
fn key_packages_are_filed_checked_and_handed_out_once() {
    for (database, _dir) in databases("key_packages") {
        key_packages(&database);
    }
}

fn key_packages(database: &Database) {
    let settings = Settings { key_packages_low: 3, key_packages_max: 8, ..Settings::default() };
    let server = Running::start(database, LOOPBACK, settings).unwrap();
    let open = HttpDirectory::new(&server.url(), T);
    let People { mut dir, alice, bob, carol, a0, b0, b1, c0 } = people(&open, 52);

    // Bob's phone files two KeyPackages and a last-resort one.
    let mut bob_dir = directory_of(&server, &b0);
    let empty = bob_dir.stock().unwrap();
    assert_eq!((empty.available, empty.last_resort_until, empty.low), (0, None, true));
    let regular = [kp(&b0, false, MONTH), kp(&b0, false, MONTH)];
    let last = kp(&b0, true, MONTH);
    let upload = KeyPackageUpload { key_packages: regular.to_vec(), last_resort: Some(last.clone()) };
    let stock = bob_dir.publish(&upload).unwrap();
    assert_eq!(stock.available, 2);
    assert!(stock.last_resort_until.is_some_and(|end| end > real_now() + MONTH - 3600));
    assert!(stock.low, "two is below the low-water mark of three");
    // Filing the same again changes nothing.
    assert_eq!(bob_dir.publish(&upload).unwrap(), stock);

    // Refused uploads file nothing, not even their valid part.
    let refusals = [
        ("another device's", vec![kp(&c0, false, MONTH)], None, KeyPackageRefusal::NotYours),
        ("bytes that are no KeyPackage", vec![vec![0x00, 0x01, 0x02]], None, KeyPackageRefusal::Invalid),
        ("a last-resort one among the regular", vec![kp(&b0, true, MONTH)], None, KeyPackageRefusal::Invalid),
        ("a regular one as the last resort", vec![], Some(kp(&b0, false, MONTH)), KeyPackageRefusal::Invalid),
        ("too many", (0..7).map(|_| kp(&b0, false, MONTH)).collect(), None, KeyPackageRefusal::TooMany { limit: 8 }),
    ];
    for (what, mut key_packages, last_resort, refusal) in refusals {
        key_packages.insert(0, kp(&b0, false, MONTH));
        let upload = KeyPackageUpload { key_packages, last_resort };
        assert_eq!(bob_dir.publish(&upload), Err(ChainError::KeyPackages(refusal)), "{what}");
        assert_eq!(bob_dir.stock().unwrap(), stock, "{what}: something was filed");
    }
    // A KeyPackage whose certificate expired is refused before anything else.
    let expired = dir.device_for(bob, Validity::new(UnixTime(0), UnixTime(1_000_000_000)).unwrap()).unwrap();
    let upload = KeyPackageUpload { key_packages: vec![kp(&expired, false, MONTH)], last_resort: None };
    assert_eq!(bob_dir.publish(&upload), Err(ChainError::KeyPackages(KeyPackageRefusal::Certificate)));
    assert_eq!(bob_dir.stock().unwrap(), stock);
    // Unsigned, nothing at all.
    assert_eq!(open.clone().stock(), Err(ChainError::Denied));

    // Alice creates the album; only members that may add Bob claim his.
    let metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [alice].into()).unwrap();
    let mut a = Album::create(&a0.provider, &a0.me, metadata).unwrap();
    chain_of(&server, &a0).create_album(Epoch::ZERO, Some(&a.genesis(&a0.provider, &a0.me).unwrap())).unwrap();
    assert_eq!(directory_of(&server, &c0).claim(ALBUM.as_bytes(), bob), Err(ChainError::Denied), "not a member");
    assert_eq!(open.claim(ALBUM.as_bytes(), bob), Err(ChainError::Denied), "unsigned");
    let alice_dir = directory_of(&server, &a0);
    let first = alice_dir.claim(ALBUM.as_bytes(), bob).unwrap();
    let second = alice_dir.claim(ALBUM.as_bytes(), bob).unwrap();
    assert_eq!((first.len(), second.len()), (1, 1), "one per device that has one");
    assert!(!first[0].last_resort && !second[0].last_resort);
    assert_ne!(first[0].key_package, second[0].key_package, "a KeyPackage is handed out once");
    let handed: BTreeSet<&Vec<u8>> = [&first[0].key_package, &second[0].key_package].into();
    assert_eq!(handed, regular.iter().collect());
    // Then the last resort, again and again, and the stock says so.
    for _ in 0..2 {
        let claimed = alice_dir.claim(ALBUM.as_bytes(), bob).unwrap();
        assert_eq!((claimed[0].last_resort, &claimed[0].key_package), (true, &last));
    }
    let drained = bob_dir.stock().unwrap();
    assert_eq!((drained.available, drained.low), (0, true));

    // Alice adds Bob with what she claimed; Bob, a member but no admin, may
    // claim for his own user only.
    let add = Change::AddUser { user: bob, directory: vec![first[0].key_package.clone()] };
    let out = a.stage(&a0.provider, &a0.me, &add, dir.validation()).unwrap();
    chain_of(&server, &a0).submit(&Submission::from(&out)).unwrap();
    a.confirm(&a0.provider).unwrap();
    assert_eq!(bob_dir.claim(ALBUM.as_bytes(), carol), Err(ChainError::Denied), "not an admin");
    // His own user's devices that are not in the album yet: the laptop's, not
    // the phone's (a member now, though its last resort is still filed).
    let mut laptop_dir = directory_of(&server, &b1);
    let laptop_kp = kp(&b1, false, MONTH);
    laptop_dir.publish(&KeyPackageUpload { key_packages: vec![laptop_kp.clone()], last_resort: None }).unwrap();
    let own = bob_dir.claim(ALBUM.as_bytes(), bob).unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!((own[0].device, &own[0].key_package), (*b1.id.as_bytes(), &laptop_kp));

    // A KeyPackage ending within the server's margin (an hour) is never
    // handed out, and is forgotten.
    let short = KeyPackageUpload { key_packages: vec![kp(&b1, false, 120)], last_resort: None };
    assert_eq!(laptop_dir.publish(&short).unwrap().available, 0);
    let claimed = alice_dir.claim(ALBUM.as_bytes(), bob).unwrap();
    assert!(claimed.iter().all(|c| c.device != *b1.id.as_bytes()), "an expiring KeyPackage was handed out");

    // Claims racing from several threads never get the same KeyPackage.
    let many: Vec<Vec<u8>> = (0..8).map(|_| kp(&b1, false, MONTH)).collect();
    laptop_dir.publish(&KeyPackageUpload { key_packages: many.clone(), last_resort: None }).unwrap();
    let got: Vec<Vec<u8>> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let d = directory_of(&server, &a0);
                s.spawn(move || {
                    (0..3)
                        .flat_map(|_| d.claim(ALBUM.as_bytes(), bob).unwrap())
                        .filter(|c| c.device == *b1.id.as_bytes())
                        .map(|c| c.key_package)
                        .collect::<Vec<_>>()
                })
            })
            .flat_map(|h| h.join().unwrap())
            .collect();
        racers
    });
    assert_eq!(got.len(), 8, "eight KeyPackages for twelve claims: the rest found none");
    assert_eq!(got.iter().collect::<BTreeSet<_>>(), many.iter().collect(), "one was handed out twice");
}

#[test]
fn a_key_package_spent_in_one_album_is_refused_in_every_album() {
    for (database, _dir) in databases("spent") {
        spent_key_packages(&database);
    }
}

/// HPKE init keys are for one use: a regular KeyPackage added to one album
/// is never added again, to it or to any other album on the server, nor filed
/// again in the directory. The last-resort one is exempt, by design.
fn spent_key_packages(database: &Database) {
    const OTHER: AlbumId = AlbumId::from_bytes([0x6C; 16]);
    let server = Running::start(database, LOOPBACK, Settings::default()).unwrap();
    let open = HttpDirectory::new(&server.url(), T);
    let People { dir, alice, bob, b0, a0, .. } = people(&open, 53);
    let mut albums = Vec::new();
    for id in [ALBUM, OTHER] {
        let metadata = AlbumMetadata::new(id, HistoryPolicy::Full, [alice].into()).unwrap();
        let album = Album::create(&a0.provider, &a0.me, metadata).unwrap();
        let mut chain = HttpChain::new(&server.url(), id.as_bytes(), T).with_credentials(credentials(&a0));
        chain.create_album(Epoch::ZERO, Some(&album.genesis(&a0.provider, &a0.me).unwrap())).unwrap();
        albums.push((album, chain));
    }
    let [(mut x, mut x_chain), (mut y, mut y_chain)]: [_; 2] = albums.try_into().ok().unwrap();
    let spent = kp(&b0, false, MONTH);
    let add = |key_package: &Vec<u8>| Change::AddUser { user: bob, directory: vec![key_package.clone()] };

    let out = x.stage(&a0.provider, &a0.me, &add(&spent), dir.validation()).unwrap();
    assert_eq!(x_chain.submit(&Submission::from(&out)), Ok(SubmitAnswer::Accepted { epoch: Epoch(0) }));
    x.confirm(&a0.provider).unwrap();

    // The same KeyPackage in the other album: every member would accept the
    // commit (the album never saw it), the server refuses it.
    let out = y.stage(&a0.provider, &a0.me, &add(&spent), dir.validation()).unwrap();
    assert_eq!(
        y_chain.submit(&Submission::from(&out)),
        Err(ChainError::Refused(Refused::Invalid(Invalid::Rule(Violation::KeyPackageReused))))
    );
    assert_eq!(y_chain.head(), Ok(Epoch::ZERO), "the refused commit moved the chain");
    y.reject(&a0.provider).unwrap();
    // Nor is it filed again; what the directory held is unchanged.
    let mut bob_dir = directory_of(&server, &b0);
    let before = bob_dir.stock().unwrap();
    let upload = KeyPackageUpload { key_packages: vec![spent.clone()], last_resort: None };
    assert_eq!(bob_dir.publish(&upload), Err(ChainError::KeyPackages(KeyPackageRefusal::Spent)));
    assert_eq!(bob_dir.stock().unwrap(), before);

    // The way out: a fresh one. And the last-resort one adds Bob anywhere.
    let last = kp(&b0, true, MONTH);
    let out = y.stage(&a0.provider, &a0.me, &add(&last), dir.validation()).unwrap();
    assert_eq!(y_chain.submit(&Submission::from(&out)), Ok(SubmitAnswer::Accepted { epoch: Epoch(0) }));
    y.confirm(&a0.provider).unwrap();
    let out = x.stage(&a0.provider, &a0.me, &Change::RemoveUser { user: bob }, dir.validation()).unwrap();
    x_chain.submit(&Submission::from(&out)).unwrap();
    x.confirm(&a0.provider).unwrap();
    let out = x.stage(&a0.provider, &a0.me, &add(&last), dir.validation()).unwrap();
    assert_eq!(x_chain.submit(&Submission::from(&out)), Ok(SubmitAnswer::Accepted { epoch: Epoch(2) }));
    x.confirm(&a0.provider).unwrap();
    let fresh = kp(&b0, false, MONTH);
    bob_dir.publish(&KeyPackageUpload { key_packages: vec![fresh], last_resort: None }).unwrap();
}

#[test]
fn a_welcome_goes_to_the_mailbox_of_each_device_it_adds() {
    for (database, _dir) in databases("mailbox") {
        mailbox(&database);
    }
}

fn mailbox(database: &Database) {
    let server = Running::start(database, LOOPBACK, Settings::default()).unwrap();
    let open = HttpDirectory::new(&server.url(), T);
    let People { dir, alice, bob, a0, b0, b1, c0, .. } = people(&open, 53);
    for device in [&b0, &b1, &c0] {
        let upload = KeyPackageUpload { key_packages: vec![kp(device, false, MONTH)], last_resort: None };
        directory_of(&server, device).publish(&upload).unwrap();
    }
    let metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [alice].into()).unwrap();
    let mut a = Album::create(&a0.provider, &a0.me, metadata).unwrap();
    let mut chain = chain_of(&server, &a0);
    chain.create_album(Epoch::ZERO, Some(&a.genesis(&a0.provider, &a0.me).unwrap())).unwrap();

    // Alice adds Bob's two devices from the directory.
    let claimed = directory_of(&server, &a0).claim(ALBUM.as_bytes(), bob).unwrap();
    assert_eq!(claimed.len(), 2);
    let kps: Vec<Vec<u8>> = claimed.into_iter().map(|c| c.key_package).collect();
    let add = Change::AddUser { user: bob, directory: kps.clone() };
    let out = a.stage(&a0.provider, &a0.me, &add, dir.validation()).unwrap();

    // A Welcome that is missing, or not made for the KeyPackages added, or
    // without its bundle: refused, and nothing reaches the chain or a mailbox.
    let honest = Submission::from(&out);
    // A Welcome for only one of Bob's two devices (from another album of Alice's).
    let other_welcome = {
        let metadata = AlbumMetadata::new(AlbumId::from_bytes([1; 16]), HistoryPolicy::Full, [alice].into()).unwrap();
        let mut other = Album::create(&a0.provider, &a0.me, metadata).unwrap();
        let change = Change::AddUser { user: bob, directory: vec![kps[0].clone()] };
        let staged = other.stage(&a0.provider, &a0.me, &change, dir.validation()).unwrap();
        staged.welcome.unwrap()
    };
    let broken = [
        ("no welcome", Submission { welcome: None, ..honest.clone() }),
        ("no bundle", Submission { bundle: None, ..honest.clone() }),
        ("a welcome for one of the two", Submission { welcome: Some(other_welcome), ..honest.clone() }),
        ("a welcome that does not decode", Submission { welcome: Some(vec![1, 2, 3]), ..honest.clone() }),
    ];
    for (what, submission) in broken {
        assert_eq!(chain.submit(&submission), Err(ChainError::Refused(Refused::Invalid(Invalid::Welcome))), "{what}");
        assert_eq!(chain.head(), Ok(Epoch::ZERO), "{what}");
        assert_eq!(directory_of(&server, &b0).deliveries(), Ok(Vec::new()), "{what}");
    }
    chain.submit(&honest).unwrap();
    a.confirm(&a0.provider).unwrap();

    // Each of Bob's devices finds it in its own mailbox, keyed by its KeyPackage.
    for (device, key_package) in [(&b0, &kps[0]), (&b1, &kps[1])] {
        let deliveries = directory_of(&server, device).deliveries().unwrap();
        assert_eq!(deliveries.len(), 1);
        let d = &deliveries[0];
        assert_eq!((d.album.as_slice(), d.epoch), (ALBUM.as_bytes().as_slice(), Epoch::ZERO));
        assert_eq!(d.reference, reference(&dir, key_package));
        assert_eq!((Some(&d.welcome), d.bundle.as_ref()), (out.welcome.as_ref(), out.bundle.as_ref()));
    }
    // Nobody else has anything; an unsigned read gets nothing.
    assert_eq!(directory_of(&server, &c0).deliveries(), Ok(Vec::new()));
    assert_eq!(directory_of(&server, &a0).deliveries(), Ok(Vec::new()));
    assert_eq!(open.clone().deliveries(), Err(ChainError::Denied));

    // Bob's phone joins from its mailbox, without reading the chain for it.
    let mut phone = directory_of(&server, &b0);
    let delivery = phone.deliveries().unwrap().remove(0);
    let b = Album::join(&b0.provider, &delivery.welcome, delivery.bundle.as_ref().unwrap(), dir.validation()).unwrap();
    assert_eq!(b.epoch_authenticator(), a.epoch_authenticator());
    // The KeyPackage it used is spent: its private keys are gone.
    assert!(!holds_key_package(&b0.provider, &delivery.reference).unwrap());
    // Carol acknowledging Bob's delivery removes nothing of his.
    directory_of(&server, &c0).acknowledge(&delivery).unwrap();
    assert_eq!(phone.deliveries().unwrap().len(), 1);
    phone.acknowledge(&delivery).unwrap();
    assert_eq!(phone.deliveries(), Ok(Vec::new()));
    phone.acknowledge(&delivery).unwrap();
    // The laptop's is still there.
    assert_eq!(directory_of(&server, &b1).deliveries().unwrap().len(), 1);
}

#[test]
fn the_fingerprint_board_files_a_members_own_fingerprint_only() {
    for (database, _dir) in databases("fingerprints") {
        fingerprint_board(&database);
    }
}

fn fingerprint_board(database: &Database) {
    use capsule_mls::Reading;
    let server = Running::start(database, LOOPBACK, Settings::default()).unwrap();
    let open = HttpDirectory::new(&server.url(), T);
    let People { dir, alice, bob, a0, b0, c0, .. } = people(&open, 54);
    let upload = KeyPackageUpload { key_packages: vec![kp(&b0, false, MONTH)], last_resort: None };
    directory_of(&server, &b0).publish(&upload).unwrap();
    let metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [alice].into()).unwrap();
    let mut a = Album::create(&a0.provider, &a0.me, metadata).unwrap();
    let mut alice_chain = chain_of(&server, &a0);
    alice_chain.create_album(Epoch::ZERO, Some(&a.genesis(&a0.provider, &a0.me).unwrap())).unwrap();
    let claimed = directory_of(&server, &a0).claim(ALBUM.as_bytes(), bob).unwrap();
    let add = Change::AddUser { user: bob, directory: vec![claimed[0].key_package.clone()] };
    let out = a.stage(&a0.provider, &a0.me, &add, dir.validation()).unwrap();
    alice_chain.submit(&Submission::from(&out)).unwrap();
    a.confirm(&a0.provider).unwrap();
    let b = Album::join(&b0.provider, out.welcome.as_ref().unwrap(), out.bundle.as_ref().unwrap(), dir.validation())
        .unwrap();

    let mut bob_chain = chain_of(&server, &b0);
    assert_eq!(bob_chain.fingerprints(), Ok(Vec::new()), "an empty board");
    let alices = a.fingerprint(&a0.provider, &a0.me, None).unwrap();
    let bobs = b.fingerprint(&b0.provider, &b0.me, None).unwrap();
    alice_chain.post_fingerprint(&alices).unwrap();
    bob_chain.post_fingerprint(&bobs).unwrap();
    let board = bob_chain.fingerprints().unwrap();
    assert_eq!(board.len(), 2);
    let epoch = b.epoch();
    let readings: Vec<Reading> = board.iter().filter_map(|f| b.read_fingerprint(&b0.provider, f).ok()).collect();
    assert_eq!(readings, vec![Reading::Agrees { sender: capsule_mls::Member { user: alice, device: a0.id }, epoch }]);

    // Nobody files under another's name, nor as a non-member, nor unsigned;
    // bytes that are no fingerprint of this album are refused. Nothing changes.
    let refusals = [
        ("Alice's, posted by Bob", chain_of(&server, &b0), alices.clone(), ChainError::Denied),
        ("by a non-member", chain_of(&server, &c0), alices.clone(), ChainError::Denied),
        ("unsigned", HttpChain::new(&server.url(), ALBUM.as_bytes(), T), alices.clone(), ChainError::Denied),
        ("not a fingerprint", chain_of(&server, &b0), vec![1, 2, 3], ChainError::Refused(Refused::NotAFingerprint)),
    ];
    for (what, mut chain, bytes, refusal) in refusals {
        assert_eq!(chain.post_fingerprint(&bytes), Err(refusal), "{what}");
        assert_eq!(bob_chain.fingerprints().unwrap(), board, "{what}: the board changed");
    }
    assert_eq!(chain_of(&server, &c0).fingerprints(), Err(ChainError::Denied), "a non-member reads nothing");

    // A device's later fingerprint replaces its earlier one.
    let rotate = a.stage(&a0.provider, &a0.me, &Change::RotateAmk, dir.validation()).unwrap();
    alice_chain.submit(&Submission::from(&rotate)).unwrap();
    a.confirm(&a0.provider).unwrap();
    let later = a.fingerprint(&a0.provider, &a0.me, None).unwrap();
    alice_chain.post_fingerprint(&later).unwrap();
    let board = bob_chain.fingerprints().unwrap();
    assert_eq!(board.len(), 2);
    assert!(board.contains(&later) && !board.contains(&alices));
}

/// The server's clock (the real one): KeyPackage lifetimes are OpenMLS's.
fn real_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
