//! Each ceremony against raw OpenMLS doing the same MLS operations on the same
//! suite (X-Wing, libcrux), for albums of 2, 50 and 200 devices, printed as a
//! ratio measured in the same run. The wrapper's extra cost is identity
//! verification (hybrid certificates), the album-context extension and the
//! AMK key schedule and history bundle.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::indexing_slicing, missing_docs)] // a benchmark

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_identity::{
    DeviceClaims, DeviceId, DeviceSigningKey, IdentityKeyPair, IdentityPublicKey, IdentitySeed, UnixTime, UserId,
    Validity,
};
use capsule_mls::*;
use criterion::{Criterion, criterion_group, criterion_main};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;

const NOW: UnixTime = UnixTime(1_800_000_000);

struct Users {
    identities: BTreeMap<UserId, IdentityKeyPair>,
    trust: BTreeMap<UserId, IdentityPublicKey>,
    next_device: u32,
}

impl Users {
    fn new() -> Self {
        let mut identities = BTreeMap::new();
        let mut trust = BTreeMap::new();
        for n in 1..=2u8 {
            let id = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([n; 32])).unwrap();
            trust.insert(UserId::from_bytes([n; 16]), id.public_key().clone());
            identities.insert(UserId::from_bytes([n; 16]), id);
        }
        Self { identities, trust, next_device: 0 }
    }

    fn device(&mut self, user: u8) -> DeviceIdentity {
        self.next_device += 1;
        let key = DeviceSigningKey::generate().unwrap();
        let user = UserId::from_bytes([user; 16]);
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&self.next_device.to_be_bytes());
        let claims = DeviceClaims {
            user,
            device: DeviceId::from_bytes(id),
            device_key: key.public_key(),
            validity: Validity::new(UnixTime(0), UnixTime(u64::MAX)).unwrap(),
        };
        let cert = self.identities[&user].certify_device(&claims).unwrap();
        DeviceIdentity::new(key, cert).unwrap()
    }
}

/// An album of `n` devices as its creator (admin) sees it.
fn capsule_album(users: &mut Users, n: usize) -> (MemoryProvider, DeviceIdentity, Album) {
    let provider = MemoryProvider::in_memory().unwrap();
    let me = users.device(1);
    let admin = UserId::from_bytes([1; 16]);
    let meta = AlbumMetadata::new(AlbumId::from_bytes([9; 16]), HistoryPolicy::Full, [admin].into()).unwrap();
    let mut album = Album::create(&provider, &me, meta).unwrap();
    if n > 1 {
        let joiner_provider = MemoryProvider::in_memory().unwrap();
        let dir: Vec<Vec<u8>> = (1..n).map(|_| key_package(&joiner_provider, &users.device(2)).unwrap()).collect();
        let v = Validation { trust: &users.trust, now: NOW };
        album.stage(&provider, &me, &Change::AddUser { user: UserId::from_bytes([2; 16]), directory: dir }, v).unwrap();
        album.confirm(&provider).unwrap();
    }
    (provider, me, album)
}

struct RawSigner(DeviceSigningKey);

impl Signer for RawSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_vec())
    }
    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

fn raw_caps() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[ExtensionType::Unknown(ALBUM_EXTENSION_TYPE)]),
        Some(&[ProposalType::GroupContextExtensions]),
        Some(&[CredentialType::Basic]),
    )
}

fn raw_member() -> (RawSigner, CredentialWithKey) {
    let key = DeviceSigningKey::generate().unwrap();
    let cwk = CredentialWithKey {
        credential: BasicCredential::new(key.public_key().to_vec()).into(),
        signature_key: key.public_key().to_vec().into(),
    };
    (RawSigner(key), cwk)
}

fn raw_kp(provider: &MemoryProvider) -> KeyPackage {
    let (signer, cwk) = raw_member();
    KeyPackage::builder()
        .leaf_node_capabilities(raw_caps())
        .build(CIPHERSUITE, provider, &signer, cwk)
        .unwrap()
        .key_package()
        .clone()
}

/// The same `n`-member group in raw OpenMLS, basic credentials.
fn raw_group(n: usize) -> (MemoryProvider, RawSigner, MlsGroup) {
    let provider = MemoryProvider::in_memory().unwrap();
    let (signer, cwk) = raw_member();
    let mut group = MlsGroup::builder()
        .ciphersuite(CIPHERSUITE)
        .with_capabilities(raw_caps())
        .with_group_context_extensions(raw_extensions(0))
        .use_ratchet_tree_extension(true)
        .with_wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build(&provider, &signer, cwk)
        .unwrap();
    if n > 1 {
        let other = MemoryProvider::in_memory().unwrap();
        let kps: Vec<KeyPackage> = (1..n).map(|_| raw_kp(&other)).collect();
        group.add_members(&provider, &signer, &kps).unwrap();
        group.merge_pending_commit(&provider).unwrap();
    }
    (provider, signer, group)
}

