//! Where OpenMLS errors cross into [`MlsError`]: bugs and storage faults kept
//! apart from refusals.
//!
//! OpenMLS reports its own bugs as a `LibraryError` nested in almost every error
//! enum, storage-provider failures as a `StorageError`-like variant, and
//! validation failures as everything else. Every OpenMLS error type this crate
//! meets is classified here by an exhaustive match, so an OpenMLS upgrade that
//! adds a variant stops the build here until someone decides what it is:
//!
//! - `LibraryError` (and anything that can only be a bug in us, such as our own
//!   extension list refused) → [`MlsError::Internal`], naming what we were doing;
//!   OpenMLS's description is logged, not returned;
//! - storage-provider failures → [`MlsError::Storage`];
//! - validation failures → typed refusals: [`MlsError::WrongEpoch`],
//!   [`MlsError::AlreadyApplied`], [`MlsError::BadSignature`],
//!   [`MlsError::OwnCommitMismatch`], [`MlsError::NotMember`],
//!   [`MlsError::Malformed`], [`MlsError::Unauthorized`], and
//!   [`MlsError::Refused`] with a fixed reason for the rest.

use core::error::Error;
use core::fmt::Display;

use openmls::framing::errors::{MessageDecryptionError, SecretTreeError};
use openmls::messages::GroupSecretsError;
use openmls::messages::group_info::GroupInfoError;
use openmls::prelude::{
    ApplyUpdatePathError, CommitBuilderStageError, CreateCommitError, CreationFromExternalError, ExportGroupInfoError,
    ExportSecretError, ExternalCommitValidationError, GroupContextExtensionsProposalValidationError,
    InvalidExtensionError, KeyPackageNewError, KeyPackageVerifyError, LibraryError, MergeCommitError,
    MergePendingCommitError, MlsGroupStateError, MlsMessageIn, NewGroupError, ProcessMessageError,
    ProposalValidationError, ProtocolMessage, PublicProcessMessageError, PublicTreeError, SignatureError,
    StageCommitError, ValidationError, WelcomeError,
};
use openmls::schedule::errors::{KeyScheduleError, PskError};
use openmls::treesync::errors::{LeafNodeValidationError, TreeSyncAddLeaf, TreeSyncFromNodesError, UpdatePathError};

use crate::{Epoch, MlsError, Result};

/// An OpenMLS error this crate knows how to classify.
pub(crate) trait Classify {
    /// The [`MlsError`] for this error, met while `during` (an "-ing" phrase
    /// naming what the wrapper was doing, for faults).
    fn classify(self, during: &'static str) -> MlsError;
}

/// `result.during("merging the commit")?` classifies an OpenMLS error.
pub(crate) trait During<T> {
    /// Classifies the error, met while `what`.
    fn during(self, what: &'static str) -> Result<T>;
}

impl<T, E: Classify> During<T> for core::result::Result<T, E> {
    fn during(self, what: &'static str) -> Result<T> {
        self.map_err(|e| e.classify(what))
    }
}

/// A bug in OpenMLS or in how we call it: logged with OpenMLS's description,
/// returned as [`MlsError::Internal`] naming what we were doing.
fn bug(during: &'static str, error: impl Display) -> MlsError {
    tracing::error!(during, %error, "OpenMLS reported an internal error");
    MlsError::Internal(during)
}

const EXTERNAL: MlsError = MlsError::Unauthorized("external senders and commits are not accepted");
const NOT_PUBLIC: MlsError = MlsError::Refused("handshakes must travel as public messages");
const NO_PSKS: MlsError = MlsError::Refused("pre-shared keys are not used by Capsule");
const FULL: MlsError = MlsError::Refused("the album's tree is full");
const OWN_UPDATE: MlsError = MlsError::Refused("the committer included its own update proposal");

impl Classify for LibraryError {
    fn classify(self, during: &'static str) -> MlsError {
        bug(during, self)
    }
}

impl Classify for InvalidExtensionError {
    /// Only our own extension lists reach OpenMLS through paths that return this.
    fn classify(self, during: &'static str) -> MlsError {
        bug(during, self)
    }
}

impl Classify for KeyScheduleError {
    /// Library, state or crypto-provider failures: none is a property of the input.
    fn classify(self, during: &'static str) -> MlsError {
        bug(during, self)
    }
}

impl Classify for SignatureError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::VerificationError => MlsError::BadSignature,
            Self::SigningError => bug(during, self),
        }
    }
}

