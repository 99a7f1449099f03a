//! Fixtures for Capsule's benchmark suite (`benches/suite.rs`, run and
//! reported by `cargo xtask bench`).
//!
//! Every operation is measured three ways in one run, on the X-Wing suite:
//! - **ours**: the wrapper (`capsule_mls::Album`), certificates verified;
//! - **same-bytes**: raw OpenMLS on a group whose leaves carry the very same
//!   credential bytes (the device certificates, unverified by OpenMLS), the
//!   same capabilities and the same group-context extensions, plus, timed
//!   with it, the raw Ed25519 + ML-DSA verifications the binding performs for
//!   that operation: the wrapper's own overhead is ours / same-bytes;
//! - **basic**: raw OpenMLS with 16-byte basic credentials and nothing
//!   verified: what carrying certificates in the leaves costs.
//!
//! Trees are **sparse** (every member added in one commit, no member has
//! sent a path) or **full** (members added one at a time, each sending a
//! path right after joining, so every parent node is set). The members that
//! fill a tree are raw OpenMLS groups over the same group (their state only
//! serves to make their commits); the benchmark's subjects are the creator
//! and one more member, `other`, in the flavor being measured.
//!
//! This crate is benchmark code: fixtures panic on any failure (a broken
//! fixture is a bug to see at once), which the workspace lints allow here.

#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    missing_debug_implementations
)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_identity::{
    CachingTrustStore, DeviceClaims, DeviceId, DeviceSigningKey, IdentityKeyPair, IdentityPublicKey, IdentitySeed,
    UnixTime, UserId, Validity,
};
use capsule_mls::{
    ALBUM_EXTENSION_TYPE, Album, CIPHERSUITE, CREDENTIAL_TYPE, Change, DeviceIdentity, MemoryProvider, Validation,
};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;

/// Certificates are checked at this time.
pub const NOW: UnixTime = UnixTime(1_800_000_000);
/// The album every fixture builds.
pub const ALBUM: AlbumId = AlbumId::from_bytes([9; 16]);

/// Group sizes: run as a test, 2 and 8; a smoke run (`CAPSULE_BENCH_QUICK`)
/// up to 32; otherwise up to 512, and 1024 with `CAPSULE_BENCH_LARGE`
/// (`cargo xtask bench --large`).
#[must_use]
pub fn group_sizes() -> Vec<usize> {
    if !std::env::args().any(|a| a == "--bench") {
        // Run as a test: every benchmark once, to see that it works.
        return vec![2, 8];
    }
    if quick() {
        return vec![2, 8, 32];
    }
    let mut sizes = vec![2, 8, 32, 128, 512];
    if std::env::var_os("CAPSULE_BENCH_LARGE").is_some() {
        sizes.push(1024);
    }
    sizes
}

/// Whether this is a smoke run: `cargo xtask bench --quick`, or the suite
/// run as a test (`cargo test --all-targets` runs each benchmark once, without
/// `--bench`), where building albums of 512 devices would be all the time spent.
#[must_use]
pub fn quick() -> bool {
    std::env::var_os("CAPSULE_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench")
}

/// Where the suite writes what criterion does not: `targets.json`, `sizes.json`.
#[must_use]
pub fn out_dir() -> PathBuf {
    std::env::var_os("CAPSULE_BENCH_OUT")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/capsule-bench"), PathBuf::from)
}

/// How an operation is built (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Ours,
    SameBytes,
    Basic,
}

impl Flavor {
    pub const ALL: [Self; 3] = [Self::Ours, Self::SameBytes, Self::Basic];

    /// The criterion function id.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::SameBytes => "same-bytes",
            Self::Basic => "basic",
        }
    }
}

/// The shape of the ratchet tree (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    Sparse,
    Full,
}

impl Tree {
    pub const ALL: [Self; 2] = [Self::Sparse, Self::Full];

    /// The criterion parameter: `sparse-32`.
    #[must_use]
    pub fn param(self, n: usize) -> String {
        format!("{}-{n}", if self == Self::Sparse { "sparse" } else { "full" })
    }
}

/// Two users (1 is the album's admin) and their identity keys.
pub struct People {
    identities: BTreeMap<UserId, IdentityKeyPair>,
    pub trust: BTreeMap<UserId, IdentityPublicKey>,
    /// The same keys, with a cache of the certificates verified under them.
    pub cached: CachingTrustStore<BTreeMap<UserId, IdentityPublicKey>>,
    next_device: u32,
}

impl Default for People {
    fn default() -> Self {
        Self::new()
    }
}

