//! The decision of one reconcile, as a pure function: the subscription, the
//! catalogue it names, its children as cached and the clock in; the writes
//! to make, in order, and the outcome to report out. Every rule about what
//! to write and when (drain start, deadline and removal; the quota before
//! new pods; a module waiting for its quota; names taken by strangers;
//! pause; a spec that cannot be applied) lives here and is tested here.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::{
    drain::DrainRecord,
    error::Rejection,
    events::{EventType, Note},
    facts::{Live, LiveModule, Tenancy},
    status,
};
use crate::{
    api::{DataRetention, ModuleState, ModuleStatus, RampingDown, TenantSubscription},
    capacity::{
        self, CapacityPlan, Catalogue, Footprint, InvalidSpec,
        pace::{self, Ramp, RampInput},
        window::format_instant,
    },
    live::digest,
    render::{self, Child, ChildKind, Owner},
};

/// How long a new quota's wait for the quota controller goes unreported.
pub const QUOTA_ANSWER_SECONDS: i64 = 10;
/// How soon a subscription naming a catalogue object that is missing looks again.
pub const MISSING_REFERENCE_RETRY: SignedDuration = SignedDuration::from_secs(10);
/// How soon a module waiting for its quota looks again (the quota
/// controller's answer usually brings it back sooner).
pub const QUOTA_WAIT_RETRY: SignedDuration = SignedDuration::from_secs(2);

/// What one reconcile does: `batches` in order (the writes of one batch go
/// out together; a batch only once the one before succeeded), then the
/// status of `outcome`; `observed` is what the per-module gauges show.
#[derive(Debug)]
pub struct Decision {
    pub batches: Vec<Vec<Write>>,
    pub outcome: Outcome,
    /// Per module converged, by name; none when nothing was converged
    /// (paused or invalid with nothing to hold to, not here).
    pub observed: BTreeMap<String, Observed>,
}

/// What the gauges of one converged module show beyond its status numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// The module is one the CapacityLimited condition names.
    pub capacity_limited: bool,
    /// The API server refuses its pods (it is one Ready's `PodsRefused` names).
    pub pods_refused: bool,
    /// Pods the HPA runs (its `status.currentReplicas`).
    pub replicas: Option<i32>,
    /// Live sessions, read only while the ceiling holds the HPA back.
    pub sessions: Option<i64>,
}

/// One write to the cluster.
#[derive(Debug)]
pub enum Write {
    /// Server-side apply of a child.
    Apply(Desired),
    /// Delete a drained module's child, guarded by its uid.
    Delete {
        module: String,
        kind: ChildKind,
        object: Box<ObjectMeta>,
    },
    /// Delete a drained module's PersistentVolumeClaims (its recorded
    /// `dataRetention` is Delete): those carrying the subscription's and the
    /// module's labels that no other object owns. Reported back as a
    /// [`DataLeft`], tried again until none is left.
    DeleteData { module: String },
    /// An Event on the subscription.
    Announce(Note),
}

/// A child as it is to be applied: its body, serialized once, and its digest.
#[derive(Debug)]
pub struct Desired {
    pub kind: ChildKind,
    pub name: String,
    pub body: Value,
    pub digest: u64,
    /// The digest of what we applied before, when the child is cached.
    pub applied: Option<u64>,
}

impl Desired {
    pub fn new(child: &Child, applied: Option<u64>) -> Self {
        let mut body = child.to_value();
        let digest = digest::of_desired(&mut body);
        Self {
            kind: child.kind(),
            name: child.name().to_string(),
            body,
            digest,
            applied,
        }
    }

    /// The live object does not say what we would write.
    pub fn needed(&self) -> bool {
        self.applied != Some(self.digest)
    }
}

/// A condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub reason: String,
    pub message: String,
}

impl Reason {
    fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A child name held by an object the subscription does not own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The module whose child it would be; none for the quota.
    pub module: Option<String>,
    pub kind: ChildKind,
    pub name: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(m) = &self.module {
            write!(f, "{m}: ")?;
        }
        write!(
            f,
            "{} {} exists and is not owned by this subscription",
            self.kind, self.name
        )
    }
}

/// What a reconcile found, turned into status.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub modules: Vec<ModuleStatus>,
    /// The Ready condition: true with reason `Available` (or `Paused`:
    /// nothing is asked of the children but to stay), else what stops it.
    pub ready: bool,
    pub ready_reason: Reason,
    /// Reconciling=True with this reason, when work is under way.
    pub reconciling: Option<Reason>,
    /// Stalled=True with this reason, when waiting will not help.
    pub stalled: Option<Reason>,
    /// CapacityLimited=True with these messages, one per module held back.
    pub limited: Vec<String>,
    pub active_windows: Vec<String>,
    pub next_transition: Option<String>,
    /// Look again at this instant (a window edge, a drain deadline, a wait).
    pub requeue: Option<Timestamp>,
    /// Every module waits for a quota written moments ago: the quota
    /// controller's answer brings the next reconcile, so a status saying
    /// "waiting for the quota" is not written (unless the wait outlasts
    /// `QUOTA_ANSWER_SECONDS`).
    pub awaiting_quota: bool,
}

