use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A commercial plan (e.g. basic, pro, enterprise): which modules and tiers a
/// subscription on it may use and the most concurrency it may buy.
#[allow(clippy::duplicated_attributes)] // the derive's printcolumn(...) lists repeat keys by design
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "capacity.tenancy.dev",
    version = "v1alpha1",
    kind = "SubscriptionPlan",
    shortname = "splan",
    category = "tenancy",
    doc = "A tiered plan: the modules, tiers and concurrency a subscription on it may buy.",
    printcolumn(name = "Display", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionPlanSpec {
    /// Human-readable name of the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,

    /// The modules the plan sells. A module not listed is not in the plan.
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = super::bounds::MAX_MODULES))]
    pub modules: Vec<PlanModule>,

    /// The regions the plan includes (values of the nodes' label
    /// `topology.kubernetes.io/region`). A subscription naming another is
    /// over its plan; one naming none is served in these. Unset: any region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = super::bounds::MAX_REGIONS), inner(length(min = 1, max = super::bounds::MAX_LABEL), regex(pattern = super::bounds::REGION_PATTERN)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub regions: Vec<String>,
}

/// What a plan allows for one module.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.maxPeakConcurrency) || self.maxPeakConcurrency >= self.maxConcurrency").message("maxPeakConcurrency must be at least maxConcurrency").field_path(".maxPeakConcurrency"))]
pub struct PlanModule {
    /// ModuleProfile name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// The most concurrency a subscription may buy for this module (required:
    /// every module a plan sells has a maximum).
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_concurrency: i64,

    /// The most concurrent sessions in force during seasonal windows
    /// (concurrency × concurrencyPercent); maxConcurrency when omitted, so
    /// no window takes a module above what the plan sells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub max_peak_concurrency: Option<i64>,

    /// Allowed tiers; all of the profile's tiers when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 32)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub tiers: Option<Vec<String>>,
}

impl PlanModule {
    /// The most concurrent sessions a window may bring the module to:
    /// `maxPeakConcurrency`, else `maxConcurrency`.
    pub fn peak(&self) -> i64 {
        self.max_peak_concurrency.unwrap_or(self.max_concurrency)
    }
}
