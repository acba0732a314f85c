//! Sharding across replicas: each replica records only the pods whose UID hashes into the
//! shards it holds. Membership and ownership are coordination.k8s.io Leases, each written with
//! the same guarded algorithm as leader election ([`super::leader::Elector`]):
//!
//! - one *member* Lease per replica (`NAME-member-IDENTITY`), renewed every retry period: the
//!   live members are those whose record changed within its duration, on this replica's clock;
//! - one Lease per shard (`NAME-shard-K-of-N`): shard K covers the K-th of N equal ranges of
//!   the 64-bit FNV-1a hash of the pod UID.
//!
//! Each shard Lease also carries where its holder's watches stood at its last write window
//! that left nothing unwritten ([`RESUME_ANNOTATION`]), renewed every round: the next holder
//! resumes from there (or a newer report), even for a shard whose pods have been quiet.
//!
//! Every replica aims for `ceil(N / live members)` shards. It takes shards that are free
//! (released, or unrenewed for their duration) while below that, and gives back those above
//! it, so a replica that joins or leaves re-shards the others live, without a restart. The
//! anchor, kube-state-metrics' `--shard/--total-shards`, needs every replica restarted.
//!
//! # Expected flow
//! 1. Register as a member; wait one retry period, so that replicas started together see each
//!    other before taking shards.
//! 2. Take free shards up to the target; record the pods of the held shards (a *term*).
//! 3. Every retry period renew the member and held shard Leases (one list, one write each).
//!    When a shard is lost, can be gained, or must be given back, end the term (flushing what
//!    is pending while the fences are open), release what must go, and start a new term.
//!    A new term resumes from the reports like any restart, so a hand-over loses nothing.
//! 4. On shutdown, flush, release every shard and the member Lease, so others take over at
//!    their next round instead of after a lease duration.
//!
//! # Guarantees
//! - A shard's Lease has one holder at a time (guarded writes), and a replica writes a pod's
//!   report only while that shard's [`Fence`] is open: two replicas never write one report.
//! - Every shard is eventually held: `ceil(N / members)` times the members is at least N.
//! - A replica that sees a live member configured with another shard count takes no shards:
//!   two shard layouts would overlap.
//!
//! # Caveats
//! - Every replica still receives every pod's watch events (the apiserver cannot filter by a
//!   hash of the UID); it drops those outside its shards before keeping anything.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, Client};

use super::leader::{Decision, Elector, Fence, LeaseConfig};

/// The label every Lease of one sharded operator carries (value: its lease name).
pub const GROUP_LABEL: &str = "podlife.io/lease-group";
/// `member` or `shard`.
pub const ROLE_LABEL: &str = "podlife.io/lease-role";
/// On member Leases: the shard count the member runs with.
pub const SHARDS_ANNOTATION: &str = "podlife.io/shards";
/// On shard Leases: where the holder's pod watches stood at its last write window that left
/// nothing unwritten (JSON, scope to resourceVersion; `""` is the whole cluster). Renewed every
/// round, so a quiet shard's hand-over resumes from seconds ago, not from its last report.
pub const RESUME_ANNOTATION: &str = "podlife.io/resume-from";

/// Watch positions by scope key (`""`: the cluster; else a namespace).
pub type Positions = BTreeMap<String, u64>;

/// The shard of a pod UID among `shards`: the range its hash falls in.
#[must_use]
pub fn shard_of(uid: &str, shards: u32) -> u32 {
    // Range partition: shard K holds hashes in [K * 2^64 / N, (K + 1) * 2^64 / N).
    u32::try_from((u128::from(mix(fnv1a(uid))) * u128::from(shards)) >> 64).unwrap_or(0)
}

