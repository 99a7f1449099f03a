//! The simulator: operations, the world they act on, and the invariants.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use capsule::Device;
use capsule::Photo;
use std::num::NonZeroU32;

use capsule_amk::{AlbumId, AlbumUpgrade, AmkVersion, HistoryPolicy};
use capsule_identity::{DeviceId, IdentityKeyPair, IdentityPublicKey, IdentitySeed, UnixTime, UserId, Validity};
use capsule_mls::{Epoch, Member, RekeyId, RekeyReason, Validation};
use capsule_resilience::testkit::{Fault, FaultyChain, MemoryEscrow, MemoryServer, SimClock, TestChain, TestServer};
use capsule_resilience::{AlbumStatus, Change, IntentId, IntentState, ReconcileOutcome, ResilienceError, SyncClass};
use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

const ALBUM: AlbumId = AlbumId::from_bytes([0x51; 16]);
const NOW: UnixTime = UnixTime(1_800_000_000);

/// The key every simulated device's database is encrypted under.
fn db_key() -> capsule::store::DatabaseKey {
    capsule::store::DatabaseKey::from_bytes(&[0x51; 32])
}
/// Devices: Alice's two (admins), Bob's (admin), Carol's (member), the guest's.
const DEVICES: usize = 5;
const GUEST: usize = 4;
const ADMINS: [usize; 3] = [0, 1, 2];
const OWNERS: [u8; DEVICES] = [1, 1, 2, 3, 4];

/// One simulated step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A device proposes an AMK rotation.
    Rotate(usize),
    /// An admin device proposes adding the guest.
    AddGuest(usize),
    /// An admin device proposes removing the guest.
    RemoveGuest(usize),
    /// A device drives its intents.
    Sync(usize),
    /// A device reconciles with the chain.
    Reconcile(usize),
    /// A device that is not in the album joins from the newest Welcome for it.
    Join(usize),
    /// A device uploads a photo.
    Upload(usize),
    /// A fault on a device's next submission.
    Fault(usize, u8),
    /// A device's connection is cut or restored.
    Partition(usize, bool),
    /// A device's process crashes and restarts from its file.
    Crash(usize),
    /// Simulated time passes (seconds).
    Wait(u16),
    /// An admin device starts a full re-key; the application supplies a fresh
    /// KeyPackage for every other member, for the case it does not answer in time.
    Rekey(usize),
    /// One of Alice's two devices is lost: her other device removes it. The lost
    /// device keeps running (a thief's copy) and must not open later photos.
    LoseDevice(usize),
    /// Alice's other device adds this one of hers (back) from a fresh KeyPackage.
    AddDevice(usize),
    /// A device proposes a change the MLS layer refuses (an add from a
    /// KeyPackage that is not one): it must fail and not wedge the album.
    Refused(usize),
    /// The application cancels the device's latest change (refused when its
    /// commit may be in the chain).
    Cancel(usize),
    /// A bug merges a commit on this device that the chain never sees: the
    /// device must quarantine itself, and the user then re-bootstraps it.
    Diverge(usize),
    /// The user asks this device to re-bootstrap (refused unless it is stuck).
    Rebootstrap(usize),
    /// The server prunes the history every other member device has passed:
    /// this device, if further behind, cannot catch up and must be
    /// re-bootstrapped.
    Prune(usize),
    /// An admin device upgrades the album's history policy (capped or full).
    Upgrade(usize, bool),
    /// A modified client holding a copy of this admin device's store adds an
    /// impostor (a forged identity key for the guest's user, which only it
    /// trusts): the chain orders the commit and every honest device refuses
    /// it. The album must come back by a reboot from the last valid epoch.
    BadCommit(usize),
    /// The server starts lying: from now on the devices of this set (a bit
    /// per device; always a minority: one or two devices) are shown a copy of
    /// the chain that goes its own way. The lie lasts until healing starts
    /// (the server is caught); commits on both sides make a fork, which the
    /// fingerprints must show and a re-add or a reboot must heal.
    Equivocate(u8),
}

/// Which operations a seed draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// The first mix: rotations, guest add/remove and join, syncs,
    /// reconciliations, uploads, submission faults, partitions, crashes, time.
    /// Kept so the seeds that failed under it still replay their traces.
    Membership,
    /// Everything in [`Mix::Membership`], plus re-keys, lost-device removal,
    /// re-adding a device and any device rejoining.
    Full,
    /// Everything in [`Mix::Full`], plus the ways out of dead ends: refused
    /// changes, cancels, a device that diverges and is re-bootstrapped, a
    /// pruned chain, album upgrades; the simulated application re-adds every
    /// device that awaits a re-add.
    Recovery,
    /// Everything in [`Mix::Recovery`], plus forks: a commit every honest
    /// device refuses stored by the chain, and a server that shows a
    /// minority of devices another history; the simulated application
    /// publishes fingerprints, reads the sync reports, and takes the way out
    /// each names (re-bootstrap, the coordinator's re-add, the rebooter's reboot).
    Forks,
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Operations applied.
    pub ops: u64,
    /// Faults injected (submission faults, partitions, crashes).
    pub faults: u64,
    /// Invariant checks made.
    pub checks: u64,
    /// Devices re-bootstrapped and brought back by a re-add (quarantined,
    /// pruned out, or asked by the user).
    pub rebootstraps: u64,
    /// Changes the MLS layer refused, each ending `Failed` without wedging the album.
    pub refusals: u64,
    /// Forks made (a bad commit in the chain, a lie that split the album).
    pub forks: u64,
    /// Reboots into a new group.
    pub reboots: u64,
}

/// The outcome of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Counters.
    pub stats: Stats,
    /// The violation, with the shortest trace that reproduces it.
    pub violation: Option<(String, Vec<Op>)>,
    /// What every device showed after every step (status, epoch number, AMK
    /// version): what a replay of the seed must reproduce.
    pub observed: Vec<String>,
}

/// The operations a seed stands for.
#[must_use]
pub fn generate(seed: u64, len: usize, mix: Mix) -> Vec<Op> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut pick = |n: u32| usize::try_from(rng.next_u32() % n).unwrap_or(0);
    let kinds = match mix {
        Mix::Membership => 20,
        Mix::Full => 24,
        Mix::Recovery => 30,
        Mix::Forks => 32,
    };
    let full = matches!(mix, Mix::Full | Mix::Recovery | Mix::Forks);
    let recovery = matches!(mix, Mix::Recovery | Mix::Forks);
    let forks = mix == Mix::Forks;
    (0..len)
        .map(|_| {
            let device = pick(u32::try_from(DEVICES).unwrap_or(1));
            let admin = ADMINS.get(pick(3)).copied().unwrap_or(0);
            match pick(kinds) {
                0..=2 => Op::Rotate(device),
                3 => Op::AddGuest(admin),
                4 => Op::RemoveGuest(admin),
                5..=8 => Op::Sync(device),
                9..=10 => Op::Reconcile(device),
                11 => Op::Join(GUEST),
                12..=13 => Op::Upload(device),
                14..=15 => Op::Fault(device, u8::try_from(pick(5)).unwrap_or(0)),
                16 => Op::Partition(device, pick(2) == 0),
                17 => Op::Crash(device),
                18 if full => Op::Rekey(admin),
                19 if full => Op::LoseDevice(pick(2)),
                20 if full => Op::AddDevice(pick(2)),
                21 if full => Op::Join(device),
                22 if recovery => Op::Refused(device),
                23 if recovery => Op::Cancel(device),
                24 if recovery => Op::Diverge(device),
                25 if recovery => Op::Rebootstrap(device),
                26 if recovery => Op::Prune(device),
                27 if recovery => Op::Upgrade(admin, pick(2) == 0),
                28 if forks => Op::BadCommit(admin),
                // One device, or two: a minority of the five.
                29 if forks => {
                    let other = pick(u32::try_from(DEVICES).unwrap_or(1));
                    Op::Equivocate((1u8 << device) | if pick(2) == 0 { 1u8 << other } else { 0 })
                }
                _ => Op::Wait(u16::try_from(pick(900)).unwrap_or(0)),
            }
        })
        .collect()
}

