//! State fingerprints: how members notice that they merged different commits.
//!
//! After every merged commit a member can publish a signed, sealed statement
//! of its state (`003_…`'s fingerprint, `002_…`'s commit-hash exchange):
//!
//! - **what it states** about epoch `n`: the hash of the commit that reached
//!   `n` (none for the epoch a device created or joined in), the member that
//!   committed it, and `value`, the MLS exporter output of epoch `n` under the
//!   label `capsule fingerprint v1` (context: the album id). Two members agree
//!   on `n` exactly when their values are equal: the exporter covers the whole
//!   key schedule, so the group context (epoch, tree hash, transcript, album
//!   metadata) and every secret. The tree hash (de-MLS's proposal) is not
//!   enough: it covers neither the epoch nor the group context, so two forks
//!   with equal trees (two rotations of the same epoch) share it. A member
//!   quarantined for refusing the chain's next commit also states that
//!   commit's hash, so the members that merged it read a side of its own
//!   rather than a member behind ([`Reading::Refuses`]).
//! - **who can read it**: the statement is sealed (XChaCha20-Poly1305) under
//!   a key from the exporter of epoch `n - 1` (label `capsule fingerprint
//!   seal v1`), which both sides of a fork at `n` still hold, so each side
//!   reads the other's commit hash (`002_…`: "encrypted for the previous
//!   epoch"); and again under `n`'s own key, for members that joined in `n`.
//!   When the commit that reached `n` removed a member, the removed member
//!   holds `n - 1` too: the statement is then sealed under `n` only, and the
//!   other side of a fork learns only that it cannot open it (still a fork,
//!   see [`Reading::Apart`]). A non-member, the server included, reads
//!   nothing but the group (album and reboot generation), the epoch, the seals'
//!   epochs and the sender; a
//!   device removed from the album reads nothing sealed after its removal.
//! - **who vouches for it**: the sender signs the envelope (ciphertext
//!   included) with its leaf's signature key, under a domain-separation
//!   prefix; a reader accepts only senders in its own member list, so a
//!   removed device cannot forge one.
//!
//! A device keeps the marks (value and seal key) of its last
//! [`KEPT_EPOCHS`] epochs in the album record, so it can judge statements
//! about epochs it has passed. They protect fingerprints only, never photos.

use capsule_identity::encoding;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto as _;
use openmls_traits::random::OpenMlsRand as _;
use openmls_traits::signatures::Signer as _;
use openmls_traits::types::SignatureScheme;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::binding::{DeviceIdentity, claimed_identity};
use crate::boundary::During as _;
use crate::{Album, CommitHash, Epoch, Member, MlsError, Result};

/// Exporter label of the value a fingerprint states.
const VALUE_LABEL: &str = "capsule fingerprint v1";
/// Exporter label of the key fingerprints are sealed under.
const SEAL_LABEL: &str = "capsule fingerprint seal v1";
/// What a signature covers starts with this, so it is never valid as
/// anything else the leaf key signs.
const SIGNATURE_DOMAIN: &[u8] = b"capsule fingerprint signature v1";
/// Prefix of the hash of the sender's leaf in a fingerprint's header.
const LEAF_DOMAIN: &[u8] = b"capsule fingerprint leaf v1";
/// Format of [`Envelope`] written now. Format 1 (read still) had no
/// `refused` in its statement; format 2 (read still) no `departing` in its
/// header.
const FORMAT: u8 = 3;
/// How many epochs' marks a device keeps.
pub const KEPT_EPOCHS: usize = 64;

/// What a device remembers of one epoch it was in: enough to state it and to
/// judge others' statements about it.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct EpochMark {
    pub(crate) epoch: Epoch,
    pub(crate) commit: Option<CommitHash>,
    pub(crate) committer: Option<Member>,
    /// Whether the commit that reached this epoch removed a member.
    pub(crate) removed: bool,
    value: [u8; 32],
    seal_key: [u8; 32],
}