/// FNV-1a, 64 bits: stable across processes and versions, unlike std's seeded hasher.
fn fnv1a(s: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in s.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// MurmurHash3's 64-bit finaliser. FNV-1a's top bits barely depend on the last bytes, and the
/// range partition reads the top bits: names that differ only at the end would share a shard.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// How many shards one replica aims for among `members` live ones.
#[must_use]
pub fn target(shards: u32, members: usize) -> usize {
    let members = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
    usize::try_from(shards.div_ceil(members)).unwrap_or(usize::MAX)
}

/// The shards one term records, each with the fence its writes check.
#[derive(Debug)]
pub struct Ownership {
    shards: u32,
    fences: BTreeMap<u32, Arc<Fence>>,
    /// Per shard, the position its Lease says everything before was written.
    resume: BTreeMap<u32, Positions>,
}

impl Ownership {
    /// With the positions each shard's Lease carries.
    #[must_use]
    pub fn new(shards: u32, fences: BTreeMap<u32, Arc<Fence>>, resume: BTreeMap<u32, Positions>) -> Self {
        Ownership { shards, fences, resume }
    }

    /// Per held shard, the resume positions its Lease carries.
    #[must_use]
    pub fn resume(&self) -> &BTreeMap<u32, Positions> {
        &self.resume
    }

    #[must_use]
    pub fn shards(&self) -> u32 {
        self.shards
    }

    #[must_use]
    pub fn shard_of(&self, uid: &str) -> u32 {
        shard_of(uid, self.shards)
    }

    /// The pod is in one of this term's shards.
    #[must_use]
    pub fn owns(&self, uid: &str) -> bool {
        self.fences.contains_key(&self.shard_of(uid))
    }

    /// Its report may be written now: the pod's shard is held and its fence open.
    #[must_use]
    pub fn allows(&self, uid: &str, now: Instant) -> bool {
        self.fences.get(&self.shard_of(uid)).is_some_and(|f| f.allows(now))
    }

    pub fn held(&self) -> impl Iterator<Item = u32> + '_ {
        self.fences.keys().copied()
    }
}

/// How to shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Namespace, name prefix, identity and timings, as for leader election.
    pub lease: LeaseConfig,
    pub shards: u32,
}

/// What one round found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    pub gained: Vec<u32>,
    pub lost: Vec<u32>,
    /// Held beyond the target: to give back once no term writes them.
    pub excess: Vec<u32>,
    /// Live members, this replica included.
    pub members: usize,
    pub target: usize,
}

impl RoundOutcome {
    /// The current term no longer matches what this replica should record.
    #[must_use]
    pub fn reshard(&self) -> bool {
        !self.gained.is_empty() || !self.lost.is_empty() || !self.excess.is_empty()
    }
}

