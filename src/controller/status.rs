//! Status of a subscription: what each module wants, what it has and what
//! holds it back, the conditions of a reconcile's outcome, and when a
//! changed status is written. Pure functions.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{decide::Outcome, facts::LiveModule};
use crate::{
    api::{ModuleState, ModuleStatus, TenantSubscription, TenantSubscriptionStatus, bounds},
    capacity::ModulePlan,
};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const CAPACITY_LIMITED: &str = "CapacityLimited";

/// Why an active module cannot have the replicas its load asks for, if so:
/// the ceiling bought, or the quota refusing pods.
pub fn capacity_limit(plan: &ModulePlan, live: &LiveModule) -> Option<String> {
    let hpa = live.hpa.as_ref().map(|h| &h.facts);
    if let Some(want) = hpa.and_then(|h| h.unbounded_want)
        && want > plan.numbers.max_replicas
    {
        let max = plan.numbers.max_replicas;
        // In sessions when the sessions metric is known: what was bought.
        return Some(match hpa.and_then(|h| h.limited_sessions) {
            Some(live) if plan.scaling.sessions.is_some() => format!(
                "{}: {} sessions live, ceiling {} (HPA wants {want} replicas, ceiling {max})",
                plan.name,
                thousands(live),
                thousands(plan.numbers.ceiling),
            ),
            _ => format!("{}: HPA wants {want} replicas, ceiling is {max}", plan.name),
        });
    }
    let d = &live.deployment.as_ref()?.facts;
    let want = d.spec_replicas.unwrap_or(0);
    let fits = d.replicas.unwrap_or(0);
    (d.quota_refused && want > fits).then(|| {
        format!(
            "{}: HPA wants {want} replicas, quota fits {fits}",
            plan.name
        )
    })
}

/// A count with thousands separated by commas, as people read it: 1,240.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The API server's refusal of pods the module's Deployment tried to
/// create (the quota, a LimitRange, pod security, any admission), if any.
pub fn refused(plan: &ModulePlan, live: &LiveModule) -> Option<String> {
    let message = live.deployment.as_ref()?.facts.refused.as_deref()?;
    Some(format!("{}: pods refused: {message}", plan.name))
}

/// Pods of the module no node can take, with the scheduler's message.
pub fn unschedulable(plan: &ModulePlan, live: &LiveModule) -> Option<String> {
    let (n, message) = live.placement.unschedulable.as_ref()?;
    let pods = if *n == 1 { "pod" } else { "pods" };
    let regions = if plan.regions.is_empty() {
        String::new()
    } else {
        format!(" in region(s) {}", plan.regions.join(", "))
    };
    Some(format!(
        "{}: {n} {pods} pending, no node{regions} can take them: {message}",
        plan.name
    ))
}

/// Progress message of an active module, `None` when it is at its floor or better.
pub fn progress(plan: &ModulePlan, live: &LiveModule) -> Option<String> {
    let (_, ready) = live.replicas();
    let ready = ready.unwrap_or(0);
    if live.deployment.is_none() {
        return Some(format!("{}: Deployment not created yet", plan.name));
    }
    if ready < plan.numbers.min_replicas {
        return Some(format!(
            "{}: {ready}/{} replicas ready",
            plan.name, plan.numbers.min_replicas
        ));
    }
    None
}

pub fn active_module(plan: &ModulePlan, live: &LiveModule) -> ModuleStatus {
    let (replicas, ready) = live.replicas();
    ModuleStatus {
        name: plan.name.clone(),
        state: Some(ModuleState::Active),
        tier: plan.tier.clone(),
        min_replicas: Some(plan.numbers.min_replicas),
        max_replicas: Some(plan.numbers.max_replicas),
        desired_replicas: live.hpa_desired(),
        replicas,
        ready_replicas: ready,
        concurrency: Some(plan.numbers.ceiling),
        regions: plan.regions.clone(),
        ready_by_zone: live.ready_by_zone(),
        message: refused(plan, live)
            .or_else(|| unschedulable(plan, live))
            .or_else(|| capacity_limit(plan, live))
            .or_else(|| progress(plan, live)),
        ..Default::default()
    }
}