impl Outcome {
    /// A write of the decision was refused by the API server: the
    /// subscription is not Ready, and says which child and why, on the
    /// module the child belongs to too. What was decided otherwise stands.
    pub fn child_rejected(&mut self, subscription: &str, rejection: &Rejection) {
        let message = rejection.to_string();
        for m in &mut self.modules {
            if capacity::child_name(subscription, &m.name) == rejection.name {
                m.message = Some(message.clone());
            }
        }
        self.ready = false;
        self.ready_reason = Reason::new("ChildRejected", message.clone());
        self.stalled = Some(Reason::new("ChildRejected", message));
        self.awaiting_quota = false;
    }
}

/// Decide what to write for `sub`, given the catalogue it names, its
/// children as cached and the time.
pub fn decide(
    sub: &TenantSubscription,
    catalogue: &Catalogue,
    live: &Live,
    now: Timestamp,
) -> Decision {
    let old = sub.status.clone().unwrap_or_default();
    // Modules that may have children: those in the spec and those reported before.
    let mut known: BTreeSet<&str> = sub.spec.modules.iter().map(|m| m.name.as_str()).collect();
    known.extend(old.modules.iter().map(|m| m.name.as_str()));
    if let Err(refusal) = assignment(sub, &live.tenancy) {
        return Decision {
            batches: vec![],
            outcome: not_here(sub, refusal),
            observed: BTreeMap::new(),
        };
    }
    if sub.spec.paused {
        return match restrained(sub, catalogue, live, now) {
            Some(plan) => {
                let mut d = converge(sub, &plan, catalogue, &known, live, now);
                d.outcome = as_paused(d.outcome);
                d
            }
            None => Decision {
                batches: vec![],
                outcome: paused(sub, &known, live),
                observed: BTreeMap::new(),
            },
        };
    }
    match capacity::plan(&sub.name_any(), &sub.spec, catalogue, now) {
        Err(errors) => match restrained(sub, catalogue, live, now) {
            Some(plan) => {
                let mut d = converge(sub, &plan, catalogue, &known, live, now);
                d.outcome = as_invalid(d.outcome, &errors, now);
                d
            }
            None => Decision {
                batches: vec![],
                outcome: invalid(sub, &errors, &known, live, now),
                observed: BTreeMap::new(),
            },
        },
        Ok(plan) => converge(sub, &plan, catalogue, &known, live, now),
    }
}

/// What a paused subscription, or one whose spec cannot be applied, gets:
/// nothing rises, reductions go through. Each module keeps the tier and at
/// most the ceiling and floor it had (its last status: a record only the
/// operator writes), lowered to what the subscription and its plan allow
/// now, so a lower plan or the end of a window takes effect while a larger
/// spec, a new module or a window opening waits; modules switched off or
/// removed drain as usual. `None` when there is nothing to hold to (no
/// module on record, a module serving without a record) or the spec cannot
/// be evaluated even so (a missing profile, a bad window): then nothing is
/// written at all.
fn restrained(
    sub: &TenantSubscription,
    catalogue: &Catalogue,
    live: &Live,
    now: Timestamp,
) -> Option<CapacityPlan> {
    let old = sub.status.clone().unwrap_or_default();
    let recorded: BTreeMap<&str, &ModuleStatus> = old
        .modules
        .iter()
        .filter(|m| m.state != Some(ModuleState::Draining))
        .filter(|m| m.max_replicas.is_some() && m.min_replicas.is_some())
        .map(|m| (m.name.as_str(), m))
        .collect();
    if recorded.is_empty() {
        return None;
    }
    let sold = sub
        .spec
        .plan
        .as_ref()
        .and_then(|name| catalogue.plans.get(name));
    let mut spec = sub.spec.clone();
    spec.paused = false;
    for m in &spec.modules {
        if m.enabled && !recorded.contains_key(m.name.as_str()) && !live.module(&m.name).is_empty()
        {
            return None;
        }
    }
    spec.modules
        .retain(|m| !m.enabled || recorded.contains_key(m.name.as_str()));
    // Placement is held too: the regions on record, not the spec's (nor,
    // when it names none, the plan's).
    spec.regions.clear();
    for m in spec.modules.iter_mut().filter(|m| m.enabled) {
        m.tier = recorded[m.name.as_str()].tier.clone();
        m.regions = recorded[m.name.as_str()].regions.clone();
        if let Some(allowed) = sold.and_then(|p| p.modules.iter().find(|a| a.name == m.name)) {
            m.concurrency = m.concurrency.min(allowed.max_concurrency);
        }
    }
    let mut plan = capacity::plan_unchecked(&sub.name_any(), &spec, catalogue, now).ok()?;
    for m in &mut plan.modules {
        let rec = recorded[m.name.as_str()];
        let peak = sold
            .and_then(|p| p.modules.iter().find(|a| a.name == m.name))
            .map(|a| a.peak());
        // The replicas the plan's peak needs, by the same rule as any ceiling.
        let peak_max = peak
            .and_then(|p| capacity::numbers(p, m.sessions_per_replica, 1, 100, 0))
            .map(|n| n.max_replicas);
        let n = &mut m.numbers;
        n.max_replicas = n
            .max_replicas
            .min(rec.max_replicas.unwrap_or(i32::MAX))
            .min(peak_max.unwrap_or(i32::MAX));
        n.min_replicas = n
            .min_replicas
            .min(rec.min_replicas.unwrap_or(i32::MAX))
            .min(n.max_replicas);
        n.ceiling = n
            .ceiling
            .min(rec.concurrency.unwrap_or(i64::MAX))
            .min(peak.unwrap_or(i64::MAX));
    }
    Some(plan)
}

