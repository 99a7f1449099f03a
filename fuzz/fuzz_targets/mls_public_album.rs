//! Fuzz what the server reads of a submitted commit before ordering it:
//! `PublicAlbum::stage` against a real album's public state, and
//! `PublicAlbum::open` on arbitrary genesis bytes; and what it reads back from
//! its own storage, `PublicAlbum::from_bytes`. Never panics; a refusal
//! leaves the state as it was; a stored state that loads is written back in
//! a form that loads to the same state (the stored map is written sorted, so
//! a state listing its entries in another order is normalised, not refused).
#![no_main]

use std::sync::OnceLock;

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_mls::testkit::Directory;
use capsule_mls::{Album, Genesis, PublicAlbum};
use libfuzzer_sys::fuzz_target;

const ALBUM: AlbumId = AlbumId::from_bytes([0xF5; 16]);

/// A one-device album's public state, made once.
fn state() -> &'static [u8] {
    static STATE: OnceLock<Vec<u8>> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut dir = Directory::new(9);
        let user = dir.user(1).unwrap_or_else(|_| std::process::abort());
        let device = dir.device(user).unwrap_or_else(|_| std::process::abort());
        let metadata =
            AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [user].into()).unwrap_or_else(|_| std::process::abort());
        let album = Album::create(&device.provider, &device.me, metadata).unwrap_or_else(|_| std::process::abort());
        let genesis = album.genesis(&device.provider, &device.me).unwrap_or_else(|_| std::process::abort());
        let public =
            PublicAlbum::from_genesis(ALBUM, &genesis, dir.validation()).unwrap_or_else(|_| std::process::abort());
        public.to_bytes().unwrap_or_else(|_| std::process::abort())
    })
}

/// `PublicAlbum::from_bytes` on stored bytes. The library catches the panic
/// OpenMLS's memory storage raises on a damaged stored value, but libFuzzer's
/// panic hook would abort before the unwind reaches that catch: the hook is
/// silenced for this call only. A panic the library does not catch still
/// unwinds into libfuzzer-sys, which aborts on it.
fn from_stored(bytes: &[u8]) -> Option<PublicAlbum> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let loaded = PublicAlbum::from_bytes(bytes);
    std::panic::set_hook(hook);
    loaded.ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(public) = PublicAlbum::from_bytes(state()) else { return };
    let _ = public.stage(data);
    assert_eq!(public.to_bytes().ok().as_deref(), Some(state()));
    let (info, tree) = data.split_at(data.len() / 2);
    let _ = PublicAlbum::open(ALBUM, &Genesis { group_info: info.to_vec(), ratchet_tree: tree.to_vec() });
    if let Some(stored) = from_stored(data) {
        let written = stored.to_bytes().expect("a loaded state encodes");
        let again = from_stored(&written).expect("a written state loads");
        assert_eq!(again.to_bytes().ok(), Some(written));
        assert_eq!((again.epoch(), again.members()), (stored.epoch(), stored.members()));
        assert!(again.context() == stored.context());
    }
});