impl People {
    #[must_use]
    pub fn new() -> Self {
        let mut identities = BTreeMap::new();
        let mut trust = BTreeMap::new();
        for n in 1..=2u8 {
            let id = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([n; 32])).unwrap();
            trust.insert(UserId::from_bytes([n; 16]), id.public_key().clone());
            identities.insert(UserId::from_bytes([n; 16]), id);
        }
        let cached = CachingTrustStore::new(trust.clone());
        Self { identities, trust, cached, next_device: 0 }
    }

    /// A new certified device of user `user`.
    pub fn device(&mut self, user: u8) -> DeviceIdentity {
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

    #[must_use]
    pub fn validation(&self) -> Validation<'_> {
        Validation { trust: &self.trust, now: NOW }
    }

    /// Checks through the cache of verified certificates.
    #[must_use]
    pub fn cached_validation(&self) -> Validation<'_> {
        Validation { trust: &self.cached, now: NOW }
    }
}

/// What a memory provider's storage holds, to put back before each timed run
/// so every run starts from the same state.
#[derive(Clone)]
pub struct Snapshot(HashMap<Vec<u8>, Vec<u8>>);

impl Snapshot {
    #[must_use]
    pub fn of(provider: &MemoryProvider) -> Self {
        Self(provider.storage().values.read().unwrap().clone())
    }

    pub fn restore(&self, provider: &MemoryProvider) {
        self.0.clone_into(&mut provider.storage().values.write().unwrap());
    }

    /// The bytes of the values added or changed since `before`.
    #[must_use]
    pub fn written_since(&self, before: &Self) -> usize {
        self.0.iter().filter(|(k, v)| before.0.get(*k) != Some(*v)).map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// The raw cost of one certificate check: what any verifier of a hybrid
/// signature does per certificate, with the per-identity work a backend
/// allows done once (RustCrypto's expanded ML-DSA key; libcrux expands it on
/// every verify, in the wrapper too): Ed25519 `verify_strict` (the check the
/// binding makes), and ML-DSA-65 signature decoding and verification, over a
/// message of a certificate's signed size. The ML-DSA is the backend this
/// build of `capsule-identity` uses: RustCrypto's, or libcrux's with the
/// `libcrux-ml-dsa` feature.
pub struct RawVerify {
    message: Vec<u8>,
    ed_key: ed25519_dalek::VerifyingKey,
    ed_sig: ed25519_dalek::Signature,
    ml: RawMlDsa,
}

#[cfg(not(feature = "libcrux-ml-dsa"))]
struct RawMlDsa {
    key: ml_dsa::VerifyingKey<ml_dsa::MlDsa65>,
    signature: ml_dsa::EncodedSignature<ml_dsa::MlDsa65>,
}

#[cfg(not(feature = "libcrux-ml-dsa"))]
impl RawMlDsa {
    fn new(message: &[u8]) -> Self {
        let ml = ml_dsa::ExpandedSigningKey::<ml_dsa::MlDsa65>::from_seed(&[6; 32].into());
        Self { signature: ml.sign_deterministic(message, b"ctx").unwrap().encode(), key: ml.verifying_key() }
    }

    fn verify(&self, message: &[u8]) -> bool {
        let signature = ml_dsa::Signature::<ml_dsa::MlDsa65>::decode(std::hint::black_box(&self.signature)).unwrap();
        self.key.verify_with_context(message, b"ctx", &signature)
    }
}

/// libcrux verifies from the encoded key and signature: nothing to expand.
#[cfg(feature = "libcrux-ml-dsa")]
struct RawMlDsa {
    key: libcrux_ml_dsa::ml_dsa_65::MLDSA65VerificationKey,
    signature: libcrux_ml_dsa::ml_dsa_65::MLDSA65Signature,
}

#[cfg(feature = "libcrux-ml-dsa")]
impl RawMlDsa {
    fn new(message: &[u8]) -> Self {
        let pair = libcrux_ml_dsa::ml_dsa_65::generate_key_pair([6; 32]);
        let signature = libcrux_ml_dsa::ml_dsa_65::sign(&pair.signing_key, message, b"ctx", [7; 32]).unwrap();
        Self { key: pair.verification_key, signature }
    }

    fn verify(&self, message: &[u8]) -> bool {
        libcrux_ml_dsa::ml_dsa_65::verify(&self.key, message, b"ctx", std::hint::black_box(&self.signature)).is_ok()
    }
}

impl Default for RawVerify {
    fn default() -> Self {
        Self::new()
    }
}

impl RawVerify {
    #[must_use]
    pub fn new() -> Self {
        use ed25519_dalek::Signer as _;
        let message = vec![0x42; 120];
        let ed = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        Self { ed_key: ed.verifying_key(), ed_sig: ed.sign(&message), ml: RawMlDsa::new(&message), message }
    }

    /// Both verifications, `times` times.
    pub fn run(&self, times: usize) {
        for _ in 0..times {
            let message = std::hint::black_box(&self.message);
            self.ed_key.verify_strict(message, &self.ed_sig).unwrap();
            assert!(self.ml.verify(message));
        }
    }
}

/// OpenMLS's signer for a raw member: the same Ed25519 keys as a device.
pub struct RawSigner(DeviceSigningKey);

impl Signer for RawSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_vec())
    }
    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// A raw member's credential and capabilities in `flavor`: a device
