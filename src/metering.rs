//! Metering: provisioned capacity integrated over time, per tenant and
//! module, as Prometheus counters a billing pipeline can rate() and sum.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::Store;

use crate::{
    controller::slim::Slim,
    metrics::{Metrics, ModuleLabels},
};

/// Add `dt` worth of each Deployment's current replicas to the counters.
pub fn accumulate<'a>(
    deployments: impl IntoIterator<Item = &'a Slim<Deployment>>,
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
        let key = ModuleLabels {
            namespace: d.metadata.namespace.clone().unwrap_or_default(),
            subscription: m.subscription.clone(),
            tenant: m.tenant.clone(),
            module: m.module.clone(),
        };
        metrics
            .replica_seconds
            .get_or_create(&key)
            .inc_by(replicas * secs);
        metrics
            .session_capacity_seconds
            .get_or_create(&key)
            .inc_by(replicas * sessions * secs);
    }
}

/// Meter every `interval` until dropped. Start it once the caches are synced.
pub async fn run(deployments: Store<Slim<Deployment>>, metrics: Metrics, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let state = deployments.state();
        accumulate(state.iter().map(|d| d.as_ref()), now - last, &metrics);
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::slim::slim;
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

    #[test]
    fn replica_and_session_seconds_add_up() {
        let m = Metrics::default();
        accumulate([&deployment(4, "40")], Duration::from_secs(15), &m);
        accumulate([&deployment(2, "40")], Duration::from_secs(30), &m);
        let key = ModuleLabels {
            namespace: "t".into(),
            subscription: "acme".into(),
            tenant: "acme".into(),
            module: "video".into(),
        };
        assert_eq!(
            m.replica_seconds.get_or_create(&key).get(),
            4.0 * 15.0 + 2.0 * 30.0
        );
        assert_eq!(
            m.session_capacity_seconds.get_or_create(&key).get(),
            40.0 * (4.0 * 15.0 + 2.0 * 30.0)
        );
        let text = m.encode();
        assert!(text.contains("tenant_capacity_module_replica_seconds_total{namespace=\"t\",subscription=\"acme\",tenant=\"acme\",module=\"video\"} 120.0"), "{text}");
    }

    #[test]
    fn deployments_not_owned_by_a_subscription_are_not_metered() {
        let m = Metrics::default();
        let mut d = full(4, "40");
        d.metadata.owner_references = None;
        accumulate([&slim(d)], Duration::from_secs(15), &m);
        assert!(!m.encode().contains("replica_seconds_total{"));
    }
}
