//! Fuzz the chain server's HTTP surface (`capsule_server::router` over its
//! SQLite storage, in process): path segments (album and user ids in hex,
//! epochs), page queries, the `capsule-auth` header, and every body (album
//! registration, submissions, directory registrations, KeyPackage uploads,
//! fingerprints), down to the server's validation of commits against the
//! album's public state.
//!
//! The server starts each input from the same database: Alice (admin) and
//! Bob registered with their first devices and Bob's second device, an album
//! of theirs registered with its genesis, one commit, Bob's second device's
//! KeyPackages and Alice's fingerprint. An input is
//! `[method, signer, path length, path, body]`; the target signs the request
//! as `signer` does (none, Alice's or Bob's first device, Bob's second, or
//! Dave's unregistered one), so the fuzzer gets past authentication. Checks:
//! never panics; never a 5xx; every answer (but `/metrics`) is a `Reply`
//! the client decodes: an error when the status is not 2xx (but a lost race,
//! a 409 carrying the head), never an error with a 2xx.
#![no_main]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use capsule_chain::Submission;
use capsule_chain::wire::{self, AUTH_HEADER, CreateAlbum, KeyPackageUpload, RegisterUser, Reply, RequestAuth};
use capsule_fuzz::world::{A0, B0, B1, D0, World, owner};
use capsule_identity::DeviceSigningKey;
use capsule_mls::Change;
use capsule_server::sqlite::SqliteStorage;
use capsule_server::{Metrics, Settings, router};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

/// The client's limit on a reply (`capsule-client`'s `REPLY_LIMIT`).
const REPLY_LIMIT: u64 = 256 << 20;
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
/// Who signs (`signer % 5`): nobody, then these devices.
const SIGNERS: [usize; 4] = [A0, B0, B1, D0];

/// One device's request credentials.
struct Signer {
    user: [u8; 16],
    device: [u8; 16],
    key: DeviceSigningKey,
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    /// The database every input starts from.
    pristine: PathBuf,
    /// Where each input's copy lives.
    work: PathBuf,
    signers: Vec<Signer>,
    _dir: capsule_fuzz::scratch::Dir,
}

static NONCE: AtomicU64 = AtomicU64::new(1);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request as `signer` (if any) sends it.
fn request(method: &str, path: &str, body: Vec<u8>, signer: Option<&Signer>) -> Option<Request<Body>> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(s) = signer {
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&NONCE.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let mut auth = RequestAuth { user: s.user, device: s.device, time, nonce, signature: Vec::new() };
        auth.signature = s.key.sign(&wire::request_message(method, path, &body, &auth)).to_vec();
        builder = builder.header(AUTH_HEADER, hex(&wire::encode(&auth).ok()?));
    }
    builder.body(Body::from(body)).ok()
}

/// Sends one request to a fresh router over `db`: the status and body.
async fn send(db: &std::path::Path, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let storage = SqliteStorage::open(db).expect("open the server's database");
    let app = router(storage, Settings::default(), Arc::new(Metrics::default()));
    let response = app.oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
    (status, body.to_vec())
}

