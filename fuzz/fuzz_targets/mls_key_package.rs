//! Fuzz what the server's directory and mailbox read of outside bytes:
//! `inspect_key_package` (every uploaded KeyPackage, against a trust store
//! that knows the user), `welcome_recipients` (the Welcome of every
//! submitted add) and the upload body `KeyPackageUpload`. Never panics;
//! whatever decodes as an upload re-encodes to the same bytes.
#![no_main]

use std::sync::OnceLock;

use capsule_chain::wire::{self, KeyPackageUpload};
use capsule_mls::testkit::Directory;
use capsule_mls::{inspect_key_package, welcome_recipients};
use libfuzzer_sys::fuzz_target;

/// A directory with one user, made once.
fn directory() -> &'static Directory {
    static DIRECTORY: OnceLock<Directory> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        let mut dir = Directory::new(11);
        dir.user(1).unwrap_or_else(|_| std::process::abort());
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = inspect_key_package(data, directory().validation());
    let _ = welcome_recipients(data);
    if let Ok(upload) = wire::decode::<KeyPackageUpload>(data, 1 << 20) {
        assert_eq!(wire::encode(&upload).ok().as_deref(), Some(data));
    }
});
