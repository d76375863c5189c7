//! Children as the caches keep them: who they are, a digest of the fields
//! this operator applies, and the few status facts the controller reads.
//!
//! A full Deployment with its pod template takes ~20 KiB as a typed object;
//! a slim one well under 2 KiB. Drift detection needs no more than a digest:
//! the live object, cut down to the fields our server-side-apply entry in
//! `managedFields` owns, must hash like the object we would write. A field
//! another manager took over leaves our field set, so the cut-down object
//! loses it and the digests differ: that is drift and we apply again.

use std::{borrow::Cow, collections::BTreeMap, marker::PhantomData};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{LimitRange, ResourceQuota, ResourceRequirements, Service},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::Resource;
use serde::Serialize;

use crate::{
    capacity::{Quantity, quantity::same_quantity},
    live::digest,
    render::{
        ANNOTATION_HELD_UNTIL, ANNOTATION_SESSIONS_PER_REPLICA, LABEL_MODULE, LABEL_SUBSCRIPTION,
        MANAGER,
    },
};

/// A cached child of kind `K`.
#[derive(Debug)]
pub struct Slim<K> {
    /// Name, namespace, uid, creation time and subscription owner
    /// references; what labels and annotations say is in `facts`.
    pub metadata: ObjectMeta,
    /// Digest of the fields our apply entry owns; `None` when we own none.
    pub applied: Option<u64>,
    pub facts: Facts,
    kind: PhantomData<fn() -> K>,
}

impl<K> Slim<K> {
    pub fn new(metadata: ObjectMeta, applied: Option<u64>, facts: Facts) -> Self {
        Self {
            metadata,
            applied,
            facts,
            kind: PhantomData,
        }
    }
}

impl<K> Clone for Slim<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            applied: self.applied,
            facts: self.facts.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> PartialEq for Slim<K> {
    fn eq(&self, other: &Self) -> bool {
        self.metadata == other.metadata
            && self.applied == other.applied
            && self.facts == other.facts
    }
}

/// What the controller reads from a child besides its identity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    /// Deployment `spec.replicas` (set by the HPA).
    pub spec_replicas: Option<i32>,
    /// Deployment `status.replicas`.
    pub replicas: Option<i32>,
    /// Deployment `status.readyReplicas`.
    pub ready_replicas: Option<i32>,
    /// The Deployment reports pods refused for exceeding the quota.
    pub quota_refused: bool,
    /// Resources of the Deployment's first container, as JSON (a few dozen
    /// bytes, where the typed maps take a kilobyte).
    pub resources: Option<Box<str>>,
    /// What metering needs of a Deployment a subscription owns.
    pub metering: Option<Box<Metered>>,
    /// HPA `spec.minReplicas` / `spec.maxReplicas`.
    pub min_replicas: Option<i32>,
    pub max_replicas: Option<i32>,
    /// HPA `status.desiredReplicas`.
    pub desired_replicas: Option<i32>,
    /// Replicas the HPA would run without its ceiling, when the ceiling holds it back.
    pub unbounded_want: Option<i32>,
    /// HPA `status.currentReplicas`.
    pub current_replicas: Option<i32>,
    /// HPA `status.lastScaleTime`, in Unix seconds.
    pub last_scale: Option<i64>,
    /// Live sessions over all pods (the `Pods` metric's average times the
    /// pods), when the ceiling holds the HPA back: read only then, so that
    /// an ordinary change of load is not a change of facts.
    pub limited_sessions: Option<i64>,
    /// The quota controller has taken up every limit of the quota's spec.
    pub quota_enforced: bool,
    /// The API server's message for pods the Deployment's ReplicaSets could
    /// not create (its `ReplicaFailure` condition): refused by the quota, a
    /// LimitRange, pod security or any other admission.
    pub refused: Option<Box<str>>,
    /// Pods of an older template may still run next to new ones: the
    /// Deployment controller has not yet seen the latest spec, or not every
    /// pod is of the latest template yet, or pods are still terminating.
    /// Read from status, which only Kubernetes' controllers write.
    pub rolling_out: bool,
    /// The quota's `spec.hard`, as the operator wrote it.
    pub hard: Option<Box<BTreeMap<String, Quantity>>>,
    /// The quota's held-until annotation.
    pub held_until: Option<Box<str>>,
}

