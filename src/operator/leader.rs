//! Leader election on a coordination.k8s.io Lease: one replica writes, the others wait.
//!
//! The algorithm is client-go's `leaderelection` (kube-lease-manager, the maintained crate for
//! kube 5, renews with an unguarded merge patch, which is the defect this replaces):
//!
//! # Expected flow
//! 1. A candidate reads the Lease every `retry_period`. It notes when the record last
//!    *changed*, on its own clock; the holder's `renewTime` is never compared with the local
//!    clock, so clock skew between nodes does not matter.
//! 2. A record held by someone else is taken over only once it has not changed for its
//!    `leaseDurationSeconds`, or when it has no holder (released).
//! 3. Every write to the Lease (create, take over, renew, release) is an update guarded by the
//!    resourceVersion just read: of two replicas racing, exactly one succeeds.
//! 4. The leader renews every `retry_period`. It stops leading when a renewal finds another
//!    holder, or when none has succeeded for `renew_deadline`.
//!
//! # Guarantees
//! - `renew_deadline` < `lease_duration`: the [`Fence`] closes `renew_deadline` after the
//!   *sending* of the last successful renewal, and every report write is bounded so that it
//!   ends before any other candidate can consider the lease expired.
//! - Release happens only while this replica holds the lease, guarded like every other write.
//! - The identity must be given and must be unique per replica (the pod name).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::{Api, Client};

/// How to elect.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's unique identity (the pod name in a cluster).
    pub identity: String,
    /// How long a record must stay unchanged before others may take it over.
    pub lease_duration: Duration,
    /// The leader gives up when no renewal has succeeded for this long.
    pub renew_deadline: Duration,
    /// How often candidates try and the leader renews.
    pub retry_period: Duration,
}

/// A configuration that cannot be safe.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("leader election needs an identity unique to this replica (--identity, or POD_NAME from the downward API)")]
    NoIdentity,
    #[error("the renew deadline ({renew:?}) must be shorter than the lease duration ({lease:?}), or two replicas could write at once")]
    DeadlineNotShorter { renew: Duration, lease: Duration },
    #[error("the retry period ({retry:?}) must be shorter than the renew deadline ({renew:?})")]
    RetryNotShorter { retry: Duration, renew: Duration },
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    #[must_use]
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// The lease duration the record can carry: whole seconds, rounded down.
    fn recorded_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration.as_secs())
    }

    /// # Errors
    /// An empty identity, or durations that would let two replicas write at once (judged on
    /// the whole seconds the Lease record holds).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.identity.trim().is_empty() {
            return Err(ConfigError::NoIdentity);
        }
        if self.renew_deadline >= self.recorded_duration() {
            return Err(ConfigError::DeadlineNotShorter { renew: self.renew_deadline, lease: self.recorded_duration() });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ConfigError::RetryNotShorter { retry: self.retry_period, renew: self.renew_deadline });
        }
        Ok(())
    }

    /// How long one report write may take: it must end before another replica may consider
    /// the lease expired, that is within `lease_duration - renew_deadline` of the fence
    /// closing (with a fifth to spare).
    #[must_use]
    pub fn write_timeout(&self) -> Duration {
        (self.recorded_duration().saturating_sub(self.renew_deadline) * 4 / 5).min(Duration::from_secs(5))
    }
}

/// The part of a Lease record that tells whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: String,
    duration_seconds: i32,
    acquire_time: Option<Timestamp>,
    renew_time: Option<Timestamp>,
    transitions: i32,
}

impl Record {
    fn of(spec: Option<&LeaseSpec>) -> Record {
        let spec = spec.cloned().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    fn spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: (!self.holder.is_empty()).then(|| self.holder.clone()),
            lease_duration_seconds: Some(self.duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.transitions),
            ..LeaseSpec::default()
        }
    }
}

/// What a candidate should do after reading the Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No Lease exists: create it holding it.
    Create(LeaseSpec),
    /// Write this spec over the Lease just read, guarded by its resourceVersion: a take-over,
    /// an acquisition of a released lease, or a renewal.
    Update(LeaseSpec),
    /// Someone else holds it; it cannot be taken before `until` (on this replica's clock).
    HeldElsewhere { holder: String, until: Instant },
}

