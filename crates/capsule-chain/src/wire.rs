//! The chain server's wire format: every HTTP body is one version byte, then
//! the value in postcard. A decoder refuses an unknown version, a body over
//! its limit, trailing bytes and a non-canonical encoding (postcard alone
//! reads `0x80 0x00` as 0), with a typed error, so every value has exactly
//! one body (what a signature over a request body needs); it never panics.
//!
//! The HTTP API (`/v1`): `PUT /v1/albums/{album}` with [`CreateAlbum`];
//! `POST /v1/albums/{album}/commits` with a [`crate::Submission`];
//! `GET /v1/albums/{album}/commits?from={epoch}&limit={n}` for a [`Page`];
//! `GET /v1/albums/{album}/head`; `GET /v1/albums/{album}/welcomes/{epoch}`.
//! The directory: `PUT /v1/users/{user}` with [`RegisterUser`];
//! `PUT /v1/users/{user}/devices` with a device certificate;
//! `GET /v1/users/{user}` for a [`DirectoryEntry`].
//! KeyPackages: `POST /v1/key-packages` with a [`KeyPackageUpload`] and
//! `GET /v1/key-packages` for the calling device's [`KeyPackageStock`];
//! `POST /v1/albums/{album}/key-packages/{user}` claims one per device of
//! `user` not in the album yet ([`ClaimedKeyPackage`]s). The Welcome mailbox: `GET /v1/mailbox`
//! for the calling device's [`Delivery`]s, `DELETE /v1/mailbox/{reference}`
//! to acknowledge one.
//! `{album}`, `{user}` and `{reference}` are ids in lowercase hex. Every
//! answer is a [`Reply`].

use capsule_mls::{Epoch, Genesis};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Refused, SubmitAnswer, WelcomeBlobs};

/// The wire version this build speaks.
pub const VERSION: u8 = 1;

/// Why bytes did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// No bytes at all.
    #[error("empty body")]
    Empty,
    /// A version this build does not know (a newer peer, or garbage).
    #[error("unsupported wire version {0}")]
    Version(u8),
    /// More bytes than the decoder accepts.
    #[error("body over the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The value does not decode.
    #[error("malformed body")]
    Malformed,
    /// Bytes after the value.
    #[error("trailing bytes after the body")]
    Trailing,
    /// The value decodes, but is not encoded the one way this format allows.
    #[error("non-canonical encoding")]
    NonCanonical,
}

/// Encodes `value` as a body of this version.
///
/// # Errors
/// [`WireError::Malformed`] only on a serializer bug.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![VERSION];
    out.extend(postcard::to_allocvec(value).map_err(|_| WireError::Malformed)?);
    Ok(out)
}

/// Decodes a body of at most `limit` bytes.
///
/// # Errors
/// See [`WireError`].
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, WireError> {
    if u64::try_from(bytes.len()).map_or(true, |n| n > limit) {
        return Err(WireError::TooLarge { limit });
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|_| WireError::Malformed)?;
    if !rest.is_empty() {
        return Err(WireError::Trailing);
    }
    // One body per value: re-encoding must give the same bytes back.
    if postcard::to_allocvec(&value).map_err(|_| WireError::Malformed)?.as_slice() != body {
        return Err(WireError::NonCanonical);
    }
    Ok(value)
}

/// Registers an album whose MLS group starts at `base` (0 for a new group).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAlbum {
    /// The epoch of the first commit to come.
    pub base: Epoch,
    /// The group's public state at `base`, signed by a member: the server
    /// validates every commit against it. A validating server refuses an
    /// album without one.
    pub genesis: Option<Genesis>,
}

/// The HTTP header carrying a request's [`RequestAuth`] (lowercase hex of its
/// wire encoding).
pub const AUTH_HEADER: &str = "capsule-auth";

/// How far a request's time may be from the server's clock, either way.
pub const AUTH_WINDOW_SECS: u64 = 300;

/// A device's signature over one request: who sends it, when, a nonce the
/// server remembers (no request is carried out twice), and the device key's
/// Ed25519 signature over [`request_message`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAuth {
    /// The device's user.
    pub user: [u8; 16],
    /// The device.
    pub device: [u8; 16],
    /// Seconds since the Unix epoch when the request was made.
    pub time: u64,
    /// Fresh random bytes.
    pub nonce: [u8; 16],
    /// Ed25519 over [`request_message`], 64 bytes.
    pub signature: Vec<u8>,
}