/// A metered Deployment's labels and sessions per replica.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metered {
    pub subscription: String,
    pub module: String,
    // No tenant: who is billed comes from the namespace's assignment
    // (metering::accumulate), never from a label written in the namespace.
    pub sessions_per_replica: f64,
}

impl Facts {
    /// The Deployment's first container's resources.
    pub fn resources(&self) -> Option<ResourceRequirements> {
        serde_json::from_str(self.resources.as_deref()?).ok()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Slim<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A child kind the caches keep slim.
pub trait Slimmable: Resource<DynamicType = ()> + Serialize + Sized {
    fn facts(&self) -> Facts;
}

impl Slimmable for Deployment {
    fn facts(&self) -> Facts {
        let spec = self.spec.as_ref();
        let status = self.status.as_ref();
        let label = |k: &str| {
            self.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(k))
                .cloned()
        };
        let annotation = |k: &str| {
            self.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .map(String::as_str)
        };
        let owned = self
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.kind == "TenantSubscription");
        let metering = match (label(LABEL_SUBSCRIPTION), label(LABEL_MODULE)) {
            (Some(subscription), Some(module)) if owned => Some(Box::new(Metered {
                subscription,
                module,
                sessions_per_replica: annotation(ANNOTATION_SESSIONS_PER_REPLICA)
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .unwrap_or(0.0),
            })),
            _ => None,
        };
        Facts {
            spec_replicas: spec.and_then(|s| s.replicas),
            replicas: status.and_then(|s| s.replicas),
            ready_replicas: status.and_then(|s| s.ready_replicas),
            quota_refused: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "ReplicaFailure"
                            && c.status == "True"
                            && c.message
                                .as_deref()
                                .is_some_and(|m| m.contains("exceeded quota"))
                    })
                }),
            resources: spec
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.resources.as_ref())
                .map(|r| {
                    serde_json::to_string(r)
                        .expect("resources serialize")
                        .into_boxed_str()
                }),
            metering,
            refused: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                })
                .map(|c| c.message.as_deref().unwrap_or("pods refused").into()),
            rolling_out: status.is_some_and(|s| {
                s.observed_generation < self.metadata.generation
                    || s.updated_replicas.unwrap_or(0) < s.replicas.unwrap_or(0)
                    || s.terminating_replicas.unwrap_or(0) > 0
            }),
            ..Default::default()
        }
    }
}

impl Slimmable for HorizontalPodAutoscaler {
    fn facts(&self) -> Facts {
        let limited = limited(self);
        Facts {
            min_replicas: self.spec.min_replicas,
            max_replicas: Some(self.spec.max_replicas),
            desired_replicas: self.status.as_ref().map(|s| s.desired_replicas),
            current_replicas: self.status.as_ref().and_then(|s| s.current_replicas),
            last_scale: self
                .status
                .as_ref()
                .and_then(|s| s.last_scale_time.as_ref())
                .map(|t| t.0.as_second()),
            unbounded_want: limited.then(|| unbounded_want(self)).flatten(),
            limited_sessions: limited.then(|| limited_sessions(self)).flatten(),
            ..Default::default()
        }
    }
}

/// The HPA's ceiling holds it back (`ScalingLimited` for `TooManyReplicas`).
fn limited(hpa: &HorizontalPodAutoscaler) -> bool {
    hpa.status.as_ref().is_some_and(|status| {
        status.conditions.iter().flatten().any(|c| {
            c.type_ == "ScalingLimited"
                && c.status == "True"
                && c.reason.as_deref() == Some("TooManyReplicas")
        })
    })
}

/// Live sessions over the HPA's pods: its `Pods` metric's current average
/// times the pods it runs (the operator renders at most one `Pods` metric,
/// the sessions metric).
fn limited_sessions(hpa: &HorizontalPodAutoscaler) -> Option<i64> {
    let status = hpa.status.as_ref()?;
    let current = status.current_replicas?;
    let average = status
        .current_metrics
        .iter()
        .flatten()
        .find_map(|m| m.pods.as_ref())?
        .current
        .average_value
        .as_ref()?;
    let nano = Quantity::parse(&average.0).ok()?.0;
    Some(((nano * current as i128 + 500_000_000) / 1_000_000_000) as i64)
}