impl Classify for LeafNodeValidationError {
    fn classify(self, _during: &'static str) -> MlsError {
        match self {
            Self::Lifetime(_) => MlsError::Refused("leaf node lifetime is not valid now"),
            Self::UnsupportedExtensions
            | Self::UnsupportedProposals
            | Self::UnsupportedCredentials
            | Self::CredentialNotInCapabilities
            | Self::ExtensionsNotInCapabilities
            | Self::CiphersuiteNotInCapabilities
            | Self::LeafNodeCredentialNotSupportedByMember
            | Self::MemberCredentialNotSupportedByLeafNode => {
                MlsError::Refused("leaf node capabilities do not fit the album")
            }
            Self::SignatureKeyAlreadyInUse | Self::EncryptionKeyAlreadyInUse => {
                MlsError::Refused("leaf node key already used by a member")
            }
            Self::InvalidLeafNodeSource => MlsError::Malformed("leaf node source"),
        }
    }
}

impl Classify for KeyPackageNewError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::StorageError => MlsError::storage(during, "key package not stored"),
            Self::SignatureError(e) => e.classify(during),
            Self::CiphersuiteSignatureSchemeMismatch | Self::UnsupportedCiphersuite(_) => bug(during, self),
        }
    }
}

impl Classify for KeyPackageVerifyError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::InvalidSignature | Self::InvalidLeafNodeSignature => MlsError::BadSignature,
            Self::LifetimeError(_) => MlsError::Refused("key package lifetime is not valid now"),
            Self::MissingLifetime => MlsError::Malformed("key package without a lifetime"),
            Self::UnsupportedExtension => MlsError::Refused("key package extension not in its capabilities"),
            Self::InvalidLeafNodeSourceType => MlsError::Malformed("key package leaf node source"),
            Self::InitKeyEqualsEncryptionKey => MlsError::Refused("key package init key equals its encryption key"),
            Self::InvalidProtocolVersion => MlsError::Refused("key package of another MLS version"),
            Self::ExtensionTypeNotValidInKeyPackage(_) => MlsError::Malformed("key package extension"),
        }
    }
}

impl<S: Error> Classify for NewGroupError<S> {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::StorageError(e) => MlsError::storage(during, e),
            Self::GroupAlreadyExists => MlsError::Refused("this album is already stored on this device"),
            // Our own configuration: a bug in us if refused.
            Self::NoMatchingKeyPackage
            | Self::UnsupportedProposalType
            | Self::UnsupportedExtensionType
            | Self::InvalidExtensions(_)
            | Self::UnsupportedCiphersuite(_) => bug(during, self),
        }
    }
}

impl Classify for MlsGroupStateError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::UseAfterEviction => MlsError::Evicted,
            Self::PendingCommit => MlsError::PendingCommit,
            Self::NoPendingCommit => MlsError::NoPendingCommit,
            // Capsule never stores proposals.
            Self::PendingProposal | Self::PendingProposalNotFound => bug(during, self),
        }
    }
}

impl Classify for ExportGroupInfoError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::GroupStateError(e) => e.classify(during),
            // Only the group's own extensions go in.
            Self::InvalidExtensionError(e) => e.classify(during),
        }
    }
}

impl Classify for ExportSecretError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::GroupStateError(e) => e.classify(during),
            Self::KeyLengthTooLong => bug(during, self),
        }
    }
}

impl Classify for PskError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::Storage => MlsError::storage(during, "pre-shared key storage failed"),
            Self::TooManyKeys
            | Self::KeyNotFound
            | Self::TypeMismatch { .. }
            | Self::UsageMismatch { .. }
            | Self::UsageConflict { .. }
            | Self::UsageDuplicate { .. }
            | Self::NonceLengthMismatch { .. } => NO_PSKS,
        }
    }
}

impl Classify for PublicTreeError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::SignatureError(e) => e.classify(during),
            Self::MalformedTree => MlsError::Malformed("ratchet tree"),
            Self::MissingKeyPackage => MlsError::NotMember("this device's leaf is not in the tree"),
            Self::PublicKeyMismatch => MlsError::Refused("tree key does not match its derivation"),
            Self::DuplicateKeyPackage => MlsError::Refused("tree holds the same key package twice"),
            Self::InvalidParentHash => MlsError::Refused("tree parent hash does not verify"),
            Self::IdentityMismatch => MlsError::Refused("leaf update changes the member's identity"),
        }
    }
}

