//! What the server checks with group data it can read, beside ordering:
//! commits against each album's public state (`capsule_mls::PublicAlbum`,
//! Capsule's rules as members run them), genesis states, and directory
//! registrations. The CPU work runs on blocking threads; the only I/O is the
//! directory lookup between OpenMLS's checks and Capsule's.

use std::collections::BTreeMap;

use capsule_chain::wire::{
    self, AUTH_WINDOW_SECS, AuthRefusal, DirectoryRefusal, KeyPackageRefusal, KeyPackageUpload, RegisterUser,
    RequestAuth, ServerError,
};
use capsule_chain::{Epoch, Invalid, Refused, Submission};
use capsule_identity::{DeviceCertificate, IdentityPublicKey, UnixTime, UserId, verify_device_signature};
use capsule_mls::{Genesis, Member, MlsError, PublicAlbum, Validation, inspect_key_package, welcome_recipients};

use crate::storage::{Certified, Filed, MemberId, Storage, StorageError, Validated};

/// The server's clock, read once per request: certificates are checked at it.
pub(crate) fn now() -> UnixTime {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    UnixTime(since.as_secs())
}

/// A validation error as the answer: a refusal members would make too, or a
/// fault of the server (logged; the device retries).
fn refusal(e: &MlsError) -> ServerError {
    match Invalid::of(e) {
        Some(invalid) => ServerError::Refused(Refused::Invalid(invalid)),
        None => {
            tracing::error!(error = %e, "validation failed inside the server");
            ServerError::Unavailable
        }
    }
}

fn storage_fault(e: &StorageError) -> ServerError {
    tracing::error!(error = %e, "directory lookup failed");
    ServerError::Unavailable
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| ServerError::Unavailable)
}

/// The identity keys the directory holds for `users`.
async fn trust<S: Storage>(
    storage: &S,
    users: impl IntoIterator<Item = UserId>,
) -> Result<BTreeMap<UserId, IdentityPublicKey>, ServerError> {
    let ids = users.into_iter().map(|u| *u.as_bytes()).collect();
    let rows = storage.identity_keys(ids).await.map_err(|e| storage_fault(&e))?;
    let mut trust = BTreeMap::new();
    for (user, key) in rows {
        // The directory only files keys that decoded when registered.
        let key = IdentityPublicKey::from_bytes(&key)
            .map_err(|_| storage_fault(&StorageError::Corrupt("an identity key")))?;
        trust.insert(UserId::from_bytes(user), key);
    }
    Ok(trust)
}

pub(crate) fn member_id(member: Member) -> MemberId {
    let mut id = [0u8; 32];
    let (user, device) = id.split_at_mut(16);
    user.copy_from_slice(member.user.as_bytes());
    device.copy_from_slice(member.device.as_bytes());
    id
}

/// The public state after the submission's commit, if it is valid at
/// `state` (the head), and its Welcome is made for exactly the KeyPackages it
/// adds (with a bundle beside it), so every added device can join.
pub(crate) async fn commit<S: Storage>(
    storage: &S,
    state: Vec<u8>,
    submission: &Submission,
) -> Result<Validated, ServerError> {
    let commit = submission.commit.clone();
    let (welcome, has_bundle) = (submission.welcome.clone(), submission.bundle.is_some());
    let (public, staged) = blocking(move || {
        let public = PublicAlbum::from_bytes(&state)?;
        let staged = public.stage(&commit)?;
        Ok::<_, MlsError>((public, staged))
    })
    .await?
    .map_err(|e| refusal(&e))?;
    let trust = trust(storage, staged.named_users()).await?;
    let now = now();
    blocking(move || {
        let mut public = public;
        let applied = public.apply(staged, Validation { trust: &trust, now }).map_err(|e| refusal(&e))?;
        let mut made_for = match &welcome {
            Some(w) => welcome_recipients(w).map_err(|_| welcome_mismatch())?,
            None => Vec::new(),
        };
        let mut added: Vec<Vec<u8>> = applied.welcomed.iter().map(|(_, r)| r.clone()).collect();
        made_for.sort();
        added.sort();
        let wants_bundle = !added.is_empty();
        if made_for != added || has_bundle != wants_bundle {
            return Err(welcome_mismatch());
        }
        Ok(Validated {
            state: public.to_bytes().map_err(|e| refusal(&e))?,
            added: applied.added.into_iter().map(member_id).collect(),
            removed: applied.removed.into_iter().map(member_id).collect(),
            welcomed: applied.welcomed.into_iter().map(|(m, r)| (member_id(m), r)).collect(),
            spent: applied.spent,
        })
    })
    .await?
}

