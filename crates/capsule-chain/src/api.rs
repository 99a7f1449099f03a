//! The chain's contract as a client sees it: what is submitted and fetched,
//! the answers, and [`CommitChain`], which every chain implements (the
//! in-memory double, the HTTP client of the server).

use capsule_mls::rules::Violation;
use capsule_mls::{CommitHash, Epoch, MlsError, Outgoing};
use serde::{Deserialize, Serialize};

use crate::wire::{Delivery, KeyPackageStock, KeyPackageUpload};

/// What a device submits: one commit made in `epoch`, with the Welcome and
/// sealed history bundle the joiners need, kept together by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The epoch the commit was made in (the chain position it claims).
    pub epoch: Epoch,
    /// The serialized commit.
    pub commit: Vec<u8>,
    /// The serialized Welcome, if any.
    pub welcome: Option<Vec<u8>>,
    /// The sealed history bundle, if any.
    pub bundle: Option<Vec<u8>>,
}

impl From<&Outgoing> for Submission {
    /// What a device submits for a commit it staged.
    fn from(out: &Outgoing) -> Self {
        Self { epoch: out.epoch, commit: out.commit.clone(), welcome: out.welcome.clone(), bundle: out.bundle.clone() }
    }
}

/// The Welcome and sealed history bundle stored with one commit: what a
/// device added by it needs to join. Fetched on their own, so catching up
/// never downloads other devices' Welcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeBlobs {
    /// The serialized Welcome, if the commit made one.
    pub welcome: Option<Vec<u8>>,
    /// The sealed history bundle, if the commit made one.
    pub bundle: Option<Vec<u8>>,
}

/// One position of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    /// The epoch the commit was made in; applying it moves the group to `epoch + 1`.
    pub epoch: Epoch,
    /// The serialized commit.
    pub commit: Vec<u8>,
    /// Its hash.
    pub commit_hash: CommitHash,
    /// The Welcome stored with it: empty in what [`CommitChain::fetch`]
    /// returns ([`CommitChain::welcome`] fetches it).
    pub welcome: Option<Vec<u8>>,
    /// The sealed history bundle stored with it: empty in what
    /// [`CommitChain::fetch`] returns.
    pub bundle: Option<Vec<u8>>,
}

/// The server's answer to a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubmitAnswer {
    /// Stored at `epoch` (also the answer when the same commit was already there).
    Accepted {
        /// Its position.
        epoch: Epoch,
    },
    /// Another commit holds that epoch, or the epoch is not the head.
    Conflict {
        /// The current head (the epoch the next commit must be made in).
        head: Epoch,
    },
}

/// Why the chain could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// No answer (network failure, timeout, partition): the request may or may
    /// not have reached the server.
    #[error("chain unreachable")]
    Unavailable,
    /// The chain no longer holds entries that far back.
    #[error("chain pruned before epoch {0}")]
    Pruned(Epoch),
    /// The chain knows no such album.
    #[error("unknown album")]
    UnknownAlbum,
    /// The chain refused the submission: it does not belong where it was
    /// submitted (see [`Refused`]). Nothing was stored.
    #[error("submission refused: {0}")]
    Refused(Refused),
    /// The server refused this device: its request signature was not
    /// accepted (an unregistered or expired device, a clock far off), or it
    /// is not a member of the album (any more). Nothing was changed.
    #[error("the chain refused this device")]
    Denied,
    /// The directory refused this device's KeyPackages (nothing of the upload
    /// was filed): the device made something it should not have.
    #[error("key packages refused: {0}")]
    KeyPackages(crate::wire::KeyPackageRefusal),
    /// The server answered with something no honest chain holds: the server
    /// misbehaved. Nothing was changed by it; the next honest answer brings
    /// the device to the head.
    #[error("the chain answered badly: {0}")]
    BadAnswer(BadAnswer),
}