/// What a device signs for a request: a domain prefix (no MLS or certificate
/// signature starts with it), the method, the path with its query, the
/// SHA-256 of the body, and the auth fields but the signature.
#[must_use]
pub fn request_message(method: &str, path_and_query: &str, body: &[u8], auth: &RequestAuth) -> Vec<u8> {
    use sha2::Digest as _;
    let mut m = b"capsule request v1\0".to_vec();
    for part in [method.as_bytes(), path_and_query.as_bytes()] {
        m.extend_from_slice(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(&sha2::Sha256::digest(body));
    m.extend_from_slice(&auth.time.to_be_bytes());
    m.extend_from_slice(&auth.nonce);
    m.extend_from_slice(&auth.user);
    m.extend_from_slice(&auth.device);
    m
}

/// Registers a user's identity key in the server's directory, with a first
/// device certificate that verifies under it (the proof the registrant holds
/// the key). A user's key is registered once; registering it again is
/// accepted, another key for the same user is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterUser {
    /// `IdentityPublicKey::to_bytes`.
    pub identity_key: Vec<u8>,
    /// `DeviceCertificate::to_bytes` of one device of the user.
    pub certificate: Vec<u8>,
}

/// What the directory holds for one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// `IdentityPublicKey::to_bytes`.
    pub identity_key: Vec<u8>,
    /// The newest certificate of each registered device.
    pub certificates: Vec<Vec<u8>>,
}

/// A device's KeyPackages for the directory: regular ones, each handed out
/// once, and at most one last-resort KeyPackage, which replaces the one
/// filed before and is handed out only when no regular one is left.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageUpload {
    /// Serialized KeyPackages of the calling device.
    pub key_packages: Vec<Vec<u8>>,
    /// A serialized last-resort KeyPackage of the calling device.
    pub last_resort: Option<Vec<u8>>,
}

/// What the directory holds for one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageStock {
    /// Regular KeyPackages that can still be handed out.
    pub available: u64,
    /// The end of the last-resort KeyPackage's lifetime, if one can still be
    /// handed out.
    pub last_resort_until: Option<u64>,
    /// Whether the device should publish more: fewer regular KeyPackages than
    /// the server's low-water mark, or no usable last-resort one.
    pub low: bool,
}

/// A KeyPackage claimed from the directory: handed out to this caller only
/// (a last-resort one excepted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    /// The device it adds.
    pub device: [u8; 16],
    /// The serialized KeyPackage.
    pub key_package: Vec<u8>,
    /// Whether it is the device's last-resort KeyPackage.
    pub last_resort: bool,
}

/// A Welcome waiting in a device's mailbox: made for the KeyPackage
/// `reference` by the commit the album's chain holds at `epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The album's id.
    pub album: Vec<u8>,
    /// The epoch of the commit that added the device (it joins at `epoch + 1`).
    pub epoch: Epoch,
    /// The reference of the KeyPackage it was added with.
    pub reference: Vec<u8>,
    /// The serialized Welcome.
    pub welcome: Vec<u8>,
    /// The sealed history bundle beside it.
    pub bundle: Option<Vec<u8>>,
}

/// One entry of a [`Page`]: the commit only; its Welcome, if any, is fetched
/// on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageEntry {
    /// The epoch the commit was made in.
    pub epoch: Epoch,
    /// The serialized commit.
    pub commit: Vec<u8>,
    /// Whether a Welcome or bundle is stored with it.
    pub has_welcome: bool,
}

/// Entries from an epoch on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The head when the page was read.
    pub head: Epoch,
    /// Consecutive entries from the epoch asked for.
    pub entries: Vec<PageEntry>,
    /// Where the next page starts, when this one stopped before the head.
    pub next: Option<Epoch>,
}

/// Why the server did not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// No such album.
    #[error("unknown album")]
    UnknownAlbum,
    /// History before `base` is no longer kept.
    #[error("pruned before epoch {base}")]
    Pruned {
        /// The oldest epoch kept.
        base: Epoch,
    },
    /// The submission was refused before ordering.
    #[error("refused: {0}")]
    Refused(Refused),
    /// The request itself is wrong (body, path or query).
    #[error("bad request: {0}")]
    BadRequest(WireError),
    /// The server failed (its database): try again later.
    #[error("the server failed; try again")]
    Unavailable,
    /// The directory refused a registration, or knows no such user.
    #[error("directory: {0}")]
    Directory(DirectoryRefusal),
    /// The request does not carry a valid signature of a registered device.
    #[error("not authenticated: {0}")]
    Unauthenticated(AuthRefusal),
    /// The device may not do this (not a member of the album, or no longer;
    /// claiming KeyPackages of a user it may not add).
    #[error("forbidden")]
    Forbidden,
    /// The directory refused KeyPackages; nothing of the upload was filed.
    #[error("key packages: {0}")]
    KeyPackage(KeyPackageRefusal),
}