fn welcome_mismatch() -> ServerError {
    ServerError::Refused(Refused::Invalid(Invalid::Welcome))
}

/// The public state a genesis starts `album` at, if it verifies.
pub(crate) async fn genesis<S: Storage>(
    storage: &S,
    album: &[u8],
    base: Epoch,
    genesis: Genesis,
) -> Result<(Vec<u8>, Vec<MemberId>), ServerError> {
    let bad = ServerError::Refused(Refused::Invalid(Invalid::Malformed));
    let album = capsule_amk::AlbumId::from_bytes(album.try_into().map_err(|_| bad)?);
    let opened = blocking(move || PublicAlbum::open(album, &genesis)).await?.map_err(|e| refusal(&e))?;
    let trust = trust(storage, opened.named_users()).await?;
    let now = now();
    let public = blocking(move || opened.check(Validation { trust: &trust, now })).await?.map_err(|e| refusal(&e))?;
    // The state must be the group's at the album's first epoch.
    if public.epoch() != base {
        return Err(ServerError::Refused(Refused::Invalid(Invalid::Protocol)));
    }
    let members = public.members().into_iter().map(member_id).collect();
    Ok((public.to_bytes().map_err(|e| refusal(&e))?, members))
}

/// A certificate of `user`, verified under `key` now, as the directory files it.
fn certified(user: UserId, key: &IdentityPublicKey, certificate: &[u8]) -> Result<Certified, ServerError> {
    let refused = |r| ServerError::Directory(r);
    let cert = DeviceCertificate::from_bytes(certificate).map_err(|_| refused(DirectoryRefusal::Malformed))?;
    if cert.user() != user {
        return Err(refused(DirectoryRefusal::BadCertificate));
    }
    let trust = BTreeMap::from([(user, key.clone())]);
    cert.verify(cert.device_key(), now(), &trust).map_err(|_| refused(DirectoryRefusal::BadCertificate))?;
    Ok(Certified {
        device: *cert.device().as_bytes(),
        not_after: cert.validity().not_after().0,
        certificate: certificate.to_vec(),
    })
}

/// A user's registration, checked: its key decodes and its certificate
/// verifies under it. Returns the key's bytes and the certificate to file.
pub(crate) fn registration(user: UserId, r: &RegisterUser) -> Result<(Vec<u8>, Certified), ServerError> {
    let key = IdentityPublicKey::from_bytes(&r.identity_key)
        .map_err(|_| ServerError::Directory(DirectoryRefusal::Malformed))?;
    let first = certified(user, &key, &r.certificate)?;
    Ok((r.identity_key.clone(), first))
}

/// A device certificate of a registered user, checked under the user's key.
pub(crate) async fn device<S: Storage>(
    storage: &S,
    user: UserId,
    certificate: &[u8],
) -> Result<Certified, ServerError> {
    let trust = trust(storage, [user]).await?;
    let key = trust.get(&user).ok_or(ServerError::Directory(DirectoryRefusal::UnknownUser))?;
    certified(user, key, certificate)
}

/// The device that signed a request (see `capsule_chain::wire::RequestAuth`):
/// its header decodes, its time is near the server's clock, the directory
/// lists the device with a certificate that verifies now, the signature over
/// the request verifies under the certified key, and its nonce is new.
pub(crate) async fn caller<S: Storage>(
    storage: &S,
    method: &str,
    path_and_query: &str,
    header: Option<&[u8]>,
    body: &[u8],
) -> Result<MemberId, ServerError> {
    let refused = ServerError::Unauthenticated;
    let header = header.ok_or(refused(AuthRefusal::Missing))?;
    let bytes = crate::http::unhex(header, 256).ok_or(refused(AuthRefusal::Malformed))?;
    let auth: RequestAuth = wire::decode(&bytes, 256).map_err(|_| refused(AuthRefusal::Malformed))?;
    let signature: [u8; 64] = auth.signature.as_slice().try_into().map_err(|_| refused(AuthRefusal::Malformed))?;
    let now = now();
    if auth.time.abs_diff(now.0) > AUTH_WINDOW_SECS {
        return Err(refused(AuthRefusal::Clock));
    }
    let member = member_id(Member {
        user: UserId::from_bytes(auth.user),
        device: capsule_identity::DeviceId::from_bytes(auth.device),
    });
    let (key, certificate) =
        storage.certificate(member).await.map_err(|e| storage_fault(&e))?.ok_or(refused(AuthRefusal::UnknownDevice))?;
    let corrupt = |_| storage_fault(&StorageError::Corrupt("a directory entry"));
    let key = IdentityPublicKey::from_bytes(&key).map_err(corrupt)?;
    let certificate = DeviceCertificate::from_bytes(&certificate).map_err(corrupt)?;
    let user = UserId::from_bytes(auth.user);
    let trust = BTreeMap::from([(user, key)]);
    certificate.verify(certificate.device_key(), now, &trust).map_err(|_| refused(AuthRefusal::Certificate))?;
    let message = wire::request_message(method, path_and_query, body, &auth);
    verify_device_signature(certificate.device_key(), &message, &signature)
        .map_err(|_| refused(AuthRefusal::Signature))?;
    // Remembered until the time window would refuse it anyway.
    let expires = auth.time.saturating_add(AUTH_WINDOW_SECS);
    if !storage.remember_nonce(member, auth.nonce, now.0, expires).await.map_err(|e| storage_fault(&e))? {
        return Err(refused(AuthRefusal::Replayed));
    }
    Ok(member)
}

