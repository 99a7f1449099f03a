//! The conformance suite: what every [`CommitChain`] must answer. The
//! in-memory double and the server on each database run it, so the rule has
//! one meaning however it is stored. Commits are made by a real device
//! ([`CommitSource`]), because a chain reads their public framing.

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_mls::testkit::{Directory, TestDevice};
use capsule_mls::{Album, Change, MlsError};

use crate::rules::Limits;
use crate::{ChainError, CommitChain, CommitHash, Epoch, Refused, Submission, SubmitAnswer, WelcomeBlobs};

/// A real device's album, making the commits the suite submits.
#[derive(Debug)]
pub struct CommitSource {
    directory: Directory,
    device: TestDevice,
    album: Album,
}

impl CommitSource {
    /// A new album `id` of one device (epoch 0).
    ///
    /// # Errors
    /// MLS errors (none expected).
    pub fn new(id: [u8; 16]) -> Result<Self, MlsError> {
        let mut directory = Directory::new(id[0]);
        let user = directory.user(1)?;
        let device = directory.device(user)?;
        let metadata = AlbumMetadata::new(AlbumId::from_bytes(id), HistoryPolicy::Full, [user].into())?;
        let album = Album::create(&device.provider, &device.me, metadata)?;
        Ok(Self { directory, device, album })
    }

    /// The album id (its MLS group id).
    #[must_use]
    pub fn album(&self) -> Vec<u8> {
        self.album.id().as_bytes().to_vec()
    }

    /// The commit this device makes next (an AMK rotation at its epoch), kept
    /// pending; asked again, the same one.
    ///
    /// # Errors
    /// MLS errors (none expected).
    pub fn stage(&mut self) -> Result<Submission, MlsError> {
        let out = self.album.stage(
            &self.device.provider,
            &self.device.me,
            &Change::RotateAmk,
            self.directory.validation(),
        )?;
        Ok(Submission::from(&out))
    }

    /// Another commit for the same epoch, replacing the pending one (what a
    /// racing device would submit).
    ///
    /// # Errors
    /// MLS errors (none expected).
    pub fn rival(&mut self) -> Result<Submission, MlsError> {
        self.album.reject(&self.device.provider)?;
        self.stage()
    }

    /// The chain took the pending commit: merge it.
    ///
    /// # Errors
    /// MLS errors (none expected).
    pub fn accepted(&mut self) -> Result<(), MlsError> {
        self.album.confirm(&self.device.provider).map(drop)
    }

    /// This device's fingerprint of its current epoch.
    ///
    /// # Errors
    /// MLS errors (none expected).
    pub fn fingerprint(&self) -> Result<Vec<u8>, MlsError> {
        self.album.fingerprint(&self.device.provider, &self.device.me, None)
    }

    /// An MLS message that is not a commit: the Welcome of an add this device
    /// stages and drops. Call it with no commit pending.
    ///
    /// # Errors
    /// MLS errors (none expected).
    pub fn welcome_message(&mut self) -> Result<Vec<u8>, MlsError> {
        let joiner = self.directory.device(self.device.user)?;
        let change = Change::AddDevice { key_package: joiner.key_package()? };
        let out = self.album.stage(&self.device.provider, &self.device.me, &change, self.directory.validation())?;
        self.album.reject(&self.device.provider)?;
        out.welcome.ok_or(MlsError::Refused("an add makes a Welcome"))
    }
}

/// Commits of `devices` separate one-device groups that all carry album id
/// `album`, each for every epoch `0..epochs`: rivals for the same positions
/// (a chain reads only their framing), for races and load.
///
/// # Errors
/// MLS errors (none expected).
pub fn racing_commits(album: [u8; 16], devices: usize, epochs: u64) -> Result<Vec<Vec<Submission>>, MlsError> {
    (0..devices)
        .map(|_| {
            let mut src = CommitSource::new(album)?;
            (0..epochs)
                .map(|_| {
                    let s = src.stage()?;
                    src.accepted()?;
                    Ok(s)
                })
                .collect()
        })
        .collect()
}

/// How the suite reaches the chain under test.
pub trait Harness {
    /// A connection to one album's chain.
    type Chain: CommitChain;

    /// Registers `album`, whose group starts at `base`, on a chain keeping the
    /// last `keep` epochs (`None`: all), and connects to it.
    fn open(&mut self, album: &[u8], base: Epoch, keep: Option<u64>) -> Self::Chain;

    /// Connects to an album nobody registered.
    fn unknown(&mut self, album: &[u8]) -> Self::Chain;