fn fixture() -> Fixture {
    let dir = capsule_fuzz::scratch::directory("capsule-fuzz-server");
    let (pristine, work) = (dir.path().join("pristine.db"), dir.path().join("work.db"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut world = World::new(&[B0]);
    let signers: Vec<Signer> = SIGNERS
        .iter()
        .map(|&d| {
            let dev = &world.slot(d).dev;
            Signer {
                user: *dev.user.as_bytes(),
                device: *dev.id.as_bytes(),
                key: DeviceSigningKey::from_secret_bytes(&dev.me.secret_key_bytes()),
            }
        })
        .collect();
    let album = hex(world.album(A0).id().as_bytes());
    let genesis = world.album(A0).genesis(&world.slot(A0).dev.provider, &world.slot(A0).dev.me).expect("genesis");
    let base = world.album(A0).epoch();
    let rotate = world.stage(A0, &Change::RotateAmk).expect("rotate");
    let cert = |d: usize| world.slot(d).dev.me.certificate().to_bytes().expect("certificate");
    let identity = |d: usize| world.dir.trust.get(&owner(d)).expect("trusted").to_bytes().expect("identity key");
    let fingerprint = {
        let slot = world.slot(A0);
        world.album(A0).fingerprint(&slot.dev.provider, &slot.dev.me, None).expect("fingerprint")
    };
    let upload = KeyPackageUpload { key_packages: vec![world.kp(B1), world.kp(B1)], last_resort: None };
    let steps: Vec<(&str, String, Vec<u8>, Option<usize>)> = vec![
        (
            "PUT",
            format!("/v1/users/{}", hex(owner(A0).as_bytes())),
            wire::encode(&RegisterUser { identity_key: identity(A0), certificate: cert(A0) }).expect("encode"),
            None,
        ),
        (
            "PUT",
            format!("/v1/users/{}", hex(owner(B0).as_bytes())),
            wire::encode(&RegisterUser { identity_key: identity(B0), certificate: cert(B0) }).expect("encode"),
            None,
        ),
        (
            "PUT",
            format!("/v1/users/{}/devices", hex(owner(B1).as_bytes())),
            wire::encode(&cert(B1)).expect("encode"),
            None,
        ),
        (
            "PUT",
            format!("/v1/albums/{album}"),
            wire::encode(&CreateAlbum { base, genesis: Some(genesis) }).expect("encode"),
            Some(0),
        ),
        (
            "POST",
            format!("/v1/albums/{album}/commits"),
            wire::encode(&Submission::from(&rotate)).expect("encode"),
            Some(0),
        ),
        ("POST", "/v1/key-packages".to_owned(), wire::encode(&upload).expect("encode"), Some(2)),
        ("POST", format!("/v1/albums/{album}/fingerprints"), fingerprint, Some(0)),
    ];
    for (method, path, body, signer) in steps {
        let req = request(method, &path, body, signer.and_then(|s| signers.get(s))).expect("request");
        let (status, body) = rt.block_on(send(&work, req));
        let reply = wire::decode::<Reply>(&body, REPLY_LIMIT);
        assert!(status.is_success(), "{method} {path}: {status} {reply:?}");
    }
    std::fs::rename(&work, &pristine).expect("keep the database");
    Fixture { rt, pristine, work, signers, _dir: dir }
}

thread_local! {
    static FIXTURE: Fixture = fixture();
}

fuzz_target!(|data: &[u8]| FIXTURE.with(|fx| {
    let [method, signer, len, rest @ ..] = data else { return };
    let method = METHODS.get(usize::from(*method) % METHODS.len()).copied().unwrap_or("GET");
    let signer = usize::from(*signer) % (SIGNERS.len() + 1);
    let (path, body) = rest.split_at(usize::from(*len).min(rest.len()));
    let Ok(path) = std::str::from_utf8(path) else { return };
    let signer = signer.checked_sub(1).and_then(|s| fx.signers.get(s));
    let Some(req) = request(method, path, body.to_vec(), signer) else { return };
    let uri_path = req.uri().path().to_owned();
    std::fs::copy(&fx.pristine, &fx.work).expect("copy the database");
    let (status, body) = fx.rt.block_on(send(&fx.work, req));
    assert!(!status.is_server_error(), "{method} {path}: {status}: {:?}", wire::decode::<Reply>(&body, REPLY_LIMIT));
    if uri_path == "/metrics" {
        return;
    }
    let reply = wire::decode::<Reply>(&body, REPLY_LIMIT);
    let reply =
        reply.unwrap_or_else(|e| panic!("{method} {path}: {status}: an answer the client cannot decode: {e:?}"));
    // A refusal is an error; a lost race a 409 with the head (the client catches up).
    let expected = match &reply {
        Reply::Error(_) => !status.is_success(),
        Reply::Submitted(capsule_chain::SubmitAnswer::Conflict { .. }) => status == StatusCode::CONFLICT,
        _ => status.is_success(),
    };
    assert!(expected, "{method} {path}: {status} with {reply:?}");
}));
