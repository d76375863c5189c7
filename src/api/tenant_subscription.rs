use k8s_openapi::{
    api::core::v1::ResourceRequirements, apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{bounds, season::Seasons};

/// One tenant's subscription: the modules it bought, at which concurrency and
/// tier, and how its capacity follows the seasons.
#[allow(clippy::duplicated_attributes)] // the derive's printcolumn(...) lists repeat keys by design
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "capacity.tenancy.dev",
    version = "v1alpha1",
    kind = "TenantSubscription",
    namespaced,
    shortname = "tsub",
    category = "tenancy",
    status = "TenantSubscriptionStatus",
    // Children are named `<subscription>-<module>`, and a Service name must be
    // a DNS-1035 label: refused at apply rather than failing at the Service.
    validation = kube::core::Rule::new(
        "size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ).message(kube::core::Message::Expression(
        "'metadata.name: ' + self.metadata.name + ' is not a valid subscription name: it must be a DNS-1035 label (at most 63 lowercase letters, digits and hyphens, starting with a letter and ending with a letter or digit), because it names the Services <subscription>-<module>'".into()
    )),
    doc = "One tenant's capacity subscription: enabled modules, concurrency, tiers and seasonal windows.",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantId"),
    printcolumn(name = "Plan", type_ = "string", json_path = ".spec.plan"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Windows",
        type_ = "string",
        json_path = ".status.activeWindows"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextTransition",
        priority = "1"
    ),
    printcolumn(
        name = "Paused",
        type_ = "boolean",
        json_path = ".spec.paused",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSubscriptionSpec {
    /// Stable identifier of the tenant, used in labels and metrics.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub tenant_id: String,

    /// Name of the SubscriptionPlan this subscription is sold under; required
    /// unless the operator runs with --require-plan=false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub plan: Option<String>,

    /// Hold every rise (more concurrency, a new module or tier, a window opening) until
    /// unpaused; reductions (a lower concurrency or plan, a window's end, a module
    /// switched off) still take effect.
    #[serde(default)]
    pub paused: bool,

    /// Where the tenant is served: values of the nodes' label
    /// `topology.kubernetes.io/region`. Its pods run only on nodes of these
    /// regions, spread over their zones. A module may name its own. Unset:
    /// the regions the plan includes, else any node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::MAX_REGIONS), inner(length(min = 1, max = bounds::MAX_LABEL), regex(pattern = bounds::REGION_PATTERN)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub regions: Vec<String>,

    /// The modules bought. Module names are unique.
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = bounds::MAX_MODULES))]
    pub modules: Vec<ModuleRequest>,

    /// Seasonal windows that raise ceilings or keep capacity warm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seasons: Option<Seasons>,

    /// How switched-off modules are wound down.
    #[serde(default)]
    pub downgrade: Downgrade,
}

/// One module bought by the tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleRequest {
    /// Name of a ModuleProfile.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Most concurrent sessions bought (the ceiling outside seasonal windows).
    #[schemars(range(min = 1, max = 100_000_000))]
    pub concurrency: i64,

    /// Quality tier, one of the profile's tiers; the profile's defaults when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub tier: Option<String>,

    /// Where this module is served, instead of the subscription's regions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::MAX_REGIONS), inner(length(min = 1, max = bounds::MAX_LABEL), regex(pattern = bounds::REGION_PATTERN)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub regions: Vec<String>,

    /// false switches the module off: it drains for downgrade.drainSeconds, then its objects are removed.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

/// How switched-off modules are wound down.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Downgrade {
    /// Seconds a disabled or removed module keeps serving before its objects are removed.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = bounds::MAX_DRAIN_SECONDS))]
    pub drain_seconds: i64,

    /// What happens to a removed module's data (PersistentVolumeClaims carrying
    /// its labels): Retain (default) keeps them, Delete removes them with the module.
    #[serde(default)]
    pub data_retention: DataRetention,
}

impl Default for Downgrade {
    fn default() -> Self {
        Self {
            drain_seconds: default_drain_seconds(),
            data_retention: DataRetention::Retain,
        }
    }
}

/// Fate of a removed module's PersistentVolumeClaims.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum DataRetention {
    #[default]
    Retain,
    Delete,
}

fn default_drain_seconds() -> i64 {
    300
}