struct Node {
    path: PathBuf,
    device: Option<Device>,
    chain: FaultyChain<TestChain>,
    /// The group (chain) the connection is to, and whether to the lying copy.
    group: Vec<u8>,
    on_lie: bool,
    /// Whether the device's network is cut (kept across reconnections).
    cut: bool,
}

/// A server showing some devices a copy of the chain that goes its own way.
struct Lie {
    copy: MemoryServer,
    /// The group whose chain is copied.
    group: Vec<u8>,
    /// A bit per device shown the copy.
    side: u8,
}

struct World {
    root: PathBuf,
    server: TestServer,
    clock: SimClock,
    trust: BTreeMap<UserId, IdentityPublicKey>,
    nodes: Vec<Node>,
    photos: Vec<Photo>,
    amk_keys: BTreeMap<AmkVersion, [u8; 32]>,
    /// Devices that know they were removed, with the AMK version they held then.
    evicted_at: BTreeMap<usize, AmkVersion>,
    escrow: MemoryEscrow,
    rekeys: u64,
    /// Which device started each re-key id.
    rekey_admins: BTreeMap<RekeyId, usize>,
    /// Every change each device proposed, latest last (what `Cancel` cancels).
    proposed: BTreeMap<usize, Vec<IntentId>>,
    /// Devices a bug put beside the chain: quarantine is expected of them
    /// until they re-join, and their local-only AMK is not the album's.
    diverged: std::collections::BTreeSet<usize>,
    /// Re-bootstrapped devices' fresh KeyPackages, until their re-add is proposed.
    awaiting: BTreeMap<usize, Vec<u8>>,
    /// Settle rounds before a re-add is proposed again.
    readd_wait: BTreeMap<usize, u32>,
    /// The newest group: the album id, then the generation after each reboot.
    group: Vec<u8>,
    lie: Option<Lie>,
    /// Devices that were shown the lie: quarantine is expected of them until
    /// they are back on the chain (re-added or rejoined).
    lied: std::collections::BTreeSet<usize>,
    /// A commit every honest device refuses is in the chain (until a reboot).
    bad: bool,
    /// Settle rounds a quarantined device has waited for a reboot.
    waiting: BTreeMap<usize, u32>,
    /// Devices whose sync report saw a fork, and devices that read one,
    /// since the fork was first seen.
    detected: std::collections::BTreeSet<usize>,
    reported: std::collections::BTreeSet<usize>,
    stats: Stats,
    observed: Vec<String>,
}

type Check = Result<(), String>;

/// What a device at the head shows: (epoch, authenticator), members, current AMK.
type HeadView = ((Epoch, Vec<u8>), Vec<Member>, AmkVersion);

/// The chain did not answer: weather, not a violation.
const fn unreachable(e: &capsule::Error) -> bool {
    matches!(e, capsule::Error::Chain(capsule_resilience::ChainError::Unavailable))
}

/// Alice's device that is not `d` (she has devices 0 and 1; only a device of the
/// same user adds or removes one of hers).
const fn alices_other(d: usize) -> usize {
    if d == 0 { 1 } else { 0 }
}