/// A module whose lowered ceiling comes down in steps.
#[derive(Debug, Clone)]
struct Ramping {
    record: RampingDown,
    message: String,
    next_at: Timestamp,
}

/// The plan with each lowered ceiling brought down at its module's
/// scale-down pace (see [`pace::ramp_down`]), and the modules ramping. The
/// ceiling in force is the module's recorded maxReplicas (a record only
/// the operator writes), no higher than its HPA's: the step taken last
/// time, or the old plan's ceiling. The quota follows the stepped ceiling.
fn ramps(
    sub: &TenantSubscription,
    plan: &CapacityPlan,
    live: &Live,
    now: Timestamp,
) -> (Option<CapacityPlan>, BTreeMap<String, Ramping>) {
    let old = sub.status.as_ref();
    let mut ramps = BTreeMap::new();
    // The steps, by module index: the plan is copied only when one ramps.
    let mut steps = Vec::new();
    for (i, m) in plan.modules.iter().enumerate() {
        let Some(rec) = old
            .into_iter()
            .flat_map(|s| &s.modules)
            // Active, or held by a spec that cannot be applied (a lowered
            // plan the subscription is now over): not draining.
            .find(|r| r.name == m.name && r.state != Some(ModuleState::Draining))
        else {
            continue;
        };
        let l = live.module(&m.name);
        let Some(hpa) = l.hpa.as_ref().map(|h| &h.facts) else {
            continue;
        };
        let (Some(recorded), Some(applied)) = (rec.max_replicas, hpa.max_replicas) else {
            continue;
        };
        let seconds = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .map(|t| t.as_second().min(now.as_second()))
        };
        let target = m.numbers.max_replicas;
        let input = RampInput {
            target,
            previous: recorded.min(applied),
            // The most pods known to run: the HPA's count lags a scale it
            // has just made (or a floor just raised) by up to a sync.
            current: [
                hpa.current_replicas,
                l.deployment.as_ref().and_then(|d| d.facts.spec_replicas),
                l.deployment.as_ref().and_then(|d| d.facts.replicas),
            ]
            .into_iter()
            .flatten()
            .max(),
            // The HPA below the recorded ceiling: a step was written whose
            // status the cache does not hold yet. It was taken just now.
            last_step: if applied < recorded {
                Some(now.as_second())
            } else {
                rec.ramping_down
                    .as_ref()
                    .and_then(|r| seconds(&r.last_step))
            },
            last_scale: hpa.last_scale.map(|t| t.min(now.as_second())),
            now: now.as_second(),
        };
        let Ramp::Step {
            max_replicas,
            stepped,
            next_at,
            until,
        } = pace::ramp_down(input, m.scaling.down_pace())
        else {
            continue;
        };
        let at = |t: i64| Timestamp::from_second(t).unwrap_or(now);
        // The step the next one waits for: this one, or the last one as
        // this reconcile knew it (possibly inferred from the HPA, above:
        // recording an older one would let the next step come early).
        // Before any step, the HPA's last scale it waits for stands in
        // for one, so that the HPA scaling again (which the namespace can
        // cause) delays the first step by one more period at most.
        let last_step = if stepped {
            Some(format_instant(now, &plan.time_zone))
        } else {
            input
                .last_step
                .or(input.last_scale)
                .map(|t| format_instant(at(t), &plan.time_zone))
        };
        let running = input.current.unwrap_or(max_replicas);
        let message = format!(
            "{}: ramping down to {target} replicas until {}, {running} now (ceiling {max_replicas})",
            m.name,
            at(until)
                .to_zoned(plan.time_zone.clone())
                .strftime("%H:%M %Z"),
        );
        steps.push((i, max_replicas));
        ramps.insert(
            m.name.clone(),
            Ramping {
                record: RampingDown {
                    to_max_replicas: target,
                    until: format_instant(at(until), &plan.time_zone),
                    last_step,
                },
                message,
                next_at: at(next_at) + SignedDuration::from_millis(500),
            },
        );
    }
    if steps.is_empty() {
        return (None, ramps);
    }
    let mut plan = plan.clone();
    for (i, max) in steps {
        let n = &mut plan.modules[i].numbers;
        n.max_replicas = max;
        n.min_replicas = n.min_replicas.min(max);
    }
    (Some(plan), ramps)
}

/// A restrained converge's outcome, reported as paused: Ready, as a paused
/// subscription asks nothing of its children but to stay as they are
/// (health checks read it as current, not as waiting for ever). What still
/// goes on (a reduction ramping, a drain) keeps Reconciling=True.
fn as_paused(mut o: Outcome) -> Outcome {
    o.ready = o.stalled.is_none();
    o.ready_reason = Reason::new(
        "Paused",
        "reconciliation is paused (spec.paused): nothing rises; lower ceilings (a lower plan, a window's end) and modules switched off still take effect",
    );
    o
}