/// The pure core of election: what one replica has observed, and what it decides.
#[derive(Debug)]
pub struct Elector {
    cfg: LeaseConfig,
    observed: Option<(Record, Instant)>,
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}

impl Elector {
    #[must_use]
    pub fn new(cfg: LeaseConfig) -> Self {
        Elector { cfg, observed: None }
    }

    /// Decides on the Lease as just read (`None`: it does not exist), at `now` on the monotonic
    /// clock and `wall` for the timestamps written into the record.
    pub fn decide(&mut self, current: Option<&Lease>, now: Instant, wall: Timestamp) -> Decision {
        let Some(lease) = current else {
            let record = Record {
                holder: self.cfg.identity.clone(),
                duration_seconds: seconds(self.cfg.lease_duration),
                acquire_time: Some(wall),
                renew_time: Some(wall),
                transitions: 0,
            };
            return Decision::Create(record.spec());
        };
        let record = Record::of(lease.spec.as_ref());
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != record) {
            self.observed = Some((record.clone(), now));
        }
        let observed_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let valid_for = Duration::from_secs(u64::try_from(record.duration_seconds.max(0)).unwrap_or(0));
        let ours = record.holder == self.cfg.identity;
        if !record.holder.is_empty() && !ours && now < observed_at + valid_for {
            return Decision::HeldElsewhere { holder: record.holder, until: observed_at + valid_for };
        }
        let next = Record {
            holder: self.cfg.identity.clone(),
            duration_seconds: seconds(self.cfg.lease_duration),
            acquire_time: if ours { record.acquire_time.or(Some(wall)) } else { Some(wall) },
            renew_time: Some(wall),
            transitions: if ours { record.transitions } else { record.transitions + 1 },
        };
        Decision::Update(next.spec())
    }

    /// After a successful create or update: this replica wrote `spec` at `now`.
    pub fn wrote(&mut self, spec: &LeaseSpec, now: Instant) {
        self.observed = Some((Record::of(Some(spec)), now));
    }

    /// The spec that gives the lease up, if `current` is held by this replica: no holder and a
    /// 1 s duration, as client-go writes it, so a standby takes over at its next try.
    #[must_use]
    pub fn release(&self, current: &Lease, wall: Timestamp) -> Option<LeaseSpec> {
        let record = Record::of(current.spec.as_ref());
        (record.holder == self.cfg.identity).then(|| {
            Record { holder: String::new(), duration_seconds: 1, acquire_time: Some(wall), renew_time: Some(wall), ..record }.spec()
        })
    }
}

/// Whether the leader may still write: open until `renew_deadline` after the sending of the
/// last successful renewal.
#[derive(Debug)]
pub struct Fence {
    renew_deadline: Duration,
    open_until: Mutex<Option<Instant>>,
}

impl Fence {
    #[must_use]
    pub fn new(renew_deadline: Duration) -> Self {
        Fence { renew_deadline, open_until: Mutex::new(None) }
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant) {
        let mut open = crate::lock(&self.open_until);
        let until = sent + self.renew_deadline;
        if open.is_none_or(|u| u < until) {
            *open = Some(until);
        }
    }

    pub fn close(&self) {
        *crate::lock(&self.open_until) = None;
    }

    #[must_use]
    pub fn allows(&self, now: Instant) -> bool {
        crate::lock(&self.open_until).is_some_and(|until| now < until)
    }
}

/// Errors of one election round; all of them are retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading lease {namespace}/{name}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing lease {namespace}/{name}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// How one round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Round {
    /// This replica holds the lease; the write was sent at this instant.
    Held { sent: Instant },
    /// Someone else holds it.
    Elsewhere { holder: String },
    /// Another replica wrote first (409): read again next round.
    Conflict,
}

/// One candidate: the elector and its Lease API.
pub struct Candidate {
    api: Api<Lease>,
    elector: Elector,
    cfg: LeaseConfig,
}

