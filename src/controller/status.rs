//! Status of a subscription from its plan and the live children: what each
//! module wants, what it has and what holds it back. Pure functions.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};

use super::slim::Slim;
use crate::{
    api::{ModuleState, ModuleStatus},
    capacity::ModulePlan,
};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const CAPACITY_LIMITED: &str = "CapacityLimited";

/// The live children of one module, as far as this subscription owns them.
#[derive(Debug, Clone, Default)]
pub struct LiveModule {
    pub deployment: Option<Arc<Slim<Deployment>>>,
    pub hpa: Option<Arc<Slim<HorizontalPodAutoscaler>>>,
    pub service: Option<Arc<Slim<Service>>>,
}

impl LiveModule {
    pub fn is_empty(&self) -> bool {
        self.deployment.is_none() && self.hpa.is_none() && self.service.is_none()
    }

    fn replicas(&self) -> (Option<i32>, Option<i32>) {
        let f = self.deployment.as_ref().map(|d| &d.facts);
        (f.and_then(|f| f.replicas), f.and_then(|f| f.ready_replicas))
    }

    fn hpa_desired(&self) -> Option<i32> {
        self.hpa.as_ref().and_then(|h| h.facts.desired_replicas)
    }
}

/// Why an active module cannot have the replicas its load asks for, if so:
/// the ceiling bought, or the quota refusing pods.
pub fn capacity_limit(plan: &ModulePlan, live: &LiveModule) -> Option<String> {
    if let Some(want) = live.hpa.as_ref().and_then(|h| h.facts.unbounded_want)
        && want > plan.numbers.max_replicas
    {
        return Some(format!(
            "{}: HPA wants {want} replicas, ceiling is {}",
            plan.name, plan.numbers.max_replicas
        ));
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
        drain_deadline: None,
        message: capacity_limit(plan, live).or_else(|| progress(plan, live)),
    }
}

pub fn draining_module(name: &str, live: &LiveModule, deadline: &str) -> ModuleStatus {
    let (replicas, ready) = live.replicas();
    let hpa = live.hpa.as_ref().map(|h| &h.facts);
    ModuleStatus {
        name: name.to_string(),
        state: Some(ModuleState::Draining),
        min_replicas: hpa.and_then(|h| h.min_replicas),
        max_replicas: hpa.and_then(|h| h.max_replicas),
        desired_replicas: live.hpa_desired(),
        replicas,
        ready_replicas: ready,
        drain_deadline: Some(deadline.to_string()),
        message: Some(format!("{name}: draining until {deadline}")),
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
    fn long_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let c = condition(&[], READY, false, "X", &s, None, Timestamp::UNIX_EPOCH);
        assert!(c.message.len() <= 1024);
        assert!(c.message.ends_with("..."));
    }
}