/// The condition reason of a spec that cannot be applied (its first
/// error's) and the message naming every error.
fn summary(errors: &[InvalidSpec]) -> (&'static str, String) {
    let message = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    (errors[0].reason(), message)
}

/// The errors that belong to `module`.
fn errors_of(errors: &[InvalidSpec], module: &str) -> Vec<String> {
    errors
        .iter()
        .filter(|e| e.module() == Some(module))
        .map(|e| e.to_string())
        .collect()
}

/// A restrained converge's outcome, reported as a spec that cannot be
/// applied: the errors on the modules they name and in Ready and Stalled.
fn as_invalid(mut o: Outcome, errors: &[InvalidSpec], now: Timestamp) -> Outcome {
    let (reason, message) = summary(errors);
    for m in &mut o.modules {
        let own = errors_of(errors, &m.name);
        if !own.is_empty() {
            m.state = Some(ModuleState::Invalid);
            m.message = Some(own.join("; "));
        }
    }
    o.ready = false;
    o.ready_reason = Reason::new(
        reason,
        format!("not applied, nothing raised (lower ceilings still apply): {message}"),
    );
    o.stalled = Some(Reason::new(reason, message));
    if errors.iter().any(InvalidSpec::is_missing_reference) {
        let soon = now + MISSING_REFERENCE_RETRY;
        o.requeue = Some(o.requeue.map_or(soon, |r| r.min(soon)));
    }
    o
}

/// Whether the subscription may act in its namespace: only where the
/// provider assigned the namespace to its tenant (the namespace label), and
/// only the first subscription there. A namespace admin cannot label its
/// namespace, so a subscription cannot place itself, and its `tenantId`
/// cannot claim another tenant's namespace.
pub fn assignment(sub: &TenantSubscription, tenancy: &Tenancy) -> Result<(), Reason> {
    let ns = sub.namespace().unwrap_or_default();
    let label = &tenancy.label;
    let claimed = &sub.spec.tenant_id;
    let Some(tenant) = &tenancy.tenant else {
        return Err(Reason::new(
            "NamespaceNotAssigned",
            format!(
                "namespace {ns} is not assigned to a tenant (it has no label {label}); \
                 nothing is written here until the provider labels it {label}={claimed}"
            ),
        ));
    };
    if tenant != claimed {
        return Err(Reason::new(
            "TenantMismatch",
            format!(
                "spec.tenantId is {claimed:?} but namespace {ns} is assigned to tenant \
                 {tenant:?} (label {label}={tenant}); nothing is written"
            ),
        ));
    }
    if let Some(first) = tenancy.earlier.first() {
        return Err(Reason::new(
            "DuplicateSubscription",
            format!(
                "namespace {ns} already has subscription {first} for tenant {tenant}; \
                 only the oldest subscription of a namespace acts, nothing is written for this one"
            ),
        ));
    }
    Ok(())
}

/// A subscription that may not act in its namespace (see [`assignment`]):
/// nothing is written; status says why, and keeps its modules as it said them.
fn not_here(sub: &TenantSubscription, refusal: Reason) -> Outcome {
    let old = sub.status.clone().unwrap_or_default();
    Outcome {
        modules: old.modules,
        ready: false,
        ready_reason: refusal.clone(),
        reconciling: None,
        stalled: Some(refusal),
        limited: vec![],
        active_windows: vec![],
        next_transition: None,
        requeue: None,
        awaiting_quota: false,
    }
}

/// `spec.paused`: nothing is written; status keeps what it said, with the
/// replica counts of today.
fn paused(sub: &TenantSubscription, known: &BTreeSet<&str>, live: &Live) -> Outcome {
    let old = sub.status.clone().unwrap_or_default();
    let modules = known
        .iter()
        .filter_map(|m| {
            let l = live.module(m);
            if l.is_empty() {
                return None;
            }
            let mut st = old
                .modules
                .iter()
                .find(|s| s.name == *m)
                .cloned()
                .unwrap_or(ModuleStatus {
                    name: m.to_string(),
                    ..Default::default()
                });
            (st.replicas, st.ready_replicas) = l.replicas();
            Some(st)
        })
        .collect();
    Outcome {
        modules,
        // Ready: what a paused subscription asks, children left as they
        // are, holds (see `as_paused`).
        ready: true,
        ready_reason: Reason::new(
            "Paused",
            "reconciliation is paused (spec.paused); children are left as they are",
        ),
        reconciling: None,
        stalled: None,
        limited: vec![],
        active_windows: old.active_windows,
        next_transition: None,
        requeue: None,
        awaiting_quota: false,
    }
}

