//! The capacity rules of the product, free of any Kubernetes plumbing:
//! from a subscription, the module catalogue and the clock to the ceilings,
//! floors and quota a tenant is entitled to.

pub mod pace;
pub mod quantity;
pub mod window;

use std::collections::BTreeMap;
use std::fmt;

use jiff::{Timestamp, tz::TimeZone};
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};

use crate::api::{
    CapacityCalendarSpec, ModuleProfileSpec, ModuleRequest, PodSecurity, PreStop, Scaling,
    SubscriptionPlanSpec, TenantSubscriptionSpec, ZoneSpread,
};
pub use quantity::Quantity;
pub use window::{CompiledWindow, WindowError};

/// Share of maxReplicas a rolling update may add on top (Deployment maxSurge).
pub const MAX_SURGE_PERCENT: i64 = 25;
/// Longest child object name a Service accepts (DNS-1035 label).
pub const MAX_CHILD_NAME: usize = 63;

/// Per-container requests the operator's LimitRange gives a container that
/// declares none (Kubernetes copies a declared limit into a missing request
/// first). With these, CPU and memory are always capped: the quota never has
/// to leave them out for pods that would otherwise be refused for not
/// declaring them.
pub const DEFAULT_REQUESTS: [(&str, &str); 2] = [("cpu", "100m"), ("memory", "128Mi")];
/// Per-container limits the operator's LimitRange gives a container that
/// declares none.
pub const DEFAULT_LIMITS: [(&str, &str); 2] = [("cpu", "1"), ("memory", "1Gi")];
/// Longest a quota stays at the larger of its old and new size while a
/// rollout replaces pods (ten minutes, Kubernetes' default
/// `progressDeadlineSeconds`), plus the modules' termination grace period.
pub const ROLLOUT_HOLD_SECONDS: i64 = 600;

/// The name of a module's children (Deployment, HPA, Service): the rule that
/// [`MAX_CHILD_NAME`] is checked against.
pub fn child_name(subscription: &str, module: &str) -> String {
    format!("{subscription}-{module}")
}

/// Why a subscription cannot be applied. Each names the module or field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidSpec {
    ProfileNotFound {
        module: String,
    },
    TierNotFound {
        module: String,
        tier: String,
        available: Vec<String>,
    },
    Window(WindowError),
    CapacityOverflow {
        module: String,
    },
    BadQuantity {
        module: String,
        field: String,
        value: String,
    },
    NameTooLong {
        module: String,
        name: String,
    },
    PlanNotFound {
        plan: String,
    },
    /// The installation sells only under plans (`--require-plan`) and the
    /// subscription names none.
    PlanRequired,
    ModuleNotInPlan {
        module: String,
        plan: String,
    },
    ExceedsPlan {
        module: String,
        plan: String,
        limit: String,
    },
    CalendarNotFound {
        calendar: String,
    },
    /// A list longer than the CRD allows.
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    /// A field of the module's profile the CRD holds to a range or form
    /// is not within it.
    BadProfile {
        module: String,
        field: String,
        problem: String,
    },
    /// A name the CRD holds to a pattern is not of it: an object written
    /// under an older CRD, or a file read by the offline preview.
    InvalidName {
        field: String,
        value: String,
        /// What the name must be.
        rule: &'static str,
    },
}

/// What a DNS-1035 label is, for messages.
pub const DNS_1035: &str = "a DNS-1035 label (at most 63 lowercase letters, digits and hyphens, starting with a letter and ending with a letter or digit)";

/// What a DNS-1123 label is, for messages.
pub const DNS_1123: &str = "a DNS-1123 label (at most 63 lowercase letters, digits and hyphens, starting and ending with a letter or digit)";

