//! Forks: members that merged different commits, seen through the state
//! fingerprints they publish (`capsule_mls`'s fingerprint module says what a
//! fingerprint is and who can read it), classified, and healed by re-adding.
//!
//! # The classification rule
//!
//! A device judges the newest fingerprint it holds from each member of its
//! own member list against its own recent states, then splits the members it
//! heard from (itself included):
//!
//! - **its side**: members in the state it is in, and (unless this device is
//!   quarantined) members behind it on the same history, who catch up by
//!   replaying; a quarantined device counts a member behind it that is at
//!   the chain's head as the chain's side, and one further behind on no side;
//! - **the other sides**: members that merged a different commit at some
//!   epoch (a fork there), whose fingerprint does not open under a state this
//!   device holds, or (once a fetch after their fingerprint showed the chain's
//!   head at this device's epoch) that merged a commit the chain does not
//!   hold; and (unless this device is quarantined) members that state they
//!   refused a commit this device merged (quarantined for it: a path secret
//!   they could not decrypt, a certificate their trust store rejects).
//!
//! Members not heard from, or whose statement cannot be judged yet, count on
//! no side. A statement a later commit on this device's history superseded
//! (the sender's leaf replaced since, by its own update or a re-add:
//! [`Reading::Stale`]) counts like a member behind on this history (for a
//! quarantined device, on no side), whatever it stated then, so a refusal
//! answered by a re-add is no other side. A member that re-bootstrapped is heard by its farewell
//! ([`ResilientAlbum::farewell`]: the last state it held, marked departing),
//! which counts like any fingerprint, so a device is never left thinking it
//! is alone because the others gave up first. Then, first match:
//!
//! | what it sees | [`SyncClass`] | the way out |
//! | --- | --- | --- |
//! | the chain's head is past this device (and it is not quarantined): it judges nothing before it replays, not even evidence of equivocation (its member list may be stale; the chain may have removed it) | `Behind` | reconcile: replay from the chain |
//! | (not quarantined) a member of another side merged a commit somebody else committed | `Equivocation` | reboot (the server showed two commits for one epoch: an honest client merges another member's commit only when the chain delivered it) |
//! | this device is quarantined for refusing the chain's commit: members that merged that commit are the chain's side, its own side only members in its state whose fingerprint says they refused the same commit (never that commit's committer; a member merely behind is no side), and nothing else counts as a side (a forked or unreadable statement, which one member can forge, is no evidence here); more refusers heard than mergers, two at least (a commit every honest member refused) | `Hard` | reboot from the last valid epoch |
//! | the same, otherwise (this device is the odd one out: a stale trust store, say) | `Weak` (`minority: true`) | re-bootstrap |
//! | this device is quarantined because the chain's head is below its epoch, it heard nobody at the chain's head or on another side, and someone agrees with it: the chain lost history everyone heard merged (a server restored from a backup, or rolled back), and nobody is left on the chain's side to re-add anyone | `Hard` | reboot from here |
//! | this device is quarantined because a commit it merged is not the chain's (its own commit lost, a server that showed it another history), whoever it heard: the chain's commit was made by a member on the chain's side, heard or not, and the chain orders; a reboot from this side would carry what only it merged (an AMK version the chain's side holds under another key) | `Weak` (`minority: true`) | re-bootstrap (the seed's path for a device off the chain), then be re-added (or rebooted in) by the chain's side |
//! | no other side; someone is ahead | `Behind` | reconcile: replay from the chain |
//! | no other side | `InSync` | nothing |
//! | its side (on the chain) is a strict majority of the members heard from | `Weak` (`minority: false`) | the coordinator re-adds the other sides' members ([`ResilientAlbum::heal_fork`]) |
//! | anything else (no majority on the chain's side) | `Hard` | reboot |
//!
//! The majority is counted among the members heard from, not the whole
//! member list: devices that are offline for a week must not turn every fork
//! into a reboot. Nothing is acted on by this module: the application gets
//! the [`SyncReport`] and takes the way out.
//!
//! # Who coordinates a re-add
//!
//! Nobody is named who left: a member whose newest fingerprint is a farewell
//! holds no group to re-add or reboot from.
//!
//! The rebooter, for `Hard` and `Equivocation`, is the smallest admin device
//! on this device's side, else the smallest admin heard on another side (so
//! the author of a commit every honest member refused is not asked to
//! reboot when an honest admin is there). Two sides may each pick their own:
//! the new generation's chain takes the first reboot, and the other rebooter
//! joins it.
//!
//! For each member of another side: the smallest admin (by user id, then
//! device id) on the chain's side; if that side holds no admin, the smallest
//! device of the member's own user on it (MLS-level, only an admin or a device
//! of the same user may re-add a device); otherwise nobody, and the fork needs
//! a reboot. Every member of the chain's side computes the same coordinator
//! from the same fingerprints; if two views differ for a moment and two
//! devices re-add the same member, the chain takes one re-add per epoch and
//! the other is superseded and re-proposed against a leaf that is already
//! fresh, which the MLS layer accepts as another re-add: wasteful, never a
//! fork.
//!
//! # What the server can do
//!
//! Fingerprints travel through the server like everything else. A server that
//! shows two histories and also keeps each side from seeing the other's
//! fingerprints stays undetected by this mechanism alone; it is detected as
//! soon as any fingerprint crosses (a device that talks to two servers, or
//! fingerprints exchanged out of band).