impl EpochMark {
    /// The mark of `epoch` from that epoch's exporter (a group's, a staged
    /// commit's or a staged Welcome's: computed before anything is merged).
    pub(crate) fn derive(
        epoch: Epoch,
        commit: Option<CommitHash>,
        committer: Option<Member>,
        removed: bool,
        export: impl Fn(&str) -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let secret = |label| -> Result<[u8; 32]> {
            let out = Zeroizing::new(export(label)?);
            out.as_slice().try_into().map_err(|_| MlsError::Internal("exporter length"))
        };
        Ok(Self { epoch, commit, committer, removed, value: secret(VALUE_LABEL)?, seal_key: secret(SEAL_LABEL)? })
    }
}

impl core::fmt::Debug for EpochMark {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EpochMark").field("epoch", &self.epoch).field("commit", &self.commit).finish_non_exhaustive()
    }
}

impl Drop for EpochMark {
    fn drop(&mut self) {
        self.value.zeroize();
        self.seal_key.zeroize();
    }
}

/// What a member states about its state at one epoch.
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The epoch.
    pub epoch: Epoch,
    /// The commit that reached it, if the member saw one (not for the epoch it
    /// created or joined the album in).
    pub commit: Option<CommitHash>,
    /// Who committed it, as the member's own state names it.
    pub committer: Option<Member>,
    value: [u8; 32],
}

impl Fingerprint {
    /// Whether both describe the same state: the same epoch secrets.
    #[must_use]
    pub fn agrees_with(&self, other: &Self) -> bool {
        self.epoch == other.epoch && self.value == other.value
    }
}

impl core::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fingerprint")
            .field("epoch", &self.epoch)
            .field("commit", &self.commit)
            .field("committer", &self.committer)
            .finish_non_exhaustive()
    }
}