/// A DNS-1123 label: what a label value made of a name must be here.
pub fn is_dns_1123(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CHILD_NAME
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The names of a subscription the CRD holds to a pattern (and to be
/// unique), checked again here: they name children, labels and status
/// entries, and every other message names things by them. The API server
/// refuses such an object at apply; one written under an older CRD, or a
/// file read by the offline preview, is refused here with nothing else
/// said of it.
pub fn names(subscription: &str, spec: &TenantSubscriptionSpec) -> Vec<InvalidSpec> {
    let mut errors = Vec::new();
    let mut check = |field: String, value: &str, valid: bool, rule: &'static str| {
        if !valid {
            errors.push(InvalidSpec::InvalidName {
                field,
                value: value.to_string(),
                rule,
            });
        }
    };
    check(
        "metadata.name".into(),
        subscription,
        is_dns_1035(subscription),
        DNS_1035,
    );
    check(
        "spec.tenantId".into(),
        &spec.tenant_id,
        is_dns_1123(&spec.tenant_id),
        DNS_1123,
    );
    let mut seen = std::collections::BTreeSet::new();
    for (i, m) in spec.modules.iter().enumerate() {
        let field = format!("spec.modules[{i}].name");
        if !is_dns_1035(&m.name) {
            check(field, &m.name, false, DNS_1035);
        } else {
            check(
                field,
                &m.name,
                seen.insert(&m.name),
                "unique among the modules",
            );
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, w) in spec.seasons.iter().flat_map(|s| &s.windows).enumerate() {
        let field = format!("spec.seasons.windows[{i}].name");
        if !is_dns_1123(&w.name) {
            check(field, &w.name, false, DNS_1123);
        } else {
            check(
                field,
                &w.name,
                seen.insert(&w.name),
                "unique among the windows",
            );
        }
    }
    errors
}

/// The lists of a subscription and of the calendars it names held to the
/// CRD's bounds (see [`crate::api::bounds`]), which keep every reconcile
/// cheap: each window is evaluated up to a year ahead.
pub fn sizes(spec: &TenantSubscriptionSpec, catalogue: &Catalogue) -> Vec<InvalidSpec> {
    use crate::api::bounds::{MAX_CALENDAR_WINDOWS, MAX_CALENDARS, MAX_MODULES, MAX_WINDOWS};
    let mut errors = Vec::new();
    let mut check = |field: String, count: usize, max: usize| {
        if count > max {
            errors.push(InvalidSpec::TooMany { field, count, max });
        }
    };
    check("spec.modules".into(), spec.modules.len(), MAX_MODULES);
    let seasons = spec.seasons.as_ref();
    check(
        "spec.seasons.windows".into(),
        seasons.map_or(0, |s| s.windows.len()),
        MAX_WINDOWS,
    );
    let calendars = seasons.map_or(&[][..], |s| &s.calendars[..]);
    check(
        "spec.seasons.calendars".into(),
        calendars.len(),
        MAX_CALENDARS,
    );
    for name in calendars.iter().take(MAX_CALENDARS) {
        if let Some(cal) = catalogue.calendars.get(name) {
            check(
                format!("spec.seasons.calendars: CapacityCalendar {name:?} spec.windows"),
                cal.windows.len(),
                MAX_CALENDAR_WINDOWS,
            );
        }
    }
    errors
}

/// The fields of a module's profile, at its tier, that go into its pods,
/// held to what the CRD allows and what Kubernetes takes: a profile
/// written under an older CRD, or read from a file by the offline
/// preview, would otherwise render children the API server refuses.
pub fn check_profile(module: &str, p: &ModuleProfileSpec, tier: Option<&str>) -> Vec<InvalidSpec> {
    let mut errors = Vec::new();
    let mut problem = |field: String, problem: String| {
        errors.push(InvalidSpec::BadProfile {
            module: module.to_string(),
            field,
            problem,
        })
    };
    let mut range = |field: &str, value: Option<i64>, lo: i64, hi: i64| {
        if let Some(v) = value.filter(|v| !(lo..=hi).contains(v)) {
            problem(
                field.to_string(),
                format!("{v} is out of range {lo}..={hi}"),
            );
        }
    };
    let t = tier.and_then(|name| p.tiers.get(name).map(|t| (name, t)));
    range("port", p.port.map(Into::into), 1, 65535);
    range(
        "sessionsPerReplica",
        Some(p.sessions_per_replica.into()),
        1,
        1_000_000,
    );
    if let Some((name, t)) = t {
        range(
            &format!("tiers.{name}.sessionsPerReplica"),
            t.sessions_per_replica.map(Into::into),
            1,
            1_000_000,
        );
    }
    range("minReplicas", Some(p.min_replicas.into()), 1, 10_000);
    range(
        "zoneSpread.maxSkew",
        Some(p.zone_spread.max_skew.into()),
        1,
        100,
    );
    range(
        "scaling.cpuUtilization",
        p.scaling.cpu_utilization.map(Into::into),
        1,
        1000,
    );
    if let Some(s) = &p.scaling.sessions {
        range(
            "scaling.sessions.targetPercent",
            Some(s.target_percent.into()),
            1,
            100,
        );
    }
    for (field, rate, max_percent) in [
        ("scaling.scaleDown", &p.scaling.scale_down, 100),
        ("scaling.scaleUp", &p.scaling.scale_up, 1000),
    ] {
        let Some(r) = rate else { continue };
        let f = |n: &str| format!("{field}.{n}");
        range(
            &f("stabilizationSeconds"),
            r.stabilization_seconds.map(Into::into),
            0,
            3600,
        );
        range(
            &f("periodSeconds"),
            r.period_seconds.map(Into::into),
            1,
            1800,
        );
        range(
            &f("maxPercent"),
            r.max_percent.map(Into::into),
            1,
            max_percent,
        );
        range(&f("maxPods"), r.max_pods.map(Into::into), 1, 10_000);
    }
    if let Some(h) = p.pre_stop.as_ref().and_then(|h| h.http_get.as_ref()) {
        range("preStop.httpGet.port", h.port.map(Into::into), 1, 65535);
    }
    range(
        "scaling.memoryUtilization",
        p.scaling.memory_utilization.map(Into::into),
        1,
        1000,
    );
    range(
        "terminationGracePeriodSeconds",
        p.termination_grace_period_seconds,
        0,
        86_400,
    );
    let id = i32::MAX as i64;
    range("security.runAsUser", p.security.run_as_user, 1, id);
    range("security.runAsGroup", p.security.run_as_group, 0, id);
    range("security.fsGroup", p.security.fs_group, 0, id);
    let mut problem = |field: String, message: String| {
        errors.push(InvalidSpec::BadProfile {
            module: module.to_string(),
            field,
            problem: message,
        })
    };
    if let Some(s) = &p.scaling.sessions
        && !is_metric_name(&s.metric)
    {
        problem(
            "scaling.sessions.metric".into(),
            format!(
                "{:?} must be a metric name (1 to 128 of A-Z a-z 0-9 _ : . -, not starting with a digit, . or -)",
                s.metric
            ),
        );
    }
    if let Some(h) = &p.pre_stop {
        match (&h.command, &h.http_get) {
            (Some(c), None) => {
                if c.is_empty() || c.len() > 16 || c.iter().any(|a| a.is_empty() || a.len() > 1024)
                {
                    problem(
                        "preStop.command".into(),
                        "must have 1 to 16 arguments of 1 to 1024 characters".into(),
                    );
                }
            }
            (None, Some(g)) => {
                if g.path.is_empty()
                    || g.path.len() > 1024
                    || !g.path.starts_with('/')
                    || g.path.contains(char::is_whitespace)
                {
                    problem(
                        "preStop.httpGet.path".into(),
                        format!("{:?} must be a path starting with / (no spaces)", g.path),
                    );
                }
                if g.port.is_none() && p.port.is_none() {
                    problem(
                        "preStop.httpGet.port".into(),
                        "must be set when the profile has no port".into(),
                    );
                }
            }
            _ => problem(
                "preStop".into(),
                "must name exactly one of command and httpGet".into(),
            ),
        }
    }
    let image_ok = |i: &str| !i.is_empty() && i.len() <= 512 && !i.contains(char::is_whitespace);
    let image =
        "must be a container image reference (not empty, at most 512 characters, no spaces)";
    match t.and_then(|(name, t)| t.image.as_deref().map(|i| (name, i))) {
        Some((name, i)) if !image_ok(i) => {
            problem(format!("tiers.{name}.image"), format!("{i:?} {image}"))
        }
        Some(_) => {}
        None if !image_ok(&p.image) => problem("image".into(), format!("{:?} {image}", p.image)),
        None => {}
    }
    for c in &p.security.add_capabilities {
        if c.is_empty() || c.len() > 32 || !c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            problem(
                "security.addCapabilities".into(),
                format!("{c:?} must be a capability name (A-Z and _, such as NET_BIND_SERVICE)"),
            );
        }
    }
    if let Some(path) = &p.security.seccomp_localhost_profile
        && (path.is_empty() || path.len() > 253)
    {
        problem(
            "security.seccompLocalhostProfile".into(),
            format!("{path:?} must be a path of 1 to 253 characters"),
        );
    }
    for (k, v) in p.node_selector.iter().flatten() {
        if k.is_empty() || k.len() > crate::api::bounds::MAX_LABEL_KEY {
            problem(format!("nodeSelector.{k}"), "must have a label key".into());
        } else if !is_label_value(v) {
            problem(
                format!("nodeSelector.{k}"),
                format!("{v:?} must be a label value"),
            );
        }
    }
    errors.extend(check_resources(
        module,
        t.and_then(|(_, t)| t.resources.as_ref())
            .or(p.resources.as_ref()),
    ));
    errors
}

/// Per-replica resources a pod can have: no resource claims (they name
/// pod-level claims the operator does not render), no negative amount (it
/// would lower the quota other modules count on). Amounts that do not
/// parse are [`InvalidSpec::BadQuantity`], reported with the footprint. A
/// request above its limit is left to the API server, whose refusal of
/// the Deployment shows in status (`ChildRejected`).
fn check_resources(module: &str, r: Option<&ResourceRequirements>) -> Vec<InvalidSpec> {
    let mut errors = Vec::new();
    let Some(r) = r else { return errors };
    let mut problem = |field: String, problem: String| {
        errors.push(InvalidSpec::BadProfile {
            module: module.to_string(),
            field,
            problem,
        })
    };
    if r.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        problem(
            "resources.claims".into(),
            "is not supported: the operator renders no pod-level resource claims".into(),
        );
    }
    let parsed =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.iter()
                .flatten()
                .filter_map(|(k, v)| {
                    Quantity::parse(&v.0)
                        .ok()
                        .map(|q| (k.clone(), (q, v.0.clone())))
                })
                .collect::<BTreeMap<_, _>>()
        };
    for (kind, map) in [
        ("requests", parsed(&r.requests)),
        ("limits", parsed(&r.limits)),
    ] {
        for (k, (q, text)) in &map {
            if q.0 < 0 {
                problem(
                    format!("resources.{kind}.{k}"),
                    format!("{text:?} must not be negative"),
                );
            }
        }
    }
    errors
}

