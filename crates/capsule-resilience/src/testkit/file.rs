//! A chain kept in a folder, for crash tests whose server must outlive the
//! processes that talk to it: files for storage, `capsule-chain`'s rules for
//! every decision.

use std::path::{Path, PathBuf};

use capsule_chain::rules::{self, Decision, Limits};
use capsule_mls::{CommitHash, Epoch};

use crate::{ChainEntry, ChainError, CommitChain, Submission, SubmitAnswer, WelcomeBlobs};

/// One album's chain in `folder`: `NNNNNNNNNNNN.commit` (+ `.welcome`, `.bundle`).
/// An entry becomes visible when its commit file is renamed into place, so a
/// crash never leaves half an entry.
#[derive(Clone, Debug)]
pub struct FileChain {
    folder: PathBuf,
    album: Vec<u8>,
}

impl FileChain {
    /// The chain of `album` (a new group, from epoch 0) in `folder` (created
    /// if missing).
    ///
    /// # Errors
    /// [`ChainError::Unavailable`] if the folder cannot be created.
    pub fn open(folder: &Path, album: &[u8]) -> Result<Self, ChainError> {
        std::fs::create_dir_all(folder).map_err(|_| ChainError::Unavailable)?;
        Ok(Self { folder: folder.to_path_buf(), album: album.to_vec() })
    }

    fn path(&self, epoch: Epoch, ext: &str) -> PathBuf {
        self.folder.join(format!("{:012}.{ext}", epoch.0))
    }

    fn read(&self, epoch: Epoch) -> Option<ChainEntry> {
        let commit = std::fs::read(self.path(epoch, "commit")).ok()?;
        Some(ChainEntry {
            epoch,
            commit_hash: CommitHash::of(&commit),
            commit,
            welcome: std::fs::read(self.path(epoch, "welcome")).ok(),
            bundle: std::fs::read(self.path(epoch, "bundle")).ok(),
        })
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), ChainError> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|_| ChainError::Unavailable)?;
        std::fs::rename(&tmp, path).map_err(|_| ChainError::Unavailable)
    }

    /// Every entry, in order.
    #[must_use]
    pub fn entries(&self) -> Vec<ChainEntry> {
        (0..).map_while(|e| self.read(Epoch(e))).collect()
    }
}

impl CommitChain for FileChain {
    fn submit(&mut self, s: &Submission) -> Result<SubmitAnswer, ChainError> {
        rules::check_submission(&self.album, s, &Limits::default()).map_err(ChainError::Refused)?;
        let hash = CommitHash::of(&s.commit);
        let entries = self.entries();
        let held_at = entries.iter().find(|e| e.commit_hash == hash).map(|e| e.epoch);
        let head = Epoch(u64::try_from(entries.len()).map_err(|_| ChainError::Unavailable)?);
        let decision = rules::decide(held_at, head, s.epoch);
        if decision == Decision::Append {
            if let Some(w) = &s.welcome {
                self.write_atomically(&self.path(head, "welcome"), w)?;
            }
            if let Some(b) = &s.bundle {
                self.write_atomically(&self.path(head, "bundle"), b)?;
            }
            self.write_atomically(&self.path(head, "commit"), &s.commit)?;
        }
        Ok(decision.answer(s.epoch))
    }

    fn fetch(&mut self, from_epoch: Epoch) -> Result<Vec<ChainEntry>, ChainError> {
        Ok(self
            .entries()
            .into_iter()
            .skip_while(|e| e.epoch < from_epoch)
            .map(|e| ChainEntry { welcome: None, bundle: None, ..e })
            .collect())
    }

    fn head(&mut self) -> Result<Epoch, ChainError> {
        u64::try_from(self.entries().len()).map(Epoch).map_err(|_| ChainError::Unavailable)
    }

    fn welcome(&mut self, epoch: Epoch) -> Result<Option<WelcomeBlobs>, ChainError> {
        Ok(self.read(epoch).map(|e| WelcomeBlobs { welcome: e.welcome, bundle: e.bundle }))
    }

    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> Result<(), ChainError> {
        let header = rules::check_fingerprint(&self.album, fingerprint).map_err(ChainError::Refused)?;
        let sender: String = [header.sender.user.as_bytes().as_slice(), header.sender.device.as_bytes().as_slice()]
            .concat()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.write_atomically(&self.folder.join(format!("{sender}.fingerprint")), fingerprint)
    }

    fn fingerprints(&mut self) -> Result<Vec<Vec<u8>>, ChainError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.folder)
            .map_err(|_| ChainError::Unavailable)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "fingerprint"))
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).map_err(|_| ChainError::Unavailable)).collect()
    }
}