/// Why the directory refused an upload of KeyPackages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum KeyPackageRefusal {
    /// A KeyPackage OpenMLS refuses (encoding, signature, lifetime, suite),
    /// or a last-resort flag that does not match where it was uploaded.
    #[error("a key package is invalid")]
    Invalid,
    /// A KeyPackage whose certificate does not verify against the directory now.
    #[error("a key package's certificate does not verify")]
    Certificate,
    /// A KeyPackage of another device than the caller.
    #[error("a key package of another device")]
    NotYours,
    /// More than the server files for one device.
    #[error("more key packages than the server keeps for a device ({limit})")]
    TooMany {
        /// The most it keeps.
        limit: u64,
    },
    /// A regular KeyPackage an accepted commit already added (KeyPackages
    /// are for one use; the device uploads fresh ones).
    #[error("a key package an accepted commit already added")]
    Spent,
}

/// Why a request's signature was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum AuthRefusal {
    /// No [`AUTH_HEADER`].
    #[error("no signature")]
    Missing,
    /// A header that does not decode.
    #[error("malformed signature")]
    Malformed,
    /// A time further than [`AUTH_WINDOW_SECS`] from the server's clock.
    #[error("the request's time is too far from the server's clock")]
    Clock,
    /// A device the directory does not list.
    #[error("unknown device")]
    UnknownDevice,
    /// The device's certificate does not verify now (expired, or its user's
    /// key changed).
    #[error("the device certificate does not verify")]
    Certificate,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// A nonce seen before: a replay.
    #[error("replayed request")]
    Replayed,
}

/// Why the directory refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryRefusal {
    /// No such user is registered.
    #[error("unknown user")]
    UnknownUser,
    /// The user is registered with another identity key.
    #[error("the user has another identity key")]
    KeyTaken,
    /// A key or certificate that does not decode.
    #[error("malformed key or certificate")]
    Malformed,
    /// A certificate that does not verify under the user's identity key now
    /// (or names another user).
    #[error("the certificate does not verify")]
    BadCertificate,
    /// A certificate older than the one registered for that device.
    #[error("a newer certificate is registered for the device")]
    Stale,
}

