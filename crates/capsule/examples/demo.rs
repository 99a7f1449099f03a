//! The album story end to end with real crypto: `cargo xtask demo`.
//!
//! Every device has its own SQLite store; the server is a real
//! `capsule-server` on SQLite, started by the demo on loopback, reached over
//! HTTP through a fault layer (to lose a request on purpose); time is
//! simulated.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)] // a demo

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule::amk::{AlbumId, HistoryPolicy};
use capsule::identity::{DeviceId, IdentityKeyPair, IdentityPublicKey, UnixTime, UserId, Validity};
use capsule::mls::{Epoch, RekeyId, Validation};
use capsule::resilience::testkit::{Fault, FaultyChain, MemoryEscrow, SimClock};
use capsule::resilience::{AmkEscrow, RekeyReason};
use capsule::resilience::{Change, Clock, Event, ReconcileOutcome};
use capsule::resilience::{CommitChain, WelcomeBlobs};
use capsule::store::DatabaseKey;
use capsule::{Device, Received};
use capsule_client::{Credentials, HttpChain, HttpDirectory};
use capsule_server::{Database, Outcome, Running, Settings};

const ALBUM: AlbumId = AlbumId::from_bytes([0xCA; 16]);
const NOW: UnixTime = UnixTime(1_800_000_000);

struct Phone {
    name: &'static str,
    path: std::path::PathBuf,
    key: DatabaseKey,
    device: Device,
    chain: FaultyChain<HttpChain>,
}

struct World {
    server: Running,
    clock: SimClock,
    trust: BTreeMap<UserId, IdentityPublicKey>,
    phones: Vec<Phone>,
}

impl World {
    fn idx(&self, name: &str) -> usize {
        self.phones.iter().position(|p| p.name == name).expect("device")
    }

    fn sync(&mut self, name: &str) -> Vec<Event> {
        let i = self.idx(name);
        let v = Validation { trust: &self.trust, now: NOW };
        let p = &mut self.phones[i];
        p.device.sync(ALBUM, &mut p.chain, &self.clock, v).unwrap()
    }

    fn reconcile(&mut self, name: &str) -> ReconcileOutcome {
        let i = self.idx(name);
        let v = Validation { trust: &self.trust, now: NOW };
        let p = &mut self.phones[i];
        p.device.reconcile_with_server(ALBUM, &mut p.chain, v).unwrap()
    }

    /// The demo's own look at the chain, signed by a device still in the
    /// album (the server lets only members read it).
    fn chain(&self) -> HttpChain {
        let reader = self.members().first().map(|name| self.device(name)).expect("a member");
        self.chain_of(reader)
    }

    /// `device`'s own connection: every request signed with its key.
    fn chain_of(&self, device: &Device) -> HttpChain {
        let credentials = Credentials::new(device.user(), device.id(), device.request_key());
        HttpChain::new(&self.server.url(), ALBUM.as_bytes(), Duration::from_secs(10))
            .with_credentials(Arc::new(credentials))
    }

    /// `device`'s view of the server's directory and of its own mailbox.
    fn directory_of(&self, device: &Device) -> HttpDirectory {
        let credentials = Credentials::new(device.user(), device.id(), device.request_key());
        HttpDirectory::new(&self.server.url(), Duration::from_secs(10)).with_credentials(Arc::new(credentials))
    }

    /// KeyPackages `adder` claims from the directory for `user`'s devices not
    /// in the album yet (each handed out once).
    fn claim(&self, adder: &str, user: UserId) -> Vec<Vec<u8>> {
        let claimed = self.directory_of(self.device(adder)).claim(ALBUM.as_bytes(), user).unwrap();
        claimed.into_iter().map(|c| c.key_package).collect()
    }

    /// The newest commit that made a Welcome: its epoch, and the Welcome and bundle.
    fn latest_welcome(&self) -> (Epoch, WelcomeBlobs) {
        let mut chain = self.chain();
        let head = chain.head().unwrap();
        (0..head.0)
            .rev()
            .find_map(|e| chain.welcome(Epoch(e)).unwrap().filter(|b| b.welcome.is_some()).map(|b| (Epoch(e), b)))
            .unwrap()
    }