/// certificate as Capsule carries it, or a 16-byte basic credential.
fn raw_credential(people: &mut People, flavor: Flavor) -> (RawSigner, CredentialWithKey, Capabilities) {
    let device = people.device(1);
    let key = DeviceSigningKey::from_secret_bytes(&device.secret_key_bytes());
    let signature_key = key.public_key().to_vec().into();
    let (credential, capabilities) = match flavor {
        Flavor::Basic => (BasicCredential::new(device.device().as_bytes().to_vec()).into(), basic_capabilities()),
        Flavor::Ours | Flavor::SameBytes => (
            Credential::new(CredentialType::Other(CREDENTIAL_TYPE), device.certificate().to_bytes().unwrap()),
            capsule_mls::capabilities(),
        ),
    };
    (RawSigner(key), CredentialWithKey { credential, signature_key }, capabilities)
}

fn basic_capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[ExtensionType::Unknown(ALBUM_EXTENSION_TYPE)]),
        Some(&[ProposalType::GroupContextExtensions]),
        Some(&[CredentialType::Basic]),
    )
}

/// The group-context extensions of a raw group: Capsule's required
/// capabilities (or basic ones) and an album extension of `album` bytes.
#[must_use]
pub fn raw_extensions(flavor: Flavor, album: &[u8]) -> Extensions<GroupContext> {
    let credential =
        if flavor == Flavor::Basic { CredentialType::Basic } else { CredentialType::Other(CREDENTIAL_TYPE) };
    Extensions::from_vec(vec![
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[ExtensionType::Unknown(ALBUM_EXTENSION_TYPE)],
            &[ProposalType::GroupContextExtensions],
            &[credential],
        )),
        Extension::Unknown(ALBUM_EXTENSION_TYPE, UnknownExtension(album.to_vec())),
    ])
    .unwrap()
}

fn join_config() -> MlsGroupJoinConfig {
    join_config_with_tree(true)
}

/// A raw member's configuration: whether its Welcomes carry the ratchet tree
/// (without it, a joiner needs the tree from elsewhere, such as the server).
#[must_use]
pub fn join_config_with_tree(tree_inside: bool) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(tree_inside)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

/// A raw member: its own provider, signer and group.
pub struct RawMember {
    pub provider: MemoryProvider,
    pub signer: RawSigner,
    pub group: MlsGroup,
}

/// A raw KeyPackage of a new member in `flavor`, its keys in `provider`.
pub fn raw_key_package(people: &mut People, flavor: Flavor, provider: &MemoryProvider) -> (RawSigner, KeyPackage) {
    let (signer, cwk, capabilities) = raw_credential(people, flavor);
    let kp = KeyPackage::builder()
        .leaf_node_capabilities(capabilities)
        .build(CIPHERSUITE, provider, &signer, cwk)
        .unwrap()
        .key_package()
        .clone();
    (signer, kp)
}

/// A KeyPackage from its bytes, as OpenMLS checks one before an add
/// (signatures, lifetime, suite, capabilities).
pub fn validate_key_package<P: OpenMlsProvider>(provider: &P, bytes: &[u8]) -> KeyPackage {
    KeyPackageIn::tls_deserialize_exact(bytes).unwrap().validate(provider.crypto(), ProtocolVersion::Mls10).unwrap()
}

/// The Welcome in serialized `MlsMessage` bytes.
#[must_use]
pub fn welcome_of(bytes: &[u8]) -> Welcome {
    match MlsMessageIn::tls_deserialize_exact(bytes).unwrap().extract() {
        MlsMessageBodyIn::Welcome(w) => w,
        _ => panic!("not a welcome"),
    }
}

/// Joins raw from `welcome` (nothing verified beyond OpenMLS's own checks).
#[must_use]
pub fn raw_join<P: OpenMlsProvider>(provider: &P, welcome: Welcome) -> MlsGroup {
    StagedWelcome::new_from_welcome(provider, &join_config(), welcome, None).unwrap().into_group(provider).unwrap()
}