impl Classify for TreeSyncFromNodesError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::PublicTreeError(e) => e.classify(during),
            Self::RatchetTreeError(_) => MlsError::Malformed("ratchet tree"),
        }
    }
}

impl Classify for TreeSyncAddLeaf {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::TreeFull => FULL,
        }
    }
}

impl<S: Error> Classify for CreationFromExternalError<S> {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::WriteToStorageError(e) => MlsError::storage(during, e),
            Self::TreeSyncError(e) => e.classify(during),
            Self::LeafNodeValidation(e) => e.classify(during),
            Self::InvalidGroupInfoSignature => MlsError::BadSignature,
            Self::UnknownSender => MlsError::Malformed("group info signer is not in the tree"),
            Self::TreeHashMismatch => MlsError::Refused("tree does not match the group info"),
            Self::UnsupportedMlsVersion | Self::UnsupportedCiphersuite(_) => {
                MlsError::Refused("group of a version or ciphersuite this device does not support")
            }
            Self::UnmergedLeafNotADescendant | Self::IntermediateNodeMissingUnmergedLeaf => {
                MlsError::Malformed("ratchet tree")
            }
            Self::DuplicateEncryptionKey | Self::DuplicateSignatureKey => {
                MlsError::Refused("tree repeats a member key")
            }
        }
    }
}

impl Classify for GroupSecretsError {
    fn classify(self, _during: &'static str) -> MlsError {
        match self {
            Self::DecryptionFailed => MlsError::Refused("welcome does not decrypt"),
            Self::Malformed => MlsError::Malformed("welcome group secrets"),
        }
    }
}

impl Classify for GroupInfoError {
    fn classify(self, _during: &'static str) -> MlsError {
        match self {
            Self::DecryptionFailed => MlsError::Refused("welcome does not decrypt"),
            Self::Malformed => MlsError::Malformed("welcome group info"),
        }
    }
}

impl<S: Error> Classify for WelcomeError<S> {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::StorageError(e) => MlsError::storage(during, e),
            Self::KeySchedule(e) => e.classify(during),
            Self::GroupSecrets(e) => e.classify(during),
            Self::GroupInfo(e) => e.classify(during),
            Self::Psk(e) => e.classify(during),
            Self::PublicTreeError(e) => e.classify(during),
            Self::PublicGroupError(e) => e.classify(during),
            Self::LeafNodeValidation(e) => e.classify(during),
            Self::InvalidGroupInfoSignature => MlsError::BadSignature,
            Self::NoMatchingKeyPackage
            | Self::JoinerSecretNotFound
            | Self::PrivateInitKeyNotFound
            | Self::NoMatchingEncryptionKey => MlsError::NotMember("the welcome is not for a key this device holds"),
            Self::CiphersuiteMismatch
            | Self::UnsupportedMlsVersion
            | Self::UnsupportedCapability
            | Self::UnsupportedCiphersuite(_)
            | Self::UnsupportedExtensions => MlsError::Refused("welcome for a group this device does not support"),
            Self::UnableToDecrypt => MlsError::Refused("welcome does not decrypt"),
            Self::ConfirmationTagMismatch => MlsError::Refused("welcome confirmation tag does not match"),
            Self::MissingRatchetTree => MlsError::Malformed("welcome without a ratchet tree"),
            Self::UnknownSender => MlsError::Malformed("welcome signer is not in the tree"),
            Self::NotAWelcomeMessage => MlsError::Malformed("not a welcome"),
            Self::MalformedWelcomeMessage => MlsError::Malformed("welcome"),
            Self::GroupAlreadyExists => MlsError::Refused("this album is already stored on this device"),
        }
    }
}