    /// `name` joins from the Welcome waiting in its mailbox.
    fn join(&mut self, name: &str) {
        let v = Validation { trust: &self.trust, now: NOW };
        let device = self.device(name);
        let received = device.receive_welcomes(&mut self.directory_of(device), v).unwrap();
        assert!(matches!(received.as_slice(), [Received::Joined { album: ALBUM, .. }]), "{received:?}");
    }

    fn entries(&self) -> u64 {
        self.chain().head().unwrap().0
    }

    fn submissions(&self) -> u64 {
        let m = self.server.metrics();
        [Outcome::Accepted, Outcome::Conflict, Outcome::Refused].iter().map(|o| m.get(*o)).sum()
    }

    fn device(&self, name: &str) -> &Device {
        &self.phones[self.idx(name)].device
    }

    fn members(&self) -> Vec<&'static str> {
        self.phones
            .iter()
            .filter(|p| p.device.status(ALBUM).is_ok_and(|s| s != capsule::resilience::AlbumStatus::NeedsRebootstrap))
            .map(|p| p.name)
            .collect()
    }

    /// Everyone still in the album catches up, and we show they agree.
    fn everyone_reconciles(&mut self) {
        for name in self.members() {
            self.reconcile(name);
        }
        let states: Vec<(Epoch, Vec<u8>)> =
            self.members().iter().map(|n| self.device(n).epoch(ALBUM).unwrap()).collect();
        let agree = states.windows(2).all(|w| w[0] == w[1]);
        let (epoch, auth) = &states[0];
        let v = self.device(self.members()[0]).amk_versions(ALBUM).unwrap().current;
        println!(
            "   all {} devices agree: epoch {epoch}, epoch authenticator {}…, AMK {v} — {}",
            states.len(),
            hex(&auth[..6]),
            if agree { "identical" } else { "MISMATCH" }
        );
        assert!(agree);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn step(title: &str) -> Instant {
    println!("\n▶ {title}");
    Instant::now()
}

fn took(t: Instant) {
    println!("   ({:.0?})", t.elapsed());
}

fn main() {
    let dir = std::env::temp_dir().join(format!("capsule-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let chain_db = dir.join("chain.sqlite");
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    // A validating server: it orders only commits honest members would accept.
    let server = Running::start(&Database::Sqlite(chain_db.clone()), loopback, Settings::default()).unwrap();
    let clock = SimClock::new();
    let mut w = World { server, clock: clock.clone(), trust: BTreeMap::new(), phones: Vec::new() };
    let directory = HttpDirectory::new(&w.server.url(), Duration::from_secs(10));
    println!(
        "Capsule demo — suite MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519 (libcrux), stores in {}",
        dir.display()
    );
    println!("   chain server: capsule-server at {} on SQLite, database {}", w.server.url(), chain_db.display());

    let t =
        step("Enroll Alice (phone, laptop), Bob (phone, laptop) and Charlie: hybrid Ed25519 + ML-DSA-65 identities");
    let forever = Validity::new(UnixTime(0), UnixTime(u64::MAX)).unwrap();
    let mut n = 0u8;
    for (user_byte, user_name, devices) in [
        (1u8, "alice", ["alice-phone", "alice-laptop"].as_slice()),
        (2, "bob", &["bob-phone", "bob-laptop"]),
        (3, "charlie", &["charlie-phone"]),
    ] {
        let identity = IdentityKeyPair::generate().unwrap();
        let user = UserId::from_bytes([user_byte; 16]);
        w.trust.insert(user, identity.public_key().clone());
        for name in devices {
            n += 1;
            let path = dir.join(format!("{name}.db"));
            // Each device's database is encrypted under a key from its
            // platform's keychain (a real app generates it at random, once).
            let key = DatabaseKey::from_bytes(&[n.wrapping_mul(37); 32]);
            let device = Device::enroll(&path, &key, &identity, user, DeviceId::from_bytes([n; 16]), forever).unwrap();
            // Enrolled in the server's directory: the user's key with its
            // first device, then each device's certificate.
            if *name == devices[0] {
                directory.register_user(identity.public_key(), device.certificate()).unwrap();
            } else {
                directory.register_device(device.certificate()).unwrap();
            }
            // It files KeyPackages for others to add it with. Their lifetime
            // is OpenMLS's, on the system clock: they are tidied by it.
            let stock = device.refresh_key_packages(&mut w.directory_of(&device), today()).unwrap();
            assert_eq!(stock.available, capsule::KEY_PACKAGE_STOCK);
            let chain = FaultyChain::new(w.chain_of(&device), clock.clone());
            w.phones.push(Phone { name, path, key, device, chain });
        }
        println!(
            "   {user_name}: identity key {} B, {} device(s) certified",
            identity.public_key().to_bytes().unwrap().len(),
            devices.len()
        );
    }
    println!(
        "   each device filed {} KeyPackages and a last-resort one in the server's directory",
        capsule::KEY_PACKAGE_STOCK
    );
    took(t);

    let t = step("Alice creates a shared album (full history; admins Alice and Bob) and adds her laptop and Bob");
    let (alice, bob) = (UserId::from_bytes([1; 16]), UserId::from_bytes([2; 16]));
    w.device("alice-phone").create_album(ALBUM, HistoryPolicy::Full, [alice, bob].into()).unwrap();
    // Registered with the server with its public state, signed by Alice's phone.
    let genesis = w.device("alice-phone").album_genesis(ALBUM).unwrap();
    w.chain_of(w.device("alice-phone")).create_album(Epoch::ZERO, Some(&genesis)).unwrap();
    println!("   the server now validates every commit against the album's public state (tree and context)");
    // KeyPackages are claimed from the directory (each handed out once) and
    // Welcomes arrive in each added device's mailbox: no joiner reads the chain for one.
    let laptop_kp = w.claim("alice-phone", alice).pop().unwrap();
    w.device("alice-phone").propose(ALBUM, Change::AddDevice { key_package: laptop_kp }).unwrap();
    w.sync("alice-phone");
    w.join("alice-laptop");
    let bob_dir = w.claim("alice-phone", bob);
    println!(
        "   alice-phone claims {} KeyPackages of Bob's devices from the directory ({} B each: X-Wing key + device certificate)",
        bob_dir.len(),
        bob_dir[0].len()
    );
    w.device("alice-phone").propose(ALBUM, Change::AddUser { user: bob, directory: bob_dir }).unwrap();
    w.sync("alice-phone");
    w.join("bob-phone");
    w.join("bob-laptop");
    println!("   each of Bob's devices joined from the Welcome in its own mailbox");
    let (epoch, blobs) = w.latest_welcome();
    let commit = w.chain().fetch(epoch).unwrap().into_iter().next().unwrap().commit;
    println!(
        "   add-user commit {} B, Welcome {} B, sealed history bundle {} B",
        commit.len(),
        blobs.welcome.as_ref().map_or(0, Vec::len),
        blobs.bundle.as_ref().map_or(0, Vec::len)
    );
    w.everyone_reconciles();
    took(t);

    let t = step("Bob adds Charlie; Alice uploads a photo; every device decrypts it");
    let charlie_kp = w.claim("bob-phone", UserId::from_bytes([3; 16]));
    w.device("bob-phone")
        .propose(ALBUM, Change::AddUser { user: UserId::from_bytes([3; 16]), directory: charlie_kp })
        .unwrap();
    w.sync("bob-phone");
    w.join("charlie-phone");
    w.everyone_reconciles();
    let photo1 = w.device("alice-phone").seal_photo(ALBUM, b"beach-2026.jpg").unwrap();
    for name in w.members() {
        let ok = w.device(name).open_photo(ALBUM, &photo1).unwrap() == b"beach-2026.jpg";
        println!("   {name} opens photo 1 (AMK {}): {}", photo1.version(), if ok { "yes" } else { "NO" });
    }
    took(t);

    let t = step("Alice removes Charlie: one commit removes his device and rotates the AMK");
    w.device("alice-phone").propose(ALBUM, Change::RemoveUser { user: UserId::from_bytes([3; 16]) }).unwrap();
    w.sync("alice-phone");
    let outcome = w.reconcile("charlie-phone");
    println!("   Charlie reconciles: {outcome:?}");
    w.everyone_reconciles();
    let photo2 = w.device("alice-laptop").seal_photo(ALBUM, b"party.jpg").unwrap();
    let charlie = w.device("charlie-phone");
    println!(
        "   photo 2 is under AMK {}; Charlie holds up to AMK {}",
        photo2.version(),
        charlie.amk_versions(ALBUM).unwrap().current
    );
    println!("   Charlie opens photo 2: {}", describe(charlie.open_photo(ALBUM, &photo2)));
    println!("   Charlie still opens photo 1 he already had: {}", describe(charlie.open_photo(ALBUM, &photo1)));
    println!("   Bob opens photo 2: {}", describe(w.device("bob-laptop").open_photo(ALBUM, &photo2)));
    took(t);

    let t = step("Alice loses her phone: her laptop removes it, and the AMK rotates");
    let phone_id = w.device("alice-phone").id();
    w.device("alice-laptop").propose(ALBUM, Change::RemoveDevice { device: phone_id }).unwrap();
    w.sync("alice-laptop");
    println!("   the lost phone reconciles: {:?}", w.reconcile("alice-phone"));
    w.everyone_reconciles();
    took(t);

    let t = step("Two admins rotate at once: the chain serializes them; the loser replays on the winner");
    w.device("alice-laptop").propose(ALBUM, Change::RotateAmk).unwrap();
    w.device("bob-phone").propose(ALBUM, Change::RotateAmk).unwrap();
    let a = w.sync("alice-laptop");
    let b = w.sync("bob-phone");
    println!("   alice-laptop: {}", summarize(&a));
    println!("   bob-phone:    {}", summarize(&b));
    let b2 = w.sync("bob-phone");
    println!("   bob-phone re-proposes without asking anyone: {}", summarize(&b2));
    w.everyone_reconciles();
    took(t);

    let t = step("A commit is lost in transit: retried on the backoff, no duplicate epoch");
    let before = w.entries();
    let i = w.idx("bob-laptop");
    w.phones[i].chain.on_next_submit(Fault::DropRequest);
    w.device("bob-laptop").propose(ALBUM, Change::RotateAmk).unwrap();
    println!("   t={:>3}s {}", clock.now().0 / 1000, summarize(&w.sync("bob-laptop")));
    clock.advance(Duration::from_secs(30));
    println!("   t={:>3}s {}", clock.now().0 / 1000, summarize(&w.sync("bob-laptop")));
    println!("   chain grew by {} entry (server saw {} submissions in all)", w.entries() - before, w.submissions());
    w.everyone_reconciles();
    took(t);

    let t = step("Bob's phone is offline for two rotations, then reconciles with the server");
    let i = w.idx("bob-phone");
    w.phones[i].chain.partition(true);
    for _ in 0..2 {
        w.device("alice-laptop").propose(ALBUM, Change::RotateAmk).unwrap();
        w.sync("alice-laptop");
    }
    w.phones[i].chain.partition(false);
    match w.reconcile("bob-phone") {
        ReconcileOutcome::Reconciled { applied_commits } => {
            println!("   bob-phone: Reconciled, {} missed commits replayed in order", applied_commits.len())
        }
        other => println!("   bob-phone: {other:?}"),
    }
    w.everyone_reconciles();
    took(t);

    let t = step("Every photo so far, on Bob's laptop (full history)");
    for (i, p) in [&photo1, &photo2].iter().enumerate() {
        println!("   photo {} (AMK {}): {}", i + 1, p.version(), describe(w.device("bob-laptop").open_photo(ALBUM, p)));
    }
    took(t);

    let t = step("A full re-key (suspected compromise) survives a crash of every device");
    let mut escrow = MemoryEscrow::new([0x0e; 32]);
    let v_before = w.device("bob-laptop").amk_versions(ALBUM).unwrap().current;
    {
        let v = Validation { trust: &w.trust, now: NOW };
        let i = w.idx("alice-laptop");
        let alice = &mut w.phones[i];
        let budget = Duration::from_secs(600);
        let (id, reason) = (RekeyId(1), RekeyReason::SuspectedCompromise);
        alice.device.rekey_group(ALBUM, id, reason, budget, &mut alice.chain, v, &clock, &mut escrow).unwrap();
    }
    println!("   alice-laptop quiesces the album: {}", summarize(&w.sync("alice-laptop")));
    w.reconcile("bob-phone");
    println!(
        "   bob-phone sees {:?}; bob-phone answers: {}",
        w.device("bob-phone").status(ALBUM).unwrap(),
        summarize(&w.sync("bob-phone"))
    );
    w.reconcile("bob-laptop");
    println!(
        "   bob-laptop (synced) tries to upload: {}",
        match w.device("bob-laptop").seal_photo(ALBUM, b"x") {
            Ok(_) => "accepted".into(),
            Err(e) => format!("refused — {e}"),
        }
    );
    // Every process dies mid-ceremony; each device restarts from its database file.
    for p in &mut w.phones {
        let reopened = Device::open(&p.path, &p.key).unwrap();
        p.device = reopened;
    }
    println!("   — every device crashes and restarts from its file —");
    let mut rounds = 0;
    while rounds < 10 {
        rounds += 1;
        for name in w.members() {
            w.reconcile(name);
            w.sync(name);
        }
        let done =
            w.members().iter().all(|n| w.device(n).status(ALBUM).unwrap() == capsule::resilience::AlbumStatus::InSync);
        if done {
            break;
        }
    }
    let v_after = w.device("bob-laptop").amk_versions(ALBUM).unwrap().current;
    println!(
        "   completed after {rounds} rounds: AMK {v_before} → {v_after}; lineage escrowed up to {}",
        escrow.recover(ALBUM).unwrap().unwrap().current_version()
    );
    w.everyone_reconciles();
    let photo3 = w.device("bob-laptop").seal_photo(ALBUM, b"after-rekey.jpg").unwrap();
    println!(
        "   writes reopen: photo 3 under AMK {}; alice-laptop opens it: {}",
        photo3.version(),
        describe(w.device("alice-laptop").open_photo(ALBUM, &photo3))
    );
    println!(
        "   and photo 1 still opens on alice-laptop: {}",
        describe(w.device("alice-laptop").open_photo(ALBUM, &photo1))
    );
    took(t);

    let entries = w.entries();
    drop(w);
    // The devices' stores hold their keys: they go. The chain holds only
    // public framing and MLS ciphertext: it stays for inspection.
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if !entry.file_name().to_string_lossy().starts_with("chain.sqlite") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    println!("\nDone: {entries} chain entries, every device in the album agrees.");
    println!("The server's database is kept at {} (open it with sqlite3).", chain_db.display());
}

/// The system clock: KeyPackage lifetimes are OpenMLS's, set on it.
fn today() -> UnixTime {
    UnixTime(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
}

fn describe(r: capsule::Result<Vec<u8>>) -> String {
    match r {
        Ok(bytes) => format!("yes ({})", String::from_utf8_lossy(&bytes)),
        Err(e) => format!("no — {e}"),
    }
}

fn summarize(events: &[Event]) -> String {
    let parts: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Submitted { retry: 0, .. } => Some("submitted".into()),
            Event::Submitted { retry, .. } => Some(format!("re-submitted (retry {retry})")),
            Event::Confirmed { epoch, .. } => Some(format!("confirmed → epoch {epoch}")),
            Event::Superseded { .. } => Some("lost the epoch, superseded".into()),
            Event::Surfaced { .. } => Some("surfaced".into()),
            Event::Failed { refusal, .. } => Some(format!("refused ({refusal:?})")),
            _ => None,
        })
        .collect();
    if parts.is_empty() { "no answer yet".into() } else { parts.join(", ") }
}