/// One raw commit, staged, serialized and merged: its bytes and Welcome.
pub fn raw_commit(
    member: &mut RawMember,
    adds: Vec<KeyPackage>,
    removes: Vec<LeafNodeIndex>,
    extensions: Option<Extensions<GroupContext>>,
    path: bool,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let (p, s) = (&member.provider, &member.signer);
    let mut b = member.group.commit_builder().propose_adds(adds).propose_removals(removes).force_self_update(path);
    if let Some(ext) = extensions {
        b = b.propose_group_context_extensions(ext).unwrap();
    }
    let bundle =
        b.load_psks(p.storage()).unwrap().build(p.rand(), p.crypto(), s, |_| true).unwrap().stage_commit(p).unwrap();
    let commit = bundle.commit().tls_serialize_detached().unwrap();
    let welcome = bundle.to_welcome_msg().map(|w| w.tls_serialize_detached().unwrap());
    member.group.merge_pending_commit(p).unwrap();
    (commit, welcome)
}

/// Processes and merges `commit` raw.
pub fn raw_process(member: &mut RawMember, commit: &[u8]) {
    raw_process_with(&member.provider, &mut member.group, commit);
}

/// [`raw_process`] over any provider (the catch-up baseline's is on SQLite).
pub fn raw_process_with<P: OpenMlsProvider>(provider: &P, group: &mut MlsGroup, commit: &[u8]) {
    let message = MlsMessageIn::tls_deserialize_exact(commit).unwrap().try_into_protocol_message().unwrap();
    let processed = group.process_message(provider, message).unwrap();
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else { panic!("not a commit") };
    group.merge_staged_commit(provider, *staged).unwrap();
}

/// A member as the wrapper holds it.
pub struct OursMember {
    pub provider: MemoryProvider,
    pub me: DeviceIdentity,
    pub album: Album,
}

impl OursMember {
    /// Puts back the state `saved` (storage and album record) was taken at.
    pub fn restore(&mut self, saved: &(Snapshot, Vec<u8>)) {
        saved.0.restore(&self.provider);
        self.album = Album::load(&self.provider, &saved.1).unwrap();
    }

    #[must_use]
    pub fn save(&self) -> (Snapshot, Vec<u8>) {
        (Snapshot::of(&self.provider), self.album.to_record().unwrap().to_vec())
    }
}

impl RawMember {
    pub fn restore(&mut self, saved: &Snapshot) {
        saved.restore(&self.provider);
        self.group = MlsGroup::load(self.provider.storage(), self.group.group_id()).unwrap().unwrap();
    }
}

/// An album of `n` devices in the wrapper: the creator (admin) and `other`,
/// the last device added. The album's context bytes, for the raw builds.
pub struct OursAlbum {
    pub people: People,
    pub creator: OursMember,
    pub other: OursMember,
}

/// Which device adds are made: one commit for all (sparse), or one at a time
/// with a path sent by each newcomer (full).
impl OursAlbum {
    #[must_use]
    pub fn build(n: usize, tree: Tree) -> Self {
        assert!(n >= 2);
        let mut people = People::new();
        let provider = MemoryProvider::in_memory().unwrap();
        let me = people.device(1);
        let meta = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [UserId::from_bytes([1; 16])].into()).unwrap();
        let album = Album::create(&provider, &me, meta).unwrap();
        let mut creator = OursMember { provider, me, album };
        let fillers = n - 2;
        match tree {
            Tree::Sparse if fillers > 0 => {
                let kp_provider = MemoryProvider::in_memory().unwrap();
                let directory =
                    (0..fillers).map(|_| capsule_mls::key_package(&kp_provider, &people.device(1)).unwrap()).collect();
                let change = Change::AddUser { user: UserId::from_bytes([1; 16]), directory };
                stage_confirm(&mut creator, &change, &people);
            }
            Tree::Sparse => {}
            Tree::Full => {
                for _ in 0..fillers {
                    let provider = MemoryProvider::in_memory().unwrap();
                    let (signer, kp) = raw_key_package(&mut people, Flavor::Ours, &provider);
                    let kp = kp.tls_serialize_detached().unwrap();
                    let out = stage_confirm(&mut creator, &Change::AddDevice { key_package: kp }, &people);
                    let group = raw_join(&provider, welcome_of(&out.welcome.unwrap()));
                    let mut filler = RawMember { provider, signer, group };
                    let (commit, _) = raw_commit(&mut filler, vec![], vec![], None, true);
                    creator.album.process(&creator.provider, &commit, people.validation()).unwrap();
                }
            }
        }
        // `other`, in the wrapper: it joins (verifying every leaf), and in a
        // full tree sends its path too.
        let provider = MemoryProvider::in_memory().unwrap();
        let me = people.device(1);
        let kp = capsule_mls::key_package(&provider, &me).unwrap();
        let out = stage_confirm(&mut creator, &Change::AddDevice { key_package: kp }, &people);
        let album = Album::join(&provider, &out.welcome.unwrap(), &out.bundle.unwrap(), people.validation()).unwrap();
        let mut other = OursMember { provider, me, album };
        if tree == Tree::Full {
            let out = stage_confirm(&mut other, &Change::SelfUpdate, &people);
            creator.album.process(&creator.provider, &out.commit, people.validation()).unwrap();
        }
        assert_eq!(creator.album.members().len(), n);
        assert_eq!(creator.album.epoch_authenticator(), other.album.epoch_authenticator());
        Self { people, creator, other }
    }

    /// The album extension's bytes now, for raw groups of the same size.
    #[must_use]
    pub fn context_bytes(&self) -> Vec<u8> {
        self.creator.album.context().to_bytes().unwrap()
    }
}

