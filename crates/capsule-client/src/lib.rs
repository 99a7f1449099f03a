//! The commit chain over HTTP: [`HttpChain`] implements [`CommitChain`]
//! against `capsule-server`, blocking, so the facade stays usable from a
//! plain thread.
//!
//! Answers map one to one: the server's [`Reply`] becomes
//! `Accepted`/`Conflict`, [`ChainError::Pruned`], [`ChainError::UnknownAlbum`]
//! or [`ChainError::Refused`]; a timeout, a connection failure or a server
//! failure (5xx) is [`ChainError::Unavailable`] (the request may or may not
//! have been carried out, which the resilience core is built for); a reply
//! that does not decode is [`ChainError::BadAnswer`]. Fetches follow the
//! server's pages to the head.
//!
//! Plain HTTP: in a deployment a TLS terminator sits in front of the server
//! (commits are public framing plus MLS ciphertext, but metadata is not).
#![forbid(unsafe_code)]

use std::time::Duration;

use capsule_chain::wire::{
    self, ClaimedKeyPackage, CreateAlbum, Delivery, DirectoryRefusal, KeyPackageStock, KeyPackageUpload, RegisterUser,
    Reply, ServerError, WireError,
};
use capsule_chain::{
    BadAnswer, ChainEntry, ChainError, CommitChain, CommitHash, Epoch, KeyPackageDirectory, Mailbox, Refused,
    Submission, SubmitAnswer, WelcomeBlobs,
};
use std::sync::Arc;

use capsule_chain::wire::{AUTH_HEADER, RequestAuth};
use capsule_identity::{DeviceCertificate, DeviceId, DeviceSigningKey, IdentityPublicKey, UserId};
use capsule_mls::Genesis;

/// The largest reply read: the server cuts pages at 16 MiB of commits, plus
/// one commit at its own limit.
const REPLY_LIMIT: u64 = 64 << 20;

/// The most one fetch gathers before returning what it has (the caller
/// fetches again from there): a lying server cannot make it grow forever.
const FETCH_LIMIT: u64 = 256 << 20;

/// A device's key and names, to sign its requests to the server (see
/// `capsule_chain::wire::RequestAuth`). The key is the device's certified MLS
/// signature key; request signatures carry their own domain prefix.
pub struct Credentials {
    user: UserId,
    device: DeviceId,
    key: DeviceSigningKey,
}

impl core::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("device", &self.device).finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credentials of `device` of `user`, signing with `key`.
    #[must_use]
    pub const fn new(user: UserId, device: DeviceId, key: DeviceSigningKey) -> Self {
        Self { user, device, key }
    }

    /// The value of the auth header (`capsule_chain::wire::AUTH_HEADER`) for
    /// one request to the absolute `url`, stamped with the clock now and a
    /// fresh nonce. `None` when the clock or the OS RNG fails.
    #[must_use]
    pub fn header(&self, method: &str, url: &str, body: &[u8]) -> Option<String> {
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).ok()?;
        let mut auth = RequestAuth {
            user: *self.user.as_bytes(),
            device: *self.device.as_bytes(),
            time,
            nonce,
            signature: Vec::new(),
        };
        auth.signature = self.key.sign(&wire::request_message(method, path_of(url), body, &auth)).to_vec();
        Some(hex(&wire::encode(&auth).ok()?))
    }
}

/// The path and query of an absolute URL: what a request signature covers.
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/")
}

/// One album's chain on a `capsule-server`.
#[derive(Debug, Clone)]
pub struct HttpChain {
    agent: ureq::Agent,
    album_url: String,
    credentials: Option<Arc<Credentials>>,
}