pub fn invalid_module(name: &str, live: &LiveModule, message: String) -> ModuleStatus {
    let (replicas, ready) = live.replicas();
    ModuleStatus {
        name: name.to_string(),
        state: Some(ModuleState::Invalid),
        replicas,
        ready_replicas: ready,
        message: Some(message),
        ..Default::default()
    }
}

/// The status of `sub` after a reconcile with this outcome.
pub fn build(
    sub: &TenantSubscription,
    old: &TenantSubscriptionStatus,
    o: &Outcome,
    now: Timestamp,
) -> TenantSubscriptionStatus {
    let generation = sub.metadata.generation;
    let c = &old.conditions;
    let cond = |type_, status, reason: &str, message: &str| {
        condition(c, type_, status, reason, message, generation, now)
    };
    let mut conditions = vec![cond(
        READY,
        o.ready,
        &o.ready_reason.reason,
        &o.ready_reason.message,
    )];
    // A spec that cannot be applied is stalled whatever else still goes on
    // (a drain, a reduction ramping): kstatus takes the first of
    // Reconciling=True and Stalled=True it finds, and a wait (Flux, kpt)
    // must fail on it rather than run to its timeout. The work under way
    // stays named here and on the modules.
    conditions.push(match (&o.reconciling, &o.stalled) {
        (Some(r), None) => cond(RECONCILING, true, &r.reason, &r.message),
        (Some(r), Some(_)) => cond(
            RECONCILING,
            false,
            "Stalled",
            &format!("stalled (see Stalled); meanwhile: {}", r.message),
        ),
        (None, _) => cond(RECONCILING, false, "Reconciled", ""),
    });
    conditions.push(match &o.stalled {
        Some(r) => cond(STALLED, true, &r.reason, &r.message),
        None => cond(STALLED, false, "Reconciled", ""),
    });
    conditions.push(if o.limited.is_empty() {
        cond(CAPACITY_LIMITED, false, "WithinCeiling", "")
    } else {
        cond(
            CAPACITY_LIMITED,
            true,
            "CeilingReached",
            &o.limited.join("; "),
        )
    });
    TenantSubscriptionStatus {
        observed_generation: generation,
        conditions,
        active_windows: o.active_windows.clone(),
        next_transition: o.next_transition.clone(),
        modules: o
            .modules
            .iter()
            .map(|m| ModuleStatus {
                message: m
                    .message
                    .as_deref()
                    .map(|t| truncate(t, bounds::MAX_MODULE_MESSAGE)),
                ..m.clone()
            })
            .collect(),
    }
}

/// Status writes that only move replica counts are batched to one per this
/// long while the subscription is Ready (the HPA scaling)...
pub const STATUS_BATCH: Duration = Duration::from_secs(2);
/// ...and to one per this long while it is not (pods of a new or changed
/// plan starting: Ready itself is written the moment it comes, so this only
/// thins the "2/3 replicas ready" steps, the bulk of a cold start's writes:
/// at 10 s, a tenant whose pods took 10 to 30 s wrote one to three of them).
pub const PROGRESS_BATCH: Duration = Duration::from_secs(30);

/// When a status is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStatus {
    /// Nothing changed.
    Unchanged,
    Now,
    /// Held back this long, batched with what comes next.
    Later(Duration),
}

/// A progress-only change in ready pods while a subscription is not Ready
/// waits at least this long for what comes next before it is written: a
/// subscription's modules tend to become ready within a second or two of
/// one another, and the last one brings Ready, which is written at once and
/// carries the counts. Written the moment the period allowed it, the first
/// module's count cost a status write of its own just before Ready: at
/// 1,000 tenants, a fifth of them wrote 3 statuses on a cold start instead
/// of 2 (the gap between the two was under 2.4 s for every one).
pub const PROGRESS_SETTLE: Duration = Duration::from_secs(5);