/// A spec that cannot be applied: nothing is written, the errors are
/// reported on the modules they name and in Ready and Stalled.
fn invalid(
    sub: &TenantSubscription,
    errors: &[InvalidSpec],
    known: &BTreeSet<&str>,
    live: &Live,
    now: Timestamp,
) -> Outcome {
    let (reason, message) = summary(errors);
    let old = sub.status.clone().unwrap_or_default();
    let modules = known
        .iter()
        .filter_map(|m| {
            let l = live.module(m);
            let own = errors_of(errors, m);
            if own.is_empty() && l.is_empty() {
                return None;
            }
            if own.is_empty() {
                // Untouched, as it was.
                return old.modules.iter().find(|s| s.name == *m).cloned();
            }
            let mut st = status::invalid_module(m, &l, own.join("; "));
            // The numbers in force stay on record: a later reconcile holds to them.
            if let Some(was) = old.modules.iter().find(|s| s.name == *m) {
                (st.tier, st.min_replicas, st.max_replicas, st.concurrency) = (
                    was.tier.clone(),
                    was.min_replicas,
                    was.max_replicas,
                    was.concurrency,
                );
            }
            Some(st)
        })
        .collect();
    // A reference that may appear any moment (the profile, plan or calendar
    // applied together with the subscription, its watch event possibly
    // handled first): look again soon, not only at resync.
    let requeue = errors
        .iter()
        .any(InvalidSpec::is_missing_reference)
        .then(|| now + MISSING_REFERENCE_RETRY);
    Outcome {
        modules,
        ready: false,
        ready_reason: Reason::new(
            reason,
            format!("not applied, existing objects left as they are: {message}"),
        ),
        reconciling: None,
        stalled: Some(Reason::new(reason, message)),
        limited: vec![],
        active_windows: old.active_windows,
        next_transition: old.next_transition,
        requeue,
        awaiting_quota: false,
    }
}

/// Modules switched off or removed that still have children (or data to
/// delete): each drains from the record its status holds (see
/// [`DrainRecord`]), begun the first time it is seen off; its children are
/// kept as they were when the drain began, and at the recorded deadline
/// they (and, when the recorded retention says Delete, its data) are removed.
struct Drains {
    batches: Vec<Vec<Write>>,
    /// Draining modules' children that differ from what they were when the
    /// drain began (a hand edit), to apply again.
    applies: Vec<Write>,
    /// Quota shares of the modules still draining.
    footprints: Vec<Footprint>,
    statuses: Vec<ModuleStatus>,
    /// "video-call until 12:05 (Asia/Shanghai)", one per draining module.
    until: Vec<String>,
    earliest_deadline: Option<Timestamp>,
}

fn drains(
    sub: &TenantSubscription,
    owner: &Owner,
    plan: &CapacityPlan,
    catalogue: &Catalogue,
    known: &BTreeSet<&str>,
    live: &Live,
    now: Timestamp,
) -> Drains {
    let old = sub.status.clone().unwrap_or_default();
    let enabled: BTreeSet<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
    let mut d = Drains {
        batches: vec![],
        applies: vec![],
        footprints: vec![],
        statuses: vec![],
        until: vec![],
        earliest_deadline: None,
    };
    for m in known.iter().filter(|m| !enabled.contains(*m)) {
        let l = live.module(m);
        let last = old.modules.iter().find(|s| s.name == *m);
        let recorded = last.and_then(DrainRecord::read);
        if l.is_empty() {
            // Children gone; data the record says to delete may be left.
            if let Some(r) = recorded
                && r.retention == DataRetention::Delete
                && now >= r.deadline
            {
                d.batches.push(vec![Write::DeleteData {
                    module: m.to_string(),
                }]);
                d.statuses
                    .push(r.status(m, &l, &plan.time_zone, deleting_data(m)));
            }
            continue;
        }
        let record = match recorded {
            Some(r) => r,
            None => {
                let mut r = DrainRecord::begin(sub, m, last, catalogue, now);
                if l.deployment.is_some() {
                    d.batches.push(vec![Write::Announce(Note {
                        type_: EventType::Normal,
                        reason: "Draining".into(),
                        message: format!(
                            "{m}: draining until {}",
                            r.shown_deadline(&plan.time_zone)
                        ),
                    })]);
                } else {
                    // Without a Deployment nothing serves: remove the rest now.
                    r.deadline = now;
                }
                r
            }
        };
        if now >= record.deadline {
            // The autoscaler first, so it does not act on a vanishing Deployment.
            let children = [
                (ChildKind::Hpa, l.hpa.as_ref().map(|o| &o.metadata)),
                (ChildKind::Service, l.service.as_ref().map(|o| &o.metadata)),
                (
                    ChildKind::Deployment,
                    l.deployment.as_ref().map(|o| &o.metadata),
                ),
            ];
            for (kind, object) in children {
                if let Some(object) = object {
                    d.batches.push(vec![Write::Delete {
                        module: m.to_string(),
                        kind,
                        object: Box::new(object.clone()),
                    }]);
                }
            }
            if record.retention == DataRetention::Delete {
                d.batches.push(vec![Write::DeleteData {
                    module: m.to_string(),
                }]);
                // Kept in status, with its record, until its data is gone.
                d.statuses.push(record.status(
                    m,
                    &LiveModule::default(),
                    &plan.time_zone,
                    deleting_data(m),
                ));
            }
            d.batches.push(vec![Write::Announce(Note {
                type_: EventType::Normal,
                reason: "ModuleRemoved".into(),
                message: format!("{m}: drained and removed"),
            })]);
            continue;
        }
        d.earliest_deadline = Some(
            d.earliest_deadline
                .map_or(record.deadline, |r| r.min(record.deadline)),
        );
        d.footprints.push(record.footprint(m));
        // Children as they were when the drain began, restored like any
        // module's; names a stranger holds are left alone.
        if let Some(module_plan) = record.plan(m, catalogue) {
            d.applies.extend(
                render::module_children(owner, &module_plan)
                    .iter()
                    .filter(|child| {
                        l.applied(child.kind()).0 || !live.is_taken(child.kind(), child.name())
                    })
                    .map(|child| Desired::new(child, l.applied(child.kind()).1))
                    .filter(Desired::needed)
                    .map(Write::Apply),
            );
        }
        let shown = record.shown_deadline(&plan.time_zone);
        d.statuses.push(record.status(
            m,
            &l,
            &plan.time_zone,
            format!("{m}: draining until {shown}"),
        ));
        d.until.push(format!("{m} until {shown}"));
    }
    d
}