/// A label value: at most 63 characters, alphanumerics at both ends and
/// `-`, `_`, `.` between; or empty.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() <= 63
        && (s.is_empty()
            || (b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))))
}

/// A metric name as Prometheus and the custom metrics API take it: 1 to
/// 128 of letters, digits, `_`, `:`, `.` and `-`, not starting with a
/// digit, `.` or `-`.
pub fn is_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphabetic() || b"_:".contains(&b[0]))
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_:.-".contains(c))
}

/// A DNS-1035 label: what a Service name must be.
pub fn is_dns_1035(s: &str) -> bool {
    s.len() <= MAX_CHILD_NAME
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl InvalidSpec {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ProfileNotFound { .. } => "ProfileNotFound",
            Self::TierNotFound { .. } => "TierNotFound",
            Self::Window(WindowError::UnknownTimeZone(_)) => "UnknownTimeZone",
            Self::Window(_) => "InvalidWindow",
            Self::CapacityOverflow { .. } => "CapacityOverflow",
            Self::BadQuantity { .. } => "InvalidProfile",
            Self::NameTooLong { .. } => "NameTooLong",
            Self::PlanNotFound { .. } => "PlanNotFound",
            Self::PlanRequired => "PlanRequired",
            Self::ModuleNotInPlan { .. } => "ModuleNotInPlan",
            Self::ExceedsPlan { .. } => "ExceedsPlan",
            Self::CalendarNotFound { .. } => "CalendarNotFound",
            Self::InvalidName { .. } => "InvalidName",
            Self::BadProfile { .. } => "InvalidProfile",
            Self::TooMany { .. } => "TooMany",
        }
    }

    /// The module at fault, when the error belongs to one.
    pub fn module(&self) -> Option<&str> {
        match self {
            Self::ProfileNotFound { module }
            | Self::TierNotFound { module, .. }
            | Self::CapacityOverflow { module }
            | Self::BadQuantity { module, .. }
            | Self::BadProfile { module, .. }
            | Self::NameTooLong { module, .. }
            | Self::ModuleNotInPlan { module, .. }
            | Self::ExceedsPlan { module, .. } => Some(module),
            Self::Window(_)
            | Self::PlanNotFound { .. }
            | Self::PlanRequired
            | Self::CalendarNotFound { .. }
            | Self::InvalidName { .. }
            | Self::TooMany { .. } => None,
        }
    }

    /// A catalogue object the subscription names does not exist (yet): it
    /// may be applied together with the subscription and turn up any moment.
    pub fn is_missing_reference(&self) -> bool {
        matches!(
            self,
            Self::ProfileNotFound { .. }
                | Self::PlanNotFound { .. }
                | Self::CalendarNotFound { .. }
        )
    }
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ProfileNotFound { module } => {
                write!(f, "{module}: ModuleProfile {module:?} not found")
            }
            Self::TierNotFound {
                module,
                tier,
                available,
            } if available.is_empty() => {
                write!(
                    f,
                    "{module}: tier {tier:?} not offered (the profile has no tiers)"
                )
            }
            Self::TierNotFound {
                module,
                tier,
                available,
            } => {
                write!(
                    f,
                    "{module}: tier {tier:?} not offered (available: {})",
                    available.join(", ")
                )
            }
            Self::Window(e) => write!(f, "spec.seasons: {e}"),
            Self::CapacityOverflow { module } => {
                write!(
                    f,
                    "{module}: concurrency and seasonal percentages need more replicas than Kubernetes can scale to"
                )
            }
            Self::BadQuantity {
                module,
                field,
                value,
            } => {
                write!(
                    f,
                    "{module}: ModuleProfile {field} {value:?} is not a valid quantity"
                )
            }
            Self::NameTooLong { module, name } => {
                write!(
                    f,
                    "{module}: object name {name:?} is longer than {MAX_CHILD_NAME} characters"
                )
            }
            Self::PlanNotFound { plan } => {
                write!(f, "spec.plan: SubscriptionPlan {plan:?} not found")
            }
            Self::PlanRequired => write!(
                f,
                "spec.plan: required: subscriptions are applied only under a SubscriptionPlan"
            ),
            Self::ModuleNotInPlan { module, plan } => write!(f, "{module}: not in plan {plan:?}"),
            Self::ExceedsPlan {
                module,
                plan,
                limit,
            } => write!(f, "{module}: exceeds plan {plan:?}: {limit}"),
            Self::CalendarNotFound { calendar } => {
                write!(
                    f,
                    "spec.seasons.calendars: CapacityCalendar {calendar:?} not found"
                )
            }
            Self::BadProfile {
                module,
                field,
                problem,
            } => write!(f, "{module}: ModuleProfile {field} {problem}"),
            Self::TooMany { field, count, max } => {
                write!(f, "{field}: {count} entries, at most {max} allowed")
            }
            Self::InvalidName { field, value, rule } => {
                write!(f, "{field}: {value:?} is not {rule}")
            }
        }
    }
}