/// Errors of one round; all are retried at the next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a round took longer than the retry period")]
    TimedOut,
    #[error("listing the shard leases in {namespace}")]
    List {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    /// A write of one Lease, as leader election reports it.
    #[error(transparent)]
    Lease(#[from] super::leader::Error),
}

/// One replica's membership and shard Leases.
pub struct Keeper {
    api: Api<Lease>,
    cfg: ShardConfig,
    member: Elector,
    /// Other members' Leases, by name, each judged alive by whether it changes.
    others: HashMap<String, MemberView>,
    shard_electors: Vec<Elector>,
    /// The shards held, each with the fence its writes check.
    held: BTreeMap<u32, Arc<Fence>>,
    /// The Leases as last listed or written, by name: releases are guarded by their
    /// resourceVersion.
    listed: HashMap<String, Lease>,
    rounds: u64,
    /// The shards the running term records (empty between terms): only their Leases may carry
    /// the term's positions, which say nothing of a shard taken since.
    term_shards: Vec<u32>,
    /// The running term's clean positions, published after each complete write window.
    published: Arc<std::sync::Mutex<Positions>>,
}

impl Keeper {
    #[must_use]
    pub fn new(client: Client, cfg: ShardConfig) -> Self {
        let shard_electors = (0..cfg.shards).map(|_| Elector::new(cfg.lease.clone())).collect();
        Keeper {
            api: Api::namespaced(client, &cfg.lease.namespace),
            member: Elector::new(cfg.lease.clone()),
            others: HashMap::new(),
            shard_electors,
            held: BTreeMap::new(),
            listed: HashMap::new(),
            rounds: 0,
            term_shards: Vec::new(),
            published: Arc::default(),
            cfg,
        }
    }

    #[must_use]
    pub fn config(&self) -> &ShardConfig {
        &self.cfg
    }

    fn member_name(&self) -> String {
        format!("{}-member-{}", self.cfg.lease.name, self.cfg.lease.identity)
    }

    fn shard_name(&self, k: u32) -> String {
        format!("{}-shard-{k}-of-{}", self.cfg.lease.name, self.cfg.shards)
    }

    /// The shards held now, for a new term, with the positions their Leases carry. From now
    /// until [`Keeper::end_term`], renewals carry what the term publishes.
    pub fn start_term(&mut self) -> Ownership {
        let mut resume = BTreeMap::new();
        for &k in self.held.keys() {
            if let Some(positions) = carried_positions(self.listed.get(&self.shard_name(k))) {
                resume.insert(k, positions);
            }
        }
        let fences = self.held.iter().map(|(k, f)| (*k, Arc::clone(f))).collect();
        let ownership = Ownership::new(self.cfg.shards, fences, resume);
        self.term_shards = self.held.keys().copied().collect();
        self.end_publishing();
        ownership
    }

    /// The term is over: renewals carry no positions until the next term publishes its own.
    pub fn end_term(&mut self) {
        self.term_shards.clear();
        self.end_publishing();
    }

    fn end_publishing(&self) {
        crate::lock(&self.published).clear();
    }

    /// Where the running term publishes its clean positions.
    #[must_use]
    pub fn publisher(&self) -> Arc<std::sync::Mutex<Positions>> {
        Arc::clone(&self.published)
    }

    #[must_use]
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Held shards whose fence closed (no renewal within the renew deadline), now dropped:
    /// for when rounds fail and cannot say so themselves.
    pub fn expire_fences(&mut self, now: Instant) -> Vec<u32> {
        let closed: Vec<u32> = self.held.iter().filter(|(_, f)| !f.allows(now)).map(|(k, _)| *k).collect();
        for k in &closed {
            if let Some(fence) = self.held.remove(k) {
                fence.close();
                tracing::error!(shard = k, "no renewal of a shard within the renew deadline");
            }
        }
        closed
    }

    fn write_err(&self, name: &str) -> impl FnOnce(kube::Error) -> Error {
        let (namespace, name) = (self.cfg.lease.namespace.clone(), name.to_string());
        move |source| Error::Lease(super::leader::Error::Write { namespace, name, source })
    }

    /// Creates or replaces (guarded by `current`'s resourceVersion) one of our Leases, with
    /// `resume` as its positions if given (else it keeps those it has). `Ok(None)`: another
    /// replica wrote it first; `Ok(Some(lease))`: the Lease as stored, for the next guard.
    async fn write(
        &self,
        name: &str,
        current: Option<&Lease>,
        spec: k8s_openapi::api::coordination::v1::LeaseSpec,
        role: &str,
        resume: Option<&str>,
    ) -> Result<Option<Lease>, Error> {
        let mut lease = current.cloned().unwrap_or_default();
        lease.metadata.name = Some(name.to_string());
        let labels = lease.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(GROUP_LABEL.into(), self.cfg.lease.name.clone());
        labels.insert(ROLE_LABEL.into(), role.into());
        let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
        if role == "member" {
            annotations.insert(SHARDS_ANNOTATION.into(), self.cfg.shards.to_string());
        }
        if let Some(resume) = resume {
            annotations.insert(RESUME_ANNOTATION.into(), resume.to_string());
        }
        lease.spec = Some(spec);
        let result = match current {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => self.api.replace(name, &PostParams::default(), &lease).await,
        };
        match result {
            Ok(stored) => Ok(Some(stored)),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(self.write_err(name)(e)),
        }
    }

    /// After a write: the stored Lease guards the next one.
    fn stored(&mut self, name: &str, lease: Lease) {
        self.listed.insert(name.to_string(), lease);
    }

    /// One round: renew the member and the held shards, judge the other members, take free
    /// shards while below the target (not in the first round: others may be starting too),
    /// and say what changed.
    ///
    /// # Errors
    /// The Leases could not be listed; nothing was renewed (the fences close by themselves
    /// if that lasts a renew deadline).
    pub async fn round(&mut self) -> Result<RoundOutcome, Error> {
        let sent = Instant::now();
        let lp = ListParams::default().labels(&format!("{GROUP_LABEL}={}", self.cfg.lease.name));
        let list = self.api.list(&lp).await.map_err(|source| Error::List { namespace: self.cfg.lease.namespace.clone(), source })?;
        self.listed = list.items.into_iter().filter_map(|l| Some((l.metadata.name.clone()?, l))).collect();
        self.rounds += 1;
        let (now, wall) = (Instant::now(), Timestamp::now());

        // Our membership first: a replica that cannot renew it is about to be counted out.
        let me = self.member_name();
        let current = self.listed.get(&me).cloned();
        match self.member.decide(current.as_ref(), now, wall) {
            Decision::Create(spec) | Decision::Update(spec) => {
                match self.write(&me, current.as_ref(), spec.clone(), "member", None).await {
                    Ok(Some(stored)) => {
                        self.member.wrote(&spec, Instant::now());
                        self.stored(&me, stored);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "could not renew the member lease"),
                }
            }
            Decision::HeldElsewhere { holder, .. } => {
                tracing::error!(%holder, lease = %me, "another replica holds this replica's member lease: is the identity unique?");
            }
        }

        // The other members: alive while their record changes.
        let prefix = format!("{}-member-", self.cfg.lease.name);
        let mut members = 1;
        let mut layout_conflict = false;
        let mut stale = Vec::new();
        let first_look = self.cfg.lease.retry_period * 2;
        for (name, lease) in self.listed.iter().filter(|(n, _)| n.starts_with(&prefix) && **n != me) {
            let view = self.others.entry(name.clone()).or_insert_with(|| MemberView::new(now));
            view.saw(lease.metadata.resource_version.as_deref().unwrap_or_default(), now);
            match view.liveness(now, self.cfg.lease.lease_duration, first_look, lease_released(lease)) {
                Liveness::Live => {
                    members += 1;
                    let theirs = lease.metadata.annotations.as_ref().and_then(|a| a.get(SHARDS_ANNOTATION)).and_then(|s| s.parse().ok());
                    if theirs.is_some_and(|n: u32| n != self.cfg.shards) {
                        layout_conflict = true;
                        tracing::error!(member = %name, theirs = ?theirs, ours = self.cfg.shards, "a live member runs with another shard count: taking no shards until it is gone");
                    }
                }
                Liveness::Gone => stale.push((name.clone(), lease.metadata.resource_version.clone())),
                Liveness::NotCounted => {}
            }
        }
        self.others.retain(|name, _| self.listed.contains_key(name));
        for (name, rv) in stale {
            // Guarded: a member that came back meanwhile keeps its Lease.
            let dp = DeleteParams { preconditions: Some(Preconditions { resource_version: rv, uid: None }), ..DeleteParams::default() };
            if self.api.delete(&name, &dp).await.is_ok() {
                tracing::info!(member = %name, "removed the lease of a member that left");
            }
        }
        let target = if layout_conflict { 0 } else { target(self.cfg.shards, members) };

        let mut outcome = RoundOutcome { members, target, ..RoundOutcome::default() };
        let mut renewals = Vec::new();
        let mut free = Vec::new();
        // Each replica looks at the free shards from its own starting point, so that replicas
        // starting together do not all race for shard 0 first.
        let offset = shard_of(&self.cfg.lease.identity, self.cfg.shards);
        for k in (0..self.cfg.shards).map(|i| (i + offset) % self.cfg.shards) {
            let name = self.shard_name(k);
            let current = self.listed.get(&name).cloned();
            match self.shard_electors[k as usize].decide(current.as_ref(), now, wall) {
                Decision::HeldElsewhere { holder, .. } => {
                    if let Some(fence) = self.held.remove(&k) {
                        fence.close();
                        tracing::error!(shard = k, %holder, "a shard was taken over");
                        outcome.lost.push(k);
                    }
                }
                Decision::Create(spec) | Decision::Update(spec) if self.held.contains_key(&k) => renewals.push((k, name, current, spec)),
                // A shard recorded as ours from an earlier run of this identity is taken like a
                // free one: nothing of it is held in memory.
                Decision::Create(spec) | Decision::Update(spec) => free.push((k, name, current, spec)),
            }
        }
        // Renewals first and all at once: a round is bounded by the retry period, and a shard
        // renewed late (or not at all) closes its fence.
        let published = crate::lock(&self.published).clone();
        // Per renewal, the positions the Lease will carry: what it carries now, each scope
        // moved on to the term's own clean position where that is newer. A scope the term has
        // not published yet keeps the previous holder's value, which the term resumed from.
        let resumes: Vec<Option<String>> = renewals
            .iter()
            .map(|(k, _, current, _)| {
                if published.is_empty() || !self.term_shards.contains(k) {
                    return None;
                }
                serde_json::to_string(&merged_positions(carried_positions(current.as_ref()), &published)).ok()
            })
            .collect();
        let results = futures::future::join_all(
            renewals
                .iter()
                .zip(&resumes)
                .map(|((_, name, current, spec), resume)| self.write(name, current.as_ref(), spec.clone(), "shard", resume.as_deref())),
        )
        .await;
        for ((k, name, _, spec), result) in renewals.into_iter().zip(results) {
            match result {
                Ok(Some(stored)) => {
                    self.shard_electors[k as usize].wrote(&spec, Instant::now());
                    if let Some(fence) = self.held.get(&k) {
                        fence.renewed(sent);
                    }
                    self.stored(&name, stored);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, shard = k, "shard lease renewal failed; retrying"),
            }
        }
        // Then free shards, while below the target (not in the first round: replicas starting
        // together should see each other first). The Lease keeps its last holder's positions.
        for (k, name, current, spec) in free {
            if self.rounds < 2 || self.held.len() >= target {
                break;
            }
            match self.write(&name, current.as_ref(), spec.clone(), "shard", None).await {
                Ok(Some(stored)) => {
                    self.shard_electors[k as usize].wrote(&spec, Instant::now());
                    let fence = Arc::new(Fence::new(self.cfg.lease.renew_deadline));
                    fence.renewed(sent);
                    self.held.insert(k, fence);
                    self.stored(&name, stored);
                    outcome.gained.push(k);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, shard = k, "taking a shard failed; retrying"),
            }
        }
        // A held shard whose renewals have failed for the renew deadline is lost.
        outcome.lost.extend(self.expire_fences(Instant::now()));
        let excess = self.held.len().saturating_sub(target);
        outcome.excess = self.held.keys().rev().take(excess).copied().collect();
        Ok(outcome)
    }

    /// Gives `shards` back (guarded by the resourceVersion last listed), closing their fences
    /// first. Call only once no term writes them.
    pub async fn release(&mut self, shards: &[u32]) {
        for &k in shards {
            let Some(fence) = self.held.remove(&k) else { continue };
            fence.close();
            let name = self.shard_name(k);
            let Some(current) = self.listed.get(&name).cloned() else { continue };
            let Some(spec) = self.shard_electors[k as usize].release(&current, Timestamp::now()) else { continue };
            match self.write(&name, Some(&current), spec, "shard", None).await {
                Ok(Some(stored)) => {
                    tracing::info!(shard = k, "released a shard");
                    self.stored(&name, stored);
                }
                Ok(None) => tracing::warn!(shard = k, "could not release a shard: it changed meanwhile; it expires by itself"),
                Err(e) => tracing::warn!(error = %e, shard = k, "could not release a shard; it expires by itself"),
            }
        }
    }

    /// On shutdown: every shard, then the membership.
    pub async fn leave(&mut self) {
        let all: Vec<u32> = self.held.keys().copied().collect();
        // Fresh resourceVersions: the last list may be a round old.
        let lp = ListParams::default().labels(&format!("{GROUP_LABEL}={}", self.cfg.lease.name));
        if let Ok(list) = self.api.list(&lp).await {
            self.listed = list.items.into_iter().filter_map(|l| Some((l.metadata.name.clone()?, l))).collect();
        }
        self.release(&all).await;
        let me = self.member_name();
        if let Some(current) = self.listed.get(&me).cloned()
            && let Some(spec) = self.member.release(&current, Timestamp::now())
            && let Err(e) = self.write(&me, Some(&current), spec, "member", None).await
        {
            tracing::warn!(error = %e, "could not release the member lease");
        }
    }
}

/// The resume positions a shard Lease carries, if any (an unreadable value counts as none).
fn carried_positions(lease: Option<&Lease>) -> Option<Positions> {
    let json = lease?.metadata.annotations.as_ref()?.get(RESUME_ANNOTATION)?;
    serde_json::from_str(json).ok()
}

/// What a renewed shard Lease carries: its positions, each scope moved on to the term's
/// where newer. Both are true of the shard (the term resumed from the carried ones), so the
/// newer is; a scope the term has not published yet keeps its value rather than vanishing.
fn merged_positions(carried: Option<Positions>, published: &Positions) -> Positions {
    let mut positions = carried.unwrap_or_default();
    for (scope, at) in published {
        let entry = positions.entry(scope.clone()).or_insert(*at);
        *entry = (*entry).max(*at);
    }
    positions
}

/// Whether another member counts towards the number the shards are divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Live,
    /// Not renewed lately (or only just seen and not renewed yet): not counted, but its Lease
    /// stays, in case it is only slow.
    NotCounted,
    /// Released, or unrenewed for four lease durations: its Lease can be removed.
    Gone,
}

