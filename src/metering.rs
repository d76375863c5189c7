//! Metering: provisioned capacity integrated over time, per tenant and
//! module, as Prometheus counters a billing pipeline can rate() and sum.

use std::{collections::HashSet, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::{
    api::TenantSubscription,
    capacity::child_name,
    live::Slim,
    metrics::{Metrics, ModuleLabels},
};

/// Add `dt` worth of each Deployment's current replicas to the counters.
/// The tenant billed is the one the provider assigned the Deployment's
/// namespace to (`tenant_of`), never a label on the Deployment or the
/// subscription's `tenantId`: both are written in the namespace. In a
/// namespace assigned to nobody the tenant is empty.
pub fn accumulate<'a>(
    deployments: impl IntoIterator<Item = &'a Slim<Deployment>>,
    tenant_of: impl Fn(&str) -> Option<String>,
    dt: Duration,
    metrics: &Metrics,
) {
    let secs = dt.as_secs_f64();
    for d in deployments {
        let Some(m) = &d.facts.metering else {
            continue;
        };
        let replicas = d.facts.replicas.unwrap_or(0).max(0) as f64;
        let sessions = m.sessions_per_replica;
        let namespace = d.metadata.namespace.clone().unwrap_or_default();
        let key = ModuleLabels {
            tenant: tenant_of(&namespace).unwrap_or_default(),
            namespace,
            subscription: m.subscription.clone(),
            module: m.module.clone(),
        };
        metrics
            .modules
            .meter(&key, replicas * secs, replicas * sessions * secs);
    }
}

/// Whether a Deployment with metering labels is really a module's child:
/// named as the operator names it and owned by the live subscription its
/// label names. Anyone able to create Deployments in a namespace can copy
/// the labels and an owner reference; what they made is not metered.
pub fn is_child(d: &Slim<Deployment>, uid_of: impl Fn(&str, &str) -> Option<String>) -> bool {
    let Some(m) = &d.facts.metering else {
        return false;
    };
    let ns = d.metadata.namespace.as_deref().unwrap_or_default();
    d.metadata.name.as_deref() == Some(child_name(&m.subscription, &m.module).as_str())
        && uid_of(ns, &m.subscription)
            .is_some_and(|uid| crate::controller::facts::owned_by(&d.metadata, &uid))
}

/// Forget the series of what is gone. A module's gauges go when its
/// subscription no longer lists it or is deleted (while it lists it,
/// reconciling keeps them right: none unless active); its
/// counters stay while a Deployment of it still runs (provisioned capacity
/// is billed until the pods are gone), and then the whole series goes.
pub fn prune<'a>(
    deployments: impl IntoIterator<Item = &'a Slim<Deployment>>,
    listed: impl Fn(&ModuleLabels) -> bool,
    metrics: &Metrics,
) {
    let running: HashSet<(&str, &str, &str)> = deployments
        .into_iter()
        .filter_map(|d| {
            let m = d.facts.metering.as_ref()?;
            Some((
                d.metadata.namespace.as_deref().unwrap_or_default(),
                m.subscription.as_str(),
                m.module.as_str(),
            ))
        })
        .collect();
    metrics.modules.retain(|l, v| {
        if !listed(l) {
            v.gauges = None;
        }
        v.gauges.is_some()
            || running.contains(&(
                l.namespace.as_str(),
                l.subscription.as_str(),
                l.module.as_str(),
            ))
    });
}

