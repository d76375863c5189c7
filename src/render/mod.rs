//! The Kubernetes objects a capacity plan stands for. Pure functions: the
//! same plan always renders byte-identical objects.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        autoscaling::v2::{
            CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules,
            HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec,
            MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
        },
        core::v1::{
            Affinity, Capabilities, Container, ContainerPort, EnvVar, ExecAction, HTTPGetAction,
            Lifecycle, LifecycleHandler, LimitRange, LimitRangeItem, LimitRangeSpec, NodeAffinity,
            NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSecurityContext, PodSpec,
            PodTemplateSpec, ResourceQuota, ResourceQuotaSpec, SeccompProfile, SecurityContext,
            Service, ServicePort, ServiceSpec, TopologySpreadConstraint,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity as K8sQuantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::core::ApiResource;

use crate::api::{PodSecurity, PreStop};
use crate::capacity::{
    CapacityPlan, DEFAULT_LIMITS, DEFAULT_REQUESTS, Footprint, MAX_SURGE_PERCENT, ModulePlan,
    Quantity, REGION_LABEL, ZONE_LABEL,
    pace::{self, Pace},
    quota_hard,
};

/// Field manager of every write, and value of the managed-by label.
pub const MANAGER: &str = "tenant-capacity-operator";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_SUBSCRIPTION: &str = "capacity.tenancy.dev/subscription";
pub const LABEL_MODULE: &str = "capacity.tenancy.dev/module";
pub const LABEL_TENANT: &str = "capacity.tenancy.dev/tenant";
/// Sessions one replica of the module serves, for metering.
pub const ANNOTATION_SESSIONS_PER_REPLICA: &str = "capacity.tenancy.dev/sessions-per-replica";
pub const QUOTA_SUFFIX: &str = "capacity";
/// Set on the quota while it holds the larger of its old and new size for a
/// rollout: until when at most (RFC 3339). Only the operator writes quotas.
pub const ANNOTATION_HELD_UNTIL: &str = "capacity.tenancy.dev/held-until";
pub const LIMIT_RANGE_SUFFIX: &str = "defaults";

/// Who the children belong to.
#[derive(Debug, Clone)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub tenant_id: String,
    /// Absent only in offline previews, where the subscription has no uid yet.
    pub reference: Option<OwnerReference>,
}

/// One child object, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    Deployment(Box<Deployment>),
    Hpa(Box<HorizontalPodAutoscaler>),
    Service(Box<Service>),
    Quota(Box<ResourceQuota>),
    LimitRange(Box<LimitRange>),
}

/// The kinds of child the operator writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    Deployment,
    Hpa,
    Service,
    Quota,
    LimitRange,
}

impl ChildKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::Hpa => "HorizontalPodAutoscaler",
            Self::Service => "Service",
            Self::Quota => "ResourceQuota",
            Self::LimitRange => "LimitRange",
        }
    }

    /// What the API calls this kind (group, version, plural), for writes.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Self::Deployment => ApiResource::erase::<Deployment>(&()),
            Self::Hpa => ApiResource::erase::<HorizontalPodAutoscaler>(&()),
            Self::Service => ApiResource::erase::<Service>(&()),
            Self::Quota => ApiResource::erase::<ResourceQuota>(&()),
            Self::LimitRange => ApiResource::erase::<LimitRange>(&()),
        }
    }
}

impl std::fmt::Display for ChildKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Child {
    pub fn kind(&self) -> ChildKind {
        match self {
            Self::Deployment(_) => ChildKind::Deployment,
            Self::Hpa(_) => ChildKind::Hpa,
            Self::Service(_) => ChildKind::Service,
            Self::Quota(_) => ChildKind::Quota,
            Self::LimitRange(_) => ChildKind::LimitRange,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Deployment(o) => &o.metadata,
            Self::Hpa(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::Quota(o) => &o.metadata,
            Self::LimitRange(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// The object as the JSON body of an apply request (with apiVersion and
    /// kind, as k8s-openapi serializes every resource).
    pub fn to_value(&self) -> serde_json::Value {
        let v = match self {
            Self::Deployment(o) => serde_json::to_value(o),
            Self::Hpa(o) => serde_json::to_value(o),
            Self::Service(o) => serde_json::to_value(o),
            Self::Quota(o) => serde_json::to_value(o),
            Self::LimitRange(o) => serde_json::to_value(o),
        };
        v.expect("k8s objects serialize")
    }
}

pub use crate::capacity::child_name;

pub fn quota_name(subscription: &str) -> String {
    format!("{subscription}-{QUOTA_SUFFIX}")
}

pub fn limit_range_name(subscription: &str) -> String {
    format!("{subscription}-{LIMIT_RANGE_SUFFIX}")
}

fn labels(owner: &Owner, module: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_SUBSCRIPTION.to_string(), owner.name.clone()),
        (LABEL_TENANT.to_string(), owner.tenant_id.clone()),
    ]);
    if let Some(m) = module {
        l.insert(LABEL_MODULE.to_string(), m.to_string());
    }
    l
}

fn selector(owner: &Owner, module: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_SUBSCRIPTION.to_string(), owner.name.clone()),
        (LABEL_MODULE.to_string(), module.to_string()),
    ])
}