fn deleting_data(module: &str) -> String {
    format!("{module}: removed; deleting data")
}

/// How soon data still being deleted is looked at again.
pub const DATA_RETRY: SignedDuration = SignedDuration::from_secs(5);

/// What a `DeleteData` write left: the claims still there (deleted but
/// held by a finalizer or a pod, or whose delete failed) and the API
/// server's answer to the last failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLeft {
    pub module: String,
    /// `None` when the claims could not even be listed.
    pub left: Option<usize>,
    pub error: Option<String>,
}

/// The outcome once the data deletes of this reconcile are known: a module
/// whose data is gone leaves status; one with data left stays, says how
/// much and why, and is looked at again in [`DATA_RETRY`].
pub fn settle_data(outcome: &mut Outcome, reports: &[DataLeft], now: Timestamp) {
    let mut pending = Vec::new();
    for r in reports {
        if r.left == Some(0) && r.error.is_none() {
            outcome.modules.retain(|s| s.name != r.module);
            continue;
        }
        let mut message = match r.left {
            Some(n) => format!(
                "{}: removed; deleting data: {n} PersistentVolumeClaim{} left",
                r.module,
                if n == 1 { "" } else { "s" }
            ),
            None => deleting_data(&r.module),
        };
        if let Some(e) = &r.error {
            message.push_str(&format!(": {e}"));
        }
        if let Some(s) = outcome.modules.iter_mut().find(|s| s.name == r.module) {
            s.message = Some(message.clone());
        }
        pending.push(message);
    }
    if pending.is_empty() {
        return;
    }
    let soon = now + DATA_RETRY;
    outcome.requeue = Some(outcome.requeue.map_or(soon, |r| r.min(soon)));
    let pending = pending.join("; ");
    outcome.reconciling = Some(match outcome.reconciling.take() {
        Some(r) => Reason::new(r.reason, format!("{}; {pending}", r.message)),
        None => Reason::new("DeletingData", pending),
    });
}

/// The quota, covering what is enabled plus what is still draining, and
/// the LimitRange that gives pods declaring no CPU or memory their defaults.
struct QuotaStep {
    /// The quota needs writing.
    write: Option<Desired>,
    /// The LimitRange needs writing.
    limit_range: Option<Desired>,
    /// The quota holds a rollout's larger size until then.
    held_until: Option<Timestamp>,
    /// The quota controller has taken up the quota as it is.
    in_force: bool,
    /// Written just now, or so recently that the quota controller's answer
    /// is still on its way.
    new: bool,
    conflict: Option<Conflict>,
}

/// How long a quota may hold a rollout's larger size: the rollout's
/// deadline plus the longest time an old pod may take to terminate.
fn hold_for(plan: &CapacityPlan) -> SignedDuration {
    let grace = plan
        .modules
        .iter()
        .map(|m| m.termination_grace_period_seconds.unwrap_or(30))
        .max()
        .unwrap_or(0);
    SignedDuration::from_secs(capacity::ROLLOUT_HOLD_SECONDS + grace.max(0))
}

/// The quota's limits and, while it holds a rollout's larger size, until
/// when. When pods of a new template may run next to old ones (`rolling`)
/// and the new limits are lower than those in force, each resource stays at
/// the larger of the two, so the new pods are admitted while the old ones
/// still hold their share. "In force" is the quota's own spec: only the
/// operator writes it, so nobody in the namespace can raise what is held.
/// The hold ends when the rollout does, or at the latest `hold_for` after it
/// began (recorded on the quota), however long the rollout is kept going.
fn held_quota(
    next: std::collections::BTreeMap<String, capacity::Quantity>,
    live: &Live,
    rolling: bool,
    hold_for: SignedDuration,
    now: Timestamp,
) -> (
    std::collections::BTreeMap<String, capacity::Quantity>,
    Option<Timestamp>,
) {
    let Some(q) = live.quota.as_ref().filter(|q| q.applied.is_some()) else {
        return (next, None);
    };
    let Some(current) = q.facts.hard.as_deref() else {
        return (next, None);
    };
    if !rolling || !capacity::shrinks(current, &next) {
        return (next, None);
    }
    let until = q
        .facts
        .held_until
        .as_deref()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .unwrap_or(now + hold_for);
    if now >= until {
        return (next, None);
    }
    (capacity::hold(current, &next), Some(until))
}