/// How long a KeyPackage must stay valid to be handed out: the adder commits
/// with it, and every member checks its lifetime, after the claim.
pub(crate) fn usable_from(margin: core::time::Duration) -> u64 {
    now().0.saturating_add(margin.as_secs())
}

/// An upload of `caller`'s KeyPackages, each checked as an adding member
/// would (OpenMLS's validation, the certificate against the directory now),
/// each of the caller's own device, each flagged last-resort exactly where it
/// was uploaded as one.
pub(crate) async fn key_packages<S: Storage>(
    storage: &S,
    caller: MemberId,
    upload: KeyPackageUpload,
) -> Result<(Vec<Filed>, Option<Filed>), ServerError> {
    let refused = ServerError::KeyPackage;
    let (user_bytes, _) = caller.split_at(16);
    let user = UserId::from_bytes(user_bytes.try_into().map_err(|_| ServerError::Unavailable)?);
    let trust = trust(storage, [user]).await?;
    let now = now();
    blocking(move || {
        let check = |bytes: Vec<u8>, last_resort: bool| {
            let info = inspect_key_package(&bytes, Validation { trust: &trust, now }).map_err(|e| match e {
                // Only the caller's user's key is trusted here.
                MlsError::UnknownIdentity { .. } => refused(KeyPackageRefusal::NotYours),
                MlsError::Identity(_) | MlsError::ForeignCredential | MlsError::LeafKeyMismatch => {
                    refused(KeyPackageRefusal::Certificate)
                }
                e if e.is_internal() => refusal(&e),
                _ => refused(KeyPackageRefusal::Invalid),
            })?;
            if member_id(info.member) != caller {
                return Err(refused(KeyPackageRefusal::NotYours));
            }
            if info.last_resort != last_resort {
                return Err(refused(KeyPackageRefusal::Invalid));
            }
            Ok(Filed { reference: info.reference, not_after: info.not_after, bytes })
        };
        let regular = upload.key_packages.into_iter().map(|kp| check(kp, false)).collect::<Result<Vec<_>, _>>()?;
        let last_resort = upload.last_resort.map(|kp| check(kp, true)).transpose()?;
        Ok((regular, last_resort))
    })
    .await?
}

/// What `caller`, a member of the album whose public state is `state`, may
/// claim of `user`'s KeyPackages: `None` if nothing (it may add devices of its
/// own user, or of anyone as an admin), else the devices of `user` already
/// in the album (they need none).
pub(crate) async fn claimable(
    state: Vec<u8>,
    caller: MemberId,
    user: UserId,
) -> Result<Option<Vec<[u8; 16]>>, ServerError> {
    let caller_user = caller.get(..16).and_then(|u| <[u8; 16]>::try_from(u).ok()).ok_or(ServerError::Unavailable)?;
    let caller_user = UserId::from_bytes(caller_user);
    blocking(move || {
        let public = PublicAlbum::from_bytes(&state).map_err(|e| {
            tracing::error!(error = %e, "a stored public state does not load");
            ServerError::Unavailable
        })?;
        if caller_user != user && !public.context().metadata.is_admin(&caller_user) {
            return Ok(None);
        }
        Ok(Some(public.members().into_iter().filter(|m| m.user == user).map(|m| *m.device.as_bytes()).collect()))
    })
    .await?
}
