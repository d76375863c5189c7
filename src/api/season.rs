use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::bounds::{MAX_CALENDARS, MAX_OBJECT_NAME, MAX_WINDOWS};

/// Seasonal capacity: shared calendars plus the subscription's own windows.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Seasons {
    /// Names of shared CapacityCalendars whose windows also apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CALENDARS), inner(length(min = 1, max = MAX_OBJECT_NAME)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub calendars: Vec<String>,

    /// IANA time zone the windows are written in (e.g. Asia/Shanghai); UTC when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// Inline windows, unique by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_WINDOWS))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub windows: Vec<Window>,
}

/// A recurring (or one-off) period in which a module's ceiling and floor change.
/// A window is active when every constraint it sets holds: the date range
/// (`from`/`to`), the weekdays (`days`) and the time of day (`start`/`end`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("has(self.from) == has(self.to)").message("from and to must be set together").field_path(".from"),
    validation = kube::core::Rule::new("has(self.start) == has(self.end)").message("start and end must be set together").field_path(".start"),
    validation = kube::core::Rule::new("has(self.from) || has(self.days) || has(self.start)").message("a window needs a date range (from/to), days or a time range (start/end)"),
    validation = kube::core::Rule::new("!has(self.from) || size(self.from) == size(self.to)").message("from and to must both be MM-DD or both be YYYY-MM-DD").field_path(".to"),
    validation = kube::core::Rule::new("!has(self.from) || size(self.from) == 5 || self.from <= self.to").message("to must not be before from").field_path(".to"),
    validation = kube::core::Rule::new("!has(self.start) || self.start != self.end").message("start and end must differ").field_path(".end"),
)]
pub struct Window {
    /// Name, shown in status.activeWindows.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// First day, inclusive: MM-DD (every year) or YYYY-MM-DD (once).
    /// A yearly range whose to is before from runs over the new year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 5, max = 10),
        regex(pattern = r"^([0-9]{4}-)?(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
    )]
    #[x_kube(validation = kube::core::Rule::new("!self.matches('(02-3[01]|0[469]-31|11-31)$')").message("not a calendar date"))]
    pub from: Option<String>,

    /// Last day, inclusive, in the same form as from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 5, max = 10),
        regex(pattern = r"^([0-9]{4}-)?(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
    )]
    #[x_kube(validation = kube::core::Rule::new("!self.matches('(02-3[01]|0[469]-31|11-31)$')").message("not a calendar date"))]
    pub to: Option<String>,

    /// Weekdays on which the window applies (the day the time range starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 7))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub days: Option<Vec<Weekday>>,

    /// Start of the daily time range, HH:MM local time, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 5, max = 5),
        regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
    )]
    pub start: Option<String>,

    /// End of the daily time range, HH:MM local time, exclusive; before start means it runs past midnight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 5, max = 5),
        regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
    )]
    pub end: Option<String>,

    /// Ceiling during the window, in percent of the concurrency bought (100 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub concurrency_percent: Option<i32>,

    /// Share of the ceiling kept warm (the floor) during the window, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub floor_percent: Option<i32>,

    /// Only these modules are affected; all when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 63)))]
    pub modules: Option<Vec<String>>,
}

/// Day of the week.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub fn from_jiff(d: jiff::civil::Weekday) -> Self {
        use jiff::civil::Weekday as W;
        match d {
            W::Monday => Self::Mon,
            W::Tuesday => Self::Tue,
            W::Wednesday => Self::Wed,
            W::Thursday => Self::Thu,
            W::Friday => Self::Fri,
            W::Saturday => Self::Sat,
            W::Sunday => Self::Sun,
        }
    }
}