fn meta(owner: &Owner, name: String, module: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels(owner, module)),
        owner_references: owner.reference.clone().map(|r| vec![r]),
        ..Default::default()
    }
}

pub fn deployment(owner: &Owner, m: &ModulePlan) -> Deployment {
    let mut env = vec![
        EnvVar {
            name: "TENANT_ID".into(),
            value: Some(owner.tenant_id.clone()),
            ..Default::default()
        },
        EnvVar {
            name: "MODULE".into(),
            value: Some(m.name.clone()),
            ..Default::default()
        },
    ];
    if let Some(t) = &m.tier {
        env.push(EnvVar {
            name: "TIER".into(),
            value: Some(t.clone()),
            ..Default::default()
        });
    }
    let container = Container {
        name: m.name.clone(),
        image: Some(m.image.clone()),
        env: Some(env),
        ports: m.port.map(|p| {
            vec![ContainerPort {
                name: Some("rtc".into()),
                container_port: p,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]
        }),
        resources: m.resources.clone(),
        security_context: Some(container_security(&m.security)),
        lifecycle: m.pre_stop.as_ref().and_then(|h| pre_stop(h, m.port)),
        ..Default::default()
    };
    let mut metadata = meta(owner, child_name(&owner.name, &m.name), Some(&m.name));
    metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_SESSIONS_PER_REPLICA.to_string(),
        m.sessions_per_replica.to_string(),
    )]));
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            // No replicas: the HPA owns the scale, so GitOps tools see no drift.
            replicas: None,
            selector: LabelSelector {
                match_labels: Some(selector(owner, &m.name)),
                ..Default::default()
            },
            // Never take serving replicas away during a rollout: surge instead.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String(format!("{MAX_SURGE_PERCENT}%"))),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(owner, Some(&m.name))),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: m.termination_grace_period_seconds,
                    node_selector: m.node_selector.clone(),
                    affinity: region_affinity(&m.regions),
                    topology_spread_constraints: Some(vec![zone_spread(owner, m)]),
                    tolerations: m.tolerations.clone(),
                    security_context: Some(pod_security(&m.security)),
                    automount_service_account_token: Some(m.security.service_account_token),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Pods only on nodes of the module's regions (none named: any node).
fn region_affinity(regions: &[String]) -> Option<Affinity> {
    (!regions.is_empty()).then(|| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: REGION_LABEL.into(),
                        operator: "In".into(),
                        values: Some(regions.to_vec()),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The module's pods spread over the zones of the nodes they may run on.
/// Each revision spreads on its own (`pod-template-hash`), so a rollout, a
/// region move included, lands spread whatever the old pods' places.
/// Zones whose nodes are tainted (unreachable, cordoned) do not count.
fn zone_spread(owner: &Owner, m: &ModulePlan) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: m.zone_spread.max_skew,
        topology_key: ZONE_LABEL.into(),
        when_unsatisfiable: m.zone_spread.when_unsatisfiable.as_str().into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector(owner, &m.name)),
            ..Default::default()
        }),
        match_label_keys: Some(vec!["pod-template-hash".into()]),
        node_affinity_policy: Some("Honor".into()),
        node_taints_policy: Some("Honor".into()),
        ..Default::default()
    }
}

/// The container's drain hook: a command, or a GET to its own port.
fn pre_stop(hook: &PreStop, port: Option<i32>) -> Option<Lifecycle> {
    let handler = match (&hook.command, &hook.http_get) {
        (Some(command), _) => LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(command.clone()),
            }),
            ..Default::default()
        },
        (None, Some(get)) => LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some(get.path.clone()),
                port: IntOrString::Int(get.port.or(port)?),
                ..Default::default()
            }),
            ..Default::default()
        },
        (None, None) => return None,
    };
    Some(Lifecycle {
        pre_stop: Some(handler),
        ..Default::default()
    })
}

/// The pod's part of the `restricted` Pod Security Standard: not root, a
/// seccomp profile. A pod that passes it is admitted in every namespace,
/// whichever standard the namespace enforces.
fn pod_security(s: &PodSecurity) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(!s.allow_root),
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        fs_group: s.fs_group,
        seccomp_profile: Some(match &s.seccomp_localhost_profile {
            Some(path) => SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some(path.clone()),
            },
            None => SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            },
        }),
        ..Default::default()
    }
}

/// The container's part: no privilege escalation, every capability dropped
/// but those the profile adds back.
fn container_security(s: &PodSecurity) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: (!s.add_capabilities.is_empty()).then(|| s.add_capabilities.clone()),
        }),
        read_only_root_filesystem: s.read_only_root_filesystem.then_some(true),
        ..Default::default()
    }
}