impl Drop for Fingerprint {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

/// The sealed part of an envelope.
#[derive(Serialize, Deserialize)]
struct Statement {
    commit: Option<CommitHash>,
    committer: Option<Member>,
    value: [u8; 32],
    /// The commit that follows this epoch on the chain, which the sender
    /// refused (it is quarantined for it): members that merged it read the
    /// sender as another side, not as merely behind.
    refused: Option<CommitHash>,
}

impl Drop for Statement {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

/// The sealed part of a format-1 envelope.
#[derive(Serialize, Deserialize)]
struct StatementV1 {
    commit: Option<CommitHash>,
    committer: Option<Member>,
    value: [u8; 32],
}

impl Drop for StatementV1 {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl Statement {
    /// Decodes the statement of an envelope of `format`.
    fn decode(format: u8, plaintext: &[u8]) -> Result<Self> {
        let malformed = |_| MlsError::Malformed("fingerprint statement");
        match format {
            1 => {
                let v1: StatementV1 = encoding::decode_canonical(plaintext).map_err(malformed)?;
                Ok(Self { commit: v1.commit, committer: v1.committer, value: v1.value, refused: None })
            }
            _ => encoding::decode_canonical(plaintext).map_err(malformed),
        }
    }
}

/// What is visible to everyone: routing and what each seal is bound to.
#[derive(Serialize, Deserialize)]
struct Header {
    format: u8,
    /// The MLS group id: the album and its reboot generation, so a
    /// fingerprint of one generation never reads as another's.
    group: Vec<u8>,
    epoch: Epoch,
    sender: Member,
    /// The sender's last word before it discarded its state to be re-added
    /// (a re-bootstrap): its statement stands, but it holds the group no
    /// more, so it coordinates nothing. Public like the rest of the header:
    /// the server sees the re-add coming anyway.
    departing: bool,
    /// The hash of the sender's leaf encryption key in the state it states:
    /// a reader whose own history replaced that leaf since (the sender's own
    /// update, or a re-add of it) knows the statement is superseded.
    leaf: [u8; 32],
}

/// What a fingerprint's header says of the sender's leaf.
fn leaf_hash(encryption_key: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update(LEAF_DOMAIN).chain_update(encryption_key).finalize().into()
}

/// The header of formats 1 and 2.
#[derive(Serialize, Deserialize)]
struct HeaderV2 {
    format: u8,
    group: Vec<u8>,
    epoch: Epoch,
    sender: Member,
}

/// A format-1 or format-2 envelope.
#[derive(Serialize, Deserialize)]
struct EnvelopeV2 {
    header: HeaderV2,
    seals: Vec<Seal>,
    signature: Vec<u8>,
}

/// An envelope of any format read, with what its signature and seals are
/// bound to: the header as that format encoded it.
struct Received {
    header: Header,
    seals: Vec<Seal>,
    signature: Vec<u8>,
    /// The header's encoding in its own format.
    header_bytes: Vec<u8>,
}

impl Received {
    /// Decodes an envelope of a format this version reads.
    fn decode(bytes: &[u8]) -> Result<Self> {
        let malformed = |_| MlsError::Malformed("fingerprint");
        let internal = |_| MlsError::Internal("fingerprint encoding");
        match bytes.first().copied() {
            Some(1 | 2) => {
                let EnvelopeV2 { header, seals, signature } = encoding::decode_canonical(bytes).map_err(malformed)?;
                let header_bytes = encoding::encode(&header).map_err(internal)?;
                let HeaderV2 { format, group, epoch, sender } = header;
                // No leaf stated: never read as superseded.
                let header = Header { format, group, epoch, sender, departing: false, leaf: [0; 32] };
                Ok(Self { header, seals, signature, header_bytes })
            }
            Some(FORMAT) => {
                let Envelope { header, seals, signature } = encoding::decode_canonical(bytes).map_err(malformed)?;
                Ok(Self { header_bytes: encoding::encode(&header).map_err(internal)?, header, seals, signature })
            }
            _ => Err(MlsError::Malformed("fingerprint format")),
        }
    }
}

/// The statement sealed under one epoch's key.
#[derive(Serialize, Deserialize)]
struct Seal {
    under: Epoch,
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
}

/// A fingerprint on the wire: one or two seals of the same statement (under
/// the previous epoch, for the other side of a fork; under the epoch itself,
/// for members that joined in it), and the sender's signature over it all.
#[derive(Serialize, Deserialize)]
struct Envelope {
    header: Header,
    seals: Vec<Seal>,
    signature: Vec<u8>,
}

/// The signed bytes: the domain, then the header (as encoded) and the seals.
fn signed_bytes(header: &[u8], seals: &[Seal]) -> Result<Vec<u8>> {
    let seals = encoding::encode(&seals).map_err(|_| MlsError::Internal("fingerprint encoding"))?;
    Ok([SIGNATURE_DOMAIN, header, &seals].concat())
}

/// What a seal's AEAD binds: the header (as encoded) and the epoch it is
/// sealed under.
fn aad(header: &[u8], under: Epoch) -> Result<Vec<u8>> {
    let under = encoding::encode(&under).map_err(|_| MlsError::Internal("fingerprint encoding"))?;
    Ok([header, &under].concat())
}

/// What a received fingerprint says about the sender, judged against this
/// device's own marks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // short-lived: one per fingerprint received
pub enum Reading {
    /// The sender is in the state this device was in at `epoch` (its current
    /// one, or an earlier one: the sender is behind on the same history).
    Agrees {
        /// Who sent it.
        sender: Member,
        /// The epoch it states.
        epoch: Epoch,
    },
    /// The sender is in the state this device was in at `epoch`, and refused
    /// `commit`, the commit this device merged next (the sender is
    /// quarantined for it): another side, not merely behind.
    Refuses {
        /// Who sent it.
        sender: Member,
        /// The epoch it states.
        epoch: Epoch,
        /// The commit it refused.
        commit: CommitHash,
    },
    /// The sender is in the state this device is (or was) in at `epoch`, and
    /// refused `commit`, which this device did not merge after that epoch: a
    /// fellow refuser, for a device quarantined for refusing the same commit.
    AlsoRefuses {
        /// Who sent it.
        sender: Member,
        /// The epoch it states.
        epoch: Epoch,
        /// The commit it refused.
        commit: CommitHash,
    },
    /// Both hold the epoch before `epoch`, and differ at `epoch`: a fork, with
    /// both sides' statements (the commit each merged, and who committed it).
    Forked {
        /// Who sent it.
        sender: Member,
        /// The sender's statement.
        theirs: Fingerprint,
        /// This device's statement about the same epoch.
        ours: Fingerprint,
    },
    /// Sealed under `sealed_under`, an epoch this device holds, and it does
    /// not open: the sender's state at `sealed_under` is not this device's.
    Apart {
        /// Who sent it.
        sender: Member,
        /// The epoch it states.
        epoch: Epoch,
        /// The epoch it was sealed under.
        sealed_under: Epoch,
    },
    /// Opened under this device's current epoch, about the next one, which
    /// this device has not reached: the sender agrees up to here and states
    /// the commit it merged next (compare it with the chain's).
    Ahead {
        /// Who sent it.
        sender: Member,
        /// The sender's statement.
        theirs: Fingerprint,
    },
    /// About an epoch this device has not reached, or no longer keeps: not
    /// judged (a device behind judges again after replaying).
    Unjudged {
        /// Who sent it.
        sender: Member,
        /// The epoch it states.
        epoch: Epoch,
    },
    /// About an epoch of this device's history, before a commit this device
    /// merged replaced the sender's leaf (its own update, or a re-add of it):
    /// superseded, whatever it states (a refusal made before a re-add, a
    /// farewell answered); the sender's next fingerprint counts.
    Stale {
        /// Who sent it.
        sender: Member,
        /// The epoch it states.
        epoch: Epoch,
    },
}

impl Reading {
    /// Who sent the fingerprint.
    #[must_use]
    pub const fn sender(&self) -> Member {
        match self {
            Self::Agrees { sender, .. }
            | Self::Refuses { sender, .. }
            | Self::AlsoRefuses { sender, .. }
            | Self::Forked { sender, .. }
            | Self::Apart { sender, .. }
            | Self::Ahead { sender, .. }
            | Self::Unjudged { sender, .. }
            | Self::Stale { sender, .. } => *sender,
        }
    }