fn quota_step(
    owner: &Owner,
    plan: &CapacityPlan,
    drains: &Drains,
    live: &Live,
    rolling: bool,
    now: Timestamp,
) -> QuotaStep {
    let mut step = QuotaStep {
        write: None,
        limit_range: None,
        held_until: None,
        in_force: false,
        new: false,
        conflict: None,
    };
    let current = live.quota.as_ref();
    let quota_name = render::quota_name(&owner.name);
    if current.is_none() && live.is_taken(ChildKind::Quota, &quota_name) {
        step.conflict = Some(Conflict {
            module: None,
            kind: ChildKind::Quota,
            name: quota_name,
        });
        return step;
    }
    let limits = Child::LimitRange(Box::new(render::limit_range(owner)));
    if live.limit_range.is_none() && live.is_taken(ChildKind::LimitRange, limits.name()) {
        step.conflict = Some(Conflict {
            module: None,
            kind: ChildKind::LimitRange,
            name: limits.name().to_string(),
        });
        return step;
    }
    let limits = Desired::new(&limits, live.limit_range.as_ref().and_then(|l| l.applied));
    let limits_in_force = live.limit_range.is_some() && !limits.needed();
    step.limit_range = limits.needed().then_some(limits);
    let mut footprints: Vec<Footprint> = plan
        .modules
        .iter()
        .filter_map(|m| m.footprint().ok())
        .collect();
    footprints.extend_from_slice(&drains.footprints);
    let Some(next) = capacity::quota_hard(&footprints) else {
        return step;
    };
    let (hard, held_until) = held_quota(next, live, rolling, hold_for(plan), now);
    step.held_until = held_until;
    let until = held_until.map(|t| t.to_string());
    let q = Child::Quota(Box::new(render::quota_of(owner, hard, until.as_deref())));
    step.new = current.is_none_or(|q| {
        q.metadata.creation_timestamp.as_ref().is_none_or(|t| {
            now.duration_since(t.0) < SignedDuration::from_secs(QUOTA_ANSWER_SECONDS)
        })
    });
    let desired = Desired::new(&q, current.and_then(|q| q.applied));
    if desired.needed() {
        step.write = Some(desired);
        step.new = true;
    } else {
        step.in_force = limits_in_force && current.is_some_and(|q| q.facts.quota_enforced);
    }
    step
}

/// Whether pods of a new template may run next to old ones: a module's
/// Deployment is rolling out, or is about to be written.
fn rolling(modules: &[(LiveModule, Vec<Desired>)]) -> bool {
    modules.iter().any(|(l, children)| {
        l.deployment.as_ref().is_some_and(|d| {
            d.facts.rolling_out
                || children
                    .iter()
                    .any(|c| c.kind == ChildKind::Deployment && c.needed())
        })
    })
}