impl std::error::Error for InvalidSpec {}

/// Ceiling and floor of one module at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbers {
    /// Sessions in force: concurrency bought, scaled by active windows.
    pub ceiling: i64,
    pub max_replicas: i32,
    pub min_replicas: i32,
}

/// `ceiling = concurrency × ceiling% / 100`, `max = ⌈ceiling / sessions⌉`,
/// `min = max(profile min, ⌈max × floor% / 100⌉)`, never above max.
pub fn numbers(
    concurrency: i64,
    sessions_per_replica: i32,
    profile_min: i32,
    ceiling_percent: u32,
    floor_percent: u32,
) -> Option<Numbers> {
    let ceiling = div_ceil(concurrency.max(0) as i128 * ceiling_percent as i128, 100);
    let max = div_ceil(ceiling, sessions_per_replica.max(1) as i128).max(1);
    let floor = div_ceil(max * floor_percent.min(100) as i128, 100);
    let min = floor.max(profile_min.max(1) as i128).min(max);
    Some(Numbers {
        ceiling: i64::try_from(ceiling).ok()?,
        max_replicas: i32::try_from(max).ok()?,
        min_replicas: i32::try_from(min).ok()?,
    })
}

fn div_ceil(a: i128, b: i128) -> i128 {
    (a + b - 1) / b
}