/// How long a progress-only change that says nothing new (pods created, an
/// autoscaler's wish; no more ready pods, no new words such as a
/// scheduler's reason) waits, at least, for a write that carries it while a
/// subscription is not Ready; a progress period if that is longer. Such
/// counts are written alone only when pods stay unready this long: on a
/// cold start of 1,000 tenants, "pods created, none ready yet" written at
/// the end of the shared progress period was a third status write, a
/// second before Ready, for a third of the tenants. The same bound ends the
/// `PROGRESS_SETTLE` wait of ready counts that never stay still.
pub const PROGRESS_STALE: Duration = Duration::from_secs(300);

/// Progress-only status writes (counts while pods start) of all
/// subscriptions together, per second, at most: with many subscriptions
/// starting at once (a cold start, a season for everyone) each one's
/// period grows beyond `PROGRESS_BATCH` to keep to it.
pub const PROGRESS_WRITES_PER_SECOND: u32 = 5;

/// What this process remembers of a subscription's status writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recent {
    /// How long ago it last wrote the status.
    pub written: Option<Duration>,
    /// How long a change of the status has been held back (see
    /// [`WriteStatus::Later`])...
    pub held: Option<Duration>,
    /// ...and how long it has stayed as it is.
    pub unchanged: Option<Duration>,
}

/// When `new` is written over `old`: at once, unless the subscription only
/// waits for a quota written moments ago, or only replica counts moved and
/// the last write (`recent.written` ago) was within the batch period (for a
/// subscription not Ready yet, longer with more subscriptions `progressing`
/// at once, and then not before more ready pods have stayed as they are for
/// `PROGRESS_SETTLE`, or other counts have waited `PROGRESS_STALE`).
pub fn when_to_write(
    old: &TenantSubscriptionStatus,
    new: &TenantSubscriptionStatus,
    awaiting_quota: bool,
    recent: Recent,
    progressing: usize,
) -> WriteStatus {
    if new == old || only_first_autoscaler_reports(old, new) {
        return WriteStatus::Unchanged;
    }
    // A drain's record is the only one there is: never held back.
    if super::drain::new_records(&old.modules, &new.modules) {
        return WriteStatus::Now;
    }
    if awaiting_quota {
        return WriteStatus::Later(STATUS_BATCH);
    }
    if only_counts_changed(old, new) {
        let ready = is_ready(new);
        let period = if ready {
            STATUS_BATCH
        } else {
            progress_period(progressing)
        };
        let mut wait = recent
            .written
            .map_or(Duration::ZERO, |since| period.saturating_sub(since));
        // Not Ready: more ready pods or new words once they have stayed as
        // they are for PROGRESS_SETTLE, other counts once stale; either once stale
        // (counts that never stay still still show).
        let stale = period.max(PROGRESS_STALE);
        let held = recent.held.unwrap_or_default();
        if !ready && held < stale {
            let until = if progress_news(old, new) {
                PROGRESS_SETTLE.saturating_sub(recent.unchanged.unwrap_or_default())
            } else {
                stale - held
            };
            wait = wait.max(until);
        }
        if !wait.is_zero() {
            return WriteStatus::Later(wait);
        }
    }
    WriteStatus::Now
}

/// Whether `new` differs from `old` only in autoscalers' first reports
/// (`desiredReplicas` unknown or 0 before, now the replicas that run): no
/// news about capacity, so carried with the next write rather than written
/// on its own. On a cold start each module's HPA reports once, seconds
/// apart, after the subscription is Ready: one status write each.
fn only_first_autoscaler_reports(
    old: &TenantSubscriptionStatus,
    new: &TenantSubscriptionStatus,
) -> bool {
    if old.modules.len() != new.modules.len() {
        return false;
    }
    let mut carried = new.clone();
    for (m, before) in carried.modules.iter_mut().zip(&old.modules) {
        let first = matches!(before.desired_replicas, None | Some(0));
        if m.name == before.name && first && m.desired_replicas == m.replicas {
            m.desired_replicas = before.desired_replicas;
        }
    }
    carried == *old
}

