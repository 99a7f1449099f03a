//! The HTTP API (see `capsule_chain::wire` for paths and bodies). Every
//! request is checked before it reaches the database: bodies against size
//! limits and the wire format, submissions against the ordering rules'
//! framing checks. Every answer is a `Reply`, with a status that says the
//! same for proxies and logs.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use capsule_chain::rules::{self, Limits};
use capsule_chain::wire::{
    self, AUTH_HEADER, CreateAlbum, DirectoryEntry, DirectoryRefusal, KeyPackageRefusal, KeyPackageStock,
    KeyPackageUpload, RegisterUser, Reply, ServerError, WireError,
};
use capsule_chain::{Epoch, Invalid, Refused, Submission, SubmitAnswer};
use capsule_identity::UserId;
use sha2::{Digest, Sha256};

use crate::metrics::{Metrics, Outcome};
use crate::storage::{AlbumState, MemberId, Registration, Storage, StorageError};
use crate::validate;

/// What a server enforces, beside its storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Size limits on submissions.
    pub limits: Limits,
    /// Epochs kept per album (`None`: all); older fetches answer `Pruned`.
    pub keep: Option<u64>,
    /// Entries per page at most.
    pub page_limit: u64,
    /// Bytes of commits per page at most (a page holds at least one entry).
    pub page_bytes: u64,
    /// Submissions handled at once; more wait (each may buffer a body of up
    /// to `limits.body()`).
    pub concurrent_submissions: usize,
    /// How long one database operation may take before the request answers
    /// "unavailable" (the client retries; the rule makes that safe).
    pub timeout: core::time::Duration,
    /// What the server checks beside ordering.
    pub checks: Checks,
    /// How long a KeyPackage must still be valid to be handed out (the adder
    /// commits with it after the claim); one ending sooner is forgotten.
    pub key_package_margin: core::time::Duration,
    /// A device whose regular KeyPackages fall below this is told its stock
    /// is low.
    pub key_packages_low: u64,
    /// The most regular KeyPackages filed per device.
    pub key_packages_max: u64,
}

/// What a server checks beside ordering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checks {
    /// Every album is registered with its public state, and every commit is
    /// validated against it before it is ordered (see `validate.rs`).
    #[default]
    Full,
    /// Ordering alone: albums may be registered without a public state, and
    /// their commits are checked only for framing. For tests of the ordering
    /// rules with made-up albums (the binary's `--ordering-only`); never a
    /// deployment: anyone could then write any commit into a chain.
    OrderingOnly,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            keep: None,
            page_limit: 256,
            page_bytes: 16 << 20,
            concurrent_submissions: 64,
            timeout: core::time::Duration::from_secs(30),
            checks: Checks::Full,
            key_package_margin: core::time::Duration::from_secs(3600),
            key_packages_low: 10,
            key_packages_max: 100,
        }
    }
}

struct App<S> {
    storage: S,
    settings: Settings,
    metrics: Arc<Metrics>,
    submissions: tokio::sync::Semaphore,
}