pub fn hpa(owner: &Owner, m: &ModulePlan) -> HorizontalPodAutoscaler {
    let resource = |name: &str, pct: i32| MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: name.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(pct),
                ..Default::default()
            },
        }),
        ..Default::default()
    };
    // Sessions first: the signal a real-time product sells. The HPA takes
    // the largest of the replica counts its metrics ask for.
    let mut metrics = Vec::new();
    if let Some(s) = &m.scaling.sessions {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: s.metric.clone(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(K8sQuantity(pace::sessions_target(
                        m.sessions_per_replica,
                        s.target_percent,
                    ))),
                    ..Default::default()
                },
            }),
            ..Default::default()
        });
    }
    if let Some(pct) = m.scaling.cpu_target() {
        metrics.push(resource("cpu", pct));
    }
    if let Some(pct) = m.scaling.memory_utilization {
        metrics.push(resource("memory", pct));
    }
    let rules = |p: Pace| HPAScalingRules {
        stabilization_window_seconds: Some(p.stabilization_seconds),
        select_policy: Some("Max".into()),
        policies: Some(vec![
            HPAScalingPolicy {
                type_: "Pods".into(),
                value: p.max_pods,
                period_seconds: p.period_seconds,
            },
            HPAScalingPolicy {
                type_: "Percent".into(),
                value: p.max_percent,
                period_seconds: p.period_seconds,
            },
        ]),
        tolerance: None,
    };
    let name = child_name(&owner.name, &m.name);
    HorizontalPodAutoscaler {
        metadata: meta(owner, name.clone(), Some(&m.name)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(m.numbers.min_replicas),
            max_replicas: m.numbers.max_replicas,
            metrics: Some(metrics),
            // Every HPA has a bounded scale-down: calls are long-lived.
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(rules(m.scaling.down_pace())),
                scale_up: Some(rules(m.scaling.up_pace())),
            }),
        },
        status: None,
    }
}

pub fn service(owner: &Owner, m: &ModulePlan) -> Option<Service> {
    let port = m.port?;
    Some(Service {
        metadata: meta(owner, child_name(&owner.name, &m.name), Some(&m.name)),
        spec: Some(ServiceSpec {
            selector: Some(selector(owner, &m.name)),
            ports: Some(vec![ServicePort {
                name: Some("rtc".into()),
                port,
                target_port: Some(IntOrString::String("rtc".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

pub fn quota(owner: &Owner, footprints: &[Footprint]) -> Option<ResourceQuota> {
    Some(quota_of(owner, quota_hard(footprints)?, None))
}

/// The quota with these limits; `held_until` while it holds a rollout's
/// larger size (see [`crate::capacity::hold`]).
pub fn quota_of(
    owner: &Owner,
    hard: BTreeMap<String, Quantity>,
    held_until: Option<&str>,
) -> ResourceQuota {
    let mut metadata = meta(owner, quota_name(&owner.name), None);
    metadata.annotations =
        held_until.map(|t| BTreeMap::from([(ANNOTATION_HELD_UNTIL.to_string(), t.to_string())]));
    ResourceQuota {
        metadata,
        spec: Some(ResourceQuotaSpec {
            hard: Some(
                hard.into_iter()
                    .map(|(k, v)| (k, K8sQuantity(v.to_string())))
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

/// The defaults a container that declares no CPU or memory gets in the
/// subscription's namespace ([`DEFAULT_REQUESTS`], [`DEFAULT_LIMITS`]): so
/// the quota can always cap them, and such a pod is counted, not refused.
pub fn limit_range(owner: &Owner) -> LimitRange {
    let list = |l: &[(&str, &str)]| {
        l.iter()
            .map(|(k, v)| (k.to_string(), K8sQuantity(v.to_string())))
            .collect()
    };
    LimitRange {
        metadata: meta(owner, limit_range_name(&owner.name), None),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(list(&DEFAULT_LIMITS)),
                default_request: Some(list(&DEFAULT_REQUESTS)),
                ..Default::default()
            }],
        }),
    }
}

/// The children of one enabled module, in apply order.
pub fn module_children(owner: &Owner, m: &ModulePlan) -> Vec<Child> {
    let mut out = vec![
        Child::Deployment(Box::new(deployment(owner, m))),
        Child::Hpa(Box::new(hpa(owner, m))),
    ];
    if let Some(s) = service(owner, m) {
        out.push(Child::Service(Box::new(s)));
    }
    out
}

/// The quota, covering the plan's modules plus `extra` footprints (modules
/// still draining).
pub fn quota_child(owner: &Owner, plan: &CapacityPlan, extra: &[Footprint]) -> Option<Child> {
    let mut footprints: Vec<Footprint> = plan
        .modules
        .iter()
        .filter_map(|m| m.footprint().ok())
        .collect();
    footprints.extend_from_slice(extra);
    quota(owner, &footprints).map(|q| Child::Quota(Box::new(q)))
}

/// Every object of a plan (without draining modules): what `render` prints.
pub fn all_children(owner: &Owner, plan: &CapacityPlan) -> Vec<Child> {
    let mut out: Vec<Child> = plan
        .modules
        .iter()
        .flat_map(|m| module_children(owner, m))
        .collect();
    out.extend(quota_child(owner, plan, &[]));
    out.push(Child::LimitRange(Box::new(limit_range(owner))));
    out
}

#[cfg(test)]
mod tests;