/// Extra pods a rolling update of `max_replicas` may create.
pub fn surge(max_replicas: i32) -> i64 {
    div_ceil(max_replicas as i128 * MAX_SURGE_PERCENT as i128, 100) as i64
}

/// Everything needed to run one enabled module.
#[derive(Debug, Clone, PartialEq)]
pub struct ModulePlan {
    pub name: String,
    pub tier: Option<String>,
    pub image: String,
    pub port: Option<i32>,
    pub sessions_per_replica: i32,
    /// Concurrency bought.
    pub concurrency: i64,
    pub numbers: Numbers,
    pub resources: Option<ResourceRequirements>,
    pub scaling: Scaling,
    pub termination_grace_period_seconds: Option<i64>,
    pub pre_stop: Option<PreStop>,
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Regions the pods are held to, sorted; empty: any node.
    pub regions: Vec<String>,
    pub zone_spread: ZoneSpread,
    pub tolerations: Option<Vec<Toleration>>,
    pub security: PodSecurity,
}

impl ModulePlan {
    pub fn footprint(&self) -> Result<Footprint, InvalidSpec> {
        Footprint::new(
            &self.name,
            self.numbers.max_replicas,
            self.resources.as_ref(),
        )
    }
}

/// A module whose drain has begun, as the operator recorded it then: the
/// tier, concurrency, replica numbers and per-replica resources it ran with.
/// The profile supplies the rest (image, port, scaling, placement); a tier
/// the profile no longer offers falls back to the profile's defaults.
pub fn draining_plan(
    name: &str,
    profile: &ModuleProfileSpec,
    tier: Option<&str>,
    concurrency: i64,
    numbers: Numbers,
    resources: Option<ResourceRequirements>,
    regions: Vec<String>,
) -> ModulePlan {
    let t = tier.and_then(|t| profile.tiers.get(t));
    ModulePlan {
        name: name.to_string(),
        tier: tier.map(String::from),
        image: t
            .and_then(|t| t.image.clone())
            .unwrap_or_else(|| profile.image.clone()),
        port: profile.port,
        sessions_per_replica: t
            .and_then(|t| t.sessions_per_replica)
            .unwrap_or(profile.sessions_per_replica),
        concurrency,
        numbers,
        resources,
        scaling: profile.scaling.clone(),
        termination_grace_period_seconds: profile.termination_grace_period_seconds,
        pre_stop: profile.pre_stop.clone(),
        node_selector: profile.node_selector.clone(),
        regions,
        zone_spread: profile.zone_spread.clone(),
        tolerations: profile.tolerations.clone(),
        security: profile.security.clone(),
    }
}

/// Per-replica resources of a module at `tier` (the tier's, else the profile's).
pub fn tier_resources(
    profile: &ModuleProfileSpec,
    tier: Option<&str>,
) -> Option<ResourceRequirements> {
    tier.and_then(|t| profile.tiers.get(t))
        .and_then(|t| t.resources.clone())
        .or_else(|| profile.resources.clone())
}

/// A subscription's capacity at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityPlan {
    /// Enabled modules, in spec order.
    pub modules: Vec<ModulePlan>,
    /// Modules listed but switched off.
    pub disabled: Vec<String>,
    pub active_windows: Vec<String>,
    pub next_transition: Option<Timestamp>,
    /// The subscription's own time zone, for presenting instants.
    pub time_zone: TimeZone,
}

/// The cluster-wide objects a subscription refers to, by name, and the
/// installation's rule about plans.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub profiles: BTreeMap<String, ModuleProfileSpec>,
    pub plans: BTreeMap<String, SubscriptionPlanSpec>,
    pub calendars: BTreeMap<String, CapacityCalendarSpec>,
    /// A subscription must name a plan (the operator's `--require-plan`,
    /// on by default in the binary and the chart). Off in a bare catalogue,
    /// as the offline preview and the rules' own tests use it.
    pub require_plan: bool,
}

/// Turn a subscription into its capacity plan at `now`. Errors list every
/// problem found, so one status message can name them all.
pub fn plan(
    subscription: &str,
    spec: &TenantSubscriptionSpec,
    catalogue: &Catalogue,
    now: Timestamp,
) -> Result<CapacityPlan, Vec<InvalidSpec>> {
    evaluate(subscription, spec, catalogue, now, true)
}

/// [`plan`] without the plan's checks (none named, none required): what
/// the spec gives on its own, for a caller that applies the plan's limits
/// itself (a paused subscription, one over its plan).
pub fn plan_unchecked(
    subscription: &str,
    spec: &TenantSubscriptionSpec,
    catalogue: &Catalogue,
    now: Timestamp,
) -> Result<CapacityPlan, Vec<InvalidSpec>> {
    evaluate(subscription, spec, catalogue, now, false)
}

