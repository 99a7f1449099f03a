//! A scratch directory per fuzzing process, for targets that need files
//! (SQLite databases): in `/dev/shm` when there is one, removed when the
//! process ends normally, and swept of dead processes' leftovers.

use std::path::{Path, PathBuf};

/// A process's scratch directory, removed on drop.
pub struct Dir(PathBuf);

impl Dir {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This process's directory under `name`.
pub fn directory(name: &str) -> Dir {
    let shm = PathBuf::from("/dev/shm");
    let root = if shm.is_dir() { shm } else { std::env::temp_dir() }.join(name);
    // Directories of fuzzing processes that are gone (a crash skips `Drop`).
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
        if pid.is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    Dir(dir)
}
