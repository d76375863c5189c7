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

    /// What the autoscaler follows (sessions, CPU, memory) and how fast
    /// pods may come and go.
    #[serde(default)]
    pub scaling: Scaling,

    /// Seconds a replica gets to finish its live sessions when it is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86_400))]
    pub termination_grace_period_seconds: Option<i64>,

    /// A drain hook run in each container before it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<PreStop>,

    /// Node selector for the module's pods (e.g. GPU nodes for conversational AI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::bounds::node_selector)]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, size(k) <= 317)").message("node selector keys are label keys of at most 317 characters"))]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// How the module's pods spread over the zones of their regions.
    #[serde(default, skip_serializing_if = "ZoneSpread::is_default")]
    pub zone_spread: ZoneSpread,

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

/// The pods' `topologySpreadConstraints` over `topology.kubernetes.io/zone`.
/// Zones whose nodes are tainted (unreachable, cordoned) or do not match
/// the pods' regions and node selector do not count, so a zone lost does
/// not stop pods from starting in the others.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSpread {
    /// The most the pods in one zone may exceed those in the emptiest zone.
    #[serde(default = "default_max_skew")]
    #[schemars(range(min = 1, max = 100))]
    pub max_skew: i32,

    /// DoNotSchedule (default) keeps a pod pending rather than skew the
    /// spread further: a zone lost takes at most its share of the calls.
    /// ScheduleAnyway only prefers spreading: for clusters whose nodes
    /// have no zone label, or when a full zone should not hold pods back.
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
}

impl Default for ZoneSpread {
    fn default() -> Self {
        Self {
            max_skew: default_max_skew(),
            when_unsatisfiable: WhenUnsatisfiable::default(),
        }
    }
}

impl ZoneSpread {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_max_skew() -> i32 {
    1
}

/// What the scheduler does with a pod that would skew the spread.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum WhenUnsatisfiable {
    #[default]
    DoNotSchedule,
    ScheduleAnyway,
}

impl WhenUnsatisfiable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DoNotSchedule => "DoNotSchedule",
            Self::ScheduleAnyway => "ScheduleAnyway",
        }
    }
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

/// How the module's HorizontalPodAutoscaler follows demand, and how fast
/// it may add and remove pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.scaleDown) || !has(self.scaleDown.maxPercent) || self.scaleDown.maxPercent <= 100").message("scaleDown.maxPercent must be at most 100 (pods removed per period, in percent)").field_path(".scaleDown.maxPercent"))]
pub struct Scaling {
    /// Target average CPU utilisation, in percent of the requested CPU.
    /// Unset: 70 when no sessions metric is named; with one, CPU is a
    /// metric only when set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub cpu_utilization: Option<i32>,

    /// Optional target average memory utilisation, in percent of the requested memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub memory_utilization: Option<i32>,

    /// Live sessions as the demand signal: a per-pod custom metric (an
    /// autoscaling/v2 `Pods` metric, served by the custom metrics API, e.g.
    /// through prometheus-adapter). With CPU or memory also set, the HPA
    /// follows whichever asks for the most replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsMetric>,

    /// How fast pods may leave: the HPA's `behavior.scaleDown`, and the
    /// pace at which a lowered ceiling comes down. Defaults suit calls: a
    /// 300 s stabilisation, then at most 1 pod or 10 % of the pods
    /// (whichever is more) every 60 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleRate>,

    /// How fast pods may be added: the HPA's `behavior.scaleUp`. Defaults:
    /// no stabilisation, at most 4 pods or 100 % more (whichever is more)
    /// every 15 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScaleRate>,
}

/// The custom metric that counts a pod's live sessions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionsMetric {
    /// The metric's name as the custom metrics API serves it per pod
    /// (e.g. `rtc_sessions_active`).
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_:][A-Za-z0-9_:.-]*$")
    )]
    pub metric: String,

    /// Average sessions per pod the HPA aims at, in percent of what one
    /// replica carries (`sessionsPerReplica` of the module's tier). Below
    /// 100 leaves each pod room for the calls that arrive before new pods
    /// are ready.
    #[serde(default = "default_sessions_target_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub target_percent: i32,
}

fn default_sessions_target_percent() -> i32 {
    80
}

/// A pace of scaling: the HPA's stabilisation window and its two policies
/// over one period (`selectPolicy: Max`: the larger of the two applies).
/// Unset fields take the defaults of the direction.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleRate {
    /// Seconds of recommendations the HPA looks back over before it acts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_seconds: Option<i32>,
    /// Length of one period of the policies, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: Option<i32>,
    /// Pods added or removed per period, in percent of the pods at the
    /// period's start (removed: at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_percent: Option<i32>,
    /// Pods added or removed per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_pods: Option<i32>,
}

/// What runs in a container before it is stopped, so it can drain: stop
/// taking new sessions, hand over or wait for the live ones. The pod's
/// `terminationGracePeriodSeconds` bounds the hook and the drain together.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.command) != has(self.httpGet)").message("preStop names exactly one of command and httpGet"))]
pub struct PreStop {
    /// A command run in the container (not in a shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 1024)))]
    pub command: Option<Vec<String>>,
    /// An HTTP GET to the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetHook>,
}

/// An HTTP GET to the pod's own container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetHook {
    /// Path of the request, e.g. `/drain`.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/\S*$"))]
    pub path: String,
    /// Container port; unset, the profile's `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
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