use std::collections::BTreeMap;

use capsule_mls::{CommitHash, Epoch, Member, OpenMlsProvider, Reading};

use crate::{Change, Context, Intent, IntentId, IntentState, ResilientAlbum, Result};

/// How this device sees the album, from the members' fingerprints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncClass {
    /// Everyone heard from is in this device's state, or behind it on the same history.
    InSync,
    /// Someone is ahead of this device, or the chain is: replay from the chain.
    Behind,
    /// A fork with a clear majority: the minority is re-added.
    Weak {
        /// Whether this device is in the minority (it re-bootstraps).
        minority: bool,
    },
    /// A fork without a majority on the chain's side: reboot.
    Hard,
    /// The server showed different commits for one epoch: reboot, and report the server.
    Equivocation(Box<Equivocation>),
}

/// A server's two commits for one epoch, as members signed them.
///
/// The evidence is signed fingerprints: the witness's (it merged the other
/// side's commit without committing it, which an honest client does only
/// when its chain delivered it), and, when heard, each commit's hash stated
/// by its own committer. Each is readable by members of the epoch before the
/// fork (an auditor the album lets in), except a statement about a commit
/// that removed a member: that one is sealed under the epoch the commit
/// reached only (see `capsule_mls`'s fingerprint module), so only that
/// commit's side reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    /// The epoch the two commits were made in.
    pub epoch: Epoch,
    /// The commit this device merged there (the chain it was shown).
    pub ours: Option<CommitHash>,
    /// Who committed `ours`.
    pub our_committer: Option<Member>,
    /// The commit the other side merged there.
    pub theirs: Option<CommitHash>,
    /// Who committed the other side's commit, as the witness states it.
    pub their_committer: Option<Member>,
    /// The member that merged the other side's commit without committing it.
    pub witness: Member,
    /// The witness's signed fingerprint: the evidence, for whoever audits the server.
    pub statement: Vec<u8>,
    /// `ours` stated by its committer (its signed fingerprint of the epoch
    /// `ours` reached; this device's own when it made that commit and is
    /// still there), if heard.
    pub ours_by_committer: Option<Vec<u8>>,
    /// `theirs` stated by its committer, if heard.
    pub theirs_by_committer: Option<Vec<u8>>,
}

/// Members of one other side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Where it left this device's history: the epoch, and the commit it
    /// merged there when its fingerprint says (not when it only failed to open).
    pub epoch: Epoch,
    /// The commit it merged at `epoch`, if known.
    pub commit: Option<CommitHash>,
    /// Its members, sorted.
    pub members: Vec<Member>,
}