impl Classify for ProposalValidationError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::Psk(e) => e.classify(during),
            Self::LeafNodeValidation(e) => e.classify(during),
            Self::UnknownMember => MlsError::NotMember("proposal sender"),
            Self::UnknownMemberRemoval => MlsError::NotMember("removed leaf"),
            Self::UpdateFromNonMember => MlsError::NotMember("update sender"),
            Self::DuplicateSignatureKey
            | Self::DuplicateEncryptionKey
            | Self::DuplicateInitKey
            | Self::InitEncryptionKeyCollision => MlsError::Refused("a key would be used twice in the album"),
            Self::DuplicateMemberRemoval => MlsError::Refused("the same member is removed twice"),
            Self::CommitterIncludedOwnUpdate => OWN_UPDATE,
            Self::InsufficientCapabilities => {
                MlsError::Refused("added key package's capabilities do not fit the album")
            }
            Self::InvalidAddProposalCiphersuiteOrVersion => {
                MlsError::Refused("added key package of another ciphersuite or version")
            }
            Self::UnsupportedProposalType => MlsError::Refused("proposal type not supported by every member"),
            Self::ExternalInitProposalInRegularCommit => EXTERNAL,
        }
    }
}

impl Classify for GroupContextExtensionsProposalValidationError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::TooManyGCEProposals => MlsError::Refused("more than one group-context change in a commit"),
            Self::ExtensionNotSupportedByAllMembers
            | Self::RequiredExtensionNotSupportedByAllMembers
            | Self::ExtensionNotInRequiredCapabilities => {
                MlsError::Refused("group-context extensions not supported by every member")
            }
            Self::ChangedImmutableMetadata => MlsError::Refused("immutable group metadata changed"),
            Self::InvalidExtensionTypeError { .. } => MlsError::Malformed("group-context extension"),
        }
    }
}

impl Classify for ExternalCommitValidationError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::NoExternalInitProposals
            | Self::MultipleExternalInitProposals
            | Self::InvalidInlineProposals
            | Self::MultipleRemoveProposals
            | Self::InvalidRemoveProposal
            | Self::NoPath
            | Self::ReferencedProposal
            | Self::UnsupportedGroupContextExtensions => EXTERNAL,
        }
    }
}

impl Classify for UpdatePathError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::SignatureError(e) => e.classify(during),
            Self::InvalidType => MlsError::Malformed("update path leaf node"),
        }
    }
}

impl Classify for ApplyUpdatePathError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            // The commit's signature verified before its path is applied: a
            // path that does not fit is its committer's doing, not the
            // server's, so the commit is refused (quarantine, committer named)
            // rather than blamed on the chain (which would be retried forever).
            Self::PathLengthMismatch | Self::PathMismatch | Self::MissingCiphertext => {
                MlsError::Refused("update path does not fit the tree: the committer's path is invalid")
            }
            Self::ParentHashMismatch | Self::MissingParentHash => {
                MlsError::Refused("update path parent hash does not verify")
            }
            Self::UnableToDecrypt => MlsError::Refused("update path does not decrypt for this device"),
            Self::MissingSender => MlsError::NotMember("committer"),
            Self::MissingOwnLeaf => MlsError::NotMember("this device's leaf is not in the tree"),
            Self::TreeFull => FULL,
            Self::InconsistentSenderIndex => EXTERNAL,
        }
    }
}

impl Classify for SecretTreeError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            // The secret was used and deleted (a replay), or it is our own message.
            Self::SecretReuseError | Self::RatchetTypeError => MlsError::AlreadyApplied,
            Self::TooDistantInThePast | Self::TooDistantInTheFuture | Self::IndexOutOfBounds | Self::RatchetTooLong => {
                MlsError::Refused("message generation out of range")
            }
            Self::CodecError(_) => MlsError::Malformed("message content"),
            Self::LibraryError | Self::CryptoError(_) => bug(during, self),
        }
    }
}

impl Classify for MessageDecryptionError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::SecretTreeError(e) => e.classify(during),
            Self::GenerationOutOfBound => MlsError::Refused("message generation out of range"),
            Self::AeadError => MlsError::Refused("message does not decrypt"),
            Self::WrongWireFormat => NOT_PUBLIC,
            Self::MalformedContent => MlsError::Malformed("message content"),
        }
    }
}

