//! Fuzz `Album::load` (the album record a device reads back from its store after
//! a restart) against a real stored group: never panics; whatever it accepts
//! is written back byte for byte (a record of an older format: upgraded to
//! one that reads back as itself).
#![no_main]

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_mls::testkit::{Directory, uid};
use capsule_mls::{Album, MemoryProvider};
use libfuzzer_sys::fuzz_target;

thread_local! {
    // One real album (X-Wing group in memory storage), made once: a mutated
    // record is then decoded against the group it claims to describe.
    static STORED: Option<MemoryProvider> = stored();
}

fn stored() -> Option<MemoryProvider> {
    let mut dir = Directory::new(7);
    let user = dir.user(1).ok()?;
    let device = dir.device(user).ok()?;
    let meta = AlbumMetadata::new(AlbumId::from_bytes([9; 16]), HistoryPolicy::Full, [uid(1)].into()).ok()?;
    let album = Album::create(&device.provider, &device.me, meta).ok()?;
    // The seed record: the fuzzer starts from `fuzz/corpus`, this only checks
    // the setup loads.
    Album::load(&device.provider, &album.to_record().ok()?).ok()?;
    Some(device.provider)
}

fuzz_target!(|data: &[u8]| {
    STORED.with(|provider| {
        let Some(provider) = provider else { return };
        if let Ok(album) = Album::load(provider, data) {
            let written = album.to_record().expect("a loaded album records").to_vec();
            if written.first() == data.first() {
                assert_eq!(written, data, "a record of the current format is not written back as read");
            } else {
                // An older format, upgraded: the upgrade reads back as itself.
                let again = Album::load(provider, &written).expect("an upgraded record loads");
                assert_eq!(again.to_record().expect("record").as_slice(), written.as_slice());
            }
        }
    });
});