/// Replicas the HPA would run without a ceiling: current replicas scaled
/// by how far each metric (CPU, memory, the sessions metric) is above its
/// target, the largest of them, as the HPA itself takes the largest.
fn unbounded_want(hpa: &HorizontalPodAutoscaler) -> Option<i32> {
    let status = hpa.status.as_ref()?;
    let current = status.current_replicas? as i128;
    let mut want: Option<i128> = None;
    for target in hpa.spec.metrics.iter().flatten() {
        let ratio = if let Some(r) = &target.resource {
            let used = status.current_metrics.iter().flatten().find_map(|m| {
                m.resource
                    .as_ref()
                    .filter(|c| c.name == r.name)
                    .and_then(|c| c.current.average_utilization)
            });
            match (used, r.target.average_utilization) {
                (Some(used), Some(t)) if t > 0 => Some((used as i128, t as i128)),
                _ => None,
            }
        } else if let Some(p) = &target.pods {
            let used = status.current_metrics.iter().flatten().find_map(|m| {
                m.pods
                    .as_ref()
                    .filter(|c| c.metric.name == p.metric.name)
                    .and_then(|c| c.current.average_value.as_ref())
            });
            let parse = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
                Quantity::parse(&q.0).ok().map(|q| q.0)
            };
            match (
                used.and_then(parse),
                p.target.average_value.as_ref().and_then(parse),
            ) {
                (Some(used), Some(t)) if t > 0 => Some((used, t)),
                _ => None,
            }
        } else {
            None
        };
        if let Some((used, t)) = ratio {
            let w = (current * used + t - 1) / t;
            want = Some(want.map_or(w, |x| x.max(w)));
        }
    }
    want.map(|w| w.min(i32::MAX as i128) as i32)
}

impl Slimmable for Service {
    fn facts(&self) -> Facts {
        Facts::default()
    }
}

impl Slimmable for ResourceQuota {
    fn facts(&self) -> Facts {
        let enforced = match (
            self.spec.as_ref().and_then(|s| s.hard.as_ref()),
            self.status.as_ref().and_then(|s| s.hard.as_ref()),
        ) {
            (Some(spec), Some(status)) => {
                spec.len() == status.len()
                    && spec
                        .iter()
                        .all(|(k, v)| status.get(k).is_some_and(|w| same_quantity(&v.0, &w.0)))
            }
            _ => false,
        };
        let hard = self.spec.as_ref().and_then(|s| s.hard.as_ref()).map(|h| {
            Box::new(
                h.iter()
                    .filter_map(|(k, v)| Quantity::parse(&v.0).ok().map(|q| (k.clone(), q)))
                    .collect(),
            )
        });
        Facts {
            quota_enforced: enforced,
            hard,
            held_until: self
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_HELD_UNTIL))
                .map(|s| s.as_str().into()),
            ..Default::default()
        }
    }
}

impl Slimmable for LimitRange {
    fn facts(&self) -> Facts {
        Facts::default()
    }
}