impl TenantSubscription {
    /// Whether the operator has written a status for any generation yet:
    /// a new subscription has none, or the schema's default
    /// (`observedGeneration: 0`).
    pub fn observed(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .is_some_and(|g| g > 0)
    }
}

/// Observed state of a subscription. Until the operator first writes it, it
/// reads `observedGeneration: 0`: the subscription is not observed yet.
//
// That is a schema default. The API server drops the status of a create
// (the status subresource), so nothing in a manifest can say "not observed
// yet", but it applies defaults whenever it reads an object from storage:
// a new subscription is served with generation 1 and observedGeneration 0,
// which kstatus (Flux, kpt, cli-utils) and the Argo CD health check read as
// in progress instead of current (`Current` with no status at all). A
// default condition (Reconciling=True) would need a fixed
// lastTransitionTime, a date that is not true; a generation not observed
// says the same with nothing made up. The operator's first status write
// replaces it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct TenantSubscriptionStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling, Stalled and CapacityLimited conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = super::bounds::conditions)]
    pub conditions: Vec<Condition>,

    /// Seasonal windows active at the last reconcile.
    #[serde(default)]
    #[schemars(length(max = bounds::MAX_ACTIVE_WINDOWS), inner(length(max = bounds::MAX_ACTIVE_WINDOW_NAME)))]
    pub active_windows: Vec<String>,

    /// When the set of active windows next changes (RFC 3339, in the subscription's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::MAX_INSTANT))]
    pub next_transition: Option<String>,

    /// Per module: what it wants, what it has and what holds it back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::MAX_STATUS_MODULES))]
    pub modules: Vec<ModuleStatus>,
}

/// Lifecycle of one module of a subscription.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ModuleState {
    /// Objects applied; serving.
    Active,
    /// Switched off or removed: still serving until the drain deadline.
    Draining,
    /// Cannot be applied (see message); existing objects are left untouched.
    Invalid,
}

/// What one module wants and has.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleStatus {
    #[schemars(length(max = bounds::MAX_LABEL))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ModuleState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub tier: Option<String>,
    /// Floor: HPA minReplicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// Ceiling: HPA maxReplicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    /// Replicas the HPA wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Replicas of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready replicas of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Session ceiling in force (concurrency bought, scaled by active windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// When a draining module's objects are removed (RFC 3339), fixed when
    /// its drain began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::MAX_INSTANT))]
    pub drain_deadline: Option<String>,
    /// When a draining module's drain began (RFC 3339). With the drain
    /// deadline, the data retention and the numbers and resources below,
    /// the record the operator drains from: nothing in the namespace moves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::MAX_INSTANT))]
    pub draining_since: Option<String>,
    /// What happens to a draining module's data at its deadline: the
    /// subscription's `downgrade.dataRetention` when its drain began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_retention: Option<DataRetention>,
    /// Per-replica resources of a draining module when its drain began: with
    /// `maxReplicas`, its share of the quota until it is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::resources)]
    pub resources: Option<ResourceRequirements>,
    /// Regions the module's pods are held to (none: any node). A record
    /// only the operator writes: a spec that cannot be applied keeps these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::MAX_REGIONS), inner(length(max = bounds::MAX_LABEL)))]
    pub regions: Vec<String>,
    /// Ready pods by zone (the `topology.kubernetes.io/zone` label of the
    /// node each runs on; pods on nodes without it are not counted).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = bounds::MAX_ZONES))]
    pub ready_by_zone: std::collections::BTreeMap<String, i32>,
    /// A lowered ceiling coming down at the module's scale-down pace
    /// (`maxReplicas` is the step in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramping_down: Option<RampingDown>,
    /// What holds the module back, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::MAX_MODULE_MESSAGE))]
    pub message: Option<String>,
}

/// A ceiling brought down in steps, so that live sessions are not cut at once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RampingDown {
    /// The ceiling it comes down to: the HPA's maxReplicas the plan asks for.
    pub to_max_replicas: i32,
    /// When it gets there if every step is taken on time (RFC 3339).
    #[schemars(length(max = bounds::MAX_INSTANT))]
    pub until: String,
    /// When the last step was taken (RFC 3339); the next waits a period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::MAX_INSTANT))]
    pub last_step: Option<String>,
}
