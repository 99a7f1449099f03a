//! How a device meets the network and the clock: no store transaction is open
//! while the chain is called, reads write nothing, deadlines survive a restart
//! whose clock went back to zero, and one `Device` serves two threads at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code

use std::path::PathBuf;
use std::time::Duration;

use capsule::Device;
use capsule::resilience::testkit::{Fault, FaultyChain, MemoryChain};
use capsule::resilience::{
    AlbumStatus, ChainEntry, ChainError, Change, CommitChain, Epoch, Event, Submission, SubmitAnswer, Timestamp,
    WelcomeBlobs,
};
use capsule::testkit::{ALBUM, Fixture};

/// A chain that, on every call, opens the device's own database file from a
/// second connection and takes its write lock. SQLite refuses at once
/// (`SQLITE_BUSY`, no busy timeout) while another connection holds it, so this
/// fails whenever the device calls the chain inside a write transaction.
struct LockProbe {
    inner: MemoryChain,
    db: PathBuf,
    calls: usize,
}

impl LockProbe {
    fn take_write_lock(&mut self) {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        // The fixture's database key (`testkit::db_key`), spelled as SQLCipher reads it.
        conn.pragma_update(None, "key", format!("x'{}'", "5d".repeat(32))).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").expect("the device holds its write lock while calling the chain");
        conn.execute_batch("ROLLBACK").unwrap();
        self.calls += 1;
    }
}

impl CommitChain for LockProbe {
    fn submit(&mut self, s: &Submission) -> Result<SubmitAnswer, ChainError> {
        self.take_write_lock();
        self.inner.submit(s)
    }
    fn fetch(&mut self, from: Epoch) -> Result<Vec<ChainEntry>, ChainError> {
        self.take_write_lock();
        self.inner.fetch(from)
    }
    fn head(&mut self) -> Result<Epoch, ChainError> {
        self.take_write_lock();
        self.inner.head()
    }
    fn welcome(&mut self, epoch: Epoch) -> Result<Option<WelcomeBlobs>, ChainError> {
        self.take_write_lock();
        self.inner.welcome(epoch)
    }
    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> Result<(), ChainError> {
        self.take_write_lock();
        self.inner.post_fingerprint(fingerprint)
    }
    fn fingerprints(&mut self) -> Result<Vec<Vec<u8>>, ChainError> {
        self.take_write_lock();
        self.inner.fingerprints()
    }
}

#[test]
fn no_store_transaction_is_open_while_the_chain_is_called() {
    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let mut probe = LockProbe { inner: fx.chain(), db: fx.path("user1-device1"), calls: 0 };
    alice.propose(ALBUM, Change::RotateAmk).unwrap();
    let events = alice.sync(ALBUM, &mut probe, &fx.clock, fx.validation()).unwrap();
    assert!(events.iter().any(|e| matches!(e, Event::Confirmed { .. })), "{events:?}");
    // A lost race goes through a fetch too: Bob rotates on a stale epoch.
    bob.propose(ALBUM, Change::RotateAmk).unwrap();
    let mut probe_b = LockProbe { inner: fx.chain(), db: fx.path("user2-device2"), calls: 0 };
    bob.sync(ALBUM, &mut probe_b, &fx.clock, fx.validation()).unwrap();
    alice.reconcile_with_server(ALBUM, &mut probe, fx.validation()).unwrap();
    // The fingerprint board: posting and reading it, then judging it.
    alice.publish_fingerprint(ALBUM, &mut probe).unwrap();
    bob.publish_fingerprint(ALBUM, &mut probe_b).unwrap();
    let board = probe.fingerprints().unwrap();
    let report = alice.sync_report(ALBUM, &board, &mut probe, fx.validation()).unwrap();
    assert_eq!(report.own.len(), 2, "{report:?}");
    assert!(probe.calls >= 3 && probe_b.calls >= 3, "{} {}", probe.calls, probe_b.calls);
    assert_eq!(alice.amk_versions(ALBUM).unwrap().current.get(), 3);
    assert_eq!(alice.epoch(ALBUM).unwrap(), bob.epoch(ALBUM).unwrap());
}

