//! Where the chain is kept. Each backend reads the facts inside one database
//! transaction and lets `capsule-chain`'s rules decide; the database's own
//! unique `(album, epoch)` key backs the decision, so no two writers (threads,
//! or server processes on one PostgreSQL) ever store two commits for an epoch.

use core::future::Future;

use capsule_chain::wire::{ClaimedKeyPackage, Delivery, Page};
use capsule_chain::{CommitHash, Epoch, Submission, SubmitAnswer, WelcomeBlobs};

/// Why a storage operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// No such album.
    #[error("unknown album")]
    UnknownAlbum,
    /// History before `base` is no longer kept.
    #[error("pruned before epoch {0}")]
    Pruned(Epoch),
    /// An epoch past what the database stores (`i64::MAX`).
    #[error("epoch out of range")]
    EpochOutOfRange,
    /// The database failed; nothing was changed.
    #[error("database: {0}")]
    Database(String),
    /// The database holds something this server never writes.
    #[error("corrupt database: {0}")]
    Corrupt(&'static str),
    /// A regular KeyPackage an earlier commit (of any album) already added:
    /// nothing was changed. HPKE init keys are for one use (RFC 9420, 16.8).
    #[error("a key package was already spent")]
    KeyPackageSpent,
}

/// An album's head and its public state there (`None` for an album
/// registered without one, on a server that orders without validating).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlbumState {
    /// The head.
    pub head: Epoch,
    /// `capsule_mls::PublicAlbum::to_bytes` at the head.
    pub state: Option<Vec<u8>>,
}

/// A device as the server names it: its user's id, then its own.
pub type MemberId = [u8; 32];

/// The public state after a validated commit, and who it added and removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// `capsule_mls::PublicAlbum::to_bytes` after the commit.
    pub state: Vec<u8>,
    /// Devices the commit adds: they may read the album from its epoch on.
    pub added: Vec<MemberId>,
    /// Devices the commit removes: they may read the album up to its epoch
    /// (so they learn of their removal), no further.
    pub removed: Vec<MemberId>,
    /// Each added device with the reference of the KeyPackage it was added
    /// with: the Welcome goes to their mailboxes.
    pub welcomed: Vec<(MemberId, Vec<u8>)>,
    /// The references of the regular KeyPackages it adds: recorded as spent
    /// server-wide with the commit, and refused if any already is.
    pub spent: Vec<Vec<u8>>,
}

/// A KeyPackage as the directory files it (already checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filed {
    /// Its reference.
    pub reference: Vec<u8>,
    /// The end of its lifetime, seconds since the Unix epoch.
    pub not_after: u64,
    /// The serialized KeyPackage.
    pub bytes: Vec<u8>,
}

/// A device certificate as the directory files it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certified {
    /// The device.
    pub device: [u8; 16],
    /// The end of its validity (newer certificates end later).
    pub not_after: u64,
    /// `DeviceCertificate::to_bytes`.
    pub certificate: Vec<u8>,
}

/// What the directory did with a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Stored (or it was there already).
    Stored,
    /// The user holds another identity key: nothing stored.
    KeyTaken,
    /// The user is not registered: nothing stored.
    UnknownUser,
    /// A certificate ending later is registered for the device: nothing stored.
    Stale,
}

/// Users' identity keys, by user id.
pub type IdentityKeys = Vec<([u8; 16], Vec<u8>)>;

/// A user's directory entry: the identity key and the filed certificates.
pub type Listing = (Vec<u8>, Vec<Certified>);

/// A user's identity key and one device's certificate.
pub type KeyAndCertificate = (Vec<u8>, Vec<u8>);