impl Classify for CreateCommitError {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::PskError(e) => e.classify(during),
            Self::ProposalValidationError(e) => e.classify(during),
            Self::SignatureError(e) => e.classify(during),
            Self::PublicTreeError(e) => e.classify(during),
            Self::GroupContextExtensionsProposalValidationError(e) => e.classify(during),
            Self::TreeSyncAddLeaf(e) => e.classify(during),
            Self::LeafNodeValidation(e) => e.classify(during),
            Self::CannotRemoveSelf => MlsError::Refused("a device cannot remove itself"),
            // What we asked OpenMLS to build: a bug in us if refused.
            Self::OwnKeyNotFound
            | Self::MissingProposal
            | Self::WrongProposalSenderType
            | Self::MissingCredential
            | Self::InvalidExtensionError(_)
            | Self::InvalidLeafNodeParameters
            | Self::InvalidSignerCiphersuite
            | Self::ExternalCommitWithNewSigner
            | Self::ExternalCommitCredentialMismatch
            | Self::InvalidExternalCommit(_) => bug(during, self),
        }
    }
}

impl<S: Error> Classify for CommitBuilderStageError<S> {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::KeyStoreError(e) => MlsError::storage(during, e),
        }
    }
}

impl<S: Error> Classify for MergeCommitError<S> {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::LibraryError(e) => e.classify(during),
            Self::StorageError(e) => MlsError::storage(during, e),
        }
    }
}

impl<S: Error> Classify for MergePendingCommitError<S> {
    fn classify(self, during: &'static str) -> MlsError {
        match self {
            Self::MlsGroupStateError(e) => e.classify(during),
            Self::MergeCommitError(e) => e.classify(during),
        }
    }
}

/// The epochs of an incoming message and of the album, for [`MlsError::WrongEpoch`].
#[derive(Clone, Copy)]
pub(crate) struct Epochs {
    /// The epoch the message claims.
    pub(crate) message: Epoch,
    /// This album's epoch.
    pub(crate) album: Epoch,
}

impl Epochs {
    const fn wrong(self) -> MlsError {
        MlsError::WrongEpoch { message_epoch: self.message, album_epoch: self.album }
    }
}

const PROCESSING: &str = "processing a commit";

/// Classifies the failure of `MlsGroup::process_message` on a message of `epochs.message`.
pub(crate) fn processing<S: Error>(error: ProcessMessageError<S>, epochs: Epochs) -> MlsError {
    match error {
        ProcessMessageError::LibraryError(e) => e.classify(PROCESSING),
        ProcessMessageError::StorageError(e) => MlsError::storage(PROCESSING, e),
        ProcessMessageError::GroupStateError(e) => e.classify(PROCESSING),
        ProcessMessageError::ValidationError(e) => validation(e, epochs),
        ProcessMessageError::InvalidCommit(e) => staging(e, epochs),
        ProcessMessageError::IncompatibleWireFormat => NOT_PUBLIC,
        ProcessMessageError::UnauthorizedExternalApplicationMessage
        | ProcessMessageError::UnauthorizedExternalCommitMessage => EXTERNAL,
        ProcessMessageError::UnsupportedProposalType => MlsError::Refused("proposal type not used by Capsule"),
    }
}

/// A serialized handshake made in `album`'s epoch, with both epochs for
/// classifying what processing it says; a message from another epoch is
/// refused here, before OpenMLS sees it.
pub(crate) fn handshake_at(bytes: &[u8], album: Epoch) -> Result<(ProtocolMessage, Epochs)> {
    use openmls::prelude::tls_codec::Deserialize as _;
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| MlsError::Malformed("mls message"))?;
    let message: ProtocolMessage =
        message.try_into_protocol_message().map_err(|_| MlsError::Malformed("not a handshake message"))?;
    let epochs = Epochs { message: Epoch(message.epoch().as_u64()), album };
    if epochs.message != epochs.album {
        return Err(MlsError::WrongEpoch { message_epoch: epochs.message, album_epoch: epochs.album });
    }
    Ok((message, epochs))
}

/// [`processing`] for the server's public group (no storage, no decryption).
pub(crate) fn public_processing(error: PublicProcessMessageError, epochs: Epochs) -> MlsError {
    match error {
        PublicProcessMessageError::LibraryError(e) => e.classify(PROCESSING),
        PublicProcessMessageError::ValidationError(e) => validation(e, epochs),
        PublicProcessMessageError::InvalidCommit(e) => staging(e, epochs),
        PublicProcessMessageError::IncompatibleWireFormat => NOT_PUBLIC,
        PublicProcessMessageError::UnauthorizedExternalApplicationMessage
        | PublicProcessMessageError::UnauthorizedExternalCommitMessage => EXTERNAL,
        PublicProcessMessageError::UnsupportedProposalType => MlsError::Refused("proposal type not used by Capsule"),
    }
}

