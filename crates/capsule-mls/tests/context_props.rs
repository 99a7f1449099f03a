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
    ) {
        let policy = capped.map_or(HistoryPolicy::Full, |n| HistoryPolicy::Capped { last: NonZeroU32::new(n).unwrap() });
        let metadata = AlbumMetadata::new(AlbumId::from_bytes(album), policy, admins.into_iter().map(UserId::from_bytes).collect()).unwrap();
        let rekey = rekey.map(|(id, r)| RekeyMarker {
            id: RekeyId(id),
            reason: [RekeyReason::AdminInitiated, RekeyReason::SuspectedCompromise, RekeyReason::Scheduled][usize::from(r)],
        });
        let ctx = AlbumContext { metadata, amk_version: AmkVersion::new(version).unwrap(), rekey };
        let bytes = ctx.to_bytes().unwrap();
        prop_assert_eq!(AlbumContext::from_bytes(&bytes).unwrap(), ctx);
    }

    #[test]
    fn album_context_decoder_takes_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(ctx) = AlbumContext::from_bytes(&bytes) {
            prop_assert_eq!(ctx.to_bytes().unwrap(), bytes);
        }
    }
}
