use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::season::Window;

/// Shared seasonal windows (school holidays of a region, a shopping festival,
/// weekday evenings) that many subscriptions reference by name.
#[allow(clippy::duplicated_attributes)] // the derive's printcolumn(...) lists repeat keys by design
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "capacity.tenancy.dev",
    version = "v1alpha1",
    kind = "CapacityCalendar",
    shortname = "ccal",
    category = "tenancy",
    doc = "Named seasonal windows shared by many subscriptions.",
    printcolumn(name = "TimeZone", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CapacityCalendarSpec {
    /// IANA time zone of the windows; the subscription's time zone when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// The windows, unique by name; same form as a subscription's inline windows.
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = super::bounds::MAX_CALENDAR_WINDOWS))]
    pub windows: Vec<Window>,
}
