//! A small network: devices with resilient albums, one in-memory server, the
//! fault layer per device and a simulated clock.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::as_conversions
)] // test code

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_identity::UserId;
use capsule_mls::testkit::{Directory, TestDevice};
use capsule_mls::{Album, Validation};
use capsule_resilience::testkit::{FaultyChain, SimClock, TestChain, TestServer};
use capsule_resilience::*;

pub const ALBUM: AlbumId = AlbumId::from_bytes([0xB2; 16]);

pub struct Node {
    pub t: TestDevice,
    pub album: Option<ResilientAlbum>,
    pub chain: FaultyChain<TestChain>,
}

pub struct Net {
    pub dir: Directory,
    /// The in-memory double, or a real server on SQLite when
    /// `CAPSULE_TEST_CHAIN=sqlite` (the test matrix runs these tests both ways).
    pub server: TestServer,
    pub dir_guard: std::sync::Arc<tempfile::TempDir>,
    pub clock: SimClock,
    pub nodes: Vec<Node>,
}

impl Net {
    pub fn new(seed: u8) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let server = TestServer::from_env(dir.path()).unwrap();
        server.create_album(ALBUM.as_bytes(), Epoch::ZERO).unwrap();
        Self { dir: Directory::new(seed), server, clock: SimClock::new(), nodes: Vec::new(), dir_guard: dir }
    }

    pub fn user(&mut self, n: u8) -> UserId {
        self.dir.user(n).unwrap()
    }

    pub fn device(&mut self, user: UserId) -> usize {
        let t = self.dir.device(user).unwrap();
        let chain = FaultyChain::new(self.server.connect(ALBUM.as_bytes()), self.clock.clone());
        self.nodes.push(Node { t, album: None, chain });
        self.nodes.len() - 1
    }

    pub fn create(&mut self, d: usize, policy: HistoryPolicy, admins: &[UserId]) {
        let meta = AlbumMetadata::new(ALBUM, policy, admins.iter().copied().collect()).unwrap();
        let n = &mut self.nodes[d];
        let album = Album::create(&n.t.provider, &n.t.me, meta).unwrap();
        n.album = Some(ResilientAlbum::new(album, RetryPolicy::default()));
    }

    pub fn album(&self, d: usize) -> &ResilientAlbum {
        self.nodes[d].album.as_ref().unwrap()
    }

    pub fn drive(&mut self, d: usize) -> Result<Vec<Event>> {
        let validation = Validation { trust: &self.dir.trust, now: capsule_mls::testkit::NOW };
        let n = &mut self.nodes[d];
        let cx = Context { provider: &n.t.provider, device: &n.t.me, validation };
        n.album.as_mut().unwrap().drive(cx, &mut n.chain, &self.clock)
    }

    pub fn reconcile(&mut self, d: usize) -> Result<ReconcileOutcome> {
        let validation = Validation { trust: &self.dir.trust, now: capsule_mls::testkit::NOW };
        let n = &mut self.nodes[d];
        let cx = Context { provider: &n.t.provider, device: &n.t.me, validation };
        n.album.as_mut().unwrap().reconcile_with_server(cx, &mut n.chain)
    }

    pub fn propose(&mut self, d: usize, change: Change) -> IntentId {
        self.nodes[d].album.as_mut().unwrap().propose(change)
    }

    /// Joins device `d` from the Welcome stored with the chain entry at `epoch`.
    pub fn join_at(&mut self, d: usize, epoch: Epoch) {
        let entry = self.server.entries(ALBUM.as_bytes()).into_iter().find(|e| e.epoch == epoch).unwrap();
        let validation = Validation { trust: &self.dir.trust, now: capsule_mls::testkit::NOW };
        let n = &mut self.nodes[d];
        let album =
            Album::join(&n.t.provider, entry.welcome.as_ref().unwrap(), entry.bundle.as_ref().unwrap(), validation)
                .unwrap();
        n.album = Some(ResilientAlbum::new(album, RetryPolicy::default()));
    }

    /// Adds user `n` with `devices` devices through admin device `admin`; they join.
    pub fn add_user(&mut self, admin: usize, n: u8, devices: usize) -> Vec<usize> {
        let user = self.user(n);
        let new: Vec<usize> = (0..devices).map(|_| self.device(user)).collect();
        let directory = new.iter().map(|d| self.nodes[*d].t.key_package().unwrap()).collect();
        let id = self.propose(admin, Change::AddUser { user, directory });
        self.drive(admin).unwrap();
        assert!(matches!(self.album(admin).intent(id).unwrap().state, IntentState::Confirmed { .. }));
        let epoch = self.album(admin).album().epoch().previous().unwrap();
        for d in &new {
            self.join_at(*d, epoch);
        }
        new
    }

    pub fn active(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|d| self.nodes[*d].album.as_ref().is_some_and(|a| !a.album().is_evicted()))
            .collect()
    }

    /// Every active device reconciles; returns the outcomes.
    pub fn sync_all(&mut self) -> Vec<ReconcileOutcome> {
        self.active().into_iter().map(|d| self.reconcile(d).unwrap()).collect()
    }

    /// Every active device is at the chain's head with the same state and keyring.
    pub fn assert_converged(&self) {
        let head = Epoch(self.server.entries(ALBUM.as_bytes()).len() as u64);
        let active = self.active();
        let first = self.album(active[0]).album();
        for &d in &active {
            let a = self.album(d).album();
            assert_eq!(a.epoch(), head, "device {d} at the head");
            assert_eq!(a.epoch_authenticator(), first.epoch_authenticator(), "device {d} epoch authenticator");
            assert_eq!(a.members(), first.members(), "device {d} members");
            assert_eq!(a.keyring().current(), first.keyring().current(), "device {d} AMK");
            assert_eq!(a.keyring().write_key(), first.keyring().write_key(), "device {d} write key");
            // One key per version: every version both hold is the same key.
            for (v, k) in a.keyring().held() {
                if let Some(other) = first.keyring().get(v) {
                    assert_eq!(k, other, "device {d}: {v} has two keys");
                }
            }
        }
        // No duplicate epochs in the chain.
        let entries = self.server.entries(ALBUM.as_bytes());
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.epoch, Epoch(i as u64));
        }
    }
}