/// One storage backend for every album's chain.
pub trait Storage: Clone + Send + Sync + 'static {
    /// Registers `album`, whose group starts at `base` with public state
    /// `state`; for an album registered before, its first registration's base.
    /// `members` are the devices of the group at `base`: they may read it.
    fn create_album(
        &self,
        album: Vec<u8>,
        base: Epoch,
        state: Option<Vec<u8>>,
        members: Vec<MemberId>,
    ) -> impl Future<Output = Result<Epoch, StorageError>> + Send;

    /// Whether `member` may read `album`: `None` if it never was a member;
    /// `Some(None)` if it is one; `Some(Some(epoch))` if it was removed by the
    /// commit of `epoch` (it may read up to that entry).
    fn access(
        &self,
        album: Vec<u8>,
        member: MemberId,
    ) -> impl Future<Output = Result<Option<Option<Epoch>>, StorageError>> + Send;

    /// The identity key of `member`'s user and `member`'s filed certificate.
    fn certificate(
        &self,
        member: MemberId,
    ) -> impl Future<Output = Result<Option<KeyAndCertificate>, StorageError>> + Send;

    /// Remembers a request nonce of `member` until `expires` (seconds since
    /// the Unix epoch), forgetting its nonces that expired before `now`.
    /// `false` when the nonce is remembered already: a replay.
    fn remember_nonce(
        &self,
        member: MemberId,
        nonce: [u8; 16],
        now: u64,
        expires: u64,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// The album's head and public state.
    fn album_state(&self, album: Vec<u8>) -> impl Future<Output = Result<AlbumState, StorageError>> + Send;

    /// Orders a submission already checked with
    /// `capsule_chain::rules::check_submission`, in one transaction, keeping
    /// the last `keep` epochs. `validated` is the public state after the
    /// commit, computed at the head the submission claims: appended with it.
    /// An album that has a public state never appends without one (the head
    /// moved onto the submission's epoch after it was read): that answers
    /// `Conflict`, and the device submits again.
    fn submit(
        &self,
        album: Vec<u8>,
        submission: Submission,
        keep: Option<u64>,
        validated: Option<Validated>,
    ) -> impl Future<Output = Result<SubmitAnswer, StorageError>> + Send;

    /// Registers `user`'s identity key with a first device certificate
    /// (already verified under it).
    fn register_user(
        &self,
        user: [u8; 16],
        identity_key: Vec<u8>,
        first: Certified,
    ) -> impl Future<Output = Result<Registration, StorageError>> + Send;

    /// Files a device certificate of a registered user (already verified
    /// under the user's key), unless one ending later is filed.
    fn register_device(
        &self,
        user: [u8; 16],
        device: Certified,
    ) -> impl Future<Output = Result<Registration, StorageError>> + Send;

    /// The identity keys of those of `users` the directory knows.
    fn identity_keys(&self, users: Vec<[u8; 16]>) -> impl Future<Output = Result<IdentityKeys, StorageError>> + Send;

    /// Files `member`'s KeyPackages (a re-upload of one filed is a no-op) and
    /// replaces its last-resort one with `last_resort`, if given; forgets its
    /// KeyPackages ending before `usable_from`. `false`, with nothing
    /// stored, when it would then hold more than `max` regular ones.
    fn file_key_packages(
        &self,
        member: MemberId,
        regular: Vec<Filed>,
        last_resort: Option<Filed>,
        usable_from: u64,
        max: u64,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// How many regular KeyPackages `member` has that end at or after
    /// `usable_from`, and the end of its last-resort one if it does too;
    /// forgets those ending before.
    fn key_package_stock(
        &self,
        member: MemberId,
        usable_from: u64,
    ) -> impl Future<Output = Result<(u64, Option<u64>), StorageError>> + Send;

    /// Claims one KeyPackage per device of `user` but those in `skip`: the
    /// regular one ending first, removed as it is handed out, or else the
    /// last-resort one (kept); only those ending at or after `usable_from`
    /// (the others are forgotten).
    fn claim_key_packages(
        &self,
        user: [u8; 16],
        skip: Vec<[u8; 16]>,
        usable_from: u64,
    ) -> impl Future<Output = Result<Vec<ClaimedKeyPackage>, StorageError>> + Send;

    /// The Welcomes waiting for `member`, by album and epoch.
    fn mailbox(&self, member: MemberId) -> impl Future<Output = Result<Vec<Delivery>, StorageError>> + Send;

    /// Removes `member`'s delivery from the commit of `epoch` in `album`.
    fn acknowledge(
        &self,
        member: MemberId,
        album: Vec<u8>,
        epoch: Epoch,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// A user's identity key and device certificates.
    fn directory(&self, user: [u8; 16]) -> impl Future<Output = Result<Option<Listing>, StorageError>> + Send;

    /// At most `limit` entries from `from` on, and no more than `max_bytes`
    /// of commits (but always at least one entry when there is one).
    fn page(
        &self,
        album: Vec<u8>,
        from: Epoch,
        limit: u64,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Page, StorageError>> + Send;

    /// Where the chain holds the commit with this hash, if it still does.
    fn held_at(
        &self,
        album: Vec<u8>,
        hash: CommitHash,
    ) -> impl Future<Output = Result<Option<Epoch>, StorageError>> + Send;

    /// The head.
    fn head(&self, album: Vec<u8>) -> impl Future<Output = Result<Epoch, StorageError>> + Send;

    /// Forgets entries before `epoch` (an operator's retention, beside the
    /// automatic one); the first epoch kept is never moved past the head nor
    /// back. Returns it.
    fn prune_before(&self, album: Vec<u8>, epoch: Epoch) -> impl Future<Output = Result<Epoch, StorageError>> + Send;

    /// The Welcome and bundle stored with the commit of `epoch`.
    fn welcome(
        &self,
        album: Vec<u8>,
        epoch: Epoch,
    ) -> impl Future<Output = Result<Option<WelcomeBlobs>, StorageError>> + Send;

    /// Files `member`'s fingerprint (checked with
    /// `capsule_chain::rules::check_fingerprint`) on `album`'s board,
    /// replacing the one it posted before.
    fn post_fingerprint(
        &self,
        album: Vec<u8>,
        member: MemberId,
        fingerprint: Vec<u8>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// `album`'s board: what each device posted last, ordered by device.
    fn fingerprints(&self, album: Vec<u8>) -> impl Future<Output = Result<Vec<Vec<u8>>, StorageError>> + Send;
}

/// An epoch as the databases store it (a signed 64-bit integer).
pub(crate) fn to_db(epoch: Epoch) -> Result<i64, StorageError> {
    i64::try_from(epoch.0).map_err(|_| StorageError::EpochOutOfRange)
}

/// Seconds as the databases store them (times past `i64::MAX` are the end of time).
pub(crate) fn clamp(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// An epoch read back from the database.
pub(crate) fn from_db(value: i64) -> Result<Epoch, StorageError> {
    u64::try_from(value).map(Epoch).map_err(|_| StorageError::Corrupt("a negative epoch"))
}

/// The pruning and paging decisions shared by both backends, on what one
/// transaction read.
pub(crate) mod decide {
    use capsule_chain::rules;
    use capsule_chain::wire::{Page, PageEntry};
    use capsule_chain::{ChainError, Epoch};

    use super::StorageError;

    /// The epochs a page covers, or why there is none.
    pub(crate) fn range(base: Epoch, head: Epoch, from: Epoch, limit: u64) -> Result<(Epoch, Epoch), StorageError> {
        match rules::page(base, head, from, limit) {
            Ok(r) => Ok((Epoch(r.start), Epoch(r.end))),
            Err(ChainError::Pruned(base)) => Err(StorageError::Pruned(base)),
            Err(_) => Err(StorageError::Corrupt("a page the rules cannot cut")),
        }
    }

    /// A page from the rows read for `range`, checked to be the rows asked
    /// for, cut after `max_bytes` of commits (at least one entry), so a page
    /// always fits a client's read limit.
    pub(crate) fn page(
        head: Epoch,
        range: (Epoch, Epoch),
        rows: Vec<PageEntry>,
        max_bytes: u64,
    ) -> Result<Page, StorageError> {
        let mut expected = range.0;
        for row in &rows {
            if row.epoch != expected {
                return Err(StorageError::Corrupt("a gap in the chain"));
            }
            expected = expected.saturating_add(1);
        }
        if expected != range.1 {
            return Err(StorageError::Corrupt("a gap in the chain"));
        }
        let (mut bytes, mut entries) = (0u64, Vec::with_capacity(rows.len()));
        for row in rows {
            bytes = bytes.saturating_add(u64::try_from(row.commit.len()).unwrap_or(u64::MAX));
            if bytes > max_bytes && !entries.is_empty() {
                break;
            }
            entries.push(row);
        }
        let end = range.0.saturating_add(u64::try_from(entries.len()).unwrap_or(u64::MAX));
        let next = (end < head).then_some(end);
        Ok(Page { head, entries, next })
    }
}