/// Whether a progress-only change says something while pods start: more
/// (or fewer) pods ready, or other words (a scheduler's reason, pods
/// pending), not only pods created or an autoscaler's wish.
fn progress_news(old: &TenantSubscriptionStatus, new: &TenantSubscriptionStatus) -> bool {
    let said = |s: &TenantSubscriptionStatus| {
        (
            s.modules
                .iter()
                .map(|m| (m.name.clone(), m.ready_replicas, m.message.clone()))
                .collect::<Vec<_>>(),
            s.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.message.clone()))
                .collect::<Vec<_>>(),
        )
    };
    said(old) != said(new)
}

fn is_ready(status: &TenantSubscriptionStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// How long count-only changes of a subscription not Ready wait for the
/// next write, with `progressing` subscriptions not Ready at once.
pub fn progress_period(progressing: usize) -> Duration {
    let shared = Duration::from_secs(1)
        .saturating_mul(u32::try_from(progressing).unwrap_or(u32::MAX))
        / PROGRESS_WRITES_PER_SECOND;
    PROGRESS_BATCH.max(shared)
}

/// Whether `new` differs from `old` only in what pods and autoscalers do
/// (replica counts and the progress wording), not in any condition's state,
/// the generation, the plan's numbers or the windows.
fn only_counts_changed(old: &TenantSubscriptionStatus, new: &TenantSubscriptionStatus) -> bool {
    let conditions = |s: &TenantSubscriptionStatus| {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect::<Vec<_>>()
    };
    let plan = |s: &TenantSubscriptionStatus| {
        s.modules
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    m.state,
                    m.tier.clone(),
                    m.min_replicas,
                    m.max_replicas,
                    m.concurrency,
                    m.drain_deadline.clone(),
                    m.ramping_down.clone(),
                    m.regions.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    old.observed_generation == new.observed_generation
        && conditions(old) == conditions(new)
        && plan(old) == plan(new)
        && old.active_windows == new.active_windows
        && old.next_transition == new.next_transition
}

/// One condition, keeping its last transition time when its status is unchanged.
pub fn condition(
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::from_second(now.as_second()).unwrap_or(now)));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: truncate(message, 1024),
        observed_generation: generation,
        last_transition_time: since,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The reason of a condition type, if present.
pub fn reason_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let first = condition(&[], READY, true, "Available", "ok", Some(1), t0);
        let again = condition(
            std::slice::from_ref(&first),
            READY,
            true,
            "Available",
            "still ok",
            Some(2),
            t1,
        );
        assert_eq!(again.last_transition_time, first.last_transition_time);
        let flipped = condition(&[first], READY, false, "ProfileNotFound", "x", Some(2), t1);
        assert_eq!(flipped.last_transition_time.0, t1);
    }

    #[test]
    fn a_module_message_is_cut_to_the_schema_bound() {
        let sub = TenantSubscription::new(
            "acme",
            serde_json::from_value(serde_json::json!({"tenantId": "acme", "modules": []})).unwrap(),
        );
        let long =
            "video: ModuleProfile resources.limits.cpu is not a valid quantity; ".repeat(100);
        let outcome = Outcome {
            modules: vec![ModuleStatus {
                name: "video".into(),
                message: Some(long),
                ..Default::default()
            }],
            ready: false,
            ready_reason: super::super::decide::Reason {
                reason: "InvalidProfile".into(),
                message: "x".into(),
            },
            reconciling: None,
            stalled: None,
            limited: vec![],
            active_windows: vec![],
            next_transition: None,
            requeue: None,
            awaiting_quota: false,
        };
        let st = build(&sub, &Default::default(), &outcome, Timestamp::UNIX_EPOCH);
        let message = st.modules[0].message.as_deref().unwrap();
        assert!(
            message.len() <= bounds::MAX_MODULE_MESSAGE,
            "{}",
            message.len()
        );
        assert!(message.starts_with("video: ModuleProfile") && message.ends_with("..."));
    }

    fn outcome(reconciling: Option<&str>, stalled: Option<&str>) -> Outcome {
        let reason = |r: &str| super::super::decide::Reason {
            reason: r.into(),
            message: format!("{r} message"),
        };
        Outcome {
            modules: vec![],
            ready: stalled.is_none(),
            ready_reason: reason(stalled.unwrap_or("Available")),
            reconciling: reconciling.map(reason),
            stalled: stalled.map(reason),
            limited: vec![],
            active_windows: vec![],
            next_transition: None,
            requeue: None,
            awaiting_quota: false,
        }
    }

    fn states(st: &TenantSubscriptionStatus) -> Vec<(&str, &str, &str)> {
        st.conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect()
    }

    #[test]
    fn a_refused_spec_is_stalled_not_reconciling_even_while_a_drain_runs() {
        let sub = TenantSubscription::new(
            "acme",
            serde_json::from_value(serde_json::json!({"tenantId": "acme", "modules": []})).unwrap(),
        );
        let old = TenantSubscriptionStatus::default();
        let now = Timestamp::UNIX_EPOCH;
        // kstatus takes the first True of Reconciling and Stalled: never both.
        let refused = build(
            &sub,
            &old,
            &outcome(Some("Draining"), Some("ExceedsPlan")),
            now,
        );
        assert_eq!(
            states(&refused)[..3],
            [
                (READY, "False", "ExceedsPlan"),
                (RECONCILING, "False", "Stalled"),
                (STALLED, "True", "ExceedsPlan"),
            ]
        );
        assert!(refused.conditions[1].message.contains("Draining message"));
        let draining = build(&sub, &old, &outcome(Some("Draining"), None), now);
        assert_eq!(
            states(&draining)[..3],
            [
                (READY, "True", "Available"),
                (RECONCILING, "True", "Draining"),
                (STALLED, "False", "Reconciled"),
            ]
        );
        let quiet = build(&sub, &old, &outcome(None, None), now);
        assert_eq!(
            states(&quiet)[1..3],
            [
                (RECONCILING, "False", "Reconciled"),
                (STALLED, "False", "Reconciled"),
            ]
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let c = condition(&[], READY, false, "X", &s, None, Timestamp::UNIX_EPOCH);
        assert!(c.message.len() <= 1024);
        assert!(c.message.ends_with("..."));
    }

    fn ready_status(ready: &str, replicas: i32) -> TenantSubscriptionStatus {
        TenantSubscriptionStatus {
            observed_generation: Some(1),
            conditions: vec![condition(
                &[],
                READY,
                ready == "True",
                "X",
                "",
                Some(1),
                Timestamp::UNIX_EPOCH,
            )],
            modules: vec![ModuleStatus {
                name: "video".into(),
                max_replicas: Some(10),
                replicas: Some(replicas),
                ready_replicas: Some(replicas),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn written(ago: Duration) -> Recent {
        Recent {
            written: Some(ago),
            ..Recent::default()
        }
    }

    #[test]
    fn replica_counts_alone_are_batched_and_everything_else_is_written_at_once() {
        let s = Duration::from_secs;
        let old = ready_status("True", 3);
        let counts = ready_status("True", 4);
        assert_eq!(
            when_to_write(&old, &old, false, Recent::default(), 0),
            WriteStatus::Unchanged
        );
        assert_eq!(
            when_to_write(&old, &counts, false, Recent::default(), 0),
            WriteStatus::Now
        );
        assert_eq!(
            when_to_write(&old, &counts, false, written(s(3)), 0),
            WriteStatus::Now
        );
        assert_eq!(
            when_to_write(&old, &counts, false, written(s(1)), 0),
            WriteStatus::Later(s(1))
        );
        // Not Ready yet: pods starting are reported at most every 30 s.
        let (old, counts) = (ready_status("False", 3), ready_status("False", 4));
        assert_eq!(
            when_to_write(&old, &counts, false, written(s(3)), 0),
            WriteStatus::Later(s(27))
        );
        // With 1,000 subscriptions starting at once, every 200 s.
        assert_eq!(
            when_to_write(&old, &counts, false, written(s(3)), 1000),
            WriteStatus::Later(s(197))
        );
        // Past the period, the change still waits PROGRESS_SETTLE for what
        // comes next (Ready, written at once, would carry it).
        let after = |held: u64, unchanged: u64| Recent {
            written: Some(s(40)),
            held: Some(s(held)),
            unchanged: Some(s(unchanged)),
        };
        assert_eq!(
            when_to_write(&old, &counts, false, written(s(40)), 0),
            WriteStatus::Later(PROGRESS_SETTLE)
        );
        assert_eq!(
            when_to_write(&old, &counts, false, after(2, 2), 0),
            WriteStatus::Later(PROGRESS_SETTLE - s(2))
        );
        // Held long, changed again just now: still waits.
        assert_eq!(
            when_to_write(&old, &counts, false, after(20, 1), 0),
            WriteStatus::Later(PROGRESS_SETTLE - s(1))
        );
        assert_eq!(
            when_to_write(&old, &counts, false, after(20, 5), 0),
            WriteStatus::Now
        );
        // Counts that never stay still are written once stale.
        assert_eq!(
            when_to_write(&old, &counts, false, after(30, 0), 0),
            WriteStatus::Later(PROGRESS_SETTLE)
        );
        assert_eq!(
            when_to_write(&old, &counts, false, after(300, 0), 0),
            WriteStatus::Now
        );
        // Pods created, no more of them ready: carried by the next write,
        // or written alone once stale (a progress period if longer).
        let mut created = old.clone();
        created.modules[0].replicas = Some(4);
        assert_eq!(
            when_to_write(&old, &created, false, after(0, 0), 0),
            WriteStatus::Later(PROGRESS_STALE)
        );
        assert_eq!(
            when_to_write(&old, &created, false, after(120, 120), 0),
            WriteStatus::Later(PROGRESS_STALE - s(120))
        );
        assert_eq!(
            when_to_write(&old, &created, false, after(300, 300), 0),
            WriteStatus::Now
        );
        assert_eq!(
            when_to_write(&old, &created, false, after(300, 300), 10_000),
            WriteStatus::Later(s(1960))
        );
        // New words (the scheduler's reason, pods pending) are news.
        let mut pending = created.clone();
        pending.modules[0].message = Some("4 pods pending: no node can take them".into());
        assert_eq!(
            when_to_write(&old, &pending, false, after(5, 5), 0),
            WriteStatus::Now
        );
        assert_eq!(
            when_to_write(&old, &ready_status("True", 3), false, written(s(40)), 0),
            WriteStatus::Now
        );
        // A changed ceiling or condition is never held back.
        let mut ceiling = counts.clone();
        ceiling.modules[0].max_replicas = Some(12);
        assert_eq!(
            when_to_write(&old, &ceiling, false, written(s(1)), 0),
            WriteStatus::Now
        );
        assert_eq!(
            when_to_write(&old, &ready_status("True", 3), false, written(s(1)), 0),
            WriteStatus::Now
        );
        // An autoscaler's first report agreeing with the replicas running is
        // carried with the next write; any other desired count is written.
        let mut reported = ready_status("True", 3);
        reported.modules[0].desired_replicas = Some(3);
        let ready = ready_status("True", 3);
        assert_eq!(
            when_to_write(&ready, &reported, false, Recent::default(), 0),
            WriteStatus::Unchanged
        );
        let mut zero = ready.clone();
        zero.modules[0].desired_replicas = Some(0);
        assert_eq!(
            when_to_write(&zero, &reported, false, Recent::default(), 0),
            WriteStatus::Unchanged
        );
        let mut wants_more = ready.clone();
        wants_more.modules[0].desired_replicas = Some(5);
        assert_eq!(
            when_to_write(&ready, &wants_more, false, Recent::default(), 0),
            WriteStatus::Now
        );
        assert_eq!(
            when_to_write(&wants_more, &reported, false, Recent::default(), 0),
            WriteStatus::Now
        );
        // Waiting moments for a quota just written: held for the quota controller's answer.
        assert_eq!(
            when_to_write(&old, &ceiling, true, Recent::default(), 0),
            WriteStatus::Later(STATUS_BATCH)
        );
    }
}