/// What this replica has seen of another member's Lease, on its own clock.
///
/// Member counts only size each replica's share: a member counted by mistake leaves shards
/// unheld until it is no longer counted, one missed makes the others take a little more for
/// a round. Shard ownership itself never depends on it (each shard Lease has its own expiry),
/// so a record first seen here counts for two retry periods only, not a whole lease duration:
/// a live member renews within one, and a replica that joins right after another was killed
/// would otherwise count the dead one for 15 s and leave its share unheld.
#[derive(Debug)]
pub struct MemberView {
    version: Option<String>,
    first_seen: Instant,
    /// When the record last changed while watched (`None`: not since first seen).
    changed: Option<Instant>,
}

impl MemberView {
    #[must_use]
    pub fn new(now: Instant) -> Self {
        MemberView { version: None, first_seen: now, changed: None }
    }

    /// The Lease as listed now, by its resourceVersion.
    pub fn saw(&mut self, version: &str, now: Instant) {
        match &self.version {
            Some(v) if v == version => {}
            Some(_) => {
                self.version = Some(version.to_string());
                self.changed = Some(now);
            }
            None => self.version = Some(version.to_string()),
        }
    }

    #[must_use]
    pub fn liveness(&self, now: Instant, lease_duration: std::time::Duration, first_look: std::time::Duration, released: bool) -> Liveness {
        let since = now.saturating_duration_since(self.changed.unwrap_or(self.first_seen));
        if released || since >= lease_duration * 4 {
            return Liveness::Gone;
        }
        let live = match self.changed {
            Some(_) => since < lease_duration,
            None => since < first_look,
        };
        if live { Liveness::Live } else { Liveness::NotCounted }
    }
}