    /// The epoch the fingerprint states.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        match self {
            Self::Agrees { epoch, .. }
            | Self::Refuses { epoch, .. }
            | Self::AlsoRefuses { epoch, .. }
            | Self::Apart { epoch, .. }
            | Self::Unjudged { epoch, .. }
            | Self::Stale { epoch, .. } => *epoch,
            Self::Forked { theirs, .. } | Self::Ahead { theirs, .. } => theirs.epoch,
        }
    }
}

/// What anyone, the server included, reads of a fingerprint without opening
/// it: the group (album and reboot generation), the epoch it states, and the
/// sender it names. Nothing here is verified: a server checks the sender
/// against the device that authenticated the request; a member checks the
/// signature when it reads the fingerprint ([`Album::read_fingerprint`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FingerprintHeader {
    /// The MLS group id.
    pub group: Vec<u8>,
    /// The epoch the sender states.
    pub epoch: Epoch,
    /// The sender it names.
    pub sender: Member,
    /// Whether it is the sender's farewell before a re-bootstrap
    /// ([`Album::farewell`]).
    pub departing: bool,
}

/// The public header of a fingerprint.
///
/// # Errors
/// [`MlsError::Malformed`] for bytes that are not a fingerprint of a known
/// format.
pub fn fingerprint_header(bytes: &[u8]) -> Result<FingerprintHeader> {
    let Header { group, epoch, sender, departing, .. } = Received::decode(bytes)?.header;
    Ok(FingerprintHeader { group, epoch, sender, departing })
}

