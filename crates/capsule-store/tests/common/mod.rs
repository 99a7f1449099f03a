//! Scenario fixtures shared by the store tests: Alice and Bob each with a store
//! file, in an album; the same seed and users as the crash child.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)] // test code

use std::path::{Path, PathBuf};

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_mls::Change;
use capsule_mls::testkit::{Directory, uid};
use capsule_store::{DatabaseKey, Store};

pub const ALBUM: AlbumId = AlbumId::from_bytes([0xC5; 16]);
pub const SEED: u8 = 60;

pub struct Scenario {
    pub dir: Directory,
    pub root: PathBuf,
}

/// The key the test stores are encrypted under (the crash child's too).
pub fn key() -> DatabaseKey {
    DatabaseKey::from_bytes(&[0x5D; 32])
}

impl Scenario {
    /// A fresh folder with Alice's store (album creator, admin) and the stores of
    /// Bob and Carol (not members yet).
    pub fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("capsule-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let mut dir = Directory::new(SEED);
        for u in [1, 2, 3] {
            dir.user(u).unwrap();
        }
        for (name, user) in [("alice", 1), ("bob", 2), ("carol", 3), ("bob2", 2)] {
            let device = dir.device(uid(user)).unwrap();
            let store = Store::open(&root.join(format!("{name}.db")), &key()).unwrap();
            store.save_device(&device.me).unwrap();
        }
        let s = Self { dir, root };
        let alice = s.open("alice");
        let me = alice.load_device().unwrap();
        let meta = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [uid(1)].into()).unwrap();
        alice.create_album(&me, meta).unwrap();
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.db"))
    }

    pub fn open(&self, name: &str) -> Store {
        Store::open(&self.path(name), &key()).unwrap()
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Adds `name`'s device (user `user`) through Alice, confirmed; returns the
    /// Welcome and bundle.
    pub fn add(&self, name: &str, user: u8) -> (Vec<u8>, Vec<u8>) {
        let joiner = self.open(name);
        let kp = {
            let me = joiner.load_device().unwrap();
            joiner.with_provider(|p| capsule_mls::key_package(p, &me)).unwrap()
        };
        let alice = self.open("alice");
        let me = alice.load_device().unwrap();
        let change = Change::AddUser { user: uid(user), directory: vec![kp] };
        let out = alice.with_album(ALBUM, |a, p| a.stage(p, &me, &change, self.dir.validation())).unwrap();
        alice.with_album(ALBUM, |a, p| a.confirm(p)).unwrap();
        (out.welcome.unwrap(), out.bundle.unwrap())
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}