/// Released by its holder: no holder.
fn lease_released(lease: &Lease) -> bool {
    lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).is_none_or(str::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_uid_always_falls_in_the_same_shard_and_shards_share_pods_evenly() {
        // Defect this catches: a hash seeded per process (std's RandomState) would put one pod
        // in different shards on different replicas: tracked twice, or never.
        assert_eq!(shard_of("", 12), shard_of("", 12));
        // The FNV spec's vectors.
        assert_eq!((fnv1a("a"), fnv1a("foobar")), (0xaf63_dc4c_8601_ec8c, 0x8594_4171_f739_67e8));
        // Random UIDs, and names that differ only at the end (without the finaliser, the 100
        // names pod-0..pod-99 all fell into one of 4 shards).
        let random: Vec<String> = (0..12_000_u64)
            .map(|i| format!("{:016x}-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i.wrapping_mul(0xbf58_476d_1ce4_e5b9)))
            .collect();
        let sequential: Vec<String> = (0..12_000).map(|i| format!("pod-{i}")).collect();
        for uids in [random, sequential] {
            let mut counts = [0u32; 12];
            for uid in &uids {
                counts[shard_of(uid, 12) as usize] += 1;
            }
            // 1000 expected per shard; a binomial spread of 12k draws stays well within ±15%.
            assert!(counts.iter().all(|c| (850..=1150).contains(c)), "uneven shards: {counts:?}");
        }
        assert!((0..1000).all(|i| shard_of(&format!("uid-{i}"), 1) == 0), "one shard holds everything");
    }

    #[test]
    fn the_target_covers_every_shard_whatever_the_members() {
        // Defect this catches: a floor division (12 / 5 = 2 each) would leave 2 shards unheld.
        for shards in 1..=64 {
            for members in 1..=70 {
                let t = target(shards, members);
                assert!(t * members >= shards as usize, "{members} members of {t} leave shards of {shards} unheld");
                assert!(t == 0 || (t - 1) * members < shards as usize, "{members} x {t} is more than needed for {shards}");
            }
        }
        assert_eq!((target(12, 3), target(12, 5), target(12, 0)), (4, 3, 12));
    }

    #[test]
    fn ownership_allows_only_open_fences_of_held_shards() {
        // Defect this catches: writing a pod of a shard held elsewhere, or after the fence closed.
        let t0 = Instant::now();
        let open = Arc::new(Fence::new(Duration::from_secs(10)));
        open.renewed(t0);
        let closed = Arc::new(Fence::new(Duration::from_secs(10)));
        let uids: Vec<String> = (0..100).map(|i| format!("pod-{i}")).collect();
        let a = uids[0].as_str();
        let mut by_shard = BTreeMap::new();
        by_shard.insert(shard_of(a, 4), Arc::clone(&open));
        let elsewhere = uids.iter().find(|u| shard_of(u, 4) != shard_of(a, 4)).expect("some pod hashes elsewhere").as_str();
        let fenced =
            uids.iter().find(|u| ![shard_of(a, 4), shard_of(elsewhere, 4)].contains(&shard_of(u, 4))).expect("a third shard").as_str();
        by_shard.insert(shard_of(fenced, 4), Arc::clone(&closed));
        let o = Ownership::new(4, by_shard, BTreeMap::new());
        assert!(o.owns(a) && o.allows(a, t0));
        assert!(!o.owns(elsewhere) && !o.allows(elsewhere, t0));
        assert!(o.owns(fenced) && !o.allows(fenced, t0), "held but fenced");
        assert!(!o.allows(a, t0 + Duration::from_secs(10)), "the fence closes at the renew deadline");
        assert_eq!(o.held().count(), 2);
    }

    #[test]
    fn a_reshard_is_due_only_on_change() {
        assert!(!RoundOutcome { members: 3, target: 4, ..RoundOutcome::default() }.reshard());
        assert!(RoundOutcome { excess: vec![11], ..RoundOutcome::default() }.reshard());
        assert!(RoundOutcome { gained: vec![1], ..RoundOutcome::default() }.reshard());
        assert!(RoundOutcome { lost: vec![1], ..RoundOutcome::default() }.reshard());
    }

    #[test]
    fn a_member_counts_while_it_renews_and_a_dead_one_only_briefly() {
        // Defect this catches: a replica joining 2 s after another was killed counted the dead
        // one for a whole lease duration (a record first seen is "fresh"), took 3 shards of
        // 12 instead of 4, and left one unheld for 15 s (chaos shard-join, 08:37).
        let (t0, lease, look) = (Instant::now(), Duration::from_secs(15), Duration::from_secs(4));
        let s = Duration::from_secs;
        let mut alive = MemberView::new(t0);
        alive.saw("1", t0);
        assert_eq!(alive.liveness(t0, lease, look, false), Liveness::Live, "counted from first sight");
        alive.saw("2", t0 + s(2));
        assert_eq!(alive.liveness(t0 + s(16), lease, look, false), Liveness::Live, "renewed at 2 s: live until 17 s");
        assert_eq!(alive.liveness(t0 + s(17), lease, look, false), Liveness::NotCounted);
        let mut dead = MemberView::new(t0);
        dead.saw("7", t0);
        dead.saw("7", t0 + s(3));
        assert_eq!(dead.liveness(t0 + s(3), lease, look, false), Liveness::Live);
        assert_eq!(
            dead.liveness(t0 + s(4), lease, look, false),
            Liveness::NotCounted,
            "never renewed: not counted after two retry periods"
        );
        assert_eq!(dead.liveness(t0 + s(60), lease, look, false), Liveness::Gone, "four lease durations: its Lease goes");
        assert_eq!(alive.liveness(t0 + s(3), lease, look, true), Liveness::Gone, "released on shutdown");
    }

    #[test]
    fn a_renewal_keeps_the_positions_of_scopes_the_term_has_not_published() {
        // Defect this catches (review of e5cbdb0): a renewal replaced the carried positions
        // with the term's, so a namespace whose watch had not synced yet lost the previous
        // holder's position, and the next holder resumed it from a later one.
        let carried: Positions = [("a".to_string(), 100), ("b".to_string(), 100)].into_iter().collect();
        let published: Positions = [("a".to_string(), 300), ("c".to_string(), 50)].into_iter().collect();
        let merged = merged_positions(Some(carried), &published);
        assert_eq!(merged, [("a".to_string(), 300), ("b".to_string(), 100), ("c".to_string(), 50)].into_iter().collect::<Positions>());
        let older: Positions = [("a".to_string(), 90)].into_iter().collect();
        assert_eq!(merged_positions(Some(merged.clone()), &older)["a"], 300, "never moved back");
    }
}