/// A member to re-add, and the member whose device does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readd {
    /// The member on another side.
    pub member: Member,
    /// The coordinator (see the module docs).
    pub by: Member,
}

/// What [`ResilientAlbum::sync_report`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReport {
    /// The classification.
    pub class: SyncClass,
    /// This device's side, itself included, sorted.
    pub own: Vec<Member>,
    /// The other sides.
    pub others: Vec<Partition>,
    /// Members not heard from, or not judged yet, sorted.
    pub unheard: Vec<Member>,
    /// For `Weak` on the chain's side: who re-adds whom.
    pub readds: Vec<Readd>,
    /// For `Hard` and `Equivocation`: the device that reboots the album (the
    /// smallest admin device on this device's side, else the smallest heard
    /// on another side).
    pub rebooter: Option<Member>,
}

/// Where each other side left this device's history, and its members.
type Sides = BTreeMap<(Epoch, Option<CommitHash>), Vec<Member>>;

/// A member whose state left this device's history (which is the chain's) at
/// `theirs.epoch`: put on its side, and, when it merged a commit somebody
/// else committed (which an honest client does only when the chain delivered
/// it), kept as evidence of equivocation.
fn off_chain(
    theirs: capsule_mls::Fingerprint,
    ours: Option<capsule_mls::Fingerprint>,
    sender: Member,
    statement: &[u8],
    equivocation: &mut Option<Equivocation>,
    others: &mut Sides,
) {
    if theirs.committer.is_some_and(|c| c != sender) {
        equivocation.get_or_insert_with(|| Equivocation {
            epoch: theirs.epoch.previous().unwrap_or(theirs.epoch),
            ours: ours.as_ref().and_then(|o| o.commit),
            our_committer: ours.as_ref().and_then(|o| o.committer),
            theirs: theirs.commit,
            their_committer: theirs.committer,
            witness: sender,
            statement: statement.to_vec(),
            ours_by_committer: None,
            theirs_by_committer: None,
        });
    }
    others.entry((theirs.epoch, theirs.commit)).or_default().push(sender);
}

impl ResilientAlbum {
    /// This device's signed, sealed fingerprint of its current state, to
    /// publish after every commit it merges (and when asked).
    ///
    /// # Errors
    /// [`capsule_mls::MlsError::Evicted`] once removed; faults.
    pub fn fingerprint<P: OpenMlsProvider>(&self, cx: Context<'_, P>) -> Result<Vec<u8>> {
        Ok(self.album.fingerprint(cx.provider, cx.device, self.refused_commit())?)
    }

    /// This device's farewell ([`capsule_mls::Album::farewell`]): its last
    /// fingerprint before a re-bootstrap discards its state, marked
    /// departing, for the durable caller to keep and publish while it awaits
    /// its re-add. `None` once removed (it has nothing to state).
    ///
    /// # Errors
    /// Faults only.
    pub fn farewell<P: OpenMlsProvider>(
        &self,
        provider: &P,
        device: &capsule_mls::DeviceIdentity,
    ) -> Result<Option<Vec<u8>>> {
        if self.album.is_evicted() {
            return Ok(None);
        }
        Ok(Some(self.album.farewell(provider, device, self.refused_commit())?))
    }

    /// The chain's commit this device is quarantined for refusing, if that is
    /// why it is quarantined: what its fingerprint states it refused.
    #[must_use]
    pub fn refused_commit(&self) -> Option<CommitHash> {
        self.quarantine.and_then(|q| q.invalid_commit).map(|i| i.commit_hash)
    }

