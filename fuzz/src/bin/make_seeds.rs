//! Writes the committed seed corpus, `fuzz/seeds/<target>/`: a few small
//! valid inputs per fuzz target (certificates, metadata, bundles, records,
//! wire messages, commits, Welcomes, KeyPackages, fingerprints, op sequences).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --bin make_seeds [TARGET...]
//! ```
//!
//! Each target's directory (or only those named) is replaced. Identities are deterministic, but
//! OpenMLS draws its own randomness, so the bytes of MLS messages differ
//! from run to run: regenerate only when a format changes. The live-album
//! targets' seeds mostly name the valid messages a target builds at start-up
//! (`capsule_fuzz::inputs`), so they stay valid whatever run made them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use capsule_amk::{
    AlbumId, AlbumMetadata, AlbumUpgrade, AmkKeyring, EpochSecret, HistoryBundle, HistoryPolicy, PhotoHeader,
    SealedPhoto, seal_photo,
};
use capsule_chain::wire::{
    self, ClaimedKeyPackage, CreateAlbum, Delivery, DirectoryEntry, KeyPackageStock, KeyPackageUpload, Page, PageEntry,
    RegisterUser, Reply, RequestAuth,
};
use capsule_chain::{Submission, SubmitAnswer};
use capsule_fuzz::edit;
use capsule_fuzz::inputs::{self, base, edited, join_pair, raw};
use capsule_fuzz::world::{A0, A1, B0, B1, C0, D0, World, owner};
use capsule_identity::encoding;
use capsule_mls::testkit::{Directory, uid};
use capsule_mls::{Album, Change, CommitHash, Epoch, RekeyId, RekeyMarker, RekeyReason};
use capsule_resilience::{Discarded, ResilientAlbum, RetryPolicy};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng as _;