#[test]
fn reads_write_nothing() {
    let mut fx = Fixture::new().unwrap();
    let (alice, _bob) = fx.alice_and_bob().unwrap();
    alice.propose(ALBUM, Change::RotateAmk).unwrap(); // something in the resilience record
    let path = fx.path("user1-device1");
    let before = std::fs::read(&path).unwrap();
    assert_eq!(alice.status(ALBUM).unwrap(), AlbumStatus::Syncing);
    assert_eq!(alice.next_deadline(ALBUM, &fx.clock).unwrap(), Some(Timestamp(0)));
    assert_eq!(alice.epoch(ALBUM).unwrap().0, Epoch(1));
    assert_eq!(alice.members(ALBUM).unwrap().len(), 2);
    assert_eq!(alice.amk_versions(ALBUM).unwrap().current.get(), 1);
    let photo = alice.seal_photo(ALBUM, b"read-only").unwrap();
    assert_eq!(alice.open_photo(ALBUM, &photo).unwrap(), b"read-only");
    // SQLite bumps the file's change counter on every committed write.
    assert!(std::fs::read(&path).unwrap() == before, "a read changed the store");
}

#[test]
fn a_device_restarted_with_its_clock_back_at_zero_still_retries_on_schedule() {
    let mut fx = Fixture::new().unwrap();
    // Before the restart, the clock reads a real date (2027, in milliseconds).
    let before_reboot = Timestamp(1_800_000_000_000);
    fx.clock.set(before_reboot);
    let (alice, _bob) = fx.alice_and_bob().unwrap();
    let entries = fx.server.entries(ALBUM.as_bytes()).len();
    alice.propose(ALBUM, Change::RotateAmk).unwrap();
    let mut lossy = FaultyChain::new(fx.chain(), fx.clock.clone());
    lossy.on_next_submit(Fault::DropRequest);
    alice.sync(ALBUM, &mut lossy, &fx.clock, fx.validation()).unwrap();
    assert_eq!(alice.next_deadline(ALBUM, &fx.clock).unwrap(), Some(before_reboot.after(Duration::from_secs(30))));
    drop(alice);

    // The device restarts; its clock now reads zero (a reset clock, or a
    // monotonic clock passed in by mistake).
    let alice = Device::open(&fx.path("user1-device1"), &capsule::testkit::db_key()).unwrap();
    let clock = capsule::resilience::testkit::SimClock::new();
    // An application that sleeps until the deadline is woken within the schedule
    // (the longest wait is 10 minutes), not in 2027.
    let wake = alice.next_deadline(ALBUM, &clock).unwrap().unwrap();
    assert!(wake <= Timestamp(600_000), "{wake:?}");
    let events = alice.sync(ALBUM, &mut fx.chain(), &clock, fx.validation()).unwrap();
    assert!(events.is_empty(), "not before the detection timeout: {events:?}");
    // The stored deadline was further away than the schedule allows: it restarts now.
    assert_eq!(alice.next_deadline(ALBUM, &clock).unwrap(), Some(Timestamp(30_000)));
    clock.advance(Duration::from_secs(30));
    let events = alice.sync(ALBUM, &mut fx.chain(), &clock, fx.validation()).unwrap();
    assert!(events.iter().any(|e| matches!(e, Event::Submitted { retry: 1, .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Confirmed { .. })), "{events:?}");
    assert_eq!(fx.server.entries(ALBUM.as_bytes()).len(), entries + 1);
    assert_eq!(alice.status(ALBUM).unwrap(), AlbumStatus::InSync);
}

#[test]
fn one_device_serves_threads_on_two_albums_and_serializes_one() {
    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let second = capsule::amk::AlbumId::from_bytes([0xA2; 16]);
    fx.server.create_album(second.as_bytes(), Epoch::ZERO);
    alice.create_album(second, capsule::amk::HistoryPolicy::Full, [alice.user()].into()).unwrap();
    let fx = &fx;
    let alice = &alice;
    std::thread::scope(|s| {
        // Two threads on the first album (serialized), one on the second.
        for album in [ALBUM, second, ALBUM] {
            s.spawn(move || {
                for _ in 0..3 {
                    alice.propose(album, Change::RotateAmk).unwrap();
                    let mut chain = fx.server.connect(album.as_bytes());
                    alice.sync(album, &mut chain, &fx.clock, fx.validation()).unwrap();
                    // Reads from this thread while the other writes.
                    assert_ne!(alice.status(album).unwrap(), AlbumStatus::NeedsRebootstrap);
                }
            });
        }
    });
    for (album, rotations) in [(ALBUM, 6), (second, 3)] {
        assert_eq!(alice.status(album).unwrap(), AlbumStatus::InSync);
        assert_eq!(alice.amk_versions(album).unwrap().current.get(), 1 + rotations);
    }
    assert_eq!(fx.server.entries(ALBUM.as_bytes()).len(), 7); // the add and six rotations
    assert_eq!(fx.server.entries(second.as_bytes()).len(), 3);
    bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    assert_eq!(bob.epoch(ALBUM).unwrap(), alice.epoch(ALBUM).unwrap());
}