/// Why a chain refused a submission. An honest client's commit is never
/// refused for these: each is a bug or a forgery, and it changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The commit is not one MLS message.
    #[error("the commit does not decode as an MLS message")]
    Undecodable,
    /// The message is not a commit sent as a PublicMessage (album handshakes
    /// are public so the chain can read their framing).
    #[error("not a commit in a PublicMessage")]
    NotACommit,
    /// The commit's group is not the album it was submitted to.
    #[error("the commit belongs to another album")]
    WrongAlbum,
    /// The commit was made in another epoch than the position it claims.
    #[error("the commit was made in epoch {framed}, not {claimed}")]
    WrongEpoch {
        /// The position the submission claims.
        claimed: Epoch,
        /// The epoch in the commit's framing.
        framed: Epoch,
    },
    /// A part of the submission is over the chain's size limit.
    #[error("a part of the submission is over the size limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// An epoch past what any chain stores ([`crate::rules::MAX_EPOCH`]).
    #[error("epoch out of range")]
    EpochOutOfRange,
    /// The commit is one honest members would refuse: the server validated it
    /// against the album's public state (see [`capsule_mls::PublicAlbum`]).
    #[error("the commit is invalid: {0}")]
    Invalid(Invalid),
    /// What was posted to the fingerprint board is not a fingerprint of
    /// this album.
    #[error("not a fingerprint of this album")]
    NotAFingerprint,
}

/// Why a server's validation refused a commit, as members would refuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// It does not decode as a commit of this album.
    #[error("malformed")]
    Malformed,
    /// A signature does not verify (tampered, forged, or from another fork).
    #[error("a signature does not verify")]
    Signature,
    /// Its sender, or a leaf it names, is not a member.
    #[error("not from a member")]
    NotMember,
    /// A leaf's device certificate does not verify against the directory
    /// (expired, not yet valid, a bad signature, another key).
    #[error("a device certificate does not verify")]
    Certificate,
    /// A certificate names a user the directory holds no identity key for.
    #[error("a user the directory does not know")]
    UnknownIdentity,
    /// One of Capsule's commit rules is broken.
    #[error("{0}")]
    Rule(Violation),
    /// MLS's own rules refuse it (proposals, the tree, the framing).
    #[error("refused by MLS's rules")]
    Protocol,
    /// The commit adds devices but its Welcome is missing, does not decode,
    /// or is not made for exactly the KeyPackages it adds: an added device
    /// could never join.
    #[error("the welcome does not match the devices the commit adds")]
    Welcome,
}

impl Invalid {
    /// The reason for a validation error; `None` for a fault (the server
    /// failed, the commit may be fine).
    #[must_use]
    pub const fn of(error: &MlsError) -> Option<Self> {
        if error.is_internal() {
            return None;
        }
        Some(match error {
            MlsError::Malformed(_) => Self::Malformed,
            MlsError::BadSignature => Self::Signature,
            MlsError::NotMember(_) | MlsError::Evicted => Self::NotMember,
            MlsError::Identity(_) | MlsError::ForeignCredential | MlsError::LeafKeyMismatch => Self::Certificate,
            MlsError::UnknownIdentity { .. } => Self::UnknownIdentity,
            MlsError::Rule(v) => Self::Rule(*v),
            _ => Self::Protocol,
        })
    }
}

/// What was wrong with an answer no honest chain would give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadAnswer {
    /// Entries that do not run one per epoch from the one asked for, or a head
    /// below them.
    #[error("entries out of order or missing")]
    OutOfOrder,
    /// An entry whose hash is not the hash of its commit.
    #[error("entry hash does not match its commit")]
    HashMismatch,
    /// An entry whose commit does not decode as an MLS handshake.
    #[error("entry does not decode")]
    Undecodable,
    /// An entry whose commit belongs to another group, or whose sender the
    /// group does not know.
    #[error("entry belongs to another album")]
    NotOurs,
    /// An entry whose commit was made in another epoch than its position.
    #[error("entry sits at the wrong position")]
    WrongPosition,
}