impl Album {
    /// Records the mark of the epoch just entered (after a create, join or
    /// merge), and forgets marks older than [`KEPT_EPOCHS`]. Infallible, so
    /// it runs after a merge without a way to fail half-way.
    pub(crate) fn push_mark(&mut self, mark: EpochMark) {
        self.marks.retain(|m| m.epoch < mark.epoch);
        self.marks.push(mark);
        let excess = self.marks.len().saturating_sub(KEPT_EPOCHS);
        self.marks.drain(..excess);
    }

    /// The mark of the epoch the group is in now.
    pub(crate) fn current_mark<P: OpenMlsProvider>(
        &self,
        provider: &P,
        commit: Option<CommitHash>,
        committer: Option<Member>,
        removed: bool,
    ) -> Result<EpochMark> {
        let album = self.id();
        EpochMark::derive(self.epoch(), commit, committer, removed, |label| {
            self.group
                .export_secret(provider.crypto(), label, album.as_bytes(), 32)
                .during("exporting a fingerprint secret")
        })
    }

    fn mark(&self, epoch: Epoch) -> Option<&EpochMark> {
        self.marks.iter().find(|m| m.epoch == epoch)
    }

    /// This device's statement about an epoch it keeps the mark of.
    #[must_use]
    pub fn fingerprint_of(&self, epoch: Epoch) -> Option<Fingerprint> {
        self.mark(epoch).map(|m| Fingerprint {
            epoch: m.epoch,
            commit: m.commit,
            committer: m.committer,
            value: m.value,
        })
    }

    /// This device's signed, sealed fingerprint of its current epoch, to
    /// publish for the other members; `refused`, the chain's commit that
    /// follows this epoch, when this device refused it (so members that
    /// merged it see a side of its own, not a member behind).
    ///
    /// # Errors
    /// [`MlsError::Evicted`] once removed; faults from the exporter, the
    /// signer or randomness.
    pub fn fingerprint<P: OpenMlsProvider>(
        &self,
        provider: &P,
        device: &DeviceIdentity,
        refused: Option<CommitHash>,
    ) -> Result<Vec<u8>> {
        self.sealed_fingerprint(provider, device, refused, false)
    }

    /// This device's last fingerprint before it discards its state to be
    /// re-added (a re-bootstrap): what [`Album::fingerprint`] states, marked
    /// departing, so the others still count what it saw (a refusal, say)
    /// but never wait on it to re-add or reboot anyone.
    ///
    /// # Errors
    /// As [`Album::fingerprint`].
    pub fn farewell<P: OpenMlsProvider>(
        &self,
        provider: &P,
        device: &DeviceIdentity,
        refused: Option<CommitHash>,
    ) -> Result<Vec<u8>> {
        self.sealed_fingerprint(provider, device, refused, true)
    }

    fn sealed_fingerprint<P: OpenMlsProvider>(
        &self,
        provider: &P,
        device: &DeviceIdentity,
        refused: Option<CommitHash>,
        departing: bool,
    ) -> Result<Vec<u8>> {
        self.ensure_operational()?;
        let own = self.group.own_leaf_index();
        let own_leaf = self
            .group
            .members()
            .find(|m| m.index == own)
            .ok_or(MlsError::Internal("own leaf missing from the tree"))?;
        let epoch = self.epoch();
        // An album record from before fingerprints has no mark of its epoch yet.
        let fresh;
        let current = match self.mark(epoch) {
            Some(m) => m,
            None => {
                // Whether that commit removed a member is not known: seal
                // under this epoch only.
                fresh = self.current_mark(provider, self.last_applied, None, true)?;
                &fresh
            }
        };
        // Under the previous epoch too, unless the commit removed a member
        // (who holds that epoch's key).
        let previous = epoch.previous().and_then(|p| self.mark(p)).filter(|_| !current.removed);
        let header = Header {
            format: FORMAT,
            group: self.group_id(),
            epoch,
            sender: Member { user: device.user(), device: device.device() },
            departing,
            leaf: leaf_hash(own_leaf.encryption_key.as_slice()),
        };
        let header_bytes = encoding::encode(&header).map_err(|_| MlsError::Internal("fingerprint encoding"))?;
        let statement =
            Statement { commit: current.commit, committer: current.committer, value: current.value, refused };
        let plaintext =
            Zeroizing::new(encoding::encode(&statement).map_err(|_| MlsError::Internal("fingerprint encoding"))?);
        let mut seals = Vec::with_capacity(2);
        for mark in previous.into_iter().chain([current]) {
            let nonce: [u8; 24] = provider.rand().random_array().map_err(|_| MlsError::Internal("randomness"))?;
            let cipher = XChaCha20Poly1305::new((&mark.seal_key).into());
            let ciphertext = cipher
                .encrypt(&XNonce::from(nonce), Payload { msg: &plaintext, aad: &aad(&header_bytes, mark.epoch)? })
                .map_err(|_| MlsError::Internal("fingerprint sealing"))?;
            seals.push(Seal { under: mark.epoch, nonce, ciphertext });
        }
        let signature =
            device.sign(&signed_bytes(&header_bytes, &seals)?).map_err(|_| MlsError::Internal("signing"))?;
        encoding::encode(&Envelope { header, seals, signature }).map_err(|_| MlsError::Internal("fingerprint encoding"))
    }

