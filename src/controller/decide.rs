//! The decision of one reconcile, as a pure function: the subscription, the
//! catalogue it names, its children as cached and the clock in; the writes
//! to make, in order, and the outcome to report out. Every rule about what
//! to write and when (drain start, deadline and removal; the quota before
//! new pods; a module waiting for its quota; names taken by strangers;
//! pause; a spec that cannot be applied) lives here and is tested here.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::{
    events::{EventType, Note},
    facts::{Live, LiveModule, Tenancy},
    status,
};
use crate::{
    api::{DataRetention, ModuleStatus, TenantSubscription},
    capacity::{self, CapacityPlan, Catalogue, Footprint, InvalidSpec, window::format_instant},
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
/// status of `outcome`.
#[derive(Debug)]
pub struct Decision {
    pub batches: Vec<Vec<Write>>,
    pub outcome: Outcome,
}

/// One write to the cluster.
#[derive(Debug)]
pub enum Write {
    /// Record on a switched-off module's Deployment when its drain began.
    MarkDraining {
        module: String,
        deployment: ObjectMeta,
        since: Timestamp,
    },
    /// The module is enabled again: its drain is cancelled.
    ClearDraining {
        module: String,
        deployment: ObjectMeta,
    },
    /// Server-side apply of a child.
    Apply(Desired),
    /// Delete a drained module's child, guarded by its uid.
    Delete {
        module: String,
        kind: ChildKind,
        object: ObjectMeta,
    },
    /// Delete a drained module's PersistentVolumeClaims (`dataRetention: Delete`).
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
    /// The Ready condition: true with reason `Available`, else what stops it.
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
        };
    }
    if sub.spec.paused {
        return Decision {
            batches: vec![],
            outcome: paused(sub, &known, live),
        };
    }
    match capacity::plan(&sub.name_any(), &sub.spec, catalogue, now) {
        Err(errors) => Decision {
            batches: vec![],
            outcome: invalid(sub, &errors, &known, live, now),
        },
        Ok(plan) => converge(sub, &plan, &known, live, now),
    }
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
        ready: false,
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
    let reason = errors[0].reason();
    let message = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let old = sub.status.clone().unwrap_or_default();
    let modules = known
        .iter()
        .filter_map(|m| {
            let l = live.module(m);
            let own: Vec<String> = errors
                .iter()
                .filter(|e| e.module() == Some(m))
                .map(|e| e.to_string())
                .collect();
            if own.is_empty() && l.is_empty() {
                return None;
            }
            if own.is_empty() {
                // Untouched, as it was.
                return old.modules.iter().find(|s| s.name == *m).cloned();
            }
            Some(status::invalid_module(m, &l, own.join("; ")))
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

/// What a draining module may still occupy, read from its live objects.
fn footprint_of_live(module: &str, l: &LiveModule) -> Footprint {
    let max = l
        .hpa
        .as_ref()
        .and_then(|h| h.facts.max_replicas)
        .or_else(|| l.deployment.as_ref().and_then(|d| d.facts.spec_replicas))
        .unwrap_or(1);
    let resources = l.deployment.as_ref().and_then(|d| d.facts.resources());
    Footprint::new(module, max, resources.as_ref()).unwrap_or(Footprint {
        pods: max as i64 + capacity::surge(max),
        ..Default::default()
    })
}

/// Modules switched off or removed that still have children: each drains
/// for `downgrade.drainSeconds` from the moment it was first seen off, then
/// its children (and, with `dataRetention: Delete`, its data) are removed.
struct Drains {
    batches: Vec<Vec<Write>>,
    /// Quota shares of the modules still draining.
    footprints: Vec<Footprint>,
    statuses: Vec<ModuleStatus>,
    /// "video-call until 12:05 (Asia/Shanghai)", one per draining module.
    until: Vec<String>,
    earliest_deadline: Option<Timestamp>,
}

fn drains(
    sub: &TenantSubscription,
    plan: &CapacityPlan,
    known: &BTreeSet<&str>,
    live: &Live,
    now: Timestamp,
) -> Drains {
    let drain = SignedDuration::from_secs(sub.spec.downgrade.drain_seconds);
    let enabled: BTreeSet<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
    let mut d = Drains {
        batches: vec![],
        footprints: vec![],
        statuses: vec![],
        until: vec![],
        earliest_deadline: None,
    };
    for m in known.iter().filter(|m| !enabled.contains(*m)) {
        let l = live.module(m);
        if l.is_empty() {
            continue;
        }
        let recorded = l
            .deployment
            .as_ref()
            .and_then(|d| d.facts.draining_since.as_deref())
            .and_then(|s| s.parse::<Timestamp>().ok());
        let since = match (recorded, &l.deployment) {
            (Some(t), _) => t,
            (None, Some(dep)) => {
                d.batches.push(vec![Write::MarkDraining {
                    module: m.to_string(),
                    deployment: dep.metadata.clone(),
                    since: now,
                }]);
                d.batches.push(vec![Write::Announce(Note {
                    type_: EventType::Normal,
                    reason: "Draining".into(),
                    message: format!(
                        "{m}: draining for {}s before removal",
                        sub.spec.downgrade.drain_seconds
                    ),
                })]);
                now
            }
            // Without a Deployment nothing serves: remove the rest now.
            (None, None) => now - drain - SignedDuration::from_secs(1),
        };
        let deadline = since + drain;
        if now >= deadline {
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
                        object: object.clone(),
                    }]);
                }
            }
            if sub.spec.downgrade.data_retention == DataRetention::Delete {
                d.batches.push(vec![Write::DeleteData {
                    module: m.to_string(),
                }]);
            }
            d.batches.push(vec![Write::Announce(Note {
                type_: EventType::Normal,
                reason: "ModuleRemoved".into(),
                message: format!("{m}: drained and removed"),
            })]);
            continue;
        }
        d.earliest_deadline = Some(d.earliest_deadline.map_or(deadline, |r| r.min(deadline)));
        d.footprints.push(footprint_of_live(m, &l));
        let shown = format_instant(deadline, &plan.time_zone);
        d.statuses.push(status::draining_module(m, &l, &shown));
        d.until.push(format!("{m} until {shown}"));
    }
    d
}