/// What the chain holds from an epoch on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The head: the epoch the next commit must be made in.
    pub head: Epoch,
    /// The entries from the requested epoch on, in order.
    pub entries: Vec<ChainEntry>,
}

impl Fetched {
    /// Checks the answer's shape against the request: one entry per epoch from
    /// `from` on, each hash the hash of its commit, the head not below them.
    ///
    /// # Errors
    /// The first thing wrong with it.
    pub fn check(&self, from: Epoch) -> Result<(), BadAnswer> {
        let mut expected = from;
        for entry in &self.entries {
            if entry.epoch != expected {
                return Err(BadAnswer::OutOfOrder);
            }
            if entry.commit_hash != CommitHash::of(&entry.commit) {
                return Err(BadAnswer::HashMismatch);
            }
            expected = expected.saturating_add(1);
        }
        if self.head < expected {
            return Err(BadAnswer::OutOfOrder);
        }
        Ok(())
    }
}

/// The server's API as a client sees it. Implementations do the I/O (or, in
/// tests, stand in for the server); the resilience logic only calls these.
pub trait CommitChain {
    /// Submits a commit for `submission.epoch`.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`] when no answer arrived.
    fn submit(&mut self, submission: &Submission) -> Result<SubmitAnswer, ChainError>;

    /// Entries from `epoch` on, in order, up to the head (without Welcomes
    /// and bundles).
    ///
    /// # Errors
    /// [`ChainError::Unavailable`], or [`ChainError::Pruned`] when the chain no
    /// longer reaches `epoch`.
    fn fetch(&mut self, from_epoch: Epoch) -> Result<Vec<ChainEntry>, ChainError>;

    /// The head: the epoch the next commit must be made in.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`].
    fn head(&mut self) -> Result<Epoch, ChainError>;

    /// The Welcome and bundle stored with the commit of `epoch`; `None` when
    /// the chain holds no commit there.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`], or [`ChainError::Pruned`] when the chain
    /// no longer reaches `epoch`.
    fn welcome(&mut self, epoch: Epoch) -> Result<Option<WelcomeBlobs>, ChainError>;

    /// Posts this device's state fingerprint to the album's board (members
    /// only), replacing the one it posted before.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`]; [`ChainError::Refused`] for bytes that
    /// are not a fingerprint of this album; [`ChainError::Denied`] for a
    /// device that is not a member, or a fingerprint naming another sender.
    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> Result<(), ChainError>;

    /// The album's fingerprint board: what each device posted last. Sealed
    /// for members; a member judges them ([`capsule_mls::Album::read_fingerprint`]).
    ///
    /// # Errors
    /// [`ChainError::Unavailable`]; [`ChainError::Denied`] for a non-member.
    fn fingerprints(&mut self) -> Result<Vec<Vec<u8>>, ChainError>;
}

/// The server's KeyPackage directory as a device sees it, for its own
/// KeyPackages (claiming other users' is the application's call, made before
/// it proposes an add).
pub trait KeyPackageDirectory {
    /// What the directory holds for this device.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`]; [`ChainError::Denied`] for a device the
    /// server does not accept.
    fn stock(&mut self) -> Result<KeyPackageStock, ChainError>;

    /// Files this device's KeyPackages; all or nothing.
    ///
    /// # Errors
    /// As [`KeyPackageDirectory::stock`]; [`ChainError::KeyPackages`] for an
    /// upload the directory refused.
    fn publish(&mut self, upload: &KeyPackageUpload) -> Result<KeyPackageStock, ChainError>;
}

/// This device's Welcome mailbox on the server.
pub trait Mailbox {
    /// The Welcomes waiting for this device, oldest first.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`]; [`ChainError::Denied`].
    fn deliveries(&mut self) -> Result<Vec<Delivery>, ChainError>;

    /// Removes a delivery (done with: joined, superseded, or refused for
    /// good). Removing one that is gone is not an error.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`]; [`ChainError::Denied`].
    fn acknowledge(&mut self, delivery: &Delivery) -> Result<(), ChainError>;
}