    /// Reads another member's fingerprint and judges it against this
    /// device's marks. Changes nothing.
    ///
    /// # Errors
    /// [`MlsError::Malformed`] for bytes that are not a fingerprint (or of an
    /// unknown format); [`MlsError::NotMember`] for another album's, or a
    /// sender not in this device's member list (a removed device);
    /// [`MlsError::BadSignature`] for a signature that does not verify;
    /// [`MlsError::Refused`] for this device's own.
    pub fn read_fingerprint<P: OpenMlsProvider>(&self, provider: &P, bytes: &[u8]) -> Result<Reading> {
        let Received { header, seals, signature, header_bytes } = Received::decode(bytes)?;
        if header.group != self.group_id() {
            return Err(MlsError::NotMember("fingerprint of another album or generation"));
        }
        let sender = header.sender;
        let leaf = self
            .group
            .members()
            .find(|m| claimed_identity(&m.credential).is_ok_and(|id| id == sender))
            .ok_or(MlsError::NotMember("fingerprint from a non-member"))?;
        if leaf.index == self.group.own_leaf_index() {
            return Err(MlsError::Refused("this device's own fingerprint"));
        }
        provider
            .crypto()
            .verify_signature(
                SignatureScheme::ED25519,
                &signed_bytes(&header_bytes, &seals)?,
                &leaf.signature_key,
                &signature,
            )
            .map_err(|_| MlsError::BadSignature)?;
        let epoch = header.epoch;
        // One seal under the epoch itself, at most one under the one before, nothing else.
        let own_seal = seals.iter().filter(|seal| seal.under == epoch).count();
        let earlier = seals.iter().filter(|seal| Some(seal.under) == epoch.previous()).count();
        if own_seal != 1 || earlier > 1 || seals.len() != own_seal + earlier || !seals.is_sorted_by_key(|s| s.under) {
            return Err(MlsError::Malformed("fingerprint seals"));
        }
        // The earliest seal this device can try tells the most: a fork at the
        // epoch itself is read there, with the other side's commit.
        let Some((seal, mark)) = seals.iter().find_map(|seal| self.mark(seal.under).map(|mark| (seal, mark))) else {
            return Ok(Reading::Unjudged { sender, epoch });
        };
        let cipher = XChaCha20Poly1305::new((&mark.seal_key).into());
        let opened = cipher.decrypt(
            &XNonce::from(seal.nonce),
            Payload { msg: &seal.ciphertext, aad: &aad(&header_bytes, seal.under)? },
        );
        let Ok(plaintext) = opened.map(Zeroizing::new) else {
            return Ok(Reading::Apart { sender, epoch, sealed_under: seal.under });
        };
        let statement = Statement::decode(header.format, &plaintext)?;
        let theirs =
            Fingerprint { epoch, commit: statement.commit, committer: statement.committer, value: statement.value };
        // What this device merged after that epoch, if it did.
        let next = epoch.next().and_then(|n| self.mark(n)).and_then(|m| m.commit);
        // On this device's history at an epoch it has passed, with a leaf its
        // tree no longer holds for the sender: a commit since replaced it.
        let superseded = header.format >= 3 && epoch < self.epoch() && header.leaf != leaf_hash(&leaf.encryption_key);
        Ok(match self.fingerprint_of(epoch) {
            Some(ours) if ours.agrees_with(&theirs) && superseded => Reading::Stale { sender, epoch },
            Some(ours) if ours.agrees_with(&theirs) => match statement.refused {
                Some(commit) if next == Some(commit) => Reading::Refuses { sender, epoch, commit },
                Some(commit) => Reading::AlsoRefuses { sender, epoch, commit },
                None => Reading::Agrees { sender, epoch },
            },
            Some(ours) => Reading::Forked { sender, theirs, ours },
            None => Reading::Ahead { sender, theirs },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    #[test]
    fn a_format_1_statement_still_decodes_and_an_unknown_one_does_not() {
        let commit = Some(CommitHash::of(b"a commit"));
        let v1 = encoding::encode(&StatementV1 { commit, committer: None, value: [7; 32] }).unwrap();
        let read = Statement::decode(1, &v1).unwrap();
        assert_eq!((read.commit, read.committer, read.value, read.refused), (commit, None, [7; 32], None));
        // Format 2 round-trips, `refused` included; a format-1 body is not a format-2 one.
        let refused = Some(CommitHash::of(b"refused"));
        let v2 = encoding::encode(&Statement { commit, committer: None, value: [9; 32], refused }).unwrap();
        let again = Statement::decode(2, &v2).unwrap();
        assert_eq!((again.commit, again.value, again.refused), (commit, [9; 32], refused));
        assert!(Statement::decode(2, &v1).is_err());
    }

    fn member(n: u8) -> Member {
        Member {
            user: capsule_identity::UserId::from_bytes([n; 16]),
            device: capsule_identity::DeviceId::from_bytes([n; 16]),
        }
    }

    /// A format-2 envelope (no `departing` in its header) still decodes, and
    /// its signature and seals are checked over the bytes format 2 signed and
    /// sealed: `(header, seals)` and `(header, under)` as one encoding each.
    #[test]
    fn a_format_2_envelope_is_read_over_the_bytes_it_was_signed_and_sealed_over() {
        let header = HeaderV2 { format: 2, group: vec![1; 16], epoch: Epoch(7), sender: member(3) };
        let seals = vec![Seal { under: Epoch(6), nonce: [4; 24], ciphertext: vec![5; 40] }];
        let signed_then = [SIGNATURE_DOMAIN, &encoding::encode(&(&header, &seals)).unwrap()].concat();
        let aad_then = encoding::encode(&(&header, Epoch(6))).unwrap();
        let bytes = encoding::encode(&EnvelopeV2 { header, seals, signature: vec![9; 64] }).unwrap();
        let read = Received::decode(&bytes).unwrap();
        assert_eq!(signed_bytes(&read.header_bytes, &read.seals).unwrap(), signed_then);
        assert_eq!(aad(&read.header_bytes, Epoch(6)).unwrap(), aad_then);
        assert!(!read.header.departing);
        let public = fingerprint_header(&bytes).unwrap();
        assert_eq!((public.epoch, public.sender, public.departing), (Epoch(7), member(3), false));
        // Format 3 carries the flag; an unknown format is refused.
        let header = Header {
            format: 3,
            group: vec![1; 16],
            epoch: Epoch(7),
            sender: member(3),
            departing: true,
            leaf: [2; 32],
        };
        let three = encoding::encode(&Envelope { header, seals: Vec::new(), signature: vec![9; 64] }).unwrap();
        assert!(fingerprint_header(&three).unwrap().departing);
        let mut four = three.clone();
        four[0] = 4;
        assert!(matches!(fingerprint_header(&four), Err(MlsError::Malformed(_))));
    }
}
