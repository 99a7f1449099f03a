//! The in-memory double keeps the chain's contract: `capsule-chain`'s
//! conformance suite, the same one the server runs on each database.

use capsule_chain::conformance::{self, Harness};
use capsule_chain::rules::Limits;
use capsule_mls::Epoch;
use capsule_resilience::testkit::{MemoryChain, MemoryServer};

struct Memory(MemoryServer);

impl Harness for Memory {
    type Chain = MemoryChain;

    fn open(&mut self, album: &[u8], base: Epoch, keep: Option<u64>) -> MemoryChain {
        self.0.create_album_retaining(album, base, keep);
        self.0.connect(album)
    }

    fn unknown(&mut self, album: &[u8]) -> MemoryChain {
        self.0.connect(album)
    }

    fn limits(&self) -> Limits {
        Limits::default()
    }
}

#[test]
fn the_memory_chain_keeps_the_contract() {
    assert_eq!(conformance::run(&mut Memory(MemoryServer::new())), Ok(()));
}