impl Candidate {
    #[must_use]
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Candidate { api: Api::namespaced(client, &cfg.namespace), elector: Elector::new(cfg.clone()), cfg }
    }

    #[must_use]
    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    fn read_err(&self) -> impl FnOnce(kube::Error) -> Error {
        let (namespace, name) = (self.cfg.namespace.clone(), self.cfg.name.clone());
        move |source| Error::Read { namespace, name, source }
    }

    fn write_err(&self) -> impl FnOnce(kube::Error) -> Error {
        let (namespace, name) = (self.cfg.namespace.clone(), self.cfg.name.clone());
        move |source| Error::Write { namespace, name, source }
    }

    /// One try to acquire or renew (client-go's `tryAcquireOrRenew`).
    ///
    /// # Errors
    /// The Lease could not be read or written (other than a 409 conflict).
    pub async fn try_acquire_or_renew(&mut self) -> Result<Round, Error> {
        let sent = Instant::now();
        let current = self.api.get_opt(&self.cfg.name).await.map_err(self.read_err())?;
        match self.elector.decide(current.as_ref(), Instant::now(), Timestamp::now()) {
            Decision::HeldElsewhere { holder, .. } => Ok(Round::Elsewhere { holder }),
            Decision::Create(spec) => {
                let lease = Lease {
                    metadata: kube::api::ObjectMeta { name: Some(self.cfg.name.clone()), ..Default::default() },
                    spec: Some(spec.clone()),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => {
                        self.elector.wrote(&spec, Instant::now());
                        Ok(Round::Held { sent })
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Conflict),
                    Err(e) => Err(self.write_err()(e)),
                }
            }
            Decision::Update(spec) => {
                // `replace` sends the resourceVersion we read: a concurrent write makes it 409.
                let mut lease = current.unwrap_or_default();
                lease.spec = Some(spec.clone());
                match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
                    Ok(_) => {
                        self.elector.wrote(&spec, Instant::now());
                        Ok(Round::Held { sent })
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Conflict),
                    Err(e) => Err(self.write_err()(e)),
                }
            }
        }
    }

    /// Gives the lease up if this replica still holds it (guarded like every write).
    pub async fn release(&mut self) {
        let current = match self.api.get_opt(&self.cfg.name).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, lease = %self.cfg.name, "could not read the lease to release it");
                return;
            }
        };
        let Some(spec) = self.elector.release(&current, Timestamp::now()) else {
            tracing::info!(lease = %self.cfg.name, "not releasing: the lease is held by another replica");
            return;
        };
        let mut lease = current;
        lease.spec = Some(spec);
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.cfg.name, "released the lease"),
            Err(e) => tracing::warn!(error = %e, lease = %self.cfg.name, "could not release the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(identity: &str) -> LeaseConfig {
        LeaseConfig::new("ns", "podlife", identity)
    }

    fn lease(spec: LeaseSpec, rv: &str) -> Lease {
        Lease {
            metadata: kube::api::ObjectMeta { name: Some("podlife".into()), resource_version: Some(rv.into()), ..Default::default() },
            spec: Some(spec),
        }
    }

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_lease_is_created_held() {
        let mut e = Elector::new(cfg("a"));
        let Decision::Create(spec) = e.decide(None, Instant::now(), Timestamp::now()) else { panic!() };
        assert_eq!((spec.holder_identity.as_deref(), spec.lease_transitions, spec.lease_duration_seconds), (Some("a"), Some(0), Some(15)));
    }

    #[test]
    fn another_holders_lease_is_taken_only_after_it_stood_still_for_its_duration_on_our_clock() {
        let mut e = Elector::new(cfg("b"));
        let t0 = Instant::now();
        // The holder's renewTime is an hour old by our wall clock (skew, or a paused node), yet
        // we only just saw this record: not ours to take for 15 s.
        let old = held_by("a", Timestamp::now() - jiff::SignedDuration::from_secs(3600));
        let l = lease(old.clone(), "7");
        assert!(matches!(e.decide(Some(&l), t0, Timestamp::now()), Decision::HeldElsewhere { ref holder, .. } if holder == "a"));
        assert!(matches!(e.decide(Some(&l), t0 + Duration::from_secs(14), Timestamp::now()), Decision::HeldElsewhere { .. }));
        // A renewal (a changed record) restarts the count.
        let renewed = lease(held_by("a", Timestamp::now()), "8");
        assert!(matches!(e.decide(Some(&renewed), t0 + Duration::from_secs(14), Timestamp::now()), Decision::HeldElsewhere { .. }));
        assert!(matches!(e.decide(Some(&renewed), t0 + Duration::from_secs(28), Timestamp::now()), Decision::HeldElsewhere { .. }));
        let Decision::Update(spec) = e.decide(Some(&renewed), t0 + Duration::from_secs(30), Timestamp::now()) else { panic!() };
        assert_eq!((spec.holder_identity.as_deref(), spec.lease_transitions), (Some("b"), Some(4)), "a take-over counts a transition");
    }

    #[test]
    fn a_renewal_keeps_the_acquire_time_and_transitions_and_a_released_lease_is_free() {
        let mut e = Elector::new(cfg("a"));
        let acquired = Timestamp::now() - jiff::SignedDuration::from_secs(100);
        let mine = lease(held_by("a", acquired), "9");
        let Decision::Update(spec) = e.decide(Some(&mine), Instant::now(), Timestamp::now()) else { panic!() };
        assert_eq!((spec.acquire_time.map(|t| t.0), spec.lease_transitions), (Some(acquired), Some(3)));
        // Released by its holder: no holder, taken at once.
        let mut b = Elector::new(cfg("b"));
        let released = e.release(&mine, Timestamp::now()).expect("we hold it");
        assert_eq!((released.holder_identity.clone(), released.lease_duration_seconds), (None, Some(1)));
        assert!(matches!(b.decide(Some(&lease(released, "10")), Instant::now(), Timestamp::now()), Decision::Update(_)));
    }

    #[test]
    fn release_only_while_held() {
        // Defect: release nulled the holder without checking who held the lease.
        let e = Elector::new(cfg("a"));
        assert_eq!(e.release(&lease(held_by("b", Timestamp::now()), "5"), Timestamp::now()), None);
    }

    #[test]
    fn the_fence_closes_at_the_renew_deadline_counted_from_the_sending() {
        // Defect: the holder kept writing until its lease had already expired.
        let c = cfg("a");
        let fence = Fence::new(c.renew_deadline);
        let t0 = Instant::now();
        assert!(!fence.allows(t0), "closed before the first renewal");
        fence.renewed(t0);
        assert!(fence.allows(t0 + Duration::from_secs(9)));
        assert!(!fence.allows(t0 + Duration::from_secs(10)));
        // A write that starts just before the fence closes ends before anyone may take over.
        assert!(c.renew_deadline + c.write_timeout() < c.lease_duration);
        fence.renewed(t0 + Duration::from_secs(2));
        assert!(fence.allows(t0 + Duration::from_secs(11)));
        fence.close();
        assert!(!fence.allows(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn unsafe_configurations_are_refused() {
        // Defect: the identity fell back to podlife-operator-{pid}, which is 1 in every container.
        assert_eq!(cfg("").validate(), Err(ConfigError::NoIdentity));
        let mut c = cfg("a");
        c.renew_deadline = c.lease_duration;
        assert!(matches!(c.validate(), Err(ConfigError::DeadlineNotShorter { .. })));
        let mut c = cfg("a");
        c.retry_period = c.renew_deadline;
        assert!(matches!(c.validate(), Err(ConfigError::RetryNotShorter { .. })));
        // The record holds whole seconds: 10.5 s is written as 10 s, no longer than the deadline.
        let mut c = cfg("a");
        (c.lease_duration, c.renew_deadline) = (Duration::from_millis(10_500), Duration::from_secs(10));
        assert!(matches!(c.validate(), Err(ConfigError::DeadlineNotShorter { .. })));
        assert_eq!(cfg("a").validate(), Ok(()));
    }
}