/// Sends `body` (a `PUT`/`POST`) or nothing (a `GET`) to `url`, signed with
/// `credentials` when there are some.
fn send(
    agent: &ureq::Agent,
    credentials: Option<&Credentials>,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let auth = credentials.and_then(|c| c.header(method, url, body.unwrap_or_default()));
    match (method, body) {
        ("PUT", Some(body)) => {
            let r = agent.put(url);
            match auth {
                Some(a) => r.header(AUTH_HEADER, a).send(body),
                None => r.send(body),
            }
        }
        (_, Some(body)) => {
            let r = agent.post(url);
            match auth {
                Some(a) => r.header(AUTH_HEADER, a).send(body),
                None => r.send(body),
            }
        }
        ("DELETE", None) => {
            let r = agent.delete(url);
            match auth {
                Some(a) => r.header(AUTH_HEADER, a).call(),
                None => r.call(),
            }
        }
        (_, None) => {
            let r = agent.get(url);
            match auth {
                Some(a) => r.header(AUTH_HEADER, a).call(),
                None => r.call(),
            }
        }
    }
}

impl HttpChain {
    /// The chain of `album` on the server at `base_url` (like
    /// `http://127.0.0.1:7070`); every request gives up after `timeout`.
    #[must_use]
    pub fn new(base_url: &str, album: &[u8], timeout: Duration) -> Self {
        let agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().new_agent();
        let album_url = format!("{}/v1/albums/{}", base_url.trim_end_matches('/'), hex(album));
        Self { agent, album_url, credentials: None }
    }

    /// The same chain, with every request signed by `credentials` (a server
    /// that checks callers refuses unsigned requests).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Arc<Credentials>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    fn request(&self, method: &str, url: &str, body: Option<&[u8]>) -> Result<Reply, ChainError> {
        chain_reply(send(&self.agent, self.credentials.as_deref(), method, url, body))
    }

    /// Registers the album, whose MLS group starts at `base` (0 for a new
    /// group) with the public state `genesis` (`Album::genesis` of its
    /// creator; a server that validates commits refuses an album without
    /// one). Returns the base the chain holds: `base`, or, for an album
    /// registered before, the first registration's.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`] when the server does not answer;
    /// [`ChainError::Refused`] for a genesis the server refuses.
    pub fn create_album(&mut self, base: Epoch, genesis: Option<&Genesis>) -> Result<Epoch, ChainError> {
        let body =
            wire::encode(&CreateAlbum { base, genesis: genesis.cloned() }).map_err(|_| ChainError::Unavailable)?;
        match self.request("PUT", &self.album_url, Some(&body))? {
            Reply::Created { base } => Ok(base),
            other => Err(unexpected(other)),
        }
    }
}