/// The quota, covering what is enabled plus what is still draining.
struct QuotaStep {
    /// The quota needs writing.
    write: Option<Desired>,
    /// The quota controller has taken up the quota as it is.
    in_force: bool,
    /// Written just now, or so recently that the quota controller's answer
    /// is still on its way.
    new: bool,
    conflict: Option<Conflict>,
}

fn quota_step(
    owner: &Owner,
    plan: &CapacityPlan,
    drains: &Drains,
    live: &Live,
    now: Timestamp,
) -> QuotaStep {
    let mut step = QuotaStep {
        write: None,
        in_force: false,
        new: false,
        conflict: None,
    };
    let Some(q) = render::quota_child(owner, plan, &drains.footprints) else {
        return step;
    };
    let current = live.quota.as_ref();
    if current.is_none() && live.is_taken(ChildKind::Quota, q.name()) {
        step.conflict = Some(Conflict {
            module: None,
            kind: ChildKind::Quota,
            name: q.name().to_string(),
        });
        return step;
    }
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
        step.in_force = current.is_some_and(|q| q.facts.quota_enforced);
    }
    step
}

fn converge(
    sub: &TenantSubscription,
    plan: &CapacityPlan,
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
    let drains = drains(sub, plan, known, live, now);
    if let Some(deadline) = drains.earliest_deadline {
        requeue = Some(requeue.map_or(deadline, |r| r.min(deadline)));
    }
    let quota = quota_step(&owner, plan, &drains, live, now);
    let mut batches = drains.batches;
    let mut conflicts: Vec<Conflict> = quota.conflict.into_iter().collect();
    let mut modules = Vec::new();
    let mut progress = Vec::new();
    let mut limited = Vec::new();
    let mut writes = Vec::new();
    for m in &plan.modules {
        let l = live.module(&m.name);
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
        let children = render::module_children(&owner, m);
        // Every name is checked before any is written, so a module is
        // applied whole or not at all.
        let conflict = children.iter().find_map(|child| {
            let (cached, _) = l.applied(child.kind());
            (!cached && live.is_taken(child.kind(), child.name())).then(|| Conflict {
                module: Some(m.name.clone()),
                kind: child.kind(),
                name: child.name().to_string(),
            })
        });
        if let Some(c) = conflict {
            modules.push(status::invalid_module(&m.name, &l, c.to_string()));
            conflicts.push(c);
            continue;
        }
        writes.extend(
            children
                .iter()
                .map(|child| Desired::new(child, l.applied(child.kind()).1))
                .filter(Desired::needed)
                .map(Write::Apply),
        );
        if let Some(d) = &l.deployment
            && d.facts.draining_since.is_some()
        {
            batches.push(vec![Write::ClearDraining {
                module: m.name.clone(),
                deployment: d.metadata.clone(),
            }]);
        }
        limited.extend(status::capacity_limit(m, &l));
        progress.extend(status::progress(m, &l));
        modules.push(status::active_module(m, &l));
    }

    // The quota goes first when pods may start or change size (a new module,
    // a changed Deployment); otherwise (a new HPA ceiling) it goes together
    // with the rest. Children of different modules are independent.
    if let Some(q) = quota.write {
        let pods_change = writes
            .iter()
            .any(|w| matches!(w, Write::Apply(d) if d.kind == ChildKind::Deployment));
        if pods_change {
            batches.push(vec![Write::Apply(q)]);
        } else {
            writes.push(Write::Apply(q));
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
    } else {
        None
    };
    let stalled =
        (!conflicts.is_empty()).then(|| Reason::new("ObjectConflict", conflicts.join("; ")));
    Decision {
        batches,
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