fn raw_extensions(v: u32) -> Extensions<GroupContext> {
    Extensions::from_vec(vec![
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[ExtensionType::Unknown(ALBUM_EXTENSION_TYPE)],
            &[ProposalType::GroupContextExtensions],
            &[CredentialType::Basic],
        )),
        Extension::Unknown(ALBUM_EXTENSION_TYPE, UnknownExtension(v.to_be_bytes().to_vec())),
    ])
    .unwrap()
}

/// One raw commit with the given proposals, staged, serialized and merged.
fn raw_commit(
    p: &MemoryProvider,
    s: &RawSigner,
    g: &mut MlsGroup,
    adds: Vec<KeyPackage>,
    removes: Vec<LeafNodeIndex>,
    gce: Option<u32>,
) {
    let mut b = g.commit_builder().propose_adds(adds).propose_removals(removes);
    if let Some(v) = gce {
        let ext = raw_extensions(v);
        b = b.propose_group_context_extensions(ext).unwrap();
    }
    let bundle =
        b.load_psks(p.storage()).unwrap().build(p.rand(), p.crypto(), s, |_| true).unwrap().stage_commit(p).unwrap();
    black_box(bundle.commit().tls_serialize_detached().unwrap());
    if let Some(w) = bundle.to_welcome_msg() {
        black_box(w.tls_serialize_detached().unwrap());
    }
    g.merge_pending_commit(p).unwrap();
}

fn mean(runs: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed() / runs
}

fn bench(c: &mut Criterion) {
    let measuring = std::env::args().any(|a| a == "--bench");
    let mut g = c.benchmark_group("ceremony");
    g.sample_size(10);
    for n in [2usize, 50, 200] {
        let mut users = Users::new();
        let (p, me, mut album) = capsule_album(&mut users, n);
        let (rp, rs, mut raw) = raw_group(n);
        let mut gce = 0u32;
        let trust = users.trust.clone();

        // AMK rotation (one GCE commit with a path) then merge.
        let mut rotate = || {
            album.stage(&p, &me, &Change::RotateAmk, Validation { trust: &trust, now: NOW }).unwrap();
            album.confirm(&p).unwrap();
        };
        let mut raw_rotate = || {
            gce += 1;
            raw_commit(&rp, &rs, &mut raw, vec![], vec![], Some(gce));
        };
        g.bench_function(format!("rotate_amk/{n}"), |b| b.iter(&mut rotate));
        g.bench_function(format!("raw gce commit/{n}"), |b| b.iter(&mut raw_rotate));
        if measuring {
            let (ours, theirs) = (mean(10, &mut rotate), mean(10, &mut raw_rotate));
            println!(
                "{n:>4} devices: rotate_amk {ours:?} vs raw OpenMLS {theirs:?}: ratio {:.2}",
                ours.as_secs_f64() / theirs.as_secs_f64()
            );
        }

        // Add a device then remove it again (with its rotation): two commits.
        let kp_provider = MemoryProvider::in_memory().unwrap();
        let mut cycle = || {
            let dev = users.device(1);
            let kp = key_package(&kp_provider, &dev).unwrap();
            let v = Validation { trust: &trust, now: NOW };
            album.stage(&p, &me, &Change::AddDevice { key_package: kp }, v).unwrap();
            album.confirm(&p).unwrap();
            album.stage(&p, &me, &Change::RemoveDevice { device: dev.device() }, v).unwrap();
            album.confirm(&p).unwrap();
        };
        let mut raw_cycle = || {
            let kp = raw_kp(&rp);
            raw_commit(&rp, &rs, &mut raw, vec![kp], vec![], None);
            let last = raw.members().map(|m| m.index).max().unwrap();
            gce += 1;
            raw_commit(&rp, &rs, &mut raw, vec![], vec![last], Some(gce));
        };
        g.bench_function(format!("add_device+remove_device/{n}"), |b| b.iter(&mut cycle));
        g.bench_function(format!("raw add+remove/{n}"), |b| b.iter(&mut raw_cycle));
        if measuring {
            let (ours, theirs) = (mean(5, &mut cycle), mean(5, &mut raw_cycle));
            println!(
                "{n:>4} devices: add+remove device {ours:?} vs raw OpenMLS {theirs:?}: ratio {:.2}",
                ours.as_secs_f64() / theirs.as_secs_f64()
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