/// The seeds of every target, by target and name.
#[derive(Default)]
struct Seeds(BTreeMap<&'static str, Vec<(String, Vec<u8>)>>);

impl Seeds {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: impl AsRef<[u8]>) {
        self.0.entry(target).or_default().push((name.into(), bytes.as_ref().to_vec()));
    }

    /// Writes the seeds of `only` (every target when empty).
    fn write(&self, root: &Path, only: &[String]) -> std::io::Result<()> {
        let mut total = 0;
        for (target, seeds) in self.0.iter().filter(|(t, _)| only.is_empty() || only.iter().any(|o| o == *t)) {
            let dir = root.join(target);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            for (name, bytes) in seeds {
                std::fs::write(dir.join(name), bytes)?;
                total += bytes.len();
            }
            println!("{target}: {} seeds", seeds.len());
        }
        println!("{total} bytes in {}", root.display());
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let mut seeds = Seeds::default();
    decoders(&mut seeds);
    live(&mut seeds);
    stateful(&mut seeds);
    server(&mut seeds);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let only: Vec<String> = std::env::args().skip(1).collect();
    seeds.write(&root, &only)
}

/// The stateless decoders.
fn decoders(seeds: &mut Seeds) {
    let mut world = World::new(&[B0]);
    let album = world.album(A0);
    let metadata = album.context().metadata.clone();

    // capsule-identity.
    for d in [A0, D0] {
        let cert = world.slot(d).dev.me.certificate().to_bytes().expect("certificate");
        seeds.add("identity_certificate", format!("device-{d}"), &cert);
    }
    let identity = world.dir.trust.get(&owner(A0)).expect("alice's key").to_bytes().expect("identity key");
    seeds.add("identity_public_key", "alice", &identity);

    // capsule-amk.
    seeds.add("amk_album_metadata", "full", metadata.to_bytes().expect("metadata"));
    let capped = HistoryPolicy::Capped { last: 3.try_into().expect("non-zero") };
    let capped = AlbumMetadata::new(AlbumId::from_bytes([2; 16]), capped, [uid(1), uid(2)].into()).expect("metadata");
    seeds.add("amk_album_metadata", "capped-two-admins", capped.to_bytes().expect("metadata"));
    let upgrade = AlbumUpgrade { history_policy: None, admins: Some([uid(1), uid(3)].into()) };
    let upgraded = metadata.upgraded(&upgrade).expect("upgrade");
    seeds.add("amk_album_metadata", "upgraded", upgraded.to_bytes().expect("metadata"));
    let out = world.stage(A0, &Change::RotateAmk).expect("rotate");
    world.deliver(A0, &out, &[]);
    let keyring = world.album(A0).keyring();
    seeds.add("amk_keyring", "two-versions", keyring.to_bytes().expect("keyring"));
    let fresh = AmkKeyring::create(AlbumId::from_bytes([4; 16]), &EpochSecret::from_exporter([4; 32])).expect("ring");
    seeds.add("amk_keyring", "one-version", fresh.to_bytes().expect("keyring"));
    let history = HistoryBundle::for_joiner(keyring, &metadata).expect("history");
    seeds.add("amk_history_bundle", "two-versions", history.to_bytes().expect("history"));
    let add = world.add_change(owner(A0), C0);
    let out = world.stage(A0, &add).expect("add carol");
    seeds.add("amk_sealed_bundle", "for-carol", out.bundle.as_deref().unwrap_or_default());
    let submission = Submission::from(&out);
    let welcome = out.welcome.clone().unwrap_or_default();
    world.deliver(A0, &out, &[C0]);

    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let ring = AmkKeyring::create(AlbumId::from_bytes([0xE1; 16]), &EpochSecret::from_exporter([3; 32])).expect("ring");
    let album_id = AlbumId::from_bytes([0xE1; 16]);
    for (name, photo) in [("beach", &b"beach.jpg"[..]), ("empty", &b""[..])] {
        let sealed = seal_photo(ring.current(), &album_id, photo, &mut rng).expect("seal").to_bytes();
        seeds.add("amk_sealed_photo", name, &sealed);
        seeds.add("amk_photo_stream", format!("raw-{name}"), [&[2][..], &sealed].concat());
    }
    // The stream target's own photo: two full chunks and 700 bytes.
    let stream_len = PhotoHeader::LEN + 2 * SealedPhoto::SEALED_CHUNK_SIZE + 700 + 16;
    seeds.add("amk_photo_stream", "whole", [0]);
    seeds.add("amk_photo_stream", "cut-16k", [0, 0x00, 0x40, 0x00, 0x40, 0x00, 0x40]);
    seeds.add("amk_photo_stream", "cut-odd", [0, 7, 0, 0xFF, 0xFF, 1, 0]);
    let flip = edit::flip(PhotoHeader::LEN + SealedPhoto::SEALED_CHUNK_SIZE + 3, stream_len);
    seeds.add("amk_photo_stream", "flip-second-chunk", [&[1, 1][..], &flip, &[0x00, 0x80]].concat());
    let flip = edit::flip(5, stream_len);
    seeds.add("amk_photo_stream", "flip-header", [&[1, 1][..], &flip].concat());

    // capsule-chain wire types.
    let genesis = world.album(A0).genesis(&world.slot(A0).dev.provider, &world.slot(A0).dev.me).expect("genesis");
    let create = CreateAlbum { base: Epoch(0), genesis: Some(genesis.clone()) };
    seeds.add("chain_create_album", "with-genesis", wire::encode(&create).expect("encode"));
    let create = CreateAlbum { base: Epoch(5), genesis: None };
    seeds.add("chain_create_album", "bare", wire::encode(&create).expect("encode"));
    seeds.add("chain_submission", "add-carol", wire::encode(&submission).expect("encode"));
    let rotate = world.stage(A0, &Change::RotateAmk).expect("rotate");
    seeds.add("chain_submission", "rotate", wire::encode(&Submission::from(&rotate)).expect("encode"));
    seeds.add("mls_framing", "commit", &rotate.commit);
    seeds.add("mls_framing", "welcome", &welcome);
    seeds.add("mls_framing", "group-info", &genesis.group_info);
    seeds.add("mls_public_album", "commit", &rotate.commit);
    seeds.add("mls_public_album", "server-state", &world.server);
    seeds.add("mls_public_album", "genesis-halves", [genesis.group_info.as_slice(), &genesis.ratchet_tree].concat());
    let fingerprint = {
        let slot = world.slot(A0);
        world.album(A0).fingerprint(&slot.dev.provider, &slot.dev.me, None).expect("fingerprint")
    };
    let replies = [
        ("created", Reply::Created { base: Epoch(0) }),
        ("accepted", Reply::Submitted(SubmitAnswer::Accepted { epoch: Epoch(3) })),
        ("conflict", Reply::Submitted(SubmitAnswer::Conflict { head: Epoch(4) })),
        (
            "page",
            Reply::Page(Page {
                head: Epoch(4),
                entries: vec![PageEntry { epoch: Epoch(3), commit: rotate.commit.clone(), has_welcome: false }],
                next: None,
            }),
        ),
        ("head", Reply::Head(Epoch(9))),
        ("registered", Reply::Registered),
        ("directory", Reply::Directory(DirectoryEntry { identity_key: identity.clone(), certificates: vec![] })),
        ("stock", Reply::Stock(KeyPackageStock { available: 3, last_resort_until: Some(1_900_000_000), low: false })),
        (
            "claimed",
            Reply::Claimed(vec![ClaimedKeyPackage {
                device: *world.slot(D0).dev.id.as_bytes(),
                key_package: world.kp(D0),
                last_resort: false,
            }]),
        ),
        (
            "mailbox",
            Reply::Mailbox(vec![Delivery {
                album: world.album(A0).group_id(),
                epoch: Epoch(2),
                reference: vec![7; 32],
                welcome: welcome.get(..64).unwrap_or_default().to_vec(),
                bundle: None,
            }]),
        ),
        ("acknowledged", Reply::Acknowledged),
        ("posted", Reply::Posted),
        ("fingerprints", Reply::Fingerprints(vec![fingerprint.clone()])),
    ];
    for (name, reply) in replies {
        seeds.add("chain_reply", name, wire::encode(&reply).expect("encode"));
    }
    let cert = world.slot(A0).dev.me.certificate().to_bytes().expect("certificate");
    let auth =
        RequestAuth { user: [1; 16], device: [2; 16], time: 1_800_000_000, nonce: [3; 16], signature: vec![4; 64] };
    seeds.add("chain_request_auth", "auth", wire::encode(&auth).expect("encode"));
    let register = RegisterUser { identity_key: identity, certificate: cert.clone() };
    seeds.add("chain_request_auth", "register", wire::encode(&register).expect("encode"));
    seeds.add("chain_request_auth", "renewal", wire::encode(&cert).expect("encode"));

    // capsule-mls records and the server's KeyPackage checks.
    let context = world.album(A0).context().clone();
    seeds.add("mls_album_context", "current", context.to_bytes().expect("context"));
    let mut rekeying = context;
    rekeying.rekey = Some(RekeyMarker { id: RekeyId(3), reason: RekeyReason::SuspectedCompromise });
    seeds.add("mls_album_context", "rekeying", rekeying.to_bytes().expect("context"));
    {
        // `mls_album_record` and `resilience_record` load against an album of
        // their own: the same directory seed, album and admin make a record
        // that loads there.
        for (target, seed) in [("mls_album_record", 7), ("resilience_record", 8)] {
            let mut dir = Directory::new(seed);
            let user = dir.user(1).expect("user");
            let device = dir.device(user).expect("device");
            let meta = AlbumMetadata::new(AlbumId::from_bytes([9; 16]), HistoryPolicy::Full, [uid(1)].into())
                .expect("metadata");
            let album = Album::create(&device.provider, &device.me, meta).expect("create");
            if target == "mls_album_record" {
                seeds.add(target, "fresh", album.to_record().expect("record").as_slice());
            } else {
                let mut resilient = ResilientAlbum::new(album, RetryPolicy::default());
                seeds.add(target, "fresh", resilient.to_record().expect("record"));
                resilient.propose(Change::RotateAmk);
                resilient.propose(Change::SelfUpdate);
                seeds.add(target, "two-intents", resilient.to_record().expect("record"));
            }
        }
        let mut dir = Directory::new(11);
        let user = dir.user(1).expect("user");
        let device = dir.device(user).expect("device");
        let kp = device.key_package().expect("key package");
        seeds.add("mls_key_package", "key-package", &kp);
        seeds.add("mls_key_package", "welcome", &welcome);
        let upload = KeyPackageUpload { key_packages: vec![kp.clone()], last_resort: Some(kp) };
        seeds.add("mls_key_package", "upload", wire::encode(&upload).expect("encode"));
    }

    // capsule-store's records (`store_records`: `[kind, value]`, kinds as
    // its `KINDS`), for the store's own album (0xD7…) of Alice's first
    // device. The store's own records are a format byte (2, `capsule-store`'s
    // `records.rs`) and a postcard body; the album and resilience records
    // carry their crates' formats.
    {
        const STORE_FORMAT: u8 = 2;
        let mut dir = Directory::new(capsule_fuzz::world::SEED);
        let user = dir.user(1).expect("user");
        let device = dir.device(user).expect("device");
        let own = device.me.certificate().to_bytes().expect("certificate");
        let body = encoding::encode(&(*device.me.secret_key_bytes(), own)).expect("encode");
        seeds.add("store_records", "device", [&[0, STORE_FORMAT][..], &body].concat());
        let meta =
            AlbumMetadata::new(AlbumId::from_bytes([0xD7; 16]), HistoryPolicy::Full, [user].into()).expect("metadata");
        let album = Album::create(&device.provider, &device.me, meta).expect("create");
        seeds.add("store_records", "album", [&[1][..], &album.to_record().expect("record")].concat());
        let mut resilient = ResilientAlbum::new(album, RetryPolicy::default());
        resilient.propose(Change::RotateAmk);
        seeds.add("store_records", "resilience", [&[2][..], &resilient.to_record().expect("record")].concat());
        let discarded = Discarded {
            album: AlbumId::from_bytes([0xD7; 16]),
            epoch: Epoch(4),
            divergence: None,
            last_applied: Some(CommitHash::of(b"last")),
            pending: None,
            unsettled: resilient.intents().to_vec(),
        };
        let body = encoding::encode(&discarded).expect("encode");
        seeds.add("store_records", "rebootstrap", [&[3, STORE_FORMAT][..], &body].concat());
        let record = capsule_store::KeyPackageRecord { not_after: 1_900_000_000, last_resort: true };
        let body = encoding::encode(&record).expect("encode");
        seeds.add("store_records", "key-package", [&[4, STORE_FORMAT][..], &body].concat());
    }
}

/// The live-album targets: mostly names of the messages they build at
/// start-up (`inputs::base`), edited or not, and a few raw messages.
fn live(seeds: &mut Seeds) {
    // Script instructions: flip a byte near the start, the middle, the end;
    // cut the second half; rewrite a length prefix.
    let scripts: [(&str, [u8; 4]); 5] = [
        ("flip-early", [0, 0x01, 0x00, 0x01]),
        ("flip-middle", [0, 0x80, 0x00, 0x01]),
        ("flip-late", [0, 0xF0, 0x00, 0x80]),
        ("cut-half", [4, 0x80, 0x00, 0x00]),
        ("length", [5, 0x00, 0x20, 0x10]),
    ];
    for i in 0..13 {
        seeds.add("mls_process_commit", format!("base-{i:02}"), base(i));
    }
    for (name, script) in &scripts {
        seeds.add("mls_process_commit", format!("base-00-{name}"), edited(0, script));
        seeds.add("mls_fingerprint", format!("base-00-{name}"), edited(0, script));
    }
    for i in 0..4 {
        seeds.add("mls_fingerprint", format!("base-{i}"), base(i));
    }
    for part in 0..2u8 {
        for i in 0..3 {
            seeds.add("mls_join_welcome", format!("part-{part}-base-{i}"), [&[part][..], &base(i)].concat());
        }
        for (name, script) in &scripts {
            seeds.add("mls_join_welcome", format!("part-{part}-{name}"), [&[part][..], &edited(0, script)].concat());
        }
    }
    for ceremony in 0..4u8 {
        for i in 0..4 {
            let seed = [&[ceremony][..], &base(i)].concat();
            seeds.add("mls_add_key_package", format!("ceremony-{ceremony}-base-{i}"), seed);
        }
    }
    seeds.add("mls_add_key_package", "ceremony-0-base-0-flip-middle", [&[0][..], &edited(0, &scripts[1].1)].concat());

    // Raw messages of this run's own album: they parse, and fail where the
    // other process's secrets come in.
    let mut world = World::new(&[B0, C0]);
    let kp = world.kp(A1);
    seeds.add("mls_add_key_package", "raw-alice-second-device", [&[0][..], &raw(&kp)].concat());
    let out = world.stage(A0, &Change::AddDevice { key_package: kp }).expect("add");
    seeds.add("mls_process_commit", "raw-add", raw(&out.commit));
    let (welcome, bundle) = (out.welcome.clone().unwrap_or_default(), out.bundle.clone().unwrap_or_default());
    seeds.add("mls_join_welcome", "part-2-raw-pair", [&[2][..], &join_pair(&welcome, &bundle)].concat());
    world.deliver(A0, &out, &[A1]);
    let slot = world.slot(C0);
    let refused = Some(CommitHash::of(b"refused"));
    let fingerprint = world.album(C0).fingerprint(&slot.dev.provider, &slot.dev.me, refused).expect("fingerprint");
    seeds.add("mls_fingerprint", "raw-carol", raw(&fingerprint));
    assert_eq!(inputs::RAW, 0);
}

/// `stateful_album`: two bytes per op (see the target's table). Devices by
/// `arg % 4`: 0 Alice's first, 1 Alice's second (spare), 2 Bob's, 3 Carol's.
fn stateful(seeds: &mut Seeds) {
    const fn op(op: u8, device: u8, kind: u8, pick: u8) -> [u8; 2] {
        [op, device | (kind << 2) | (pick << 5)]
    }
    const STAGE: u8 = 0;
    const SUBMIT: u8 = 1;
    const DELIVER: u8 = 2;
    const ASIDE: u8 = 3;
    const RESTART: u8 = 4;
    const DROP: u8 = 5;
    const JOIN: u8 = 6;
    const READ: u8 = 7;
    let runs: [(&str, &[[u8; 2]]); 7] = [
        (
            "rotate-deliver-read",
            &[op(STAGE, 0, 0, 0), op(SUBMIT, 0, 0, 0), op(DELIVER, 2, 2, 0), op(DELIVER, 3, 2, 0), op(READ, 2, 0, 0)],
        ),
        (
            "add-spare-join",
            &[
                op(STAGE, 0, 2, 0),
                op(SUBMIT, 0, 0, 0),
                op(JOIN, 0, 0, 0),
                op(DELIVER, 2, 2, 0),
                op(DELIVER, 3, 2, 0),
                op(READ, 1, 0, 0),
            ],
        ),
        (
            "lost-answer-restart-replay",
            &[
                op(STAGE, 3, 0, 0),
                op(SUBMIT, 3, 1, 0),
                op(RESTART, 3, 0, 0),
                op(DELIVER, 3, 0, 0),
                op(DELIVER, 2, 0, 0),
                op(ASIDE, 2, 1, 0),
            ],
        ),
        (
            "conflict-superseded",
            &[
                op(STAGE, 0, 0, 0),
                op(STAGE, 2, 1, 0),
                op(SUBMIT, 2, 0, 0),
                op(SUBMIT, 0, 0, 0),
                op(DELIVER, 0, 0, 0),
                op(STAGE, 0, 0, 0),
                op(SUBMIT, 0, 0, 0),
                op(DELIVER, 2, 2, 0),
            ],
        ),
        (
            "remove-readd-carol",
            &[
                op(STAGE, 0, 4, 3),
                op(SUBMIT, 0, 0, 0),
                op(DELIVER, 3, 0, 0),
                op(STAGE, 0, 2, 3),
                op(SUBMIT, 0, 0, 0),
                op(JOIN, 0, 0, 0),
                op(DELIVER, 2, 2, 0),
            ],
        ),
        (
            "refusals-and-drop",
            &[
                op(STAGE, 3, 4, 0),
                op(STAGE, 2, 2, 0),
                op(STAGE, 0, 3, 2),
                op(STAGE, 0, 0, 0),
                op(DROP, 0, 0, 0),
                op(ASIDE, 0, 0, 0),
                op(STAGE, 0, 5, 0),
                op(SUBMIT, 0, 0, 0),
            ],
        ),
        (
            "rekey",
            &[
                op(STAGE, 0, 6, 0),
                op(SUBMIT, 0, 0, 0),
                op(DELIVER, 2, 0, 0),
                op(STAGE, 2, 1, 0),
                op(SUBMIT, 2, 0, 0),
                op(DELIVER, 0, 0, 0),
                op(STAGE, 0, 7, 0),
                op(SUBMIT, 0, 0, 0),
            ],
        ),
    ];
    for (name, ops) in runs {
        seeds.add("stateful_album", name, ops.concat());
    }
}

/// `server_http`: `[method, signer, path length, path, body]`; methods GET,
/// POST, PUT, DELETE; signers none, Alice's first device, Bob's first,
/// Bob's second, Dave's.
fn server(seeds: &mut Seeds) {
    const GET: u8 = 0;
    const POST: u8 = 1;
    const PUT: u8 = 2;
    const DELETE: u8 = 3;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut world = World::new(&[B0]);
    let album = hex(world.album(A0).id().as_bytes());
    let (alice, bob) = (hex(owner(A0).as_bytes()), hex(owner(B0).as_bytes()));
    let cert = |world: &World, d: usize| world.slot(d).dev.me.certificate().to_bytes().expect("certificate");
    let identity = world.dir.trust.get(&owner(A0)).expect("trusted").to_bytes().expect("identity key");
    let genesis = world.album(A0).genesis(&world.slot(A0).dev.provider, &world.slot(A0).dev.me).expect("genesis");
    let fingerprint = {
        let slot = world.slot(A0);
        world.album(A0).fingerprint(&slot.dev.provider, &slot.dev.me, None).expect("fingerprint")
    };
    let base = world.album(A0).epoch();
    let rotate = world.stage(A0, &Change::RotateAmk).expect("rotate");
    let upload = KeyPackageUpload { key_packages: vec![world.kp(B1)], last_resort: None };
    let requests: Vec<(&str, u8, u8, String, Vec<u8>)> = vec![
        ("head", GET, 1, format!("/v1/albums/{album}/head"), vec![]),
        ("head-unsigned", GET, 0, format!("/v1/albums/{album}/head"), vec![]),
        ("page", GET, 1, format!("/v1/albums/{album}/commits?from={}&limit=5", base.0), vec![]),
        ("welcome", GET, 2, format!("/v1/albums/{album}/welcomes/{}", base.0), vec![]),
        ("board", GET, 1, format!("/v1/albums/{album}/fingerprints"), vec![]),
        ("post-fingerprint", POST, 1, format!("/v1/albums/{album}/fingerprints"), fingerprint),
        (
            "submit",
            POST,
            1,
            format!("/v1/albums/{album}/commits"),
            wire::encode(&Submission::from(&rotate)).expect("encode"),
        ),
        (
            "create",
            PUT,
            1,
            format!("/v1/albums/{album}"),
            wire::encode(&CreateAlbum { base, genesis: Some(genesis) }).expect("encode"),
        ),
        (
            "register-user",
            PUT,
            0,
            format!("/v1/users/{alice}"),
            wire::encode(&RegisterUser { identity_key: identity, certificate: cert(&world, A0) }).expect("encode"),
        ),
        ("lookup", GET, 1, format!("/v1/users/{bob}"), vec![]),
        (
            "register-device",
            PUT,
            0,
            format!("/v1/users/{bob}/devices"),
            wire::encode(&cert(&world, B1)).expect("encode"),
        ),
        ("stock", GET, 3, "/v1/key-packages".to_owned(), vec![]),
        ("upload", POST, 3, "/v1/key-packages".to_owned(), wire::encode(&upload).expect("encode")),
        ("claim", POST, 1, format!("/v1/albums/{album}/key-packages/{bob}"), vec![]),
        ("mailbox", GET, 3, "/v1/mailbox".to_owned(), vec![]),
        ("acknowledge", DELETE, 3, format!("/v1/mailbox/{album}/{}", base.0), vec![]),
        ("metrics", GET, 0, "/metrics".to_owned(), vec![]),
        ("stranger", GET, 4, format!("/v1/albums/{album}/head"), vec![]),
    ];
    for (name, method, signer, path, body) in requests {
        let len = u8::try_from(path.len()).expect("a short path");
        seeds.add("server_http", name, [&[method, signer, len][..], path.as_bytes(), &body].concat());
    }
}