fn evaluate(
    subscription: &str,
    spec: &TenantSubscriptionSpec,
    catalogue: &Catalogue,
    now: Timestamp,
    check: bool,
) -> Result<CapacityPlan, Vec<InvalidSpec>> {
    let profile = |n: &str| catalogue.profiles.get(n);
    let mut errors = Vec::new();
    let misnamed = names(subscription, spec);
    if !misnamed.is_empty() {
        return Err(misnamed);
    }
    let oversized = sizes(spec, catalogue);
    if !oversized.is_empty() {
        return Err(oversized);
    }
    let seasons = spec.seasons.clone().unwrap_or_default();
    let time_zone = window::parse_time_zone(seasons.time_zone.as_deref()).unwrap_or_else(|e| {
        errors.push(InvalidSpec::Window(e));
        TimeZone::UTC
    });
    let mut windows = Vec::new();
    for w in &seasons.windows {
        match CompiledWindow::compile(w, &time_zone) {
            Ok(c) => windows.push(c),
            Err(e) => errors.push(InvalidSpec::Window(e)),
        }
    }
    for name in &seasons.calendars {
        let Some(cal) = catalogue.calendars.get(name) else {
            errors.push(InvalidSpec::CalendarNotFound {
                calendar: name.clone(),
            });
            continue;
        };
        let tz = match window::parse_time_zone(
            cal.time_zone.as_deref().or(seasons.time_zone.as_deref()),
        ) {
            Ok(tz) => tz,
            Err(e) => {
                errors.push(InvalidSpec::Window(e));
                continue;
            }
        };
        for w in &cal.windows {
            match CompiledWindow::compile(w, &tz) {
                Ok(mut c) => {
                    c.name = format!("{name}/{}", c.name);
                    windows.push(c)
                }
                Err(e) => errors.push(InvalidSpec::Window(e)),
            }
        }
    }
    let (active, next_transition) = window::evaluate(&windows, now);
    // The plan's regions serve a subscription that names none (only where
    // the plan is checked: a held spec keeps the regions on record).
    let sold = spec
        .plan
        .as_ref()
        .and_then(|p| catalogue.plans.get(p))
        .filter(|_| check);
    match &spec.plan {
        _ if !check => {}
        Some(plan_name) => match catalogue.plans.get(plan_name) {
            None => errors.push(InvalidSpec::PlanNotFound {
                plan: plan_name.clone(),
            }),
            Some(sold) => errors.extend(check_plan(plan_name, sold, spec, &windows)),
        },
        None if catalogue.require_plan => errors.push(InvalidSpec::PlanRequired),
        None => {}
    }

    let mut modules = Vec::new();
    let mut disabled = Vec::new();
    for m in &spec.modules {
        if !m.enabled {
            disabled.push(m.name.clone());
            continue;
        }
        let Some(p) = profile(&m.name) else {
            errors.push(InvalidSpec::ProfileNotFound {
                module: m.name.clone(),
            });
            continue;
        };
        let tier = match &m.tier {
            None => None,
            Some(t) => match p.tiers.get(t) {
                Some(spec) => Some(spec),
                None => {
                    errors.push(InvalidSpec::TierNotFound {
                        module: m.name.clone(),
                        tier: t.clone(),
                        available: p.tiers.keys().cloned().collect(),
                    });
                    continue;
                }
            },
        };
        let problems = check_profile(&m.name, p, m.tier.as_deref());
        if !problems.is_empty() {
            errors.extend(problems);
            continue;
        }
        let child_name = child_name(subscription, &m.name);
        if child_name.len() > MAX_CHILD_NAME {
            errors.push(InvalidSpec::NameTooLong {
                module: m.name.clone(),
                name: child_name,
            });
            continue;
        }
        let sessions = tier
            .and_then(|t| t.sessions_per_replica)
            .unwrap_or(p.sessions_per_replica);
        let applicable = active.iter().filter(|w| w.applies_to(&m.name));
        let ceiling_percent = applicable
            .clone()
            .filter_map(|w| w.concurrency_percent)
            .max()
            .unwrap_or(100);
        let floor_percent = applicable
            .filter_map(|w| w.floor_percent)
            .max()
            .unwrap_or(0);
        let Some(numbers) = numbers(
            m.concurrency,
            sessions,
            p.min_replicas,
            ceiling_percent,
            floor_percent,
        ) else {
            errors.push(InvalidSpec::CapacityOverflow {
                module: m.name.clone(),
            });
            continue;
        };
        let plan = ModulePlan {
            name: m.name.clone(),
            tier: m.tier.clone(),
            image: tier
                .and_then(|t| t.image.clone())
                .unwrap_or_else(|| p.image.clone()),
            port: p.port,
            sessions_per_replica: sessions,
            concurrency: m.concurrency,
            numbers,
            resources: with_valid_limits(
                tier.and_then(|t| t.resources.clone())
                    .or_else(|| p.resources.clone()),
            ),
            scaling: p.scaling.clone(),
            termination_grace_period_seconds: p.termination_grace_period_seconds,
            pre_stop: p.pre_stop.clone(),
            node_selector: p.node_selector.clone(),
            regions: regions(m, spec, sold),
            zone_spread: p.zone_spread.clone(),
            tolerations: p.tolerations.clone(),
            security: p.security.clone(),
        };
        if let Some(e) = region_conflict(&plan) {
            errors.push(e);
            continue;
        }
        if let Err(e) = plan.footprint() {
            errors.push(e);
            continue;
        }
        modules.push(plan);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut active_windows: Vec<String> = active.iter().map(|w| w.name.clone()).collect();
    active_windows.sort();
    active_windows.dedup();
    Ok(CapacityPlan {
        modules,
        disabled,
        active_windows,
        next_transition,
        time_zone,
    })
}

/// Where a module is served: its own regions, else the subscription's,
/// else the plan's; sorted, each once. Empty: any node.
fn regions(
    m: &ModuleRequest,
    spec: &TenantSubscriptionSpec,
    sold: Option<&SubscriptionPlanSpec>,
) -> Vec<String> {
    let named = [&m.regions, &spec.regions]
        .into_iter()
        .chain(sold.map(|p| &p.regions))
        .find(|r| !r.is_empty());
    let mut out = named.cloned().unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// The node label that names a node's region, and its zone.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A profile whose node selector holds its pods to one region, for a
/// module served elsewhere: no node could ever take its pods.
fn region_conflict(plan: &ModulePlan) -> Option<InvalidSpec> {
    let only = plan.node_selector.as_ref()?.get(REGION_LABEL)?;
    (!plan.regions.is_empty() && !plan.regions.contains(only)).then(|| InvalidSpec::BadProfile {
        module: plan.name.clone(),
        field: format!("nodeSelector[{REGION_LABEL}]"),
        problem: format!(
            "the profile runs its pods only in region {only:?}, but the module is served in [{}]",
            plan.regions.join(", ")
        ),
    })
}

/// Whether a subscription stays within what its plan sells. Checked against
/// every window, not just the active ones, so a subscription that would
/// exceed its plan next season is refused now rather than mid-season. No
/// window takes a module above the plan's peak: its `maxPeakConcurrency`,
/// or its `maxConcurrency` when the plan sets no peak.
pub fn check_plan(
    plan_name: &str,
    sold: &SubscriptionPlanSpec,
    spec: &TenantSubscriptionSpec,
    windows: &[CompiledWindow],
) -> Vec<InvalidSpec> {
    let mut errors = Vec::new();
    let exceeds = |module: &str, limit: String| InvalidSpec::ExceedsPlan {
        module: module.to_string(),
        plan: plan_name.to_string(),
        limit,
    };
    for m in spec.modules.iter().filter(|m| m.enabled) {
        let named = if m.regions.is_empty() {
            &spec.regions
        } else {
            &m.regions
        };
        if !sold.regions.is_empty() {
            for r in named.iter().filter(|r| !sold.regions.contains(r)) {
                errors.push(exceeds(
                    &m.name,
                    format!(
                        "region {r:?} is not in the plan's regions [{}]",
                        sold.regions.join(", ")
                    ),
                ));
            }
        }
        let Some(allowed) = sold.modules.iter().find(|p| p.name == m.name) else {
            errors.push(InvalidSpec::ModuleNotInPlan {
                module: m.name.clone(),
                plan: plan_name.to_string(),
            });
            continue;
        };
        if m.concurrency > allowed.max_concurrency {
            errors.push(exceeds(
                &m.name,
                format!(
                    "concurrency {} is over the plan's maxConcurrency {}",
                    m.concurrency, allowed.max_concurrency
                ),
            ));
        }
        if let (Some(tier), Some(tiers)) = (&m.tier, &allowed.tiers)
            && !tiers.contains(tier)
        {
            errors.push(exceeds(
                &m.name,
                format!(
                    "tier {tier:?} is not in the plan's tiers [{}]",
                    tiers.join(", ")
                ),
            ));
        }
        let peak_limit = allowed.peak();
        let peak_field = match allowed.max_peak_concurrency {
            Some(_) => "maxPeakConcurrency",
            None => "maxConcurrency (it sets no maxPeakConcurrency)",
        };
        if let Some((pct, window)) = windows
            .iter()
            .filter(|w| w.applies_to(&m.name))
            .filter_map(|w| w.concurrency_percent.map(|p| (p, w.name.as_str())))
            .max_by_key(|(p, _)| *p)
        {
            let peak = div_ceil(m.concurrency as i128 * pct.max(100) as i128, 100);
            if peak > peak_limit as i128 {
                errors.push(exceeds(
                    &m.name,
                    format!("window {window} raises concurrency to {peak}, over the plan's {peak_field} {peak_limit}"),
                ));
            }
        }
    }
    errors
}

/// What one module may occupy at most: pods (ceiling plus surge) and their resources.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Footprint {
    pub pods: i64,
    /// Per-pod requests and limits by resource name, as the pods get them:
    /// what the profile declares, completed as Kubernetes and the
    /// operator's LimitRange complete it.
    pub requests: BTreeMap<String, Quantity>,
    pub limits: BTreeMap<String, Quantity>,
}

impl Footprint {
    pub fn new(
        module: &str,
        max_replicas: i32,
        resources: Option<&ResourceRequirements>,
    ) -> Result<Self, InvalidSpec> {
        let parse = |kind: &str,
                     m: Option<
            &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            m.into_iter()
                .flatten()
                .map(|(k, v)| {
                    Quantity::parse(&v.0).map(|q| (k.clone(), q)).map_err(|_| {
                        InvalidSpec::BadQuantity {
                            module: module.to_string(),
                            field: format!("resources.{kind}.{k}"),
                            value: v.0.clone(),
                        }
                    })
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
        };
        let mut requests = parse("requests", resources.and_then(|r| r.requests.as_ref()))?;
        let mut limits = parse("limits", resources.and_then(|r| r.limits.as_ref()))?;
        // Kubernetes defaults a missing request to the limit...
        for (k, v) in &limits {
            requests.entry(k.clone()).or_insert(*v);
        }
        // ...then the LimitRange fills in what is still missing.
        for (k, v) in DEFAULT_LIMITS {
            let default = Quantity::parse(v).expect("default limits parse");
            let at_least = requests.get(k).copied().unwrap_or_default();
            limits.entry(k.to_string()).or_insert(default.max(at_least));
        }
        for (k, v) in DEFAULT_REQUESTS {
            let default = Quantity::parse(v).expect("default requests parse");
            requests.entry(k.to_string()).or_insert(default);
        }
        Ok(Self {
            pods: max_replicas as i64 + surge(max_replicas),
            requests,
            limits,
        })
    }
}

/// A module's resources with a limit wherever the LimitRange's default limit
/// would be below the request it declares: such a pod would be invalid
/// (request above limit), so its limit is its request.
pub fn with_valid_limits(resources: Option<ResourceRequirements>) -> Option<ResourceRequirements> {
    let mut r = resources?;
    for (k, v) in DEFAULT_LIMITS {
        let default = Quantity::parse(v).expect("default limits parse");
        let Some(request) = r.requests.as_ref().and_then(|q| q.get(k)).cloned() else {
            continue;
        };
        let declared = r.limits.as_ref().is_some_and(|l| l.contains_key(k));
        if !declared && Quantity::parse(&request.0).is_ok_and(|q| q > default) {
            r.limits
                .get_or_insert_with(Default::default)
                .insert(k.to_string(), request);
        }
    }
    Some(r)
}

/// Whether the quota can cap a resource's limits as well as its requests:
/// not extended resources (`vendor.com/gpu`) nor huge pages, which a quota
/// counts by request only.
fn limits_capped(resource: &str) -> bool {
    !resource.contains('/') && !resource.starts_with("hugepages-")
}

/// ResourceQuota `spec.hard` covering every footprint: pods, and every
/// resource any module's pods get, summed over modules (a module whose pods
/// do not declare a resource counts zero of it). CPU and memory are in every
/// footprint (the LimitRange gives them to pods that declare none), so they
/// are always capped; pods that leave out an extended resource or ephemeral
/// storage are admitted and count zero, so those are capped whenever any
/// module asks for them.
pub fn quota_hard(footprints: &[Footprint]) -> Option<BTreeMap<String, Quantity>> {
    let mut hard = BTreeMap::new();
    let pods: i64 = footprints
        .iter()
        .map(|f| f.pods)
        .try_fold(0i64, |a, p| a.checked_add(p))?;
    hard.insert(
        "pods".to_string(),
        Quantity(pods as i128).checked_mul(1_000_000_000)?,
    );
    // Modules are reached through ClusterIP Services; a load balancer or a
    // node port (billed by the cloud, or taken from a range the whole
    // cluster shares) is nothing a plan sells.
    for kind in ["services.loadbalancers", "services.nodeports"] {
        hard.insert(kind.to_string(), Quantity(0));
    }
    for f in footprints {
        for (kind, per_pod) in [("requests", &f.requests), ("limits", &f.limits)] {
            for (resource, q) in per_pod {
                if kind == "limits" && !limits_capped(resource) {
                    continue;
                }
                let total = hard
                    .entry(format!("{kind}.{resource}"))
                    .or_insert(Quantity(0));
                *total = total.checked_add(q.checked_mul(f.pods as i128)?)?;
            }
        }
    }
    Some(hard)
}

/// While pods of the old size may still run next to new ones (a rollout),
/// each resource of the quota stays at the larger of what is `current`ly in
/// force and what comes `next`; a resource only one of them has keeps its
/// value.
pub fn hold(
    current: &BTreeMap<String, Quantity>,
    next: &BTreeMap<String, Quantity>,
) -> BTreeMap<String, Quantity> {
    let mut out = next.clone();
    for (k, v) in current {
        let e = out.entry(k.clone()).or_insert(*v);
        *e = (*e).max(*v);
    }
    out
}

/// Whether `next` lowers any resource of `current` (or drops it).
pub fn shrinks(current: &BTreeMap<String, Quantity>, next: &BTreeMap<String, Quantity>) -> bool {
    current
        .iter()
        .any(|(k, v)| next.get(k).is_none_or(|n| n < v))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
