//! Fuzz `ResilientAlbum::from_record` (intents, quarantine and re-key journal a
//! device reads back after a restart): never panics; whatever it accepts is
//! written back byte for byte (a record of an older format: upgraded to one
//! that reads back as itself; `[3, 0 × 11]`, a format-3 record, is the
//! regression of the byte-for-byte check this target had).
#![no_main]

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_mls::testkit::{Directory, uid};
use capsule_mls::{Album, MemoryProvider};
use capsule_resilience::{ResilientAlbum, RetryPolicy};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static STORED: Option<(MemoryProvider, Vec<u8>)> = stored();
}

fn stored() -> Option<(MemoryProvider, Vec<u8>)> {
    let mut dir = Directory::new(8);
    let user = dir.user(1).ok()?;
    let device = dir.device(user).ok()?;
    let meta = AlbumMetadata::new(AlbumId::from_bytes([9; 16]), HistoryPolicy::Full, [uid(1)].into()).ok()?;
    let album = Album::create(&device.provider, &device.me, meta).ok()?;
    let record = album.to_record().ok()?.to_vec();
    Some((device.provider, record))
}

fuzz_target!(|data: &[u8]| {
    STORED.with(|stored| {
        let Some((provider, album_record)) = stored else { return };
        let Ok(album) = Album::load(provider, album_record) else { return };
        if let Ok(r) = ResilientAlbum::from_record(album, data, RetryPolicy::default()) {
            let written = r.to_record().expect("a loaded record encodes");
            if written.first() == data.first() {
                assert_eq!(written, data, "a record of the current format is not written back as read");
            } else {
                // An older format, upgraded: the upgrade reads back as itself.
                let album = Album::load(provider, album_record).expect("the album loads");
                let again = ResilientAlbum::from_record(album, &written, RetryPolicy::default());
                assert_eq!(again.expect("an upgraded record loads").to_record().ok(), Some(written));
            }
        }
    });
});
