//! A throwaway PostgreSQL cluster for the tests: `initdb` and `pg_ctl` on a
//! Unix socket in a temporary directory, stopped and removed afterwards.
//! When the binaries are missing, Debian's `postgresql` package is installed
//! if this machine can (root, with apt-get); otherwise the error names what
//! to install.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

/// A running cluster; dropping it stops it and removes its files.
pub(crate) struct Cluster<'a> {
    sh: &'a Shell,
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
}

impl Cluster<'_> {
    /// The connection string of its `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!("host={} port=5432 user=postgres dbname=postgres", self.dir.display())
    }
}

fn is_root(sh: &Shell) -> bool {
    cmd!(sh, "id -u").quiet().read().is_ok_and(|uid| uid.trim() == "0")
}

/// The directory holding `initdb` and `pg_ctl`: Debian keeps them off the PATH.
fn find_bin(sh: &Shell) -> Option<PathBuf> {
    if let Ok(bin) = cmd!(sh, "pg_config --bindir").quiet().ignore_stderr().read() {
        let bin = PathBuf::from(bin.trim());
        if bin.join("initdb").exists() {
            return Some(bin);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn install(sh: &Shell) -> Result<()> {
    let apt = Path::new("/usr/bin/apt-get").exists();
    if !(is_root(sh) && apt) {
        bail!(
            "PostgreSQL's server binaries (initdb, pg_ctl) are missing. Install Debian's `postgresql` package \
             (apt-get install postgresql), or run `cargo xtask test-matrix --no-postgres` to skip the PostgreSQL tests"
        );
    }
    crate::section("installing Debian's postgresql package (for the PostgreSQL tests)");
    let _frontend = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    cmd!(sh, "apt-get update -q").run()?;
    cmd!(sh, "apt-get install -y -q --no-install-recommends postgresql").run()?;
    Ok(())
}

/// Starts a cluster, installing PostgreSQL first if it must.
pub(crate) fn start(sh: &Shell) -> Result<Cluster<'_>> {
    let bin = match find_bin(sh) {
        Some(bin) => bin,
        None => {
            install(sh)?;
            find_bin(sh).context("PostgreSQL installed, but initdb is still not found")?
        }
    };
    let dir = std::env::temp_dir().join(format!("capsule-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // initdb refuses to run as root: the cluster belongs to the package's `postgres` user.
    let as_postgres = is_root(sh);
    if as_postgres {
        let d = &dir;
        cmd!(sh, "chown postgres:postgres {d}").run()?;
    }
    let cluster = Cluster { sh, bin, dir, as_postgres };
    crate::section("starting a throwaway PostgreSQL cluster");
    let data = cluster.dir.join("data");
    let log = cluster.dir.join("log");
    let socket = cluster.dir.display().to_string();
    cluster.run("initdb", &["-D", &path(&data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])?;
    // Unix socket only; fsync off: a test cluster outlives no machine crash.
    let options = format!("-k {socket} -c listen_addresses= -c fsync=off -c max_connections=200");
    cluster.run("pg_ctl", &["-D", &path(&data), "-l", &path(&log), "-o", &options, "-w", "start"])?;
    Ok(cluster)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Cluster<'_> {
    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let program = self.bin.join(tool);
        let sh = self.sh;
        if self.as_postgres {
            cmd!(sh, "runuser -u postgres -- {program} {args...}").quiet().run()?;
        } else {
            cmd!(sh, "{program} {args...}").quiet().run()?;
        }
        Ok(())
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        let data = path(&self.dir.join("data"));
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