fn converge(
    sub: &TenantSubscription,
    plan: &CapacityPlan,
    catalogue: &Catalogue,
    known: &BTreeSet<&str>,
    live: &Live,
    now: Timestamp,
) -> Decision {
    let owner = Owner {
        name: sub.name_any(),
        namespace: sub.namespace().unwrap_or_default(),
        // The namespace's assignment (equal to spec.tenantId here, see `assignment`).
        tenant_id: live
            .tenancy
            .tenant
            .clone()
            .unwrap_or_else(|| sub.spec.tenant_id.clone()),
        reference: sub.controller_owner_ref(&()),
    };
    let mut requeue = plan
        .next_transition
        .map(|t| t + SignedDuration::from_millis(500));
    let (ramped, ramps) = ramps(sub, plan, live, now);
    let plan = ramped.as_ref().unwrap_or(plan);
    if let Some(next) = ramps.values().map(|r| r.next_at).min() {
        requeue = Some(requeue.map_or(next, |r| r.min(next)));
    }
    let drains = drains(sub, &owner, plan, catalogue, known, live, now);
    if let Some(deadline) = drains.earliest_deadline {
        requeue = Some(requeue.map_or(deadline, |r| r.min(deadline)));
    }
    let rendered: Vec<(LiveModule, Vec<Desired>)> = plan
        .modules
        .iter()
        .map(|m| {
            let l = live.module(&m.name);
            let children = render::module_children(&owner, m)
                .iter()
                .map(|child| Desired::new(child, l.applied(child.kind()).1))
                .collect();
            (l, children)
        })
        .collect();
    let quota = quota_step(&owner, plan, &drains, live, rolling(&rendered), now);
    if let Some(until) = quota.held_until {
        requeue = Some(requeue.map_or(until, |r| r.min(until)));
    }
    let mut batches = drains.batches;
    let mut conflicts: Vec<Conflict> = quota.conflict.into_iter().collect();
    let mut modules = Vec::new();
    let mut progress = Vec::new();
    let mut limited = Vec::new();
    let mut refused = Vec::new();
    let mut unschedulable = Vec::new();
    let mut ramping = Vec::new();
    let mut writes = Vec::new();
    let mut observed = BTreeMap::new();
    for (m, (l, children)) in plan.modules.iter().zip(rendered) {
        if l.deployment.is_none() && !quota.in_force {
            // A new module waits until the quota controller has taken up the
            // quota (its status event brings us back here): no tenant pod
            // may start before the cap is in force.
            progress.push(format!(
                "{}: waiting for ResourceQuota {} to be in force",
                m.name,
                render::quota_name(&owner.name)
            ));
            let soon = now + QUOTA_WAIT_RETRY;
            requeue = Some(requeue.map_or(soon, |r| r.min(soon)));
            continue;
        }
        // Every name is checked before any is written, so a module is
        // applied whole or not at all.
        let conflict = children.iter().find_map(|child| {
            let (cached, _) = l.applied(child.kind);
            (!cached && live.is_taken(child.kind, &child.name)).then(|| Conflict {
                module: Some(m.name.clone()),
                kind: child.kind,
                name: child.name.clone(),
            })
        });
        if let Some(c) = conflict {
            modules.push(status::invalid_module(&m.name, &l, c.to_string()));
            conflicts.push(c);
            continue;
        }
        writes.extend(
            children
                .into_iter()
                .filter(Desired::needed)
                .map(Write::Apply),
        );
        let limited_before = limited.len();
        limited.extend(status::capacity_limit(m, &l));
        let refusal = status::refused(m, &l);
        let pods_refused = refusal.is_some();
        refused.extend(refusal);
        let below_floor = status::progress(m, &l);
        // Pods no node can take: not ready while the floor is not met, a
        // limit on capacity above it.
        match (status::unschedulable(m, &l), &below_floor) {
            (Some(s), Some(_)) => unschedulable.push(s),
            (Some(s), None) => limited.push(s),
            (None, _) => {}
        }
        let hpa = l.hpa.as_ref().map(|h| &h.facts);
        observed.insert(
            m.name.clone(),
            Observed {
                capacity_limited: limited.len() > limited_before,
                pods_refused,
                replicas: hpa.and_then(|h| h.current_replicas),
                sessions: hpa.and_then(|h| h.limited_sessions),
            },
        );
        progress.extend(below_floor);
        let mut st = status::active_module(m, &l);
        if let Some(r) = ramps.get(&m.name) {
            st.ramping_down = Some(r.record.clone());
            st.message.get_or_insert_with(|| r.message.clone());
            ramping.push(r.message.clone());
        }
        modules.push(st);
    }

    writes.extend(drains.applies);
    // The quota goes first when pods may start or change size (a new module,
    // a changed Deployment); otherwise (a new HPA ceiling) it goes together
    // with the rest. Children of different modules are independent.
    // The LimitRange goes with the quota: pods declaring no CPU or memory
    // need its defaults to be admitted under a quota that caps them.
    let capacity: Vec<Write> = quota
        .write
        .into_iter()
        .chain(quota.limit_range)
        .map(Write::Apply)
        .collect();
    if !capacity.is_empty() {
        let pods_change = writes
            .iter()
            .any(|w| matches!(w, Write::Apply(d) if d.kind == ChildKind::Deployment));
        if pods_change {
            batches.push(capacity);
        } else {
            writes.extend(capacity);
        }
    }
    if !writes.is_empty() {
        batches.push(writes);
    }

    let awaiting_quota = quota.new
        && modules.is_empty()
        && drains.statuses.is_empty()
        && conflicts.is_empty()
        && !plan.modules.is_empty();
    modules.extend(drains.statuses);
    let conflicts: Vec<String> = conflicts.iter().map(Conflict::to_string).collect();
    let draining: Vec<String> = drains
        .until
        .iter()
        .map(|d| format!("draining {d}"))
        .collect();
    let (ready, ready_reason) = if !conflicts.is_empty() {
        (false, Reason::new("ObjectConflict", conflicts.join("; ")))
    } else if !refused.is_empty() {
        (false, Reason::new("PodsRefused", refused.join("; ")))
    } else if !unschedulable.is_empty() {
        (
            false,
            Reason::new("Unschedulable", unschedulable.join("; ")),
        )
    } else if !progress.is_empty() || !draining.is_empty() {
        let all: Vec<&str> = progress
            .iter()
            .chain(&draining)
            .map(String::as_str)
            .collect();
        (false, Reason::new("Progressing", all.join("; ")))
    } else {
        (
            true,
            Reason::new(
                "Available",
                format!("{} module(s) at or above their floor", plan.modules.len()),
            ),
        )
    };
    let reconciling = if !draining.is_empty() {
        Some(Reason::new("Draining", draining.join("; ")))
    } else if !progress.is_empty() {
        Some(Reason::new("Progressing", progress.join("; ")))
    } else if !ramping.is_empty() {
        Some(Reason::new("RampingDown", ramping.join("; ")))
    } else {
        None
    };
    let stalled =
        (!conflicts.is_empty()).then(|| Reason::new("ObjectConflict", conflicts.join("; ")));
    Decision {
        batches,
        observed,
        outcome: Outcome {
            modules,
            ready,
            ready_reason,
            reconciling,
            stalled,
            limited,
            active_windows: plan.active_windows.clone(),
            next_transition: plan
                .next_transition
                .map(|t| format_instant(t, &plan.time_zone)),
            requeue,
            awaiting_quota,
        },
    }
}

#[cfg(test)]
mod tests;
