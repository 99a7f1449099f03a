//! The album-context extension: round trip, and arbitrary bytes never panic.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code

use std::num::NonZeroU32;

use capsule_amk::{AlbumId, AlbumMetadata, AmkVersion, HistoryPolicy};
use capsule_identity::UserId;
use capsule_mls::{AlbumContext, RekeyId, RekeyMarker, RekeyReason};
use proptest::prelude::*;

proptest! {
    #[test]
    fn album_context_round_trips(
        album in any::<[u8; 16]>(),
        capped in proptest::option::of(1u32..1000),
        admins in proptest::collection::btree_set(any::<[u8; 16]>(), 1..4),
        version in 1u32..,
        rekey in proptest::option::of((any::<u64>(), 0u8..3)),
        entitled in proptest::collection::btree_map(any::<[u8; 16]>(), 1u32.., 0..4),
    ) {
        let policy = capped.map_or(HistoryPolicy::Full, |n| HistoryPolicy::Capped { last: NonZeroU32::new(n).unwrap() });
        let metadata = AlbumMetadata::new(AlbumId::from_bytes(album), policy, admins.into_iter().map(UserId::from_bytes).collect()).unwrap();
        let rekey = rekey.map(|(id, r)| RekeyMarker {
            id: RekeyId(id),
            reason: [RekeyReason::AdminInitiated, RekeyReason::SuspectedCompromise, RekeyReason::Scheduled][usize::from(r)],
        });
        // Nobody is entitled from a version not yet made.
        let entitlements = entitled
            .into_iter()
            .map(|(user, first)| (UserId::from_bytes(user), AmkVersion::new(first.min(version)).unwrap()))
            .collect();
        let ctx = AlbumContext { metadata, amk_version: AmkVersion::new(version).unwrap(), rekey, entitlements };
        let bytes = ctx.to_bytes().unwrap();
        prop_assert_eq!(AlbumContext::from_bytes(&bytes).unwrap(), ctx.clone());

        // An entitlement above the current version is refused.
        if let Some(next) = version.checked_add(1) {
            let mut ahead = ctx;
            ahead.entitlements.insert(UserId::from_bytes([0xee; 16]), AmkVersion::new(next).unwrap());
            prop_assert!(AlbumContext::from_bytes(&ahead.to_bytes().unwrap()).is_err());
        }
    }

    #[test]
    fn album_context_decoder_takes_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(ctx) = AlbumContext::from_bytes(&bytes) {
            prop_assert_eq!(ctx.to_bytes().unwrap(), bytes);
        }
    }
}
