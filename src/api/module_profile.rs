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
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^\S+$"))]
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
    #[schemars(transform = super::bounds::resources)]
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
    #[schemars(transform = super::bounds::node_selector)]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, size(k) <= 317)").message("node selector keys are label keys of at most 317 characters"))]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations for the module's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::bounds::tolerations)]
    pub tolerations: Option<Vec<Toleration>>,

    /// How the module's pods run. By default they pass the `restricted` Pod
    /// Security Standard: not as root, the runtime's default seccomp profile,
    /// every capability dropped, no privilege escalation, and no
    /// ServiceAccount token. Loosen only what the module truly needs.
    #[serde(default, skip_serializing_if = "PodSecurity::is_default")]
    pub security: PodSecurity,

    /// Quality tiers (e.g. sd, hd, uhd), each overriding sessionsPerReplica and/or resources.
    /// Names are lowercase DNS labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, k.matches('^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$'))").message("tier names must be lowercase DNS labels of at most 32 characters"))]
    #[schemars(extend("maxProperties" = 32))]
    pub tiers: BTreeMap<String, TierSpec>,
}

/// What a module's pods may do beyond the `restricted` Pod Security
/// Standard's defaults. Written by the provider in the catalogue, never by a
/// tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurity {
    /// User ID the containers run as; unset, the image's own user (which
    /// must then not be root: the kubelet refuses to start it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_147_483_647))]
    pub run_as_user: Option<i64>,

    /// Primary group ID of the containers' processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2_147_483_647))]
    pub run_as_group: Option<i64>,

    /// Group that owns the pods' volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2_147_483_647))]
    pub fs_group: Option<i64>,

    /// Mount the container's root filesystem read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,

    /// Capabilities added back after all are dropped. The `restricted`
    /// standard allows only `NET_BIND_SERVICE` (ports below 1024); anything
    /// else is refused in namespaces that enforce it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(regex(pattern = r"^[A-Z_]{1,32}$")))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub add_capabilities: Vec<String>,

    /// Mount the namespace's `default` ServiceAccount token into the pods
    /// (for a module that calls the Kubernetes API itself).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service_account_token: bool,

    /// A seccomp profile on the node (`localhostProfile`) instead of the
    /// container runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub seccomp_localhost_profile: Option<String>,

    /// Let containers run as root (`runAsNonRoot: false`). Such pods do not
    /// pass the `restricted` standard and are refused where it is enforced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_root: bool,
}

impl PodSecurity {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
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
    #[schemars(transform = super::bounds::resources)]
    pub resources: Option<ResourceRequirements>,

    /// Image for this tier, when it differs from the profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^\S+$"))]
    pub image: Option<String>,
}
