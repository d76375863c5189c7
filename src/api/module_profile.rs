use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A module of the product catalogue (messaging, voice, video, live streaming,
/// conversational AI): what runs for it and how much one replica serves.
#[allow(clippy::duplicated_attributes)] // the derive's printcolumn(...) lists repeat keys by design
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "capacity.tenancy.dev",
    version = "v1alpha1",
    kind = "ModuleProfile",
    shortname = "mprof",
    category = "tenancy",
    doc = "A catalogue entry: one module of the product, the image that serves it and the sessions one replica carries.",
    printcolumn(name = "Display", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(
        name = "Sessions/Replica",
        type_ = "integer",
        json_path = ".spec.sessionsPerReplica"
    ),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicas"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ModuleProfileSpec {
    /// Human-readable name of the module, for dashboards and status messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,

    /// Container image that serves the module.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Container port the module serves on. A Service is created only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Concurrent sessions one replica serves at the default tier.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub sessions_per_replica: i32,

    /// Replicas kept while the module is enabled, whatever the load (the floor).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 10_000))]
    pub min_replicas: i32,

    /// Compute resources of one replica (core/v1 ResourceRequirements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Horizontal autoscaling target.
    #[serde(default)]
    pub scaling: Scaling,

    /// Seconds a replica gets to finish its live sessions when it is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86_400))]
    pub termination_grace_period_seconds: Option<i64>,

    /// Node selector for the module's pods (e.g. GPU nodes for conversational AI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations for the module's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Quality tiers (e.g. sd, hd, uhd), each overriding sessionsPerReplica and/or resources.
    /// Names are lowercase DNS labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, k.matches('^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$'))").message("tier names must be lowercase DNS labels of at most 32 characters"))]
    #[schemars(extend("maxProperties" = 32))]
    pub tiers: BTreeMap<String, TierSpec>,
}

fn default_min_replicas() -> i32 {
    1
}

/// HPA target of a module.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Target average CPU utilisation, in percent of the requested CPU.
    #[serde(default = "default_cpu_utilization")]
    #[schemars(range(min = 1, max = 1000))]
    pub cpu_utilization: i32,

    /// Optional target average memory utilisation, in percent of the requested memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub memory_utilization: Option<i32>,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            cpu_utilization: default_cpu_utilization(),
            memory_utilization: None,
        }
    }
}

fn default_cpu_utilization() -> i32 {
    70
}

/// A quality tier overriding the profile's defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TierSpec {
    /// Concurrent sessions one replica serves at this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub sessions_per_replica: Option<i32>,

    /// Compute resources of one replica at this tier; replaces the profile's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Image for this tier, when it differs from the profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
}