    /// Classifies the album from the members' fingerprints (the rule is in
    /// this module's docs): `fingerprints` as the application collected them
    /// (the newest of each sender counts; a later one wins a tie), and
    /// `chain_head`, the head a fetch of the chain made *after* collecting
    /// them showed (`None` when there was none: then a member ahead is only
    /// "ahead", never "off the chain"). Fingerprints that do not verify, of
    /// non-members or this device's own are left out. Changes nothing, and
    /// keeps nothing: a restart loses no state.
    ///
    /// # Errors
    /// Faults only.
    pub fn sync_report<P: OpenMlsProvider>(
        &self,
        cx: Context<'_, P>,
        fingerprints: &[Vec<u8>],
        chain_head: Option<Epoch>,
    ) -> Result<SyncReport> {
        let mut newest: BTreeMap<Member, (Reading, &[u8])> = BTreeMap::new();
        for bytes in fingerprints {
            let Ok(reading) = self.album.read_fingerprint(cx.provider, bytes) else { continue };
            match newest.get(&reading.sender()) {
                Some((old, _)) if old.epoch() > reading.epoch() => {}
                _ => {
                    newest.insert(reading.sender(), (reading, bytes));
                }
            }
        }
        // Senders whose newest word is a farewell (they re-bootstrapped): what
        // they state counts, but they hold the group no more, so they are
        // never named to re-add or reboot.
        let departed: Vec<Member> = newest
            .iter()
            .filter(|(_, (_, bytes))| capsule_mls::fingerprint_header(bytes).is_ok_and(|h| h.departing))
            .map(|(m, _)| *m)
            .collect();
        let present = |m: &Member| !departed.contains(m);
        let me = Member { user: cx.device.user(), device: cx.device.device() };
        // Each sender's statement of a commit it made itself, by the epoch
        // that commit reached: equivocation's evidence signed by committers.
        let committed: Vec<(Member, Epoch, Option<CommitHash>, &[u8])> = newest
            .iter()
            .filter_map(|(sender, (reading, bytes))| {
                let (epoch, commit) = match reading {
                    Reading::Forked { theirs, .. } | Reading::Ahead { theirs, .. }
                        if theirs.committer == Some(*sender) =>
                    {
                        (theirs.epoch, theirs.commit)
                    }
                    // Agreeing with this device: the commit is this device's.
                    Reading::Agrees { epoch, .. } => (*epoch, None),
                    _ => return None,
                };
                Some((*sender, epoch, commit, *bytes))
            })
            .collect();
        let epoch = self.album.epoch();
        let quarantined = self.quarantine.is_some();
        // Quarantined for refusing the chain's commit: this device's history
        // is the chain's up to that commit, so only members shown to have
        // merged it are the chain's side; any other disagreement (a forked or
        // unreadable statement, which a single member can forge) is no side.
        let refused = self.refused_commit();
        // The committer of the refused commit is never a fellow refuser: it
        // could state a refusal of its own commit to tip the count.
        let refused_by = self.quarantine.and_then(|q| q.invalid_commit).and_then(|i| i.committer);
        let roster = self.album.members();
        let mut own = vec![me];
        let mut others: Sides = BTreeMap::new();
        let mut unheard = Vec::new();
        let mut ahead = false;
        let mut equivocation = None;
        for sender in roster.iter().copied().filter(|m| *m != me) {
            let Some((reading, statement)) = newest.remove(&sender) else {
                unheard.push(sender);
                continue;
            };
            match reading {
                // Quarantined for refusing the chain's commit: on its side only
                // members in its state that say they refused the same commit
                // (one merely behind has not replayed it yet: no side).
                Reading::AlsoRefuses { epoch: theirs, commit, .. }
                    if refused.is_some()
                        && theirs == epoch
                        && Some(commit) == refused
                        && refused_by != Some(sender) =>
                {
                    own.push(sender);
                }
                Reading::Agrees { epoch: theirs, .. } | Reading::AlsoRefuses { epoch: theirs, .. }
                    if refused.is_some() && theirs == epoch =>
                {
                    unheard.push(sender);
                }
                Reading::Agrees { epoch: theirs, .. } | Reading::AlsoRefuses { epoch: theirs, .. }
                    if theirs == epoch || !quarantined =>
                {
                    own.push(sender);
                }
                // Behind this quarantined device on its own history: at the
                // chain's head, that member is the chain's side; further
                // behind, on no side yet.
                Reading::Agrees { epoch: theirs, .. } | Reading::AlsoRefuses { epoch: theirs, .. }
                    if chain_head == Some(theirs) =>
                {
                    others.entry((theirs, None)).or_default().push(sender);
                }
                Reading::Agrees { .. } | Reading::AlsoRefuses { .. } => unheard.push(sender),
                // At an epoch of this device's history, refusing the commit
                // this device merged next (a commit whose path it could not
                // decrypt, a certificate its trust store rejects): a side of
                // its own, left at the epoch that commit reached.
                Reading::Refuses { epoch: theirs, .. } if !quarantined => {
                    others.entry((theirs.next().unwrap_or(theirs), None)).or_default().push(sender);
                }
                Reading::Refuses { .. } => unheard.push(sender),
                // Off this device's history at `theirs.epoch`: forked there, or
                // (a fetch after this fingerprint was collected showed the chain
                // at this device's epoch) ahead on a commit the chain lacks.
                Reading::Forked { theirs, ours, .. } if !quarantined => {
                    off_chain(theirs, Some(ours), sender, statement, &mut equivocation, &mut others);
                }
                Reading::Ahead { theirs, .. } if !quarantined && chain_head == Some(epoch) => {
                    off_chain(theirs, None, sender, statement, &mut equivocation, &mut others);
                }
                Reading::Ahead { theirs, .. } if refused.is_some() && theirs.commit == refused => {
                    others.entry((theirs.epoch, theirs.commit)).or_default().push(sender);
                }
                Reading::Forked { .. } | Reading::Apart { .. } if refused.is_some() => unheard.push(sender),
                Reading::Forked { theirs, .. } => others.entry((theirs.epoch, theirs.commit)).or_default().push(sender),
                Reading::Ahead { .. } => {
                    ahead = true;
                    unheard.push(sender);
                }
                Reading::Apart { sealed_under, .. } => others.entry((sealed_under, None)).or_default().push(sender),
                // Two or more epochs past this device's, which is the chain's
                // head: that member merged commits the chain does not hold.
                Reading::Unjudged { epoch: theirs, .. }
                    if !quarantined && theirs > epoch && chain_head == Some(epoch) =>
                {
                    others.entry((theirs, None)).or_default().push(sender);
                }
                // On this device's history, superseded by a commit on it since
                // (the sender's own update, or a re-add of it): with this
                // device, like a member behind, whatever it stated then (a
                // refusal answered by a re-add is no other side); for a
                // quarantined device, no side.
                Reading::Stale { .. } if !quarantined => own.push(sender),
                Reading::Stale { .. } => unheard.push(sender),
                Reading::Unjudged { epoch: theirs, .. } => {
                    // About an epoch past this device's: someone is ahead.
                    ahead |= theirs > epoch;
                    unheard.push(sender);
                }
            }
        }
        own.sort();
        unheard.sort();
        let others: Vec<Partition> = others
            .into_iter()
            .map(|((epoch, commit), mut members)| {
                members.sort();
                Partition { epoch, commit, members }
            })
            .collect();
        let off: usize = others.iter().map(|p| p.members.len()).sum();
        let heard = own.len().saturating_add(off);
        let behind_chain = chain_head.is_some_and(|h| h > epoch);
        let class = if behind_chain && !quarantined {
            // Not at the chain's head: what this device would count as sides
            // may be commits it has not replayed yet, and its member list may
            // be out of date (it may have been removed): replay, then judge.
            // Even evidence of equivocation waits, so a device the chain
            // removed never names itself rebooter.
            SyncClass::Behind
        } else if let Some(mut e) = equivocation {
            let reached = e.epoch.next();
            // Theirs: its committer's own statement of that commit. Ours: its
            // committer agreeing with this device where that commit led.
            let stated = |by: Option<Member>, commit: Option<CommitHash>| {
                committed
                    .iter()
                    .find(|(sender, at, c, _)| Some(*sender) == by && Some(*at) == reached && *c == commit)
                    .map(|(.., bytes)| bytes.to_vec())
            };
            e.theirs_by_committer = e.theirs.and_then(|theirs| stated(e.their_committer, Some(theirs)));
            e.ours_by_committer = if e.our_committer == Some(me) && Some(epoch) == reached {
                // Evidence only: a fault making it leaves the report standing.
                self.fingerprint(cx).ok()
            } else {
                stated(e.our_committer, None)
            };
            SyncClass::Equivocation(Box::new(e))
        } else if refused.is_some() {
            // Everyone heard who refused the same commit, against those who
            // merged it: more refusers (two at least) is a commit the honest
            // members refuse (reboot); otherwise this device is the odd one
            // (a stale trust store, say) and re-bootstraps.
            if own.len() > 1 && own.len() > off { SyncClass::Hard } else { SyncClass::Weak { minority: true } }
        } else if quarantined && others.is_empty() && own.len() > 1 && chain_head.is_some_and(|h| h < epoch) {
            // The chain is behind everyone heard, and nobody is at its head:
            // it lost history they all merged (a server restored from a
            // backup, or rolled back). Nobody is left on the chain's side to
            // re-add anyone: reboot from here.
            SyncClass::Hard
        } else if quarantined {
            // Quarantined because a commit it merged is not the chain's (its
            // own commit lost, a server that showed it another history): the
            // chain's commit was made by a member on the chain's side, heard
            // or not, and the chain orders. Whoever agrees with this device,
            // its side is never the one to keep: a reboot from here would
            // carry what only this side merged (an AMK version the chain's
            // side holds under another key).
            SyncClass::Weak { minority: true }
        } else if others.is_empty() {
            if ahead || behind_chain { SyncClass::Behind } else { SyncClass::InSync }
        } else if own.len().saturating_mul(2) > heard {
            SyncClass::Weak { minority: false }
        } else {
            SyncClass::Hard
        };
        let readds = if class == (SyncClass::Weak { minority: false }) {
            let admins = &self.album.context().metadata;
            let admin = own.iter().copied().filter(|m| admins.is_admin(&m.user) && present(m)).min();
            others
                .iter()
                .flat_map(|p| p.members.iter().copied())
                .filter_map(|member| {
                    let by =
                        admin.or_else(|| own.iter().copied().filter(|m| m.user == member.user && present(m)).min())?;
                    Some(Readd { member, by })
                })
                .collect()
        } else {
            Vec::new()
        };
        let rebooter = matches!(class, SyncClass::Hard | SyncClass::Equivocation(_))
            .then(|| {
                let metadata = &self.album.context().metadata;
                let admin = |m: &Member| metadata.is_admin(&m.user) && present(m);
                let heard = others.iter().flat_map(|p| p.members.iter());
                own.iter().copied().filter(admin).min().or_else(|| heard.copied().filter(admin).min())
            })
            .flatten();
        Ok(SyncReport { class, own, others, unheard, readds, rebooter })
    }