    /// The size limits the chain enforces.
    fn limits(&self) -> Limits;
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn mls(e: MlsError) -> String {
    format!("making a commit: {e}")
}

fn chain_state(chain: &mut impl CommitChain) -> Result<(Epoch, Vec<CommitHash>), String> {
    let head = chain.head().map_err(|e| format!("head: {e}"))?;
    let mut from = Epoch::ZERO;
    // The oldest epoch still kept: a pruned chain names it.
    let entries = loop {
        match chain.fetch(from) {
            Ok(entries) => break entries,
            Err(ChainError::Pruned(base)) if base > from => from = base,
            Err(e) => return Err(format!("fetch: {e}")),
        }
    };
    Ok((head, entries.iter().map(|e| e.commit_hash).collect()))
}

/// Runs every check against `harness`; the first failure is returned.
///
/// # Errors
/// What the chain answered wrong.
pub fn run(harness: &mut impl Harness) -> Result<(), String> {
    an_empty_album(harness)?;
    first_come_first_served_and_idempotent(harness)?;
    entries_in_order_from_any_epoch(harness)?;
    welcomes_apart_from_entries(harness)?;
    refusals_change_nothing(harness)?;
    an_unknown_album(harness)?;
    retention_prunes_old_epochs(harness)?;
    a_group_starting_later(harness)?;
    a_fingerprint_board(harness)?;
    Ok(())
}

fn an_empty_album(h: &mut impl Harness) -> Result<(), String> {
    let src = CommitSource::new([0xC1; 16]).map_err(mls)?;
    let mut chain = h.open(&src.album(), Epoch::ZERO, None);
    ensure!(chain.head() == Ok(Epoch::ZERO), "a new album's head is its base");
    ensure!(chain.fetch(Epoch::ZERO) == Ok(Vec::new()), "a new album has no entries");
    ensure!(chain.welcome(Epoch::ZERO) == Ok(None), "a new album has no Welcome");
    Ok(())
}

fn first_come_first_served_and_idempotent(h: &mut impl Harness) -> Result<(), String> {
    let mut src = CommitSource::new([0xC2; 16]).map_err(mls)?;
    let mut chain = h.open(&src.album(), Epoch::ZERO, None);
    let first = src.stage().map_err(mls)?;
    let second = src.rival().map_err(mls)?;
    let got = chain.submit(&second);
    ensure!(got == Ok(SubmitAnswer::Accepted { epoch: Epoch(0) }), "the first commit of an epoch wins: {got:?}");
    let got = chain.submit(&first);
    ensure!(got == Ok(SubmitAnswer::Conflict { head: Epoch(1) }), "a rival of a taken epoch conflicts: {got:?}");
    for _ in 0..2 {
        let got = chain.submit(&second);
        ensure!(got == Ok(SubmitAnswer::Accepted { epoch: Epoch(0) }), "the same commit answers its position: {got:?}");
    }
    let (head, hashes) = chain_state(&mut chain)?;
    ensure!(head == Epoch(1), "one entry, whatever was submitted twice: head {head}");
    ensure!(hashes == vec![CommitHash::of(&second.commit)], "the winner is the entry");
    Ok(())
}

fn entries_in_order_from_any_epoch(h: &mut impl Harness) -> Result<(), String> {
    let mut src = CommitSource::new([0xC3; 16]).map_err(mls)?;
    let mut chain = h.open(&src.album(), Epoch::ZERO, None);
    let mut commits = Vec::new();
    for e in 0..5 {
        let s = src.stage().map_err(mls)?;
        let got = chain.submit(&s);
        ensure!(got == Ok(SubmitAnswer::Accepted { epoch: Epoch(e) }), "commit {e}: {got:?}");
        src.accepted().map_err(mls)?;
        commits.push(s.commit);
    }
    ensure!(chain.head() == Ok(Epoch(5)), "five entries");
    for from in 0..=6u64 {
        let entries = chain.fetch(Epoch(from)).map_err(|e| format!("fetch from {from}: {e}"))?;
        let want: Vec<&Vec<u8>> = commits.iter().skip(usize::try_from(from).unwrap_or(usize::MAX)).collect();
        ensure!(entries.len() == want.len(), "fetch from {from}: {} entries, not {}", entries.len(), want.len());
        for ((entry, commit), epoch) in entries.iter().zip(want).zip(from..) {
            ensure!(entry.epoch == Epoch(epoch) && entry.commit == *commit, "fetch from {from}: entry {epoch}");
            ensure!(entry.commit_hash == CommitHash::of(commit), "fetch from {from}: the hash of entry {epoch}");
            ensure!(entry.welcome.is_none() && entry.bundle.is_none(), "entries come without Welcomes");
        }
    }
    Ok(())
}

fn welcomes_apart_from_entries(h: &mut impl Harness) -> Result<(), String> {
    let mut src = CommitSource::new([0xC4; 16]).map_err(mls)?;
    let mut chain = h.open(&src.album(), Epoch::ZERO, None);
    let blobs = WelcomeBlobs { welcome: Some(b"welcome for a joiner".to_vec()), bundle: Some(vec![7; 300]) };
    let s = Submission { welcome: blobs.welcome.clone(), bundle: blobs.bundle.clone(), ..src.stage().map_err(mls)? };
    ensure!(chain.submit(&s) == Ok(SubmitAnswer::Accepted { epoch: Epoch(0) }), "accepted");
    src.accepted().map_err(mls)?;
    let plain = src.stage().map_err(mls)?;
    ensure!(chain.submit(&plain) == Ok(SubmitAnswer::Accepted { epoch: Epoch(1) }), "accepted");
    let got = chain.welcome(Epoch(0));
    ensure!(got == Ok(Some(blobs)), "the Welcome and bundle stored with the commit: {got:?}");
    let got = chain.welcome(Epoch(1));
    ensure!(got == Ok(Some(WelcomeBlobs::default())), "a commit without a Welcome: {got:?}");
    ensure!(chain.welcome(Epoch(2)) == Ok(None), "no commit, no Welcome");
    Ok(())
}

fn refusals_change_nothing(h: &mut impl Harness) -> Result<(), String> {
    let mut src = CommitSource::new([0xC5; 16]).map_err(mls)?;
    let mut other = CommitSource::new([0xC6; 16]).map_err(mls)?;
    let mut chain = h.open(&src.album(), Epoch::ZERO, None);
    let s = src.stage().map_err(mls)?;
    ensure!(chain.submit(&s) == Ok(SubmitAnswer::Accepted { epoch: Epoch(0) }), "accepted");
    src.accepted().map_err(mls)?;
    let before = chain_state(&mut chain)?;
    let welcome = src.welcome_message().map_err(mls)?;
    let next = src.stage().map_err(mls)?;
    let limits = h.limits();
    let too_large = usize::try_from(limits.welcome.saturating_add(1)).unwrap_or(usize::MAX);
    let cases = [
        (Submission { commit: b"not an mls message".to_vec(), ..next.clone() }, Refused::Undecodable),
        (Submission { commit: Vec::new(), ..next.clone() }, Refused::Undecodable),
        (Submission { commit: welcome, ..next.clone() }, Refused::NotACommit),
        (other.stage().map_err(mls)?, Refused::WrongAlbum),
        (Submission { epoch: Epoch(2), ..next.clone() }, Refused::WrongEpoch { claimed: Epoch(2), framed: Epoch(1) }),
        (Submission { epoch: Epoch(0), ..next.clone() }, Refused::WrongEpoch { claimed: Epoch(0), framed: Epoch(1) }),
        (Submission { welcome: Some(vec![0; too_large]), ..next.clone() }, Refused::TooLarge { limit: limits.welcome }),
    ];
    for (i, (submission, refused)) in cases.iter().enumerate() {
        let got = chain.submit(submission);
        ensure!(got == Err(ChainError::Refused(*refused)), "case {i}: {got:?}, not {refused:?}");
        ensure!(chain_state(&mut chain)? == before, "case {i}: a refusal changed the chain");
    }
    ensure!(chain.submit(&next) == Ok(SubmitAnswer::Accepted { epoch: Epoch(1) }), "the honest commit still goes in");
    Ok(())
}

fn an_unknown_album(h: &mut impl Harness) -> Result<(), String> {
    let mut src = CommitSource::new([0xC7; 16]).map_err(mls)?;
    let mut chain = h.unknown(&src.album());
    let s = src.stage().map_err(mls)?;
    ensure!(chain.submit(&s) == Err(ChainError::UnknownAlbum), "submit to an unknown album");
    ensure!(chain.fetch(Epoch::ZERO) == Err(ChainError::UnknownAlbum), "fetch from an unknown album");
    ensure!(chain.head() == Err(ChainError::UnknownAlbum), "head of an unknown album");
    ensure!(chain.welcome(Epoch::ZERO) == Err(ChainError::UnknownAlbum), "Welcome of an unknown album");
    Ok(())
}

fn retention_prunes_old_epochs(h: &mut impl Harness) -> Result<(), String> {
    let mut src = CommitSource::new([0xC8; 16]).map_err(mls)?;
    let mut chain = h.open(&src.album(), Epoch::ZERO, Some(2));
    let mut first = None;
    for e in 0..4 {
        let s = src.stage().map_err(mls)?;
        ensure!(chain.submit(&s) == Ok(SubmitAnswer::Accepted { epoch: Epoch(e) }), "commit {e}");
        src.accepted().map_err(mls)?;
        first.get_or_insert(s);
    }
    let got = chain.fetch(Epoch(1));
    ensure!(got == Err(ChainError::Pruned(Epoch(2))), "history before the last two epochs is gone: {got:?}");
    ensure!(chain.welcome(Epoch(0)) == Err(ChainError::Pruned(Epoch(2))), "and its Welcomes");
    let kept = chain.fetch(Epoch(2)).map_err(|e| format!("fetch kept: {e}"))?;
    ensure!(kept.iter().map(|e| e.epoch).collect::<Vec<_>>() == vec![Epoch(2), Epoch(3)], "the last two are kept");
    // A pruned commit sent again is no longer known: it conflicts with the head.
    if let Some(first) = first {
        let got = chain.submit(&first);
        ensure!(got == Ok(SubmitAnswer::Conflict { head: Epoch(4) }), "a pruned commit again: {got:?}");
    }
    ensure!(chain.head() == Ok(Epoch(4)), "head");
    Ok(())
}

fn a_group_starting_later(h: &mut impl Harness) -> Result<(), String> {
    let mut src = CommitSource::new([0xC9; 16]).map_err(mls)?;
    // The group moved to epoch 3 before the chain knew it (an album moved here).
    for _ in 0..3 {
        src.stage().map_err(mls)?;
        src.accepted().map_err(mls)?;
    }
    let mut chain = h.open(&src.album(), Epoch(3), None);
    ensure!(chain.head() == Ok(Epoch(3)), "the head starts at the base");
    ensure!(chain.fetch(Epoch(2)) == Err(ChainError::Pruned(Epoch(3))), "nothing before the base");
    let s = src.stage().map_err(mls)?;
    ensure!(chain.submit(&s) == Ok(SubmitAnswer::Accepted { epoch: Epoch(3) }), "the first commit at the base");
    Ok(())
}

fn a_fingerprint_board(h: &mut impl Harness) -> Result<(), String> {
    let mut src = CommitSource::new([0xCA; 16]).map_err(mls)?;
    let other = CommitSource::new([0xCB; 16]).map_err(mls)?;
    let mut chain = h.open(&src.album(), Epoch::ZERO, None);
    ensure!(chain.fingerprints() == Ok(Vec::new()), "a new album's board is empty");
    let first = src.fingerprint().map_err(mls)?;
    ensure!(chain.post_fingerprint(&first) == Ok(()), "a member's fingerprint is filed");
    ensure!(chain.fingerprints() == Ok(vec![first.clone()]), "the board holds it");
    let refusals = [
        (other.fingerprint().map_err(mls)?, Refused::NotAFingerprint),
        (b"not a fingerprint".to_vec(), Refused::NotAFingerprint),
        (Vec::new(), Refused::NotAFingerprint),
        (vec![0; 5000], Refused::TooLarge { limit: crate::rules::FINGERPRINT_LIMIT }),
    ];
    for (i, (bytes, refused)) in refusals.iter().enumerate() {
        let got = chain.post_fingerprint(bytes);
        ensure!(got == Err(ChainError::Refused(*refused)), "board case {i}: {got:?}, not {refused:?}");
        ensure!(chain.fingerprints() == Ok(vec![first.clone()]), "board case {i}: a refusal changed the board");
    }
    // The same device again, a later epoch: its new one replaces the old.
    let s = src.stage().map_err(mls)?;
    ensure!(chain.submit(&s) == Ok(SubmitAnswer::Accepted { epoch: Epoch(0) }), "accepted");
    src.accepted().map_err(mls)?;
    let later = src.fingerprint().map_err(mls)?;
    ensure!(chain.post_fingerprint(&later) == Ok(()), "filed again");
    ensure!(chain.fingerprints() == Ok(vec![later]), "one per device, the last it posted");
    let mut unknown = h.unknown(&other.album());
    ensure!(unknown.fingerprints() == Err(ChainError::UnknownAlbum), "the board of an unknown album");
    let got = unknown.post_fingerprint(&other.fingerprint().map_err(mls)?);
    ensure!(got == Err(ChainError::UnknownAlbum), "posting to an unknown album: {got:?}");
    Ok(())
}