/// The server's reply as the chain's answer or error.
fn chain_reply(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, ChainError> {
    let mut response = response.map_err(|e| {
        tracing::debug!(error = %e, "chain request failed");
        ChainError::Unavailable
    })?;
    let status = response.status();
    let body = response.body_mut().with_config().limit(REPLY_LIMIT).read_to_vec();
    let reply = body.ok().and_then(|b| wire::decode::<Reply>(&b, REPLY_LIMIT).ok());
    match reply {
        Some(Reply::Error(ServerError::Unavailable)) => Err(ChainError::Unavailable),
        Some(Reply::Error(ServerError::UnknownAlbum)) => Err(ChainError::UnknownAlbum),
        Some(Reply::Error(ServerError::Pruned { base })) => Err(ChainError::Pruned(base)),
        Some(Reply::Error(ServerError::Refused(refused))) => Err(ChainError::Refused(refused)),
        Some(Reply::Error(ServerError::Unauthenticated(_) | ServerError::Forbidden)) => Err(ChainError::Denied),
        Some(Reply::Error(ServerError::KeyPackage(refusal))) => Err(ChainError::KeyPackages(refusal)),
        // The whole request was over the server's limit: as refused as a part over it.
        Some(Reply::Error(ServerError::BadRequest(WireError::TooLarge { limit }))) => {
            Err(ChainError::Refused(Refused::TooLarge { limit }))
        }
        Some(reply) => Ok(reply),
        // A proxy in front refusing the size, in its own words.
        None if status.as_u16() == 413 => Err(ChainError::Refused(Refused::TooLarge { limit: 0 })),
        // A proxy's or a crashed server's page: nothing the chain said.
        None if status.is_server_error() => Err(ChainError::Unavailable),
        None => Err(ChainError::BadAnswer(BadAnswer::Undecodable)),
    }
}

/// A reply that does not answer the request made.
fn unexpected(reply: Reply) -> ChainError {
    // Which kind only: a reply can carry Welcomes and pages of commits.
    let kind = match reply {
        Reply::Created { .. } => "created",
        Reply::Submitted(_) => "submitted",
        Reply::Page(_) => "page",
        Reply::Head(_) => "head",
        Reply::Welcome(_) => "welcome",
        Reply::Error(_) => "error",
        Reply::Registered => "registered",
        Reply::Directory(_) => "directory",
        Reply::Stock(_) => "stock",
        Reply::Claimed(_) => "claimed",
        Reply::Mailbox(_) => "mailbox",
        Reply::Acknowledged => "acknowledged",
        Reply::Posted => "posted",
        Reply::Fingerprints(_) => "fingerprints",
    };
    tracing::warn!(kind, "the chain server answered another question");
    ChainError::BadAnswer(BadAnswer::Undecodable)
}

impl CommitChain for HttpChain {
    fn submit(&mut self, submission: &Submission) -> Result<SubmitAnswer, ChainError> {
        let body = wire::encode(submission).map_err(|_| ChainError::Unavailable)?;
        let url = format!("{}/commits", self.album_url);
        match self.request("POST", &url, Some(&body))? {
            Reply::Submitted(answer) => Ok(answer),
            other => Err(unexpected(other)),
        }
    }

    fn fetch(&mut self, from_epoch: Epoch) -> Result<Vec<ChainEntry>, ChainError> {
        let (mut entries, mut bytes) = (Vec::new(), 0u64);
        let mut from = from_epoch;
        loop {
            let url = format!("{}/commits?from={}", self.album_url, from.0);
            let page = match self.request("GET", &url, None)? {
                Reply::Page(page) => page,
                other => return Err(unexpected(other)),
            };
            let got = u64::try_from(page.entries.len()).unwrap_or(u64::MAX);
            for e in page.entries {
                bytes = bytes.saturating_add(u64::try_from(e.commit.len()).unwrap_or(u64::MAX));
                entries.push(ChainEntry {
                    epoch: e.epoch,
                    commit_hash: CommitHash::of(&e.commit),
                    commit: e.commit,
                    welcome: None,
                    bundle: None,
                });
            }
            match page.next {
                // The next page starts right after this one and before the
                // head; anything else is a lie that could loop forever.
                Some(next) if got > 0 && next == from.saturating_add(got) && next < page.head => {
                    if bytes >= FETCH_LIMIT {
                        // Enough for now: the device applies these and asks again.
                        return Ok(entries);
                    }
                    from = next;
                }
                Some(_) => return Err(ChainError::BadAnswer(BadAnswer::OutOfOrder)),
                None => return Ok(entries),
            }
        }
    }

    fn head(&mut self) -> Result<Epoch, ChainError> {
        let url = format!("{}/head", self.album_url);
        match self.request("GET", &url, None)? {
            Reply::Head(head) => Ok(head),
            other => Err(unexpected(other)),
        }
    }

    fn welcome(&mut self, epoch: Epoch) -> Result<Option<WelcomeBlobs>, ChainError> {
        let url = format!("{}/welcomes/{}", self.album_url, epoch.0);
        match self.request("GET", &url, None)? {
            Reply::Welcome(blobs) => Ok(blobs),
            other => Err(unexpected(other)),
        }
    }

    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> Result<(), ChainError> {
        let url = format!("{}/fingerprints", self.album_url);
        match self.request("POST", &url, Some(fingerprint))? {
            Reply::Posted => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn fingerprints(&mut self) -> Result<Vec<Vec<u8>>, ChainError> {
        let url = format!("{}/fingerprints", self.album_url);
        match self.request("GET", &url, None)? {
            Reply::Fingerprints(board) => Ok(board),
            other => Err(unexpected(other)),
        }
    }
}

/// Why the directory did not answer as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// No answer (the request may or may not have been carried out).
    #[error("directory unreachable")]
    Unavailable,
    /// The directory refused.
    #[error("directory refused: {0}")]
    Refused(DirectoryRefusal),
    /// The server did not accept this device's signature on a lookup.
    #[error("the directory refused this device")]
    Denied,
    /// An answer no honest directory gives (a key or certificate that does
    /// not decode, or that does not verify under the user's key).
    #[error("the directory answered badly")]
    BadAnswer,
}

/// A user as the directory lists it, decoded (not yet trusted: the caller
/// decides whether to trust the key, typically on first use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The user's identity key.
    pub identity_key: IdentityPublicKey,
    /// Certificates of the user's devices that verify under that key at the
    /// time given to [`HttpDirectory::lookup`].
    pub certificates: Vec<DeviceCertificate>,
}

/// The server's directory and this device's mailbox: users' identity keys
/// and their devices' certificates, KeyPackages (this device's to publish,
/// others' to claim), and the Welcomes waiting for this device.
#[derive(Debug, Clone)]
pub struct HttpDirectory {
    agent: ureq::Agent,
    base_url: String,
    users_url: String,
    credentials: Option<Arc<Credentials>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl HttpDirectory {
    /// The directory of the server at `base_url`.
    #[must_use]
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().new_agent();
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self { agent, users_url: format!("{base_url}/v1/users"), base_url, credentials: None }
    }

    /// The same directory, with requests signed by `credentials` (a server
    /// that checks callers lets only registered devices read it; KeyPackages
    /// and the mailbox are always a signed device's own).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Arc<Credentials>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    fn call(&self, response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, DirectoryError> {
        let mut response = response.map_err(|_| DirectoryError::Unavailable)?;
        let body = response.body_mut().with_config().limit(REPLY_LIMIT).read_to_vec();
        match body.ok().and_then(|b| wire::decode::<Reply>(&b, REPLY_LIMIT).ok()) {
            Some(Reply::Error(ServerError::Directory(r))) => Err(DirectoryError::Refused(r)),
            Some(Reply::Error(ServerError::Unauthenticated(_) | ServerError::Forbidden)) => Err(DirectoryError::Denied),
            Some(Reply::Error(_)) | None => Err(DirectoryError::Unavailable),
            Some(reply) => Ok(reply),
        }
    }

    /// Registers a user's identity key with one device certificate it signed.
    ///
    /// # Errors
    /// [`DirectoryError::Refused`] (`KeyTaken`: the user has another key;
    /// `BadCertificate`); [`DirectoryError::Unavailable`].
    pub fn register_user(
        &self,
        key: &IdentityPublicKey,
        certificate: &DeviceCertificate,
    ) -> Result<(), DirectoryError> {
        let r = RegisterUser {
            identity_key: key.to_bytes().map_err(|_| DirectoryError::BadAnswer)?,
            certificate: certificate.to_bytes().map_err(|_| DirectoryError::BadAnswer)?,
        };
        let body = wire::encode(&r).map_err(|_| DirectoryError::Unavailable)?;
        let url = format!("{}/{}", self.users_url, hex(certificate.user().as_bytes()));
        match self.call(send(&self.agent, None, "PUT", &url, Some(&body)))? {
            Reply::Registered => Ok(()),
            _ => Err(DirectoryError::BadAnswer),
        }
    }

    /// Files a device certificate (a new device, or a renewal).
    ///
    /// # Errors
    /// [`DirectoryError::Refused`] (`UnknownUser`, `BadCertificate`, `Stale`);
    /// [`DirectoryError::Unavailable`].
    pub fn register_device(&self, certificate: &DeviceCertificate) -> Result<(), DirectoryError> {
        let bytes = certificate.to_bytes().map_err(|_| DirectoryError::BadAnswer)?;
        let body = wire::encode(&bytes).map_err(|_| DirectoryError::Unavailable)?;
        let url = format!("{}/{}/devices", self.users_url, hex(certificate.user().as_bytes()));
        match self.call(send(&self.agent, None, "PUT", &url, Some(&body)))? {
            Reply::Registered => Ok(()),
            _ => Err(DirectoryError::BadAnswer),
        }
    }

    /// What the directory lists for `user`: its key, and the certificates
    /// that verify under it at `now` (others are left out).
    ///
    /// # Errors
    /// [`DirectoryError::Refused`] with `UnknownUser`;
    /// [`DirectoryError::BadAnswer`] for a key that does not decode;
    /// [`DirectoryError::Unavailable`].
    pub fn lookup(&self, user: UserId, now: capsule_identity::UnixTime) -> Result<Listed, DirectoryError> {
        let url = format!("{}/{}", self.users_url, hex(user.as_bytes()));
        let Reply::Directory(entry) = self.call(send(&self.agent, self.credentials.as_deref(), "GET", &url, None))?
        else {
            return Err(DirectoryError::BadAnswer);
        };
        let identity_key = IdentityPublicKey::from_bytes(&entry.identity_key).map_err(|_| DirectoryError::BadAnswer)?;
        let trust = std::collections::BTreeMap::from([(user, identity_key.clone())]);
        let certificates = entry
            .certificates
            .iter()
            .filter_map(|c| DeviceCertificate::from_bytes(c).ok())
            .filter(|c| c.user() == user && c.verify(c.device_key(), now, &trust).is_ok())
            .collect();
        Ok(Listed { identity_key, certificates })
    }
}