/// Meter every `interval` until dropped, then forget what is gone (see
/// [`prune`]) and run `also` (other housekeeping on the same beat). Start
/// it once the caches are synced.
pub async fn run(
    deployments: Store<Slim<Deployment>>,
    subscriptions: Store<TenantSubscription>,
    tenant_of: impl Fn(&str) -> Option<String>,
    metrics: Metrics,
    interval: Duration,
    also: impl Fn(),
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let state = deployments.state();
        let uid_of = |ns: &str, name: &str| {
            subscriptions
                .get(&ObjectRef::new(name).within(ns))
                .and_then(|s| s.metadata.uid.clone())
        };
        accumulate(
            state
                .iter()
                .map(|d| d.as_ref())
                .filter(|d| is_child(d, uid_of)),
            &tenant_of,
            now - last,
            &metrics,
        );
        prune(
            state.iter().map(|d| d.as_ref()),
            |l| {
                subscriptions
                    .get(&ObjectRef::new(&l.subscription).within(&l.namespace))
                    .is_some_and(|s| s.spec.modules.iter().any(|m| m.name == l.module))
            },
            &metrics,
        );
        drop(state);
        also();
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::slim;
    use crate::render::{
        ANNOTATION_SESSIONS_PER_REPLICA, LABEL_MODULE, LABEL_SUBSCRIPTION, LABEL_TENANT,
    };

    fn full(replicas: i32, sessions: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "acme-video", "namespace": "t",
                "labels": {LABEL_SUBSCRIPTION: "acme", LABEL_MODULE: "video", LABEL_TENANT: "acme"},
                "annotations": {ANNOTATION_SESSIONS_PER_REPLICA: sessions},
                "ownerReferences": [{"apiVersion": "capacity.tenancy.dev/v1alpha1", "kind": "TenantSubscription", "name": "acme", "uid": "u"}]
            },
            "status": {"replicas": replicas}
        }))
        .unwrap()
    }

    fn deployment(replicas: i32, sessions: &str) -> Slim<Deployment> {
        slim(full(replicas, sessions))
    }

    /// Namespace `t` is assigned to tenant `acme`.
    fn assigned(ns: &str) -> Option<String> {
        (ns == "t").then(|| "acme".to_string())
    }

    #[test]
    fn replica_and_session_seconds_add_up() {
        let m = Metrics::default();
        accumulate(
            [&deployment(4, "40")],
            assigned,
            Duration::from_secs(15),
            &m,
        );
        accumulate(
            [&deployment(2, "40")],
            assigned,
            Duration::from_secs(30),
            &m,
        );
        let key = ModuleLabels {
            namespace: "t".into(),
            subscription: "acme".into(),
            tenant: "acme".into(),
            module: "video".into(),
        };
        let v = m.modules.get(&key).unwrap();
        assert_eq!(v.replica_seconds, 4.0 * 15.0 + 2.0 * 30.0);
        assert_eq!(v.session_capacity_seconds, 40.0 * (4.0 * 15.0 + 2.0 * 30.0));
        let text = m.encode();
        assert!(text.contains("tenant_capacity_module_replica_seconds_total{namespace=\"t\",subscription=\"acme\",tenant=\"acme\",module=\"video\"} 120.0"), "{text}");
    }

    #[test]
    fn only_a_subscriptions_own_child_is_metered() {
        let live = |ns: &str, name: &str| (ns == "t" && name == "acme").then(|| "u".to_string());
        assert!(is_child(&deployment(1, "40"), live));
        let mut copied_owner = full(1, "40");
        copied_owner.metadata.name = Some("mine".into());
        assert!(
            !is_child(&slim(copied_owner), live),
            "labels and owner copied onto a Deployment of another name"
        );
        let mut stale = full(1, "40");
        stale.metadata.owner_references.as_mut().unwrap()[0].uid = "older".into();
        assert!(
            !is_child(&slim(stale), live),
            "an owner that is not the live subscription"
        );
        assert!(!is_child(&deployment(1, "40"), |_: &str, _: &str| None));
    }

    #[test]
    fn sessions_that_are_no_number_count_nothing() {
        for bad in ["NaN", "inf", "-1e15", "-3"] {
            let d = deployment(1, bad);
            let m = d.facts.metering.as_ref().unwrap();
            assert_eq!(m.sessions_per_replica, 0.0, "{bad}");
        }
    }

    #[test]
    fn deployments_not_owned_by_a_subscription_are_not_metered() {
        let m = Metrics::default();
        let mut d = full(4, "40");
        d.metadata.owner_references = None;
        accumulate([&slim(d)], assigned, Duration::from_secs(15), &m);
        assert!(!m.encode().contains("replica_seconds_total{"));
    }

    #[test]
    fn the_tenant_billed_is_the_namespace_assignment_not_a_label() {
        let m = Metrics::default();
        let mut d = full(4, "40");
        let labels = d.metadata.labels.as_mut().unwrap();
        labels.insert(LABEL_TENANT.into(), "someone-else".into());
        accumulate([&slim(d.clone())], assigned, Duration::from_secs(15), &m);
        let text = m.encode();
        assert!(
            text.contains("replica_seconds_total{namespace=\"t\",subscription=\"acme\",tenant=\"acme\",module=\"video\"} 60.0"),
            "{text}"
        );
        assert!(!text.contains("someone-else"), "{text}");
        // In a namespace assigned to nobody, nobody is billed by name.
        d.metadata.namespace = Some("shared".into());
        accumulate([&slim(d)], assigned, Duration::from_secs(15), &m);
        let text = m.encode();
        assert!(
            text.contains("replica_seconds_total{namespace=\"shared\",subscription=\"acme\",tenant=\"\",module=\"video\"} 60.0"),
            "{text}"
        );
    }

    #[test]
    fn series_of_removed_modules_and_subscriptions_are_forgotten() {
        use crate::metrics::ModuleGauges;
        let m = Metrics::default();
        let label = |sub: &str, module: &str| ModuleLabels {
            namespace: "t".into(),
            subscription: sub.into(),
            tenant: sub.into(),
            module: module.into(),
        };
        let plan = Some(ModuleGauges {
            max_replicas: 4,
            min_replicas: 1,
            ceiling_sessions: 100,
            ..Default::default()
        });
        // acme/video runs; acme/voice was switched off and its Deployment is
        // gone; gone/video belongs to a deleted subscription whose
        // Deployment is still being collected.
        m.modules.set_gauges(&label("acme", "video"), plan);
        m.modules.meter(&label("acme", "voice"), 10.0, 100.0);
        m.modules.set_gauges(&label("gone", "video"), plan);
        let mut d = full(4, "40");
        d.metadata.name = Some("gone-video".into());
        let gone = slim(
            serde_json::from_value::<Deployment>({
                let mut v = serde_json::to_value(&d).unwrap();
                v["metadata"]["labels"][LABEL_SUBSCRIPTION] = "gone".into();
                v["metadata"]["labels"][LABEL_TENANT] = "gone".into();
                v
            })
            .unwrap(),
        );
        let running = [deployment(4, "40"), gone];
        let listed = |l: &ModuleLabels| l.subscription == "acme";
        prune(running.iter(), listed, &m);
        assert_eq!(m.modules.get(&label("acme", "video")).unwrap().gauges, plan);
        assert_eq!(m.modules.get(&label("acme", "voice")), None);
        let gone_video = m.modules.get(&label("gone", "video")).unwrap();
        assert_eq!(gone_video.gauges, None, "gauges of a deleted subscription");
        // Once its Deployment is collected too, nothing is left of it.
        prune([&running[0]], listed, &m);
        assert_eq!(m.modules.get(&label("gone", "video")), None);
        assert_eq!(m.modules.len(), 1);
    }
}
