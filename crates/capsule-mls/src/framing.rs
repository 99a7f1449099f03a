//! What anyone can read of a handshake without group secrets: the group it
//! claims, the epoch it was made in, and what it carries. Album handshakes
//! travel as PublicMessages (see `album.rs`), so a chain server can check that
//! a commit belongs where it is submitted before it orders it.

use openmls::prelude::tls_codec::DeserializeBytes as _;
use openmls::prelude::{ContentType, MlsMessageIn, ProtocolMessage};

use crate::{Epoch, MlsError, Result};

/// The public framing of one handshake message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framing {
    /// The group id it claims (an album's id bytes).
    pub group_id: Vec<u8>,
    /// The epoch it was made in.
    pub epoch: Epoch,
    /// Whether it is a commit (the only handshake a chain stores).
    pub is_commit: bool,
}

/// Reads the framing of a serialized MLS message, verifying nothing.
///
/// # Errors
/// [`MlsError::Malformed`] for bytes that are not exactly one MLS message;
/// [`MlsError::Refused`] for a message that is not a PublicMessage (a Welcome,
/// a KeyPackage, an encrypted message).
pub fn framing(message: &[u8]) -> Result<Framing> {
    let (message, rest) =
        MlsMessageIn::tls_deserialize_bytes(message).map_err(|_| MlsError::Malformed("not an MLS message"))?;
    if !rest.is_empty() {
        return Err(MlsError::Malformed("bytes after the MLS message"));
    }
    let protocol = message.try_into_protocol_message().map_err(|_| MlsError::Refused("not a handshake message"))?;
    let ProtocolMessage::PublicMessage(public) = &protocol else {
        return Err(MlsError::Refused("handshakes travel as PublicMessages"));
    };
    Ok(Framing {
        group_id: public.group_id().as_slice().to_vec(),
        epoch: Epoch(public.epoch().as_u64()),
        is_commit: protocol.content_type() == ContentType::Commit,
    })
}