impl HttpDirectory {
    fn signed(&self, method: &str, url: &str, body: Option<&[u8]>) -> Result<Reply, ChainError> {
        chain_reply(send(&self.agent, self.credentials.as_deref(), method, url, body))
    }

    /// Claims one KeyPackage per device of `user` that is not in `album`, to
    /// add them (this device must be a member, and an admin unless `user` is
    /// its own user). A regular KeyPackage is handed out once; a device that
    /// has none left gives its last-resort one. Devices with nothing usable
    /// are absent.
    ///
    /// # Errors
    /// [`ChainError::Denied`] when this device may not add `user` to `album`;
    /// [`ChainError::Unavailable`].
    pub fn claim(&self, album: &[u8], user: UserId) -> Result<Vec<ClaimedKeyPackage>, ChainError> {
        let url = format!("{}/v1/albums/{}/key-packages/{}", self.base_url, hex(album), hex(user.as_bytes()));
        match self.signed("POST", &url, Some(&[]))? {
            Reply::Claimed(claimed) => Ok(claimed),
            other => Err(unexpected(other)),
        }
    }
}

impl KeyPackageDirectory for HttpDirectory {
    fn stock(&mut self) -> Result<KeyPackageStock, ChainError> {
        match self.signed("GET", &format!("{}/v1/key-packages", self.base_url), None)? {
            Reply::Stock(stock) => Ok(stock),
            other => Err(unexpected(other)),
        }
    }

    fn publish(&mut self, upload: &KeyPackageUpload) -> Result<KeyPackageStock, ChainError> {
        let body = wire::encode(upload).map_err(|_| ChainError::Unavailable)?;
        match self.signed("POST", &format!("{}/v1/key-packages", self.base_url), Some(&body))? {
            Reply::Stock(stock) => Ok(stock),
            other => Err(unexpected(other)),
        }
    }
}

impl Mailbox for HttpDirectory {
    fn deliveries(&mut self) -> Result<Vec<Delivery>, ChainError> {
        match self.signed("GET", &format!("{}/v1/mailbox", self.base_url), None)? {
            Reply::Mailbox(deliveries) => Ok(deliveries),
            other => Err(unexpected(other)),
        }
    }

    fn acknowledge(&mut self, delivery: &Delivery) -> Result<(), ChainError> {
        let url = format!("{}/v1/mailbox/{}/{}", self.base_url, hex(&delivery.album), delivery.epoch.0);
        match self.signed("DELETE", &url, None)? {
            Reply::Acknowledged => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}