/// Every answer the server gives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The album is registered (or was already: its first registration's
    /// base is kept).
    Created {
        /// Its first epoch.
        base: Epoch,
    },
    /// The answer to a submission.
    Submitted(SubmitAnswer),
    /// Entries.
    Page(Page),
    /// The head.
    Head(Epoch),
    /// A commit's Welcome and bundle (`None`: no commit held there).
    Welcome(Option<WelcomeBlobs>),
    /// A refusal.
    Error(ServerError),
    /// A directory registration was stored (or was there already).
    Registered,
    /// A user's directory entry.
    Directory(DirectoryEntry),
    /// The calling device's KeyPackages in the directory.
    Stock(KeyPackageStock),
    /// Claimed KeyPackages, one per device that had one.
    Claimed(Vec<ClaimedKeyPackage>),
    /// The calling device's mailbox, oldest first.
    Mailbox(Vec<Delivery>),
    /// A delivery was removed from the mailbox (or was not there).
    Acknowledged,
    /// A fingerprint was filed on the album's board.
    Posted,
    /// The album's fingerprint board: what each device posted last.
    Fingerprints(Vec<Vec<u8>>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Submission;
    use proptest::prelude::*;

    fn submission() -> impl Strategy<Value = Submission> {
        let blob = proptest::collection::vec(any::<u8>(), 0..64);
        (any::<u64>(), blob.clone(), proptest::option::of(blob.clone()), proptest::option::of(blob))
            .prop_map(|(epoch, commit, welcome, bundle)| Submission { epoch: Epoch(epoch), commit, welcome, bundle })
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let entry = (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..32), any::<bool>())
            .prop_map(|(e, commit, has_welcome)| PageEntry { epoch: Epoch(e), commit, has_welcome });
        prop_oneof![
            any::<u64>().prop_map(|b| Reply::Created { base: Epoch(b) }),
            any::<u64>().prop_map(|e| Reply::Submitted(SubmitAnswer::Accepted { epoch: Epoch(e) })),
            any::<u64>().prop_map(|e| Reply::Submitted(SubmitAnswer::Conflict { head: Epoch(e) })),
            (any::<u64>(), proptest::collection::vec(entry, 0..4), proptest::option::of(any::<u64>()))
                .prop_map(|(h, entries, next)| Reply::Page(Page { head: Epoch(h), entries, next: next.map(Epoch) })),
            any::<u64>().prop_map(|e| Reply::Head(Epoch(e))),
            Just(Reply::Welcome(None)),
            Just(Reply::Error(ServerError::Refused(Refused::WrongEpoch { claimed: Epoch(3), framed: Epoch(2) }))),
            Just(Reply::Error(ServerError::BadRequest(WireError::Version(9)))),
            Just(Reply::Error(ServerError::Refused(Refused::Invalid(crate::Invalid::Rule(
                capsule_mls::rules::Violation::NotAdmin
            ))))),
            Just(Reply::Error(ServerError::Directory(DirectoryRefusal::KeyTaken))),
            Just(Reply::Registered),
            (
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..3)
            )
                .prop_map(|(identity_key, certificates)| Reply::Directory(DirectoryEntry {
                    identity_key,
                    certificates
                })),
            (any::<u64>(), proptest::option::of(any::<u64>()), any::<bool>()).prop_map(
                |(available, last_resort_until, low)| Reply::Stock(KeyPackageStock {
                    available,
                    last_resort_until,
                    low
                })
            ),
            proptest::collection::vec(
                (any::<[u8; 16]>(), proptest::collection::vec(any::<u8>(), 0..8), any::<bool>()).prop_map(
                    |(device, key_package, last_resort)| ClaimedKeyPackage { device, key_package, last_resort }
                ),
                0..3
            )
            .prop_map(Reply::Claimed),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..8),
                    any::<u64>(),
                    proptest::collection::vec(any::<u8>(), 0..8),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))
                )
                    .prop_map(|(album, epoch, welcome, bundle)| Delivery {
                        album,
                        epoch: Epoch(epoch),
                        reference: vec![7; 32],
                        welcome,
                        bundle
                    }),
                0..3
            )
            .prop_map(Reply::Mailbox),
            Just(Reply::Acknowledged),
            Just(Reply::Posted),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4)
                .prop_map(Reply::Fingerprints),
            Just(Reply::Error(ServerError::Refused(Refused::NotAFingerprint))),
            Just(Reply::Error(ServerError::KeyPackage(KeyPackageRefusal::TooMany { limit: 9 }))),
            Just(Reply::Error(ServerError::KeyPackage(KeyPackageRefusal::Spent))),
        ]
    }

    proptest! {
        #[test]
        fn a_submission_round_trips(s in submission()) {
            let bytes = encode(&s).unwrap_or_default();
            prop_assert_eq!(decode::<Submission>(&bytes, u64::MAX), Ok(s));
        }

        #[test]
        fn an_upload_round_trips(
            key_packages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..4),
            last_resort in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        ) {
            let upload = KeyPackageUpload { key_packages, last_resort };
            let bytes = encode(&upload).unwrap_or_default();
            prop_assert_eq!(decode::<KeyPackageUpload>(&bytes, u64::MAX), Ok(upload));
        }

        #[test]
        fn a_reply_round_trips(r in reply()) {
            let bytes = encode(&r).unwrap_or_default();
            prop_assert_eq!(decode::<Reply>(&bytes, u64::MAX), Ok(r));
        }

        #[test]
        fn arbitrary_bytes_decode_or_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            // Whatever decodes re-encodes to the same bytes: no two readings of one body.
            if let Ok(r) = decode::<Reply>(&bytes, 1 << 20) {
                prop_assert_eq!(encode(&r).unwrap_or_default(), bytes);
            }
        }
    }

    #[test]
    fn a_body_is_refused_for_its_version_size_and_trailing_bytes() {
        let body = encode(&CreateAlbum { base: Epoch(0), genesis: None }).unwrap_or_default();
        assert_eq!(decode::<CreateAlbum>(&body, 64), Ok(CreateAlbum { base: Epoch(0), genesis: None }));
        assert_eq!(decode::<CreateAlbum>(&[], 64), Err(WireError::Empty));
        assert_eq!(decode::<CreateAlbum>(&[2, 0], 64), Err(WireError::Version(2)));
        assert_eq!(decode::<CreateAlbum>(&body, 1), Err(WireError::TooLarge { limit: 1 }));
        assert_eq!(decode::<CreateAlbum>(&[body.as_slice(), &[0]].concat(), 64), Err(WireError::Trailing));
        assert_eq!(decode::<Submission>(&[1, 0xff], 64), Err(WireError::Malformed));
        // Postcard alone reads an over-long varint; this format refuses it.
        assert_eq!(decode::<CreateAlbum>(&[1, 0x80, 0x00, 0], 64), Err(WireError::NonCanonical));
        assert_eq!(decode::<Reply>(&[1, 0x83, 0, 0], 64), Err(WireError::NonCanonical));
    }
}
