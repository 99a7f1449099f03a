//! The stored records a device reads back after a restart: arbitrary bytes are
//! refused with typed errors, never a panic; what is written reads back the same.

#![allow(clippy::unwrap_used)] // test code

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_mls::testkit::{Directory, uid};
use capsule_mls::{Album, MemoryProvider};
use capsule_resilience::{Change, ResilientAlbum, RetryPolicy};
use proptest::prelude::*;

fn album() -> (Album, MemoryProvider) {
    let mut dir = Directory::new(90);
    let user = dir.user(1).unwrap();
    let d = dir.device(user).unwrap();
    let meta = AlbumMetadata::new(AlbumId::from_bytes([9; 16]), HistoryPolicy::Full, [uid(1)].into()).unwrap();
    let album = Album::create(&d.provider, &d.me, meta).unwrap();
    (album, d.provider)
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        Just(Change::RotateAmk),
        Just(Change::SelfUpdate),
        any::<[u8; 16]>().prop_map(|u| Change::RemoveUser { user: capsule_identity::UserId::from_bytes(u) }),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|kp| Change::AddDevice { key_package: kp }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_resilience_record_round_trips(changes in proptest::collection::vec(change(), 0..8)) {
        let (album, provider) = album();
        let mut r = ResilientAlbum::new(album, RetryPolicy::default());
        for c in changes {
            r.propose(c);
        }
        let bytes = r.to_record().unwrap();
        let album = Album::load(&provider, &r.album().to_record().unwrap()).unwrap();
        let back = ResilientAlbum::from_record(album, &bytes, RetryPolicy::default()).unwrap();
        prop_assert_eq!(back.intents(), r.intents());
        prop_assert_eq!(back.to_record().unwrap(), bytes);
    }

    #[test]
    fn stored_records_refuse_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (album, provider) = album();
        if let Ok(r) = ResilientAlbum::from_record(album, &bytes, RetryPolicy::default()) {
            prop_assert_eq!(r.to_record().unwrap(), bytes.clone());
        }
        // The album record: refused (typed) unless it names a stored group consistently.
        let _ = Album::load(&provider, &bytes);
    }
}
