//! Custom resources of the `capacity.tenancy.dev` API group.

pub mod bounds;
mod capacity_calendar;
mod module_profile;
mod season;
mod subscription_plan;
mod tenant_subscription;

pub use capacity_calendar::{CapacityCalendar, CapacityCalendarSpec};
pub use module_profile::{
    HttpGetHook, ModuleProfile, ModuleProfileSpec, PodSecurity, PreStop, ScaleRate, Scaling,
    SessionsMetric, TierSpec, WhenUnsatisfiable, ZoneSpread,
};
pub use season::{Seasons, Weekday, Window};
pub use subscription_plan::{PlanModule, SubscriptionPlan, SubscriptionPlanSpec};
pub use tenant_subscription::{
    DataRetention, Downgrade, ModuleRequest, ModuleState, ModuleStatus, RampingDown,
    TenantSubscription, TenantSubscriptionSpec, TenantSubscriptionStatus,
};

use kube::CustomResourceExt;

pub const GROUP: &str = "capacity.tenancy.dev";

/// Every CRD this operator serves, in a stable order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        ModuleProfile::crd(),
        TenantSubscription::crd(),
        SubscriptionPlan::crd(),
        CapacityCalendar::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream (what `crds/` holds).
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).expect("CRDs serialize"));
    }
    out
}