    /// The coordinator's half of healing a weak fork: proposes a re-add
    /// ([`Change::ReAddDevice`], OpenMLS's fork-resolution re-add) of every
    /// member the [`SyncReport`] of `fingerprints` and `chain_head` has this
    /// device re-add, for which
    /// `key_packages` holds a fresh KeyPackage (the member re-bootstrapped and
    /// published it). A member whose re-add is already under way is skipped,
    /// so calling again after a restart proposes nothing twice. Durable like
    /// every intent; returns the intents proposed.
    ///
    /// # Errors
    /// [`crate::ResilienceError::Quarantined`]; faults.
    pub fn heal_fork<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        fingerprints: &[Vec<u8>],
        chain_head: Option<Epoch>,
        key_packages: &[(Member, Vec<u8>)],
    ) -> Result<Vec<IntentId>> {
        self.ensure_not_quarantined()?;
        let me = Member { user: cx.device.user(), device: cx.device.device() };
        let report = self.sync_report(cx, fingerprints, chain_head)?;
        let underway: Vec<Member> = self
            .intents
            .iter()
            .filter(|i| !matches!(i.state, IntentState::Failed { .. } | IntentState::Cancelled))
            .filter_map(|i| match &i.change {
                Change::ReAddDevice { key_package } => {
                    capsule_mls::inspect_key_package(key_package, cx.validation).ok().map(|info| info.member)
                }
                _ => None,
            })
            .collect();
        let mut proposed = Vec::new();
        for readd in report.readds.iter().filter(|r| r.by == me && !underway.contains(&r.member)) {
            // The label is the caller's (or the server's): the KeyPackage must name that device.
            let named = |kp: &Vec<u8>| {
                capsule_mls::inspect_key_package(kp, cx.validation).is_ok_and(|info| info.member == readd.member)
            };
            if let Some((_, kp)) = key_packages.iter().find(|(m, kp)| *m == readd.member && named(kp)) {
                proposed.push(self.propose(Change::ReAddDevice { key_package: kp.clone() }));
            }
        }
        Ok(proposed)
    }
}