/// The slim form of a full child object.
pub fn slim<K: Slimmable>(obj: K) -> Slim<K> {
    let facts = obj.facts();
    let ours = obj
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .find(|e| {
            e.manager.as_deref() == Some(MANAGER)
                && e.operation.as_deref() == Some("Apply")
                && e.subresource.as_deref().unwrap_or("").is_empty()
        })
        .and_then(|e| e.fields_v1.as_ref())
        .map(|f| f.0.clone());
    let applied = ours.map(|fields| {
        let live = serde_json::to_value(&obj).expect("k8s objects serialize");
        digest::of_live(&live, &fields)
    });
    let meta = obj.meta();
    let owners: Vec<OwnerReference> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.kind == "TenantSubscription")
        .cloned()
        .collect();
    Slim {
        metadata: ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            owner_references: (!owners.is_empty()).then_some(owners),
            deletion_timestamp: meta.deletion_timestamp.clone(),
            creation_timestamp: meta.creation_timestamp.clone(),
            ..Default::default()
        },
        applied,
        facts,
        kind: PhantomData,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::digest::tests::{desired, fields, live};

    #[test]
    fn slim_keeps_identity_and_facts_only() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
        let mut d: Deployment = serde_json::from_value(live()).unwrap();
        d.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(fields())),
            ..Default::default()
        }]);
        let s = slim(d);
        assert_eq!(s.applied, Some(digest::of_desired(&mut desired())));
        assert_eq!(s.facts.spec_replicas, Some(3));
        assert_eq!(s.facts.replicas, Some(3));
        assert_eq!(s.metadata.resource_version, None);
        assert_eq!(s.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(s.metadata.uid.as_deref(), Some("d1"));
    }

    #[test]
    fn a_deployment_says_when_pods_are_refused_and_while_it_rolls_out() {
        let deployment = |generation: i64, status: serde_json::Value| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "acme-video", "generation": generation},
                "spec": {"selector": {}, "template": {}},
                "status": status,
            }))
            .unwrap()
        };
        let refused = "pods \"acme-video-1\" is forbidden: exceeded quota: acme-capacity";
        let cases = [
            // Done: every pod of the latest template, nothing terminating.
            (
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3}),
                false,
                None,
            ),
            // The controller has not seen the latest spec yet.
            (
                3,
                serde_json::json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3}),
                true,
                None,
            ),
            // Old pods still run next to new ones.
            (
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1}),
                true,
                None,
            ),
            // Old pods still terminating.
            (
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "terminatingReplicas": 1}),
                true,
                None,
            ),
            // Pods refused, with the API server's words.
            (
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "conditions": [
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": refused}]}),
                false,
                Some(refused),
            ),
            (
                2,
                serde_json::json!({"observedGeneration": 2, "conditions": [
                {"type": "ReplicaFailure", "status": "False", "message": "old"}]}),
                false,
                None,
            ),
        ];
        for (generation, status, rolling, message) in cases {
            let f = deployment(generation, status.clone()).facts();
            assert_eq!(f.rolling_out, rolling, "{status}");
            assert_eq!(f.refused.as_deref(), message, "{status}");
        }
    }

    #[test]
    fn a_quota_keeps_its_limits_and_the_end_of_a_hold() {
        let q: ResourceQuota = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "acme-capacity", "annotations": {ANNOTATION_HELD_UNTIL: "2026-03-02T10:10:30Z"}},
            "spec": {"hard": {"pods": "5", "requests.cpu": "1600m"}},
        }))
        .unwrap();
        let f = q.facts();
        let hard = f.hard.unwrap();
        assert_eq!(hard["requests.cpu"], Quantity::parse("1.6").unwrap());
        assert_eq!(hard["pods"], Quantity::parse("5").unwrap());
        assert_eq!(f.held_until.as_deref(), Some("2026-03-02T10:10:30Z"));
    }

    #[test]
    fn an_hpa_held_by_its_ceiling_says_how_many_sessions_are_live() {
        let hpa = |limited: bool| -> HorizontalPodAutoscaler {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "acme-video"},
                "spec": {
                    "scaleTargetRef": {"kind": "Deployment", "name": "acme-video"},
                    "maxReplicas": 25,
                    "metrics": [
                        {"type": "Pods", "pods": {"metric": {"name": "rtc_sessions_active"},
                            "target": {"type": "AverageValue", "averageValue": "32"}}},
                        {"type": "Resource", "resource": {"name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70}}}]},
                "status": {
                    "currentReplicas": 25, "desiredReplicas": 25,
                    "lastScaleTime": "2026-03-02T10:00:00Z",
                    "currentMetrics": [
                        {"type": "Pods", "pods": {"metric": {"name": "rtc_sessions_active"},
                            "current": {"averageValue": "49600m"}}},
                        {"type": "Resource", "resource": {"name": "cpu",
                            "current": {"averageUtilization": 35}}}],
                    "conditions": [{"type": "ScalingLimited", "status": if limited { "True" } else { "False" },
                        "reason": "TooManyReplicas", "lastTransitionTime": "2026-03-02T10:00:00Z"}]}
            }))
            .unwrap()
        };
        let f = hpa(true).facts();
        // 49.6 sessions a pod over 25 pods; 25 × 49.6 / 32 = 38.75 → 39 pods
        // (CPU asks for fewer: the HPA takes the largest).
        assert_eq!(f.limited_sessions, Some(1240));
        assert_eq!(f.unbounded_want, Some(39));
        assert_eq!(f.current_replicas, Some(25));
        assert_eq!(f.last_scale, Some(1_772_445_600));
        let f = hpa(false).facts();
        assert_eq!(
            (f.limited_sessions, f.unbounded_want),
            (None, None),
            "read only while limited"
        );
    }
}