/// Stages `change` as `member` and confirms it (the server accepted it).
pub fn stage_confirm(member: &mut OursMember, change: &Change, people: &People) -> capsule_mls::Outgoing {
    let out = member.album.stage(&member.provider, &member.me, change, people.validation()).unwrap();
    member.album.confirm(&member.provider).unwrap();
    out
}

/// The same album in raw OpenMLS (see the crate docs): the creator and
/// `other`, built the same way as [`OursAlbum::build`].
pub struct RawAlbum {
    pub flavor: Flavor,
    pub people: People,
    pub creator: RawMember,
    pub other: RawMember,
    /// The album extension's bytes (the wrapper's, same size).
    pub context: Vec<u8>,
}

impl RawAlbum {
    #[must_use]
    pub fn build(n: usize, tree: Tree, flavor: Flavor, context: Vec<u8>) -> Self {
        assert!(n >= 2 && flavor != Flavor::Ours);
        let mut people = People::new();
        let provider = MemoryProvider::in_memory().unwrap();
        let (signer, cwk, capabilities) = raw_credential(&mut people, flavor);
        let group = MlsGroup::builder()
            .ciphersuite(CIPHERSUITE)
            .with_capabilities(capabilities)
            .with_group_context_extensions(raw_extensions(flavor, &context))
            .use_ratchet_tree_extension(true)
            .with_wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .with_group_id(GroupId::from_slice(ALBUM.as_bytes()))
            .build(&provider, &signer, cwk)
            .unwrap();
        let mut creator = RawMember { provider, signer, group };
        let fillers = n - 2;
        match tree {
            Tree::Sparse if fillers > 0 => {
                let kp_provider = MemoryProvider::in_memory().unwrap();
                let kps = (0..fillers).map(|_| raw_key_package(&mut people, flavor, &kp_provider).1).collect();
                raw_commit(&mut creator, kps, vec![], None, true);
            }
            Tree::Sparse => {}
            Tree::Full => {
                for _ in 0..fillers {
                    let provider = MemoryProvider::in_memory().unwrap();
                    let (signer, kp) = raw_key_package(&mut people, flavor, &provider);
                    let (_, welcome) = raw_commit(&mut creator, vec![kp], vec![], None, true);
                    let group = raw_join(&provider, welcome_of(&welcome.unwrap()));
                    let mut filler = RawMember { provider, signer, group };
                    let (commit, _) = raw_commit(&mut filler, vec![], vec![], None, true);
                    raw_process(&mut creator, &commit);
                }
            }
        }
        let provider = MemoryProvider::in_memory().unwrap();
        let (signer, kp) = raw_key_package(&mut people, flavor, &provider);
        let (_, welcome) = raw_commit(&mut creator, vec![kp], vec![], None, true);
        let group = raw_join(&provider, welcome_of(&welcome.unwrap()));
        let mut other = RawMember { provider, signer, group };
        if tree == Tree::Full {
            let (commit, _) = raw_commit(&mut other, vec![], vec![], None, true);
            raw_process(&mut creator, &commit);
        }
        assert_eq!(creator.group.members().count(), n);
        Self { flavor, people, creator, other, context }
    }

    /// A group-context extension change of the wrapper's size (an AMK rotation's).
    #[must_use]
    pub fn rotation(&self, counter: u32) -> Extensions<GroupContext> {
        let mut bytes = self.context.clone();
        let len = bytes.len();
        for (b, c) in bytes[len.saturating_sub(4)..].iter_mut().zip(counter.to_be_bytes()) {
            *b ^= c;
        }
        raw_extensions(self.flavor, &bytes)
    }
}