/// A device as the album's member list names it.
fn member_id(d: usize) -> Member {
    let owner = OWNERS.get(d).copied().unwrap_or(0);
    Member {
        user: UserId::from_bytes([owner; 16]),
        device: DeviceId::from_bytes([u8::try_from(d).unwrap_or(u8::MAX); 16]),
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

/// Which chain server a run talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chain {
    /// The in-memory double (the default: thousands of seeds in minutes).
    #[default]
    Memory,
    /// A real `capsule-server` on SQLite, over loopback HTTP.
    SqliteServer,
}

impl World {
    fn new(seed: u64, chain: Chain) -> Result<Self, String> {
        let root = std::env::temp_dir().join(format!("capsule-sim-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let server = match chain {
            Chain::Memory => TestServer::Memory(MemoryServer::new()),
            Chain::SqliteServer => TestServer::sqlite(&root.join("chain.sqlite"))?,
        };
        server.create_album(ALBUM.as_bytes(), Epoch::ZERO).map_err(|e| e.to_string())?;
        let clock = SimClock::new();
        let mut identities = BTreeMap::new();
        let mut trust = BTreeMap::new();
        for u in 1..=4u8 {
            let id = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([u; 32])).map_err(|e| e.to_string())?;
            trust.insert(UserId::from_bytes([u; 16]), id.public_key().clone());
            identities.insert(u, id);
        }
        let forever = Validity::new(UnixTime(0), UnixTime(u64::MAX)).map_err(|e| e.to_string())?;
        let mut nodes = Vec::new();
        for (i, owner) in OWNERS.iter().enumerate() {
            let path = root.join(format!("d{i}.db"));
            let user = UserId::from_bytes([*owner; 16]);
            let id = identities.get(owner).ok_or("identity")?;
            let n = u8::try_from(i).map_err(|e| e.to_string())?;
            let device = Device::enroll(&path, &db_key(), id, user, DeviceId::from_bytes([n; 16]), forever)
                .map_err(|e| e.to_string())?;
            let chain = FaultyChain::new(server.connect(ALBUM.as_bytes()), clock.clone());
            let group = ALBUM.as_bytes().to_vec();
            nodes.push(Node { path, device: Some(device), chain, group, on_lie: false, cut: false });
        }
        let mut w = Self {
            root,
            server,
            clock,
            trust,
            nodes,
            photos: Vec::new(),
            amk_keys: BTreeMap::new(),
            evicted_at: BTreeMap::new(),
            escrow: MemoryEscrow::new([0x0e; 32]),
            rekeys: 0,
            rekey_admins: BTreeMap::new(),
            proposed: BTreeMap::new(),
            diverged: std::collections::BTreeSet::new(),
            awaiting: BTreeMap::new(),
            readd_wait: BTreeMap::new(),
            group: ALBUM.as_bytes().to_vec(),
            lie: None,
            lied: std::collections::BTreeSet::new(),
            bad: false,
            waiting: BTreeMap::new(),
            detected: std::collections::BTreeSet::new(),
            reported: std::collections::BTreeSet::new(),
            stats: Stats::default(),
            observed: Vec::new(),
        };
        // Alice's first device creates the album; the others (not the guest) join.
        let admins = [UserId::from_bytes([1; 16]), UserId::from_bytes([2; 16])].into();
        w.dev(0)?.create_album(ALBUM, HistoryPolicy::Full, admins).map_err(|e| e.to_string())?;
        for (d, user) in [(1usize, 1u8), (2, 2), (3, 3)] {
            let kp = w.dev(d)?.key_package().map_err(|e| e.to_string())?;
            let change = if user == 1 {
                Change::AddDevice { key_package: kp }
            } else {
                Change::AddUser { user: UserId::from_bytes([user; 16]), directory: vec![kp] }
            };
            w.dev(0)?.propose(ALBUM, change).map_err(|e| e.to_string())?;
            w.sync(0)?;
            w.join_latest(d)?;
        }
        Ok(w)
    }

    fn dev(&self, d: usize) -> Result<&Device, String> {
        self.nodes.get(d).and_then(|n| n.device.as_ref()).ok_or_else(|| format!("device {d} missing"))
    }

    /// Device `d`'s connection to the chain of the group it is in (the newest
    /// one when it holds none), through the lying copy while it is shown the lie.
    fn connection(&mut self, d: usize) -> Result<&mut FaultyChain<TestChain>, String> {
        let held = self.nodes.get(d).and_then(|n| n.device.as_ref()).and_then(|dev| dev.group_id(ALBUM).ok());
        let group = held.unwrap_or_else(|| self.group.clone());
        let lie = self.lie.as_ref().filter(|l| l.side & (1 << d) != 0 && l.group == group);
        let on_lie = lie.is_some();
        let node = self.nodes.get(d).ok_or("node")?;
        if node.group != group || node.on_lie != on_lie {
            let connection = match lie {
                Some(l) => TestChain::Memory(l.copy.connect(&group)),
                None => self.server.connect(&group),
            };
            let node = self.nodes.get_mut(d).ok_or("node")?;
            node.chain = FaultyChain::new(connection, self.clock.clone());
            node.chain.partition(node.cut);
            node.group = group;
            node.on_lie = on_lie;
        }
        Ok(&mut self.nodes.get_mut(d).ok_or("node")?.chain)
    }

    /// Whether a quarantine of `d` is expected: a bug or a lie put it beside
    /// the chain, or a commit every honest device refuses is in it.
    fn excused(&self, d: usize) -> bool {
        let stale = self.dev(d).is_ok_and(|dev| dev.group_id(ALBUM).is_ok_and(|g| g != self.group));
        self.diverged.contains(&d) || self.lied.contains(&d) || self.bad || stale
    }

    fn validation(&self) -> Validation<'_> {
        Validation { trust: &self.trust, now: NOW }
    }

    fn active(&self, d: usize) -> bool {
        self.dev(d).is_ok_and(|dev| {
            dev.status(ALBUM).is_ok_and(|s| !matches!(s, AlbumStatus::NeedsRebootstrap | AlbumStatus::AwaitingReadd))
        })
    }

    fn status(&self, d: usize) -> Option<AlbumStatus> {
        self.dev(d).ok().and_then(|dev| dev.status(ALBUM).ok())
    }

    fn sync(&mut self, d: usize) -> Check {
        if !self.active(d) {
            return Ok(());
        }
        // A device a bug put beside the chain could send a commit built on its
        // local-only epoch, which honest devices refuse; the chain server is to
        // refuse it before ordering (not built yet), so here the device is made
        // to find out first.
        if self.diverged.contains(&d) && !matches!(self.status(d), Some(AlbumStatus::Quarantined { .. })) {
            self.reconcile(d)?;
            if !matches!(self.status(d), Some(AlbumStatus::Quarantined { .. })) {
                return Ok(());
            }
        }
        self.connection(d)?;
        let excused = self.excused(d);
        let v = Validation { trust: &self.trust, now: NOW };
        let node = self.nodes.get_mut(d).ok_or("node")?;
        let dev = node.device.as_ref().ok_or("device")?;
        match dev.sync(ALBUM, &mut node.chain, &self.clock, v) {
            Ok(_) => Ok(()),
            Err(e) if unreachable(&e) => Ok(()),
            // A device a bug or a lie put beside the chain refuses to send: expected.
            Err(capsule::Error::Resilience(ResilienceError::Quarantined { .. })) if excused => Ok(()),
            Err(e) => fail(format!("device {d} sync: {e}")),
        }
    }

    fn reconcile(&mut self, d: usize) -> Check {
        if !self.active(d) {
            return Ok(());
        }
        self.connection(d)?;
        let v = Validation { trust: &self.trust, now: NOW };
        let excused = self.excused(d);
        let node = self.nodes.get_mut(d).ok_or("node")?;
        let dev = node.device.as_ref().ok_or("device")?;
        match dev.reconcile_with_server(ALBUM, &mut node.chain, v) {
            Ok(ReconcileOutcome::Diverged { .. }) if excused => Ok(()),
            Ok(ReconcileOutcome::Diverged { local_epoch, server_epoch }) => {
                fail(format!("device {d} diverged ({local_epoch} vs {server_epoch}) under honest faults"))
            }
            Ok(ReconcileOutcome::UpToDate | ReconcileOutcome::Reconciled { .. })
                if self.lie.is_none() && node.group == self.group =>
            {
                // On the real chain, with nothing of a lie merged (the chain's
                // commit at its epoch is the one it applied last).
                self.lied.remove(&d);
                Ok(())
            }
            // Removed devices (the guest, a lost phone, a re-key straggler) cannot
            // catch up; a member wrongly left behind fails the healing check.
            Ok(_) => Ok(()),
            Err(e) if unreachable(&e) => Ok(()),
            Err(e) => fail(format!("device {d} reconcile: {e}")),
        }
    }

    /// The device joins from the newest Welcome made for one of its KeyPackages.
    fn join_latest(&mut self, d: usize) -> Check {
        // A Welcome for another device's KeyPackage, or one this device already
        // used, is refused: not a violation. If the add it answers was undone
        // later, the device learns that when it reconciles.
        // From the chain this device is shown: a device the server lies to
        // sees the Welcomes of the lie's copy only, and stays lied to.
        let lied_to = self.lie.as_ref().is_some_and(|l| l.side & (1 << d) != 0 && l.group == self.group);
        let entries = match self.lie.as_ref().filter(|_| lied_to) {
            Some(l) => l.copy.entries(&self.group),
            None => self.server.entries(&self.group),
        };
        let dev = self.dev(d)?;
        for entry in entries.iter().rev() {
            if let (Some(w), Some(b)) = (entry.welcome.as_deref(), entry.bundle.as_deref())
                && dev.join(w, b, self.validation()).is_ok()
            {
                // Entitled again to what the Welcome gave it; any re-key journal
                // it ran belonged to its old membership and is gone.
                self.evicted_at.remove(&d);
                self.rekey_admins.retain(|_, admin| *admin != d);
                self.diverged.remove(&d);
                if !lied_to {
                    self.lied.remove(&d);
                }
                self.waiting.remove(&d);
                self.awaiting.remove(&d);
                self.readd_wait.remove(&d);
                break;
            }
        }
        Ok(())
    }

    /// An admin starts (or restarts, with a new id) a re-key, and supplies fresh
    /// KeyPackages for the other members as the application would.
    fn rekey(&mut self, d: usize) -> Check {
        if !self.active(d) {
            return Ok(());
        }
        self.rekeys += 1;
        let id = RekeyId(self.rekeys);
        self.connection(d)?;
        let excused = self.excused(d);
        let v = Validation { trust: &self.trust, now: NOW };
        let node = self.nodes.get_mut(d).ok_or("node")?;
        let dev = node.device.as_ref().ok_or("device")?;
        let budget = Duration::from_secs(600);
        let reason = RekeyReason::SuspectedCompromise;
        let started = dev.rekey_group(ALBUM, id, reason, budget, &mut node.chain, v, &self.clock, &mut self.escrow);
        match started {
            Ok(()) => {
                self.rekey_admins.insert(id, d);
            }
            // Another re-key of this device runs, the escrow refuses a deposit
            // that would lose versions (this admin is behind), or the chain it
            // starts from does not answer: refusals, not violations.
            Err(
                capsule::Error::Resilience(
                    ResilienceError::RekeyInProgress(_)
                    | ResilienceError::Escrow(_)
                    | ResilienceError::NeedsRebootstrap,
                )
                | capsule::Error::Chain(_),
            ) => {
                return Ok(());
            }
            Err(capsule::Error::Resilience(ResilienceError::Quarantined { .. })) if excused => {
                return Ok(());
            }
            Err(e) => return fail(format!("device {d} rekey: {e}")),
        }
        // Every device the group lists, joined or not: one added whose Welcome
        // was pruned before it joined never answers, and only a re-add from a
        // fresh KeyPackage (the directory's) lets the re-key finish.
        let listed = self.dev(d)?.members(ALBUM).map_err(|e| e.to_string())?;
        for other in (0..DEVICES).filter(|o| *o != d && listed.contains(&member_id(*o))) {
            let kp = self.dev(other)?.key_package().map_err(|e| e.to_string())?;
            self.dev(d)?.provide_rekey_key_package(ALBUM, member_id(other), kp).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Check {
        self.stats.ops += 1;
        let propose = |w: &mut Self, d: usize, c: Change| -> Check {
            if w.active(d) {
                let id = w.dev(d)?.propose(ALBUM, c).map_err(|e| format!("device {d} propose: {e}"))?;
                w.proposed.entry(d).or_default().push(id);
            }
            Ok(())
        };
        match op {
            Op::Rotate(d) => propose(self, *d, Change::RotateAmk)?,
            Op::AddGuest(d) => {
                let kp = self.dev(GUEST)?.key_package().map_err(|e| e.to_string())?;
                propose(self, *d, Change::AddUser { user: UserId::from_bytes([4; 16]), directory: vec![kp] })?;
            }
            Op::RemoveGuest(d) => propose(self, *d, Change::RemoveUser { user: UserId::from_bytes([4; 16]) })?,
            Op::Sync(d) => self.sync(*d)?,
            Op::Reconcile(d) => self.reconcile(*d)?,
            Op::Join(d) => {
                if !self.active(*d) {
                    self.join_latest(*d)?;
                }
            }
            Op::Rekey(d) => self.rekey(*d)?,
            Op::LoseDevice(d) => {
                let device = member_id(*d).device;
                propose(self, alices_other(*d), Change::RemoveDevice { device })?;
            }
            Op::AddDevice(d) => {
                let key_package = self.dev(*d)?.key_package().map_err(|e| e.to_string())?;
                propose(self, alices_other(*d), Change::AddDevice { key_package })?;
            }
            Op::Upload(d) => {
                if self.active(*d)
                    && let Ok(photo) =
                        self.dev(*d)?.seal_photo(ALBUM, format!("photo {}", self.photos.len()).as_bytes())
                {
                    self.photos.push(photo);
                }
            }
            Op::Fault(d, kind) => {
                self.stats.faults += 1;
                let fault = match kind {
                    0 => Fault::DropRequest,
                    1 => Fault::DropAnswer,
                    2 => Fault::Duplicate,
                    3 => Fault::Delay(Duration::from_secs(45)),
                    _ => Fault::Reorder,
                };
                self.connection(*d)?.on_next_submit(fault);
            }
            Op::Partition(d, cut) => {
                self.stats.faults += 1;
                self.nodes.get_mut(*d).ok_or("node")?.cut = *cut;
                self.connection(*d)?.partition(*cut);
            }
            Op::Crash(d) => {
                self.stats.faults += 1;
                let node = self.nodes.get_mut(*d).ok_or("node")?;
                node.device = None; // the process dies: nothing in memory survives
                node.device =
                    Some(Device::open(&node.path, &db_key()).map_err(|e| format!("device {d} restart: {e}"))?);
            }
            Op::Wait(s) => self.clock.advance(Duration::from_secs(u64::from(*s))),
            Op::Refused(d) => {
                self.stats.refusals += u64::from(self.active(*d));
                let garbage = vec![0x5a; 64];
                propose(self, *d, Change::AddUser { user: UserId::from_bytes([4; 16]), directory: vec![garbage] })?;
            }
            Op::Cancel(d) => {
                if let Some(id) = self.proposed.get(d).and_then(|ids| ids.last()).copied() {
                    match self.dev(*d)?.cancel(ALBUM, id) {
                        Ok(()) => {
                            let state = self.dev(*d)?.intent_state(ALBUM, id).map_err(|e| e.to_string())?;
                            // Cancelling a confirmed change is a no-op: it already happened.
                            if !matches!(state, Some(IntentState::Cancelled | IntentState::Confirmed { .. })) {
                                return fail(format!("device {d}: cancelled intent shows {state:?}"));
                            }
                        }
                        // In flight, settled, or forgotten with an old membership: refusals.
                        Err(capsule::Error::Resilience(
                            ResilienceError::InFlight
                            | ResilienceError::UnknownIntent
                            | ResilienceError::Quarantined { .. },
                        )) => {}
                        Err(e)
                            if self.status(*d).is_none_or(|s| {
                                !matches!(
                                    s,
                                    AlbumStatus::InSync
                                        | AlbumStatus::Syncing
                                        | AlbumStatus::Surfaced
                                        | AlbumStatus::Rekeying { .. }
                                )
                            }) =>
                        {
                            let _ = e;
                        }
                        Err(e) => return fail(format!("device {d} cancel: {e}")),
                    }
                }
            }
            Op::Diverge(d) => self.diverge(*d)?,
            Op::BadCommit(d) => self.bad_commit(*d)?,
            Op::Equivocate(side) => self.equivocate(*side)?,
            Op::Rebootstrap(d) => {
                // While a commit every honest device refuses is at the chain's
                // head, the last admin device holding the album is what a
                // reboot starts from: discarding it too leaves only the
                // escrow (an album rebuilt from it is not built). Like
                // `Diverge`, the simulated user keeps one.
                let holders = ADMINS
                    .iter()
                    .filter(|a| **a != *d && self.dev(**a).is_ok_and(|dev| dev.group_id(ALBUM).is_ok()))
                    .filter(|a| self.status(**a) != Some(AlbumStatus::NeedsRebootstrap))
                    .count();
                if !(self.bad && ADMINS.contains(d) && holders == 0) {
                    self.rebootstrap(*d)?;
                }
            }
            Op::Prune(d) => {
                // Every other member device still reads from the epoch before its own.
                let mut keep = self.head()?.previous().unwrap_or(Epoch::ZERO);
                for o in (0..DEVICES).filter(|o| o != d && self.active(*o)) {
                    let epoch = self.dev(o)?.epoch(ALBUM).map_err(|e| e.to_string())?.0;
                    keep = keep.min(epoch.previous().unwrap_or(Epoch::ZERO));
                }
                self.stats.faults += 1;
                self.server.prune_before(&self.group, keep);
            }
            Op::Upgrade(d, capped) => {
                let policy = if *capped {
                    HistoryPolicy::Capped { last: NonZeroU32::MIN.saturating_add(2) }
                } else {
                    HistoryPolicy::Full
                };
                propose(
                    self,
                    *d,
                    Change::UpgradeAlbum { upgrade: AlbumUpgrade { history_policy: Some(policy), admins: None } },
                )?;
            }
        }
        self.check()
    }

    /// The chain's head: the epoch of its next commit (entries may be pruned).
    fn head(&self) -> Result<Epoch, String> {
        let entries = self.server.entries(&self.group);
        Ok(entries.last().map_or(Epoch::ZERO, |e| Epoch(e.epoch.0.saturating_add(1))))
    }

    /// A bug merges a rotation on device `d` that is never sent. One device at a
    /// time, and only while two other admin devices are healthy: the album
    /// needs an admin outside quarantine to re-add (losing every admin device
    /// at once is beyond what re-bootstrap can heal).
    fn diverge(&mut self, d: usize) -> Check {
        let healthy_admins =
            ADMINS.iter().filter(|a| **a != d && !self.diverged.contains(a) && self.active(**a)).count();
        if !self.active(d) || !self.diverged.is_empty() || healthy_admins < 2 || self.lie.is_some() || self.bad {
            return Ok(());
        }
        let v = Validation { trust: &self.trust, now: NOW };
        let node = self.nodes.get_mut(d).ok_or("node")?;
        node.device = None;
        let merged = {
            let store = capsule::store::Store::open(&node.path, &db_key()).map_err(|e| e.to_string())?;
            let me = store.load_device().map_err(|e| e.to_string())?;
            // A device with a commit pending is left alone: its commit may be in the chain.
            // (Staging the change already pending would return that very commit,
            // which may be in the chain: merging it is no divergence.)
            let staged = store.with_album(ALBUM, |a, p| match a.pending() {
                Some(_) => Err(capsule_mls::MlsError::PendingCommit),
                None => a.stage(p, &me, &Change::RotateAmk, v),
            });
            match staged {
                Ok(_) => {
                    store.with_album(ALBUM, |a, p| a.confirm(p)).map_err(|e| e.to_string())?;
                    true
                }
                Err(_) => false,
            }
        };
        node.device = Some(Device::open(&node.path, &db_key()).map_err(|e| format!("device {d} reopen: {e}"))?);
        if merged {
            self.diverged.insert(d);
        }
        Ok(())
    }

    /// The user re-bootstraps device `d`; refused (and nothing changes) unless it is stuck.
    fn rebootstrap(&mut self, d: usize) -> Check {
        let before = self.status(d);
        match self.dev(d)?.rebootstrap(ALBUM) {
            Ok(fresh) => {
                if self.status(d) != Some(AlbumStatus::AwaitingReadd) {
                    return fail(format!("device {d} re-bootstrapped but shows {:?}", self.status(d)));
                }
                self.awaiting.insert(d, fresh.key_package);
                self.stats.rebootstraps += 1;
            }
            Err(_) => {
                if self.status(d) != before {
                    return fail(format!("device {d}: a refused re-bootstrap changed {before:?}"));
                }
            }
        }
        Ok(())
    }

    /// A modified client (a copy of admin `a`'s store, with a trust store of
    /// its own) adds an impostor for the guest's user; the chain orders it.
    fn bad_commit(&mut self, a: usize) -> Check {
        let guest = UserId::from_bytes([OWNERS.get(GUEST).copied().unwrap_or(4); 16]);
        let quiet = self.bad || self.lie.is_some() || !self.diverged.is_empty();
        if quiet
            || self.status(a) != Some(AlbumStatus::InSync)
            || self.dev(a)?.group_id(ALBUM).ok() != Some(self.group.clone())
        {
            return Ok(());
        }
        if self.dev(a)?.members(ALBUM).map_err(|e| e.to_string())?.iter().any(|m| m.user == guest) {
            return Ok(());
        }
        // Files of their own per attempt (an attempt may stop before it forks).
        let n = self.stats.ops;
        let copy = self.root.join(format!("modified{n}.db"));
        {
            // The device's process is stopped while its file is copied (SQLite's
            // write-ahead log holds the newest transactions).
            let node = self.nodes.get_mut(a).ok_or("node")?;
            node.device = None;
            for suffix in ["", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", node.path.display()));
                if from.exists() {
                    std::fs::copy(&from, format!("{}{suffix}", copy.display())).map_err(|e| e.to_string())?;
                }
            }
            node.device = Some(Device::open(&node.path, &db_key()).map_err(|e| format!("device {a} reopen: {e}"))?);
        }
        let forged = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([0x99; 32])).map_err(|e| e.to_string())?;
        let forever = Validity::new(UnixTime(0), UnixTime(u64::MAX)).map_err(|e| e.to_string())?;
        let impostor = Device::enroll(
            &self.root.join(format!("impostor{n}.db")),
            &db_key(),
            &forged,
            guest,
            DeviceId::from_bytes([0x99; 16]),
            forever,
        )
        .map_err(|e| e.to_string())?;
        let mut trust = self.trust.clone();
        trust.insert(guest, forged.public_key().clone());
        let v = Validation { trust: &trust, now: NOW };
        let modified = Device::open(&copy, &db_key()).map_err(|e| e.to_string())?;
        let mut chain = self.server.connect(&self.group);
        let before = self.server.entries(&self.group).len();
        if !matches!(
            modified.reconcile_with_server(ALBUM, &mut chain, v),
            Ok(ReconcileOutcome::UpToDate | ReconcileOutcome::Reconciled { .. })
        ) {
            return Ok(());
        }
        let kp = impostor.key_package().map_err(|e| e.to_string())?;
        modified.propose(ALBUM, Change::AddUser { user: guest, directory: vec![kp] }).map_err(|e| e.to_string())?;
        let _ = modified.sync(ALBUM, &mut chain, &self.clock, v);
        if self.server.entries(&self.group).len() > before {
            self.bad = true;
            self.stats.forks += 1;
        }
        Ok(())
    }

    /// The server shows the devices of `side` a copy of the chain from now on.
    fn equivocate(&mut self, side: u8) -> Check {
        let side = side & ((1 << DEVICES) - 1);
        let real_admins = ADMINS.iter().filter(|a| side & (1 << **a) == 0 && self.active(**a)).count();
        if self.bad || self.lie.is_some() || !self.diverged.is_empty() || real_admins < 2 || side == 0 {
            return Ok(());
        }
        let copy = MemoryServer::new();
        let entries = self.server.entries(&self.group);
        copy.create_album(&self.group, entries.first().map_or(self.head()?, |e| e.epoch));
        let mut chain = copy.connect(&self.group);
        for e in &entries {
            let submission = capsule_resilience::Submission {
                epoch: e.epoch,
                commit: e.commit.clone(),
                welcome: e.welcome.clone(),
                bundle: e.bundle.clone(),
            };
            capsule_resilience::CommitChain::submit(&mut chain, &submission).map_err(|e| e.to_string())?;
        }
        for d in (0..DEVICES).filter(|d| side & (1 << d) != 0) {
            self.lied.insert(d);
        }
        self.lie = Some(Lie { copy, group: self.group.clone(), side });
        self.stats.forks += 1;
        Ok(())
    }

    /// The rebooter named by the fingerprints moves the album into a new
    /// group, re-adding every other device its member list names.
    fn reboot(&mut self, d: usize) -> Check {
        let members = self.dev(d)?.members(ALBUM).map_err(|e| e.to_string())?;
        let mut fresh = Vec::new();
        for o in (0..DEVICES).filter(|o| *o != d && members.contains(&member_id(*o))) {
            fresh.push((member_id(o), self.dev(o)?.key_package().map_err(|e| e.to_string())?));
        }
        let group = {
            let v = Validation { trust: &self.trust, now: NOW };
            self.dev(d)?.reboot(ALBUM, &fresh, v).map_err(|e| format!("device {d} reboot: {e}"))?
        };
        if group != self.group {
            self.server.create_album(&group, Epoch::ZERO).map_err(|e| e.to_string())?;
            self.group = group;
        }
        self.stats.reboots += 1;
        self.bad = false;
        self.lie = None;
        self.diverged.remove(&d);
        self.lied.remove(&d);
        self.waiting.remove(&d);
        self.sync(d)
    }

    /// The fingerprint board as device `d`'s server shows it (a lying one
    /// shows its own); `None` when it cannot reach it.
    fn board(&mut self, d: usize) -> Result<Option<Vec<Vec<u8>>>, String> {
        match capsule_resilience::CommitChain::fingerprints(self.connection(d)?) {
            Ok(board) => Ok(Some(board)),
            Err(capsule_resilience::ChainError::Unavailable) => Ok(None),
            Err(e) => fail(format!("device {d} board: {e}")),
        }
    }

    /// The coordinator the fingerprints name for re-adding `d` proposes it.
    fn heal_fork(&mut self, d: usize, kp: &[u8]) -> Result<bool, String> {
        let fresh = [(member_id(d), kp.to_vec())];
        for c in (0..DEVICES).filter(|c| *c != d) {
            if !matches!(self.status(c), Some(AlbumStatus::InSync | AlbumStatus::Syncing | AlbumStatus::Surfaced)) {
                continue;
            }
            let Some(fingerprints) = self.board(c)? else { continue };
            let v = Validation { trust: &self.trust, now: NOW };
            let node = self.nodes.get_mut(c).ok_or("node")?;
            let dev = node.device.as_ref().ok_or("device")?;
            match dev.heal_fork(ALBUM, &fingerprints, &mut node.chain, &fresh, v) {
                Ok(ids) if !ids.is_empty() => {
                    self.proposed.entry(c).or_default().extend(ids);
                    return Ok(true);
                }
                Ok(_) => {}
                Err(e) if unreachable(&e) => {}
                Err(e) => return fail(format!("device {c} heal_fork: {e}")),
            }
        }
        Ok(false)
    }

    /// In the round a fork first shows: every quarantined device that read
    /// the fingerprints sees it, and so does at least one device on the
    /// chain's side that still lists a quarantined one (a device that joined
    /// after the fork cannot read what was sealed before its join; one whose
    /// member list no longer names the forked device has nothing to heal).
    fn fork_seen(&self) -> Check {
        let quarantined: Vec<usize> =
            (0..DEVICES).filter(|d| matches!(self.status(*d), Some(AlbumStatus::Quarantined { .. }))).collect();
        for d in self.reported.iter().filter(|d| quarantined.contains(d)) {
            if !self.detected.contains(d) {
                return fail(format!("quarantined device {d} read the fingerprints and did not see the fork"));
            }
        }
        let chain_side: Vec<usize> = self.reported.iter().copied().filter(|d| !quarantined.contains(d)).collect();
        let concerned = chain_side.iter().any(|d| {
            self.dev(*d).is_ok_and(|dev| {
                dev.members(ALBUM).is_ok_and(|m| quarantined.iter().any(|q| m.contains(&member_id(*q))))
            })
        });
        if concerned && !chain_side.iter().any(|d| self.detected.contains(d)) {
            return fail(format!("no device on the chain's side ({chain_side:?}) saw the fork"));
        }
        Ok(())
    }

    /// The application's side of forks: devices of an older group join the
    /// newest; every device publishes its fingerprint; each reads its sync
    /// report and takes the way out it names (the rebooter reboots, a
    /// quarantined minority re-bootstraps; a quarantined device nobody
    /// reboots for re-bootstraps after a while, as its user would).
    fn application_forks(&mut self) -> Check {
        for d in 0..DEVICES {
            let stale = self.dev(d).is_ok_and(|dev| dev.group_id(ALBUM).is_ok_and(|g| g != self.group));
            if stale {
                self.join_latest(d)?;
            }
        }
        // Every device posts its fingerprint to the board of the chain it is
        // shown (a device removed, or awaiting a re-add, has none to post).
        for d in 0..DEVICES {
            if self.dev(d).is_err() {
                continue;
            }
            self.connection(d)?;
            let node = self.nodes.get_mut(d).ok_or("node")?;
            let dev = node.device.as_ref().ok_or("device")?;
            let _ = dev.publish_fingerprint(ALBUM, &mut node.chain);
        }
        let mut reports = Vec::new();
        for d in 0..DEVICES {
            let current = self.dev(d).is_ok_and(|dev| dev.group_id(ALBUM).is_ok_and(|g| g == self.group));
            if !self.active(d) || !current {
                continue;
            }
            let Some(fingerprints) = self.board(d)? else { continue };
            let v = Validation { trust: &self.trust, now: NOW };
            let node = self.nodes.get_mut(d).ok_or("node")?;
            let dev = node.device.as_ref().ok_or("device")?;
            match dev.sync_report(ALBUM, &fingerprints, &mut node.chain, v) {
                Ok(report) => {
                    self.reported.insert(d);
                    if !matches!(report.class, SyncClass::InSync | SyncClass::Behind) {
                        self.detected.insert(d);
                    }
                    reports.push((d, report));
                }
                Err(e) if unreachable(&e) => {}
                Err(e) => return fail(format!("device {d} sync_report: {e}")),
            }
        }
        let mut rebooted = false;
        for (d, report) in reports {
            let quarantined = matches!(self.status(d), Some(AlbumStatus::Quarantined { .. }));
            match report.class {
                SyncClass::Hard | SyncClass::Equivocation(_) if !rebooted && report.rebooter == Some(member_id(d)) => {
                    self.reboot(d)?;
                    rebooted = true;
                }
                SyncClass::Weak { minority: true } if quarantined => self.rebootstrap(d)?,
                _ if quarantined => {
                    let waited = self.waiting.entry(d).or_insert(0);
                    *waited += 1;
                    if *waited > 8 {
                        self.rebootstrap(d)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The application's side of re-bootstrap: a device stuck in quarantine or
    /// left behind a pruned chain while still listed is re-bootstrapped, and
    /// every device awaiting a re-add is re-added by another device of its user,
    /// or by an admin.
    fn application_readds(&mut self) -> Check {
        let healthy = |w: &Self, d: usize| {
            matches!(
                w.status(d),
                Some(AlbumStatus::InSync | AlbumStatus::Syncing | AlbumStatus::Surfaced | AlbumStatus::Rekeying { .. })
            )
        };
        let Some(reference) = (0..DEVICES).find(|d| healthy(self, *d)) else {
            return Ok(());
        };
        let members = self.dev(reference)?.members(ALBUM).map_err(|e| e.to_string())?;
        for d in 0..DEVICES {
            let listed = members.contains(&member_id(d));
            if listed && self.status(d) == Some(AlbumStatus::NeedsRebootstrap) {
                self.join_latest(d)?;
                if self.status(d) == Some(AlbumStatus::NeedsRebootstrap) {
                    self.rebootstrap(d)?;
                }
            }
            let Some(kp) = self.awaiting.get(&d).cloned() else { continue };
            let owner = member_id(d).user;
            let by = (0..DEVICES)
                .filter(|o| *o != d && healthy(self, *o))
                .find(|o| member_id(*o).user == owner)
                .or_else(|| ADMINS.iter().copied().find(|a| *a != d && healthy(self, *a)));
            // Once, then again only if it has not joined some rounds later (the
            // re-adder lost a race, or was itself removed meanwhile).
            let wait = self.readd_wait.entry(d).or_insert(0);
            if *wait > 0 {
                *wait -= 1;
                continue;
            }
            // The coordinator the fingerprints name re-adds it ...
            *wait = 6;
            if self.heal_fork(d, &kp)? {
                continue;
            }
            // ... or, when no fork names one (a pruned chain, the user's own
            // choice), a device of its user or an admin.
            if let Some(by) = by {
                let id = self.dev(by)?.readd(ALBUM, member_id(d), kp).map_err(|e| format!("device {by} readd: {e}"))?;
                self.proposed.entry(by).or_default().push(id);
            }
        }
        Ok(())
    }

    /// The invariants, after every step.
    fn check(&mut self) -> Check {
        self.stats.checks += 1;
        let head = self.head()?;
        let mut at_head: Option<HeadView> = None;
        let mut observed = Vec::new();
        for d in 0..DEVICES {
            // Field access, not `self.dev`, so the checks below may update other fields.
            let Some(dev) = self.nodes.get(d).and_then(|n| n.device.as_ref()) else { continue };
            let Ok(status) = dev.status(ALBUM) else {
                observed.push(format!("{d}:-"));
                continue;
            };
            if status == AlbumStatus::AwaitingReadd {
                // Its group state is discarded: nothing to read until it joins.
                observed.push(format!("{d}:{status:?}"));
                continue;
            }
            let epoch = dev.epoch(ALBUM).map_err(|e| e.to_string())?;
            // A device still in the group before a reboot (it joins the new one).
            let stale = dev.group_id(ALBUM).map_err(|e| e.to_string())? != self.group;
            let excused = self.diverged.contains(&d) || self.lied.contains(&d) || self.bad || stale;
            if matches!(status, AlbumStatus::Quarantined { .. }) && !excused {
                return fail(format!("device {d} quarantined under honest faults"));
            }
            let diverged = self.diverged.contains(&d) || self.lied.contains(&d);
            let held = dev.amk_versions(ALBUM).map_err(|e| e.to_string())?;
            observed.push(format!("{d}:{status:?}@{}/{}", epoch.0, held.current));
            if diverged {
                // Its local-only rotation is not the album's AMK; it never sends it.
                continue;
            }
            let keys = dev
                .with_keyring(ALBUM, |ring| ring.held().map(|(v, k)| (v, *k.expose_secret())).collect::<Vec<_>>())
                .map_err(|e| e.to_string())?;
            for (v, key) in keys {
                if *self.amk_keys.entry(v).or_insert(key) != key {
                    return fail(format!("{v} has two keys (device {d})"));
                }
            }
            if status == AlbumStatus::NeedsRebootstrap {
                self.evicted_at.entry(d).or_insert_with(|| held.current);
                continue;
            }
            self.evicted_at.remove(&d);
            if stale {
                continue;
            }
            if epoch.0 > head {
                return fail(format!("device {d} at epoch {} beyond the head {head}", epoch.0));
            }
            if epoch.0 == head {
                let view = (epoch, dev.members(ALBUM).map_err(|e| e.to_string())?, held.current);
                match &at_head {
                    Some(first) if *first != view => return fail(format!("device {d} disagrees with the head")),
                    Some(_) => {}
                    None => at_head = Some(view),
                }
            }
        }
        for (d, evicted_at) in &self.evicted_at {
            let dev = self.dev(*d)?;
            for p in self.photos.iter().filter(|p| p.version() > *evicted_at) {
                if dev.open_photo(ALBUM, p).is_ok() {
                    return fail(format!("removed device {d} opened a photo of {}", p.version()));
                }
            }
        }
        self.observed.push(observed.join(" "));
        Ok(())
    }

    /// The network heals; every device catches up; everything settles.
    fn settle(&mut self) -> Check {
        // The lie ends: the server is caught, or stops.
        self.lie = None;
        let mut fork_round = None;
        for d in 0..DEVICES {
            let node = self.nodes.get_mut(d).ok_or("node")?;
            node.cut = false;
            node.chain.partition(false);
            if let Some(dev) = &node.device {
                let _ = dev.connectivity_restored(ALBUM, &self.clock);
            }
        }
        // Each round commits at most one queued change per device, and racing
        // devices supersede each other: allow as many rounds as the queues need,
        // stopping once a whole round changed neither the chain nor anybody's
        // membership and everyone in the album is in sync.
        for round in 1..=40 {
            let before: Vec<bool> = (0..DEVICES).map(|d| self.active(d)).collect();
            let head = (self.group.clone(), self.server.entries(&self.group).len());
            for d in 0..DEVICES {
                // A device out of the album tries the Welcomes made for it (a
                // re-key straggler re-added, a lost phone added back).
                if !self.active(d) {
                    self.join_latest(d)?;
                }
                self.reconcile(d)?;
                self.sync(d)?;
            }
            // A fork shows as a quarantine (the chain disagrees with a device):
            // from that round on, every device that reads the fingerprints
            // must see it in the same round.
            let quarantined = (0..DEVICES).any(|d| matches!(self.status(d), Some(AlbumStatus::Quarantined { .. })));
            if quarantined && fork_round.is_none() {
                fork_round = Some(round);
                self.detected.clear();
                self.reported.clear();
            }
            self.application_forks()?;
            if fork_round == Some(round) {
                self.fork_seen()?;
            }
            self.application_readds()?;
            // A re-key whose admin was removed never finishes by itself: as an
            // application would, another admin restarts it. One whose admin is
            // still in the album must finish on its own (a stall fails below).
            let orphaned = (0..DEVICES).any(|d| {
                self.dev(d).is_ok_and(|dev| match dev.status(ALBUM) {
                    Ok(AlbumStatus::Rekeying { id }) => {
                        self.rekey_admins.get(&id).is_none_or(|a| !self.active(*a) || self.diverged.contains(a))
                    }
                    _ => false,
                })
            });
            if orphaned
                && round % 12 == 0
                && let Some(admin) = ADMINS.iter().copied().find(|a| self.active(*a) && !self.diverged.contains(a))
            {
                self.rekey(admin)?;
            }
            self.clock.advance(Duration::from_secs(700));
            self.check()?;
            let settled = (self.group.clone(), self.server.entries(&self.group).len()) == head
                && self.awaiting.is_empty()
                && (0..DEVICES).all(|d| {
                    let active = self.active(d);
                    before.get(d) == Some(&active)
                        && (!active
                            || self.dev(d).is_ok_and(|dev| {
                                dev.status(ALBUM).is_ok_and(|s| s == AlbumStatus::InSync)
                                    && dev.group_id(ALBUM).is_ok_and(|g| g == self.group)
                            }))
                });
            if settled {
                break;
            }
        }
        for d in 0..DEVICES {
            self.reconcile(d)?;
        }
        self.check()?;
        let head = self.head()?;
        for d in 0..DEVICES {
            if !self.active(d) {
                continue;
            }
            let dev = self.dev(d)?;
            let status = dev.status(ALBUM).map_err(|e| e.to_string())?;
            if status != AlbumStatus::InSync {
                return fail(format!("device {d} did not settle: {status:?}"));
            }
            if dev.epoch(ALBUM).map_err(|e| e.to_string())?.0 != head {
                return fail(format!("device {d} not on the head after healing"));
            }
        }
        // No device is left without a way forward: none quarantined, none
        // awaiting a re-add the application did not get done.
        for d in 0..DEVICES {
            if let Some(s @ (AlbumStatus::Quarantined { .. } | AlbumStatus::AwaitingReadd)) = self.status(d) {
                return fail(format!("device {d} left with no way forward: {s:?}"));
            }
        }
        // Exactly the devices the head lists are in the album: nobody re-added is
        // left outside, nobody removed still thinks it is a member.
        let members = match (0..DEVICES).find(|d| self.active(*d)) {
            Some(d) => self.dev(d)?.members(ALBUM).map_err(|e| e.to_string())?,
            None => return fail("no device is in the album after healing"),
        };
        for d in 0..DEVICES {
            let listed = members.contains(&member_id(d));
            if listed != self.active(d) {
                return fail(format!("device {d}: listed by the head {listed}, in the album {}", self.active(d)));
            }
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `ops` on a fresh world seeded by `seed`. A panic counts as a violation.
/// On success: the counters and what every device showed after every step.
///
/// # Errors
/// The first violated invariant, with the index of the op after which it broke.
pub fn run(seed: u64, ops: &[Op]) -> Result<(Stats, Vec<String>), (usize, String)> {
    run_on(seed, ops, Chain::Memory)
}

/// [`run`] against `chain`.
///
/// # Errors
/// As [`run`].
pub fn run_on(seed: u64, ops: &[Op], chain: Chain) -> Result<(Stats, Vec<String>), (usize, String)> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut w = World::new(seed, chain).map_err(|e| (0, format!("setup: {e}")))?;
        w.check().map_err(|e| (0, e))?;
        for (i, op) in ops.iter().enumerate() {
            w.apply(op).map_err(|e| (i, e))?;
        }
        w.settle().map_err(|e| (ops.len(), e))?;
        Ok((w.stats, std::mem::take(&mut w.observed)))
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err((ops.len(), format!("panic: {msg}")))
        }
    }
}

/// A short trace that still fails: the shortest failing prefix of `ops`, then
/// without every single op whose removal keeps it failing.
#[must_use]
pub fn shrink(seed: u64, ops: &[Op], failed_at: usize) -> Vec<Op> {
    shrink_on(seed, ops, failed_at, Chain::Memory)
}

/// [`shrink`] against `chain`.
#[must_use]
pub fn shrink_on(seed: u64, ops: &[Op], failed_at: usize, chain: Chain) -> Vec<Op> {
    let run = |seed, ops: &[Op]| run_on(seed, ops, chain);
    let mut best = ops.get(..=failed_at.min(ops.len().saturating_sub(1))).unwrap_or(ops).to_vec();
    for len in 0..best.len() {
        let prefix = best.get(..len).unwrap_or_default().to_vec();
        if run(seed, &prefix).is_err() {
            best = prefix;
            break;
        }
    }
    // From the end, so an op is dropped only when nothing after it needs it.
    for i in (0..best.len()).rev() {
        let mut shorter = best.clone();
        shorter.remove(i);
        if run(seed, &shorter).is_err() {
            best = shorter;
        }
    }
    best
}

/// Runs one seed of the recovery mix (everything): its generated trace, the checks, and a shrunk
/// trace on failure.
#[must_use]
pub fn check_seed(seed: u64) -> Report {
    check_seed_with(seed, Mix::Forks)
}

/// [`check_seed`] with the operations drawn from `mix`.
#[must_use]
pub fn check_seed_with(seed: u64, mix: Mix) -> Report {
    check_seed_on(seed, mix, Chain::Memory)
}

/// [`check_seed_with`] against `chain`.
#[must_use]
pub fn check_seed_on(seed: u64, mix: Mix, chain: Chain) -> Report {
    let ops = generate(seed, 40, mix);
    match run_on(seed, &ops, chain) {
        Ok((stats, observed)) => Report { seed, stats, violation: None, observed },
        Err((at, msg)) => {
            let trace = shrink_on(seed, &ops, at, chain);
            Report { seed, stats: Stats::default(), violation: Some((msg, trace)), observed: Vec::new() }
        }
    }
}