fn validation(error: ValidationError, epochs: Epochs) -> MlsError {
    match error {
        ValidationError::LibraryError(e) => e.classify(PROCESSING),
        ValidationError::UnableToDecrypt(e) => e.classify(PROCESSING),
        ValidationError::KeyPackageVerifyError(e) => e.classify(PROCESSING),
        ValidationError::UpdatePathError(e) => e.classify(PROCESSING),
        ValidationError::ExternalCommitValidation(e) => e.classify(PROCESSING),
        ValidationError::WrongEpoch | ValidationError::NoPastEpochData => epochs.wrong(),
        ValidationError::WrongGroupId => MlsError::NotMember("the message is for another group"),
        ValidationError::UnknownMember => MlsError::NotMember("the sender is not a member"),
        ValidationError::InvalidMembershipTag
        | ValidationError::InvalidSignature
        | ValidationError::InvalidLeafNodeSignature => MlsError::BadSignature,
        ValidationError::MissingMembershipTag | ValidationError::MissingConfirmationTag => {
            MlsError::Malformed("handshake without its tag")
        }
        ValidationError::InvalidLeafNodeSourceType => MlsError::Malformed("leaf node source"),
        ValidationError::InvalidExtension(_) => MlsError::Malformed("extension"),
        ValidationError::WrongWireFormat => NOT_PUBLIC,
        ValidationError::UnencryptedApplicationMessage => MlsError::Refused("application messages are not used"),
        ValidationError::CommitterIncludedOwnUpdate => OWN_UPDATE,
        ValidationError::InvalidAddProposalCiphersuite => MlsError::Refused("added key package of another ciphersuite"),
        ValidationError::NotACommit
        | ValidationError::NotAnExternalAddProposal
        | ValidationError::NoPath
        | ValidationError::InvalidSenderType
        | ValidationError::NonMemberApplicationMessage
        | ValidationError::UnauthorizedExternalSender
        | ValidationError::NoExternalSendersExtension => EXTERNAL,
    }
}

fn staging(error: StageCommitError, epochs: Epochs) -> MlsError {
    match error {
        StageCommitError::LibraryError(e) => e.classify(PROCESSING),
        StageCommitError::ProposalValidationError(e) => e.classify(PROCESSING),
        StageCommitError::PskError(e) => e.classify(PROCESSING),
        StageCommitError::ExternalCommitValidation(e) => e.classify(PROCESSING),
        StageCommitError::UpdatePathError(e) => e.classify(PROCESSING),
        StageCommitError::VerifiedUpdatePathError(e) => e.classify(PROCESSING),
        StageCommitError::GroupContextExtensionsProposalValidationError(e) => e.classify(PROCESSING),
        StageCommitError::LeafNodeValidation(e) => e.classify(PROCESSING),
        StageCommitError::EpochMismatch => epochs.wrong(),
        StageCommitError::OwnCommitMismatch => MlsError::OwnCommitMismatch,
        StageCommitError::PathLeafNodeVerificationFailure => MlsError::BadSignature,
        StageCommitError::WrongPlaintextContentType => MlsError::Malformed("not a commit"),
        StageCommitError::ConfirmationTagMissing => MlsError::Malformed("commit without a confirmation tag"),
        StageCommitError::ConfirmationTagMismatch => {
            MlsError::Refused("confirmation tag does not match: the committer's state differs")
        }
        StageCommitError::RequiredPathNotFound => MlsError::Refused("commit without a required update path"),
        StageCommitError::AttemptedSelfRemoval => MlsError::Refused("the committer removes itself"),
        StageCommitError::MissingProposal => MlsError::Refused("commit refers to a proposal this device lacks"),
        StageCommitError::TooManyNewMembers => FULL,
        StageCommitError::DuplicatePskId(_) => NO_PSKS,
        StageCommitError::InconsistentSenderIndex
        | StageCommitError::SenderTypeExternal
        | StageCommitError::SenderTypeNewMemberProposal => EXTERNAL,
        // This device's own key material is missing: its state, not the commit.
        StageCommitError::OwnKeyNotFound | StageCommitError::MissingDecryptionKey => bug(PROCESSING, error),
    }
}