impl<S: Storage> App<S> {
    /// A storage operation under the settings' time limit.
    async fn run<T>(
        &self,
        album: &[u8],
        op: impl core::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, ServerError> {
        match tokio::time::timeout(self.settings.timeout, op).await {
            Ok(result) => result.map_err(|e| storage_error(album, e)),
            Err(_) => {
                tracing::error!(album = %tag(album), "storage timed out");
                Err(ServerError::Unavailable)
            }
        }
    }
}

/// The routes over `storage`; `metrics` counts what they answer.
pub fn router<S: Storage>(storage: S, settings: Settings, metrics: Arc<Metrics>) -> Router {
    let submissions = tokio::sync::Semaphore::new(settings.concurrent_submissions.max(1));
    let app = Arc::new(App { storage, settings, metrics, submissions });
    Router::new()
        .route("/v1/albums/{album}", put(create::<S>))
        .route("/v1/albums/{album}/commits", get(fetch::<S>).post(submit::<S>))
        .route("/v1/albums/{album}/head", get(head::<S>))
        .route("/v1/albums/{album}/welcomes/{epoch}", get(welcome::<S>))
        .route("/v1/albums/{album}/fingerprints", get(fingerprints::<S>).post(post_fingerprint::<S>))
        .route("/v1/users/{user}", put(register_user::<S>).get(directory::<S>))
        .route("/v1/users/{user}/devices", put(register_device::<S>))
        .route("/v1/key-packages", get(stock::<S>).post(publish::<S>))
        .route("/v1/albums/{album}/key-packages/{user}", post(claim::<S>))
        .route("/v1/mailbox", get(mailbox::<S>))
        .route("/v1/mailbox/{album}/{epoch}", delete(acknowledge::<S>))
        .route("/metrics", get(render_metrics::<S>))
        .fallback(|| async { reply(StatusCode::NOT_FOUND, &Reply::Error(MALFORMED)) })
        .method_not_allowed_fallback(|| async { reply(StatusCode::METHOD_NOT_ALLOWED, &Reply::Error(MALFORMED)) })
        .with_state(app)
}

/// A path's segments, or axum's reason they did not decode (bad percent-encoding):
/// taken as a `Result`, so even that answer is a typed `Reply`.
type Segments<T> = Result<Path<T>, axum::extract::rejection::PathRejection>;

const MALFORMED: ServerError = ServerError::BadRequest(WireError::Malformed);

fn reply(status: StatusCode, r: &Reply) -> Response {
    match wire::encode(r) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/octet-stream")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn error(e: ServerError) -> Response {
    let status = match e {
        ServerError::UnknownAlbum => StatusCode::NOT_FOUND,
        ServerError::Pruned { .. } => StatusCode::GONE,
        ServerError::Refused(capsule_chain::Refused::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        ServerError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ServerError::BadRequest(WireError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        ServerError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ServerError::Directory(DirectoryRefusal::UnknownUser) => StatusCode::NOT_FOUND,
        ServerError::Directory(DirectoryRefusal::KeyTaken | DirectoryRefusal::Stale) => StatusCode::CONFLICT,
        ServerError::Directory(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ServerError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ServerError::Forbidden => StatusCode::FORBIDDEN,
        ServerError::KeyPackage(KeyPackageRefusal::TooMany { .. }) => StatusCode::CONFLICT,
        ServerError::KeyPackage(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    reply(status, &Reply::Error(e))
}

/// Identifiers in logs are hashed (a fixed-prefix SHA-256, 48 bits shown):
/// an operator can tell albums apart without seeing their ids.
fn tag(album: &[u8]) -> String {
    let digest = Sha256::new_with_prefix(b"capsule-server log tag v1").chain_update(album).finalize();
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn storage_error(album: &[u8], e: StorageError) -> ServerError {
    match e {
        StorageError::UnknownAlbum => ServerError::UnknownAlbum,
        StorageError::Pruned(base) => ServerError::Pruned { base },
        StorageError::EpochOutOfRange => ServerError::BadRequest(WireError::Malformed),
        StorageError::KeyPackageSpent => {
            ServerError::Refused(Refused::Invalid(Invalid::Rule(capsule_mls::rules::Violation::KeyPackageReused)))
        }
        e => {
            tracing::error!(album = %tag(album), error = %e, "storage failed");
            ServerError::Unavailable
        }
    }
}

/// An album id from its path segment: lowercase or uppercase hex, 1 to 64 bytes.
fn album_id(hex: &str) -> Result<Vec<u8>, ServerError> {
    unhex(hex.as_bytes(), 64).ok_or(ServerError::BadRequest(WireError::Malformed))
}

/// 1 to `max` bytes from lowercase or uppercase hex (path segments, the auth header).
pub(crate) fn unhex(hex: &[u8], max: usize) -> Option<Vec<u8>> {
    // Digits only: `from_str_radix` alone also takes a sign ("+f").
    if hex.is_empty() || hex.len() > max.saturating_mul(2) || !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let digit = |c: &u8| char::from(*c).to_digit(16);
            u8::try_from(digit(pair.first()?)? * 16 + digit(pair.get(1)?)?).ok()
        })
        .collect()
}

async fn body(body: Body, limit: u64) -> Result<Vec<u8>, ServerError> {
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, max).await.map(|b| b.to_vec()).map_err(|e| {
        // Over the limit, or the body itself failed (a client gone mid-way).
        if e.into_inner().is::<http_body_util::LengthLimitError>() {
            ServerError::BadRequest(WireError::TooLarge { limit })
        } else {
            ServerError::BadRequest(WireError::Malformed)
        }
    })
}

/// What identifies a request for its signature.
struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Request {
    /// The device that signed it; `None` when the server does not check
    /// callers (`Checks::OrderingOnly`).
    async fn caller<S: Storage>(&self, app: &App<S>, body: &[u8]) -> Result<Option<MemberId>, ServerError> {
        if app.settings.checks == Checks::OrderingOnly {
            return Ok(None);
        }
        self.device(app, body).await.map(Some)
    }

    /// The device that signed it, whatever the server checks otherwise: for
    /// what belongs to one device (its KeyPackages, its mailbox).
    async fn device<S: Storage>(&self, app: &App<S>, body: &[u8]) -> Result<MemberId, ServerError> {
        let path = self.uri.path_and_query().map_or(self.uri.path(), axum::http::uri::PathAndQuery::as_str);
        let header = self.headers.get(AUTH_HEADER).map(axum::http::HeaderValue::as_bytes);
        validate::caller(&app.storage, self.method.as_str(), path, header, body).await
    }
}

/// How far `caller` may read `album`: `None` to the head, `Some(epoch)` up to
/// the entry that removed it. Refused if it never was a member.
async fn readable<S: Storage>(
    app: &App<S>,
    album: &[u8],
    caller: Option<MemberId>,
) -> Result<Option<Epoch>, ServerError> {
    let Some(member) = caller else { return Ok(None) };
    app.run(album, app.storage.access(album.to_vec(), member)).await?.ok_or(ServerError::Forbidden)
}

async fn create<S: Storage>(
    State(app): State<Arc<App<S>>>,
    album: Segments<String>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    raw: Body,
) -> Response {
    let run = async {
        let album = album_id(&album.map_err(|_| MALFORMED)?.0)?;
        let limit = app.settings.limits.body();
        let bytes = body(raw, limit).await?;
        let caller = Request { method, uri, headers }.caller(&app, &bytes).await?;
        let CreateAlbum { base, genesis } = wire::decode(&bytes, limit).map_err(ServerError::BadRequest)?;
        let (state, members) = match (genesis, app.settings.checks) {
            (Some(genesis), _) => {
                let (state, members) = validate::genesis(&app.storage, &album, base, genesis).await?;
                // Only a member registers an album.
                if caller.is_some_and(|c| !members.contains(&c)) {
                    return Err(ServerError::Forbidden);
                }
                (Some(state), members)
            }
            (None, Checks::OrderingOnly) => (None, Vec::new()),
            (None, Checks::Full) => return Err(ServerError::Refused(Refused::Invalid(Invalid::Malformed))),
        };
        let base = app.run(&album, app.storage.create_album(album.clone(), base, state, members)).await?;
        tracing::info!(album = %tag(&album), base = base.0, "album registered");
        Ok(base)
    };
    match run.await {
        Ok(base) => reply(StatusCode::CREATED, &Reply::Created { base }),
        Err(e) => error(e),
    }
}

async fn submit<S: Storage>(
    State(app): State<Arc<App<S>>>,
    album: Segments<String>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    raw: Body,
) -> Response {
    let limits = app.settings.limits;
    let run = async {
        let album = album_id(&album.map_err(|_| MALFORMED)?.0)?;
        // Bounded: at most so many bodies buffered at once.
        let _permit = app.submissions.acquire().await.map_err(|_| ServerError::Unavailable)?;
        let bytes = body(raw, limits.body()).await?;
        let caller = Request { method, uri, headers }.caller(&app, &bytes).await?;
        // Only a current member writes to an album.
        if readable(&app, &album, caller).await?.is_some() {
            return Err(ServerError::Forbidden);
        }
        let submission: Submission = wire::decode(&bytes, limits.body()).map_err(ServerError::BadRequest)?;
        if let Err(refused) = rules::check_submission(&album, &submission, &limits) {
            // Idempotent first: a commit the chain holds (sent again after a
            // lost answer, under limits since lowered) answers its position.
            let hash = capsule_chain::CommitHash::of(&submission.commit);
            if let Ok(Some(epoch)) = app.run(&album, app.storage.held_at(album.clone(), hash)).await {
                return Ok(SubmitAnswer::Accepted { epoch });
            }
            tracing::warn!(album = %tag(&album), epoch = submission.epoch.0, %refused, "submission refused");
            return Err(ServerError::Refused(refused));
        }
        // Validated against the public state at the head, when it claims the
        // head; a submission for any other epoch is answered by the ordering
        // rule alone (held: its position; otherwise a conflict), and the
        // storage never appends a commit of a validated album unvalidated.
        let AlbumState { head, state } = app.run(&album, app.storage.album_state(album.clone())).await?;
        let validated = match state {
            Some(state) if submission.epoch == head => match validate::commit(&app.storage, state, &submission).await {
                Ok(next) => Some(next),
                Err(e) => {
                    tracing::warn!(album = %tag(&album), epoch = head.0, error = %e, "invalid commit refused");
                    return Err(e);
                }
            },
            _ => None,
        };
        let epoch = submission.epoch;
        let answer =
            app.run(&album, app.storage.submit(album.clone(), submission, app.settings.keep, validated)).await?;
        tracing::info!(album = %tag(&album), epoch = epoch.0, ?answer, "submission ordered");
        Ok(answer)
    };
    let (status, outcome, response) = match run.await {
        Ok(answer @ SubmitAnswer::Accepted { .. }) => (StatusCode::OK, Outcome::Accepted, Reply::Submitted(answer)),
        Ok(answer @ SubmitAnswer::Conflict { .. }) => {
            (StatusCode::CONFLICT, Outcome::Conflict, Reply::Submitted(answer))
        }
        Err(e @ ServerError::Refused(_)) => {
            app.metrics.count(Outcome::Refused);
            return error(e);
        }
        Err(e @ ServerError::Unavailable) => {
            app.metrics.count(Outcome::Failed);
            return error(e);
        }
        Err(e) => {
            app.metrics.count(Outcome::BadRequest);
            return error(e);
        }
    };
    app.metrics.count(outcome);
    reply(status, &response)
}

/// `from` (required) and `limit` (optional) from a query string.
fn page_query(query: Option<&str>, max: u64) -> Result<(Epoch, u64), ServerError> {
    let bad = ServerError::BadRequest(WireError::Malformed);
    let (mut from, mut limit) = (None, max);
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or(bad)?;
        let value: u64 = value.parse().map_err(|_| bad)?;
        match key {
            "from" => from = Some(Epoch(value)),
            "limit" => limit = value.clamp(1, max),
            _ => return Err(bad),
        }
    }
    Ok((from.ok_or(bad)?, limit))
}

async fn fetch<S: Storage>(
    State(app): State<Arc<App<S>>>,
    album: Segments<String>,
    RawQuery(q): RawQuery,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Response {
    let run = async {
        let album = album_id(&album.map_err(|_| MALFORMED)?.0)?;
        let caller = Request { method, uri, headers }.caller(&app, &[]).await?;
        let until = readable(&app, &album, caller).await?;
        let (from, limit) = page_query(q.as_deref(), app.settings.page_limit.max(1))?;
        let mut page = app.run(&album, app.storage.page(album.clone(), from, limit, app.settings.page_bytes)).await?;
        if let Some(until) = until {
            // A removed device reads up to the commit that removed it.
            if from > until {
                return Err(ServerError::Forbidden);
            }
            page.entries.retain(|e| e.epoch <= until);
            page.head = page.head.min(until.saturating_add(1));
            page.next = page.next.filter(|next| *next <= until);
        }
        Ok(page)
    };
    match run.await {
        Ok(page) => reply(StatusCode::OK, &Reply::Page(page)),
        Err(e) => error(e),
    }
}

async fn head<S: Storage>(
    State(app): State<Arc<App<S>>>,
    album: Segments<String>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Response {
    let run = async {
        let album = album_id(&album.map_err(|_| MALFORMED)?.0)?;
        let caller = Request { method, uri, headers }.caller(&app, &[]).await?;
        let until = readable(&app, &album, caller).await?;
        let head = app.run(&album, app.storage.head(album.clone())).await?;
        Ok(until.map_or(head, |u| head.min(u.saturating_add(1))))
    };
    match run.await {
        Ok(head) => reply(StatusCode::OK, &Reply::Head(head)),
        Err(e) => error(e),
    }
}

async fn welcome<S: Storage>(
    State(app): State<Arc<App<S>>>,
    path: Segments<(String, String)>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Response {
    let run = async {
        let (album, epoch) = album_and_epoch(path)?;
        let caller = Request { method, uri, headers }.caller(&app, &[]).await?;
        if readable(&app, &album, caller).await?.is_some_and(|until| epoch > until) {
            return Err(ServerError::Forbidden);
        }
        app.run(&album, app.storage.welcome(album.clone(), epoch)).await
    };
    match run.await {
        Ok(blobs) => reply(StatusCode::OK, &Reply::Welcome(blobs)),
        Err(e) => error(e),
    }
}

/// A member files its state fingerprint on the album's board: a current
/// member only, and under its own name only (the sender the fingerprint names
/// is the device that signed the request), so no device fills another's
/// place. The server cannot open it; members judge it.
async fn post_fingerprint<S: Storage>(
    State(app): State<Arc<App<S>>>,
    album: Segments<String>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    raw: Body,
) -> Response {
    let run = async {
        let album = album_id(&album.map_err(|_| MALFORMED)?.0)?;
        let bytes = body(raw, rules::FINGERPRINT_LIMIT).await?;
        let caller = Request { method, uri, headers }.caller(&app, &bytes).await?;
        if readable(&app, &album, caller).await?.is_some() {
            return Err(ServerError::Forbidden);
        }
        let header = rules::check_fingerprint(&album, &bytes).map_err(ServerError::Refused)?;
        let sender = validate::member_id(header.sender);
        if caller.is_some_and(|c| c != sender) {
            return Err(ServerError::Forbidden);
        }
        app.run(&album, app.storage.post_fingerprint(album.clone(), sender, bytes)).await
    };
    match run.await {
        Ok(()) => reply(StatusCode::OK, &Reply::Posted),
        Err(e) => error(e),
    }
}

/// The album's fingerprint board, for its current members.
async fn fingerprints<S: Storage>(
    State(app): State<Arc<App<S>>>,
    album: Segments<String>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Response {
    let run = async {
        let album = album_id(&album.map_err(|_| MALFORMED)?.0)?;
        let caller = Request { method, uri, headers }.caller(&app, &[]).await?;
        if readable(&app, &album, caller).await?.is_some() {
            return Err(ServerError::Forbidden);
        }
        app.run(&album, app.storage.fingerprints(album.clone())).await
    };
    match run.await {
        Ok(board) => reply(StatusCode::OK, &Reply::Fingerprints(board)),
        Err(e) => error(e),
    }
}

async fn register_user<S: Storage>(State(app): State<Arc<App<S>>>, user: Segments<String>, raw: Body) -> Response {
    let run = async {
        let user = user_id(&user.map_err(|_| MALFORMED)?.0)?;
        let limit = app.settings.limits.body();
        let r: RegisterUser = wire::decode(&body(raw, limit).await?, limit).map_err(ServerError::BadRequest)?;
        let (key, first) = validate::registration(user, &r)?;
        let id = *user.as_bytes();
        registered(app.run(&id, app.storage.register_user(id, key, first)).await?)
    };
    match run.await {
        Ok(()) => reply(StatusCode::OK, &Reply::Registered),
        Err(e) => error(e),
    }
}

async fn register_device<S: Storage>(State(app): State<Arc<App<S>>>, user: Segments<String>, raw: Body) -> Response {
    let run = async {
        let user = user_id(&user.map_err(|_| MALFORMED)?.0)?;
        let limit = app.settings.limits.body();
        let certificate: Vec<u8> = wire::decode(&body(raw, limit).await?, limit).map_err(ServerError::BadRequest)?;
        let device = validate::device(&app.storage, user, &certificate).await?;
        let id = *user.as_bytes();
        registered(app.run(&id, app.storage.register_device(id, device)).await?)
    };
    match run.await {
        Ok(()) => reply(StatusCode::OK, &Reply::Registered),
        Err(e) => error(e),
    }
}

fn registered(r: Registration) -> Result<(), ServerError> {
    match r {
        Registration::Stored => Ok(()),
        Registration::KeyTaken => Err(ServerError::Directory(DirectoryRefusal::KeyTaken)),
        Registration::UnknownUser => Err(ServerError::Directory(DirectoryRefusal::UnknownUser)),
        Registration::Stale => Err(ServerError::Directory(DirectoryRefusal::Stale)),
    }
}

async fn directory<S: Storage>(
    State(app): State<Arc<App<S>>>,
    user: Segments<String>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Response {
    let run = async {
        let user = user_id(&user.map_err(|_| MALFORMED)?.0)?;
        // Any registered device may read the directory.
        Request { method, uri, headers }.caller(&app, &[]).await?;
        let id = *user.as_bytes();
        let (identity_key, devices) = app
            .run(&id, app.storage.directory(id))
            .await?
            .ok_or(ServerError::Directory(DirectoryRefusal::UnknownUser))?;
        Ok(DirectoryEntry { identity_key, certificates: devices.into_iter().map(|d| d.certificate).collect() })
    };
    match run.await {
        Ok(entry) => reply(StatusCode::OK, &Reply::Directory(entry)),
        Err(e) => error(e),
    }
}

/// The caller's stock as the directory reports it.
async fn stock_of<S: Storage>(app: &App<S>, caller: MemberId) -> Result<KeyPackageStock, ServerError> {
    let usable_from = validate::usable_from(app.settings.key_package_margin);
    let (available, last_resort_until) = app.run(&caller, app.storage.key_package_stock(caller, usable_from)).await?;
    let low = available < app.settings.key_packages_low || last_resort_until.is_none();
    Ok(KeyPackageStock { available, last_resort_until, low })
}

async fn stock<S: Storage>(
    State(app): State<Arc<App<S>>>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Response {
    let run = async {
        let caller = Request { method, uri, headers }.device(&app, &[]).await?;
        stock_of(&app, caller).await
    };
    match run.await {
        Ok(stock) => reply(StatusCode::OK, &Reply::Stock(stock)),
        Err(e) => error(e),
    }
}

async fn publish<S: Storage>(
    State(app): State<Arc<App<S>>>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    raw: Body,
) -> Response {
    let run = async {
        let limit = app.settings.limits.body();
        let bytes = body(raw, limit).await?;
        let caller = Request { method, uri, headers }.device(&app, &bytes).await?;
        let upload: KeyPackageUpload = wire::decode(&bytes, limit).map_err(ServerError::BadRequest)?;
        let max = app.settings.key_packages_max;
        if u64::try_from(upload.key_packages.len()).map_or(true, |n| n > max) {
            return Err(ServerError::KeyPackage(KeyPackageRefusal::TooMany { limit: max }));
        }
        let (regular, last_resort) = validate::key_packages(&app.storage, caller, upload).await?;
        let usable_from = validate::usable_from(app.settings.key_package_margin);
        let filed = app
            .run(&caller, app.storage.file_key_packages(caller, regular, last_resort, usable_from, max))
            .await
            .map_err(|e| match e {
                ServerError::Refused(Refused::Invalid(Invalid::Rule(_))) => {
                    ServerError::KeyPackage(KeyPackageRefusal::Spent)
                }
                e => e,
            })?;
        if !filed {
            return Err(ServerError::KeyPackage(KeyPackageRefusal::TooMany { limit: max }));
        }
        stock_of(&app, caller).await
    };
    match run.await {
        Ok(stock) => reply(StatusCode::OK, &Reply::Stock(stock)),
        Err(e) => error(e),
    }
}

async fn claim<S: Storage>(
    State(app): State<Arc<App<S>>>,
    path: Segments<(String, String)>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    raw: Body,
) -> Response {
    let run = async {
        let Path((album, user)) = path.map_err(|_| MALFORMED)?;
        let (album, user) = (album_id(&album)?, user_id(&user)?);
        let bytes = body(raw, app.settings.limits.body()).await?;
        let caller = Request { method, uri, headers }.device(&app, &bytes).await?;
        // A current member of an album the server validates, adding its own
        // user's device or, as an admin, anyone.
        if readable(&app, &album, Some(caller)).await?.is_some() {
            return Err(ServerError::Forbidden);
        }
        let AlbumState { state, .. } = app.run(&album, app.storage.album_state(album.clone())).await?;
        let state = state.ok_or(ServerError::Forbidden)?;
        let members = validate::claimable(state, caller, user).await?.ok_or(ServerError::Forbidden)?;
        let usable_from = validate::usable_from(app.settings.key_package_margin);
        let claimed = app.run(&album, app.storage.claim_key_packages(*user.as_bytes(), members, usable_from)).await?;
        tracing::info!(album = %tag(&album), claimed = claimed.len(), "key packages claimed");
        Ok(claimed)
    };
    match run.await {
        Ok(claimed) => reply(StatusCode::OK, &Reply::Claimed(claimed)),
        Err(e) => error(e),
    }
}

async fn mailbox<S: Storage>(
    State(app): State<Arc<App<S>>>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Response {
    let run = async {
        let caller = Request { method, uri, headers }.device(&app, &[]).await?;
        app.run(&caller, app.storage.mailbox(caller)).await
    };
    match run.await {
        Ok(deliveries) => reply(StatusCode::OK, &Reply::Mailbox(deliveries)),
        Err(e) => error(e),
    }
}

async fn acknowledge<S: Storage>(
    State(app): State<Arc<App<S>>>,
    path: Segments<(String, String)>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Response {
    let run = async {
        let (album, epoch) = album_and_epoch(path)?;
        // Only its own mailbox: the row is keyed by the caller.
        let caller = Request { method, uri, headers }.device(&app, &[]).await?;
        app.run(&album, app.storage.acknowledge(caller, album.clone(), epoch)).await
    };
    match run.await {
        Ok(()) => reply(StatusCode::OK, &Reply::Acknowledged),
        Err(e) => error(e),
    }
}

/// An album id and an epoch from a path's two segments.
fn album_and_epoch(path: Segments<(String, String)>) -> Result<(Vec<u8>, Epoch), ServerError> {
    let Path((album, epoch)) = path.map_err(|_| MALFORMED)?;
    Ok((album_id(&album)?, epoch.parse().map(Epoch).map_err(|_| MALFORMED)?))
}

/// A user id from its path segment: 16 bytes in hex.
fn user_id(hex: &str) -> Result<UserId, ServerError> {
    let bytes: [u8; 16] = album_id(hex)?.try_into().map_err(|_| MALFORMED)?;
    Ok(UserId::from_bytes(bytes))
}

async fn render_metrics<S: Storage>(State(app): State<Arc<App<S>>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn album_ids_and_queries_parse_or_are_refused() {
        assert_eq!(album_id("51ab"), Ok(vec![0x51, 0xab]));
        assert_eq!(album_id("51AB"), Ok(vec![0x51, 0xab]));
        for bad in ["", "5", "zz", "5g", "é1", "+f+f", "-0", &"00".repeat(65)] {
            assert!(album_id(bad).is_err(), "{bad}");
        }
        assert_eq!(page_query(Some("from=3"), 10), Ok((Epoch(3), 10)));
        assert_eq!(page_query(Some("from=3&limit=500"), 10), Ok((Epoch(3), 10)));
        assert_eq!(page_query(Some("limit=0&from=1"), 10), Ok((Epoch(1), 1)));
        for bad in [None, Some(""), Some("from=-1"), Some("from=1&x=2"), Some("from"), Some("limit=3")] {
            assert!(page_query(bad, 10).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_log_tag_names_an_album_without_its_id() {
        let album = [0x51; 16];
        assert_eq!(tag(&album), tag(&album));
        assert_ne!(tag(&album), tag(&[0x52; 16]));
        assert!(!tag(&album).contains("5151"));
    }
}