impl ResilientAlbum {
    /// The rebooter's way out of a hard fork or an equivocating server: the
    /// album rebooted into a new MLS group (`capsule_mls`'s reboot: new group
    /// id, metadata carried over, this device's whole AMK lineage plus a new
    /// version), with one intent per user to re-add, each from the fresh
    /// KeyPackages in `key_packages` (members of this album only). The
    /// returned album is driven like any other against the chain kept under
    /// its group id ([`capsule_mls::Album::group_id`]); its first intent is
    /// the commit that created the group, already staged. A durable caller
    /// stores it in place of this one in one transaction (the album record
    /// holds the group id, so the album id maps to the new group durably);
    /// until then nothing changed. If the new chain already holds another
    /// device's reboot, the first submission loses the race: discard the new
    /// album and join the winner's group instead.
    ///
    /// This album's intents are not carried over: unsettled changes are the
    /// application's to propose again.
    ///
    /// # Errors
    /// As [`capsule_mls::Album::reboot`]; [`crate::ResilienceError::Quarantined`]
    /// never (a quarantined admin may reboot: that is a way out).
    pub fn reboot<P: OpenMlsProvider>(&self, cx: Context<'_, P>, key_packages: &[(Member, Vec<u8>)]) -> Result<Self> {
        let mut users: Vec<capsule_identity::UserId> = key_packages.iter().map(|(m, _)| m.user).collect();
        users.sort();
        users.dedup();
        // The rebooting user's own devices first (any order works; this one
        // is stable).
        users.sort_by_key(|u| *u != cx.device.user());
        let directory =
            |user| key_packages.iter().filter(|(m, _)| m.user == user).map(|(_, kp)| kp.clone()).collect::<Vec<_>>();
        let Some((first, rest)) = users.split_first() else {
            return Err(capsule_mls::MlsError::Refused("a reboot re-adds at least one device").into());
        };
        let (album, out) = self.album.reboot(cx.provider, cx.device, &directory(*first), cx.validation)?;
        let mut rebooted = Self::new(album, self.policy.clone());
        rebooted.intents.push(Intent {
            id: IntentId(0),
            change: out.change,
            state: IntentState::Pending,
            reproposals: 0,
        });
        rebooted.next_intent = 1;
        for user in rest {
            rebooted.propose(Change::AddUser { user: *user, directory: directory(*user) });
        }
        // The lineage is this device's, and so are the re-key counts.
        rebooted.last_rekey = self.last_rekey;
        Ok(rebooted)
    }
}
