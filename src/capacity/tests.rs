//! The capacity rules of DESIGN.md, as examples.

use super::*;
use crate::api::{ModuleProfileSpec, TenantSubscriptionSpec};

fn profile(yaml: &str) -> ModuleProfileSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

fn spec(yaml: &str) -> TenantSubscriptionSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

fn video() -> ModuleProfileSpec {
    profile(
        r#"
image: registry.example.com/rtc/video-gateway:2.4.1
port: 8443
sessionsPerReplica: 40
minReplicas: 1
resources: {requests: {cpu: "1", memory: 1Gi}, limits: {cpu: "2", memory: 2Gi}}
tiers:
  sd: {sessionsPerReplica: 60}
  hd: {sessionsPerReplica: 40}
  uhd: {sessionsPerReplica: 15, resources: {requests: {cpu: "2", memory: 2Gi}}}
"#,
    )
}

fn messaging() -> ModuleProfileSpec {
    profile(
        "{image: im:1, sessionsPerReplica: 5000, minReplicas: 2, resources: {requests: {cpu: 500m, memory: 512Mi}}}",
    )
}

fn catalogue() -> Catalogue {
    let mut c = Catalogue::default();
    c.profiles.insert("video-call".into(), video());
    c.profiles.insert("real-time-messaging".into(), messaging());
    c
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn module<'a>(p: &'a CapacityPlan, name: &str) -> &'a ModulePlan {
    p.modules.iter().find(|m| m.name == name).unwrap()
}

#[test]
fn replicas_follow_concurrency_and_tier() {
    let s = spec("{tenantId: acme, modules: [{name: video-call, concurrency: 1000, tier: hd}]}");
    let p = plan("acme", &s, &catalogue(), at("2026-03-01T00:00:00Z")).unwrap();
    let m = module(&p, "video-call");
    assert_eq!(m.sessions_per_replica, 40);
    assert_eq!(
        m.numbers,
        Numbers {
            ceiling: 1000,
            max_replicas: 25,
            min_replicas: 1
        }
    );

    let s = spec("{tenantId: acme, modules: [{name: video-call, concurrency: 1000, tier: uhd}]}");
    let p = plan("acme", &s, &catalogue(), at("2026-03-01T00:00:00Z")).unwrap();
    let m = module(&p, "video-call");
    // ⌈1000 / 15⌉ = 67, and the uhd tier's resources replace the profile's.
    assert_eq!(m.numbers.max_replicas, 67);
    assert_eq!(
        m.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
        "2"
    );
}

#[test]
fn summer_window_doubles_the_ceiling_and_keeps_half_warm() {
    let s = spec(
        r#"
tenantId: edu
modules: [{name: video-call, concurrency: 1000, tier: hd}]
seasons:
  timeZone: Asia/Shanghai
  windows:
    - {name: summer-holiday, from: "07-01", to: "08-31", concurrencyPercent: 200, floorPercent: 50}
"#,
    );
    let p = plan("edu", &s, &catalogue(), at("2026-07-15T04:00:00Z")).unwrap();
    assert_eq!(p.active_windows, vec!["summer-holiday"]);
    assert_eq!(
        module(&p, "video-call").numbers,
        Numbers {
            ceiling: 2000,
            max_replicas: 50,
            min_replicas: 25
        }
    );
    assert_eq!(
        window::format_instant(p.next_transition.unwrap(), &p.time_zone),
        "2026-09-01T00:00:00+08:00"
    );
    // Outside the window: the concurrency bought.
    let p = plan("edu", &s, &catalogue(), at("2026-09-01T00:00:00+08:00")).unwrap();
    assert!(p.active_windows.is_empty());
    assert_eq!(
        module(&p, "video-call").numbers,
        Numbers {
            ceiling: 1000,
            max_replicas: 25,
            min_replicas: 1
        }
    );
}

#[test]
fn several_active_windows_take_the_largest_percentages_and_respect_module_filters() {
    let s = spec(
        r#"
tenantId: edu
modules:
  - {name: video-call, concurrency: 1000, tier: hd}
  - {name: real-time-messaging, concurrency: 20000}
seasons:
  timeZone: Asia/Shanghai
  windows:
    - {name: summer-holiday, from: "07-01", to: "08-31", concurrencyPercent: 200, floorPercent: 20}
    - {name: weekday-evening, days: [Mon, Tue, Wed, Thu, Fri], start: "18:00", end: "22:00", floorPercent: 30, modules: [video-call]}
    - {name: campaign, from: "07-10", to: "07-20", concurrencyPercent: 150}
"#,
    );
    // Wednesday 2026-07-15, 19:00 in Shanghai.
    let p = plan("edu", &s, &catalogue(), at("2026-07-15T19:00:00+08:00")).unwrap();
    assert_eq!(
        p.active_windows,
        vec!["campaign", "summer-holiday", "weekday-evening"]
    );
    // video: ceiling 200% → 50 replicas; floor max(20%, 30%) → 15.
    assert_eq!(
        module(&p, "video-call").numbers,
        Numbers {
            ceiling: 2000,
            max_replicas: 50,
            min_replicas: 15
        }
    );
    // messaging is not in the evening window: floor 20% of ⌈40000/5000⌉ = 8 → 2 (also the profile min).
    assert_eq!(
        module(&p, "real-time-messaging").numbers,
        Numbers {
            ceiling: 40000,
            max_replicas: 8,
            min_replicas: 2
        }
    );
}

#[test]
fn an_off_season_window_can_lower_the_ceiling() {
    let s = spec(
        r#"
tenantId: t
modules: [{name: video-call, concurrency: 1000}]
seasons: {windows: [{name: quiet, from: "02-01", to: "02-28", concurrencyPercent: 50}]}
"#,
    );
    let p = plan("t", &s, &catalogue(), at("2026-02-10T00:00:00Z")).unwrap();
    assert_eq!(module(&p, "video-call").numbers.max_replicas, 13);
}

#[test]
fn floor_never_exceeds_ceiling_and_profile_minimum_holds() {
    assert_eq!(
        numbers(10, 40, 3, 100, 0).unwrap(),
        Numbers {
            ceiling: 10,
            max_replicas: 1,
            min_replicas: 1
        }
    );
    assert_eq!(
        numbers(1000, 40, 3, 100, 0).unwrap(),
        Numbers {
            ceiling: 1000,
            max_replicas: 25,
            min_replicas: 3
        }
    );
    assert_eq!(
        numbers(1000, 40, 3, 100, 100).unwrap(),
        Numbers {
            ceiling: 1000,
            max_replicas: 25,
            min_replicas: 25
        }
    );
    assert_eq!(
        numbers(1001, 40, 1, 100, 10).unwrap(),
        Numbers {
            ceiling: 1001,
            max_replicas: 26,
            min_replicas: 3
        }
    );
    assert!(numbers(i64::MAX, 1, 1, 1000, 0).is_none());
}

#[test]
fn disabled_modules_are_left_out_and_listed() {
    let s = spec(
        "{tenantId: t, modules: [{name: video-call, concurrency: 10}, {name: real-time-messaging, concurrency: 10, enabled: false}]}",
    );
    let p = plan("t", &s, &catalogue(), at("2026-02-10T00:00:00Z")).unwrap();
    assert_eq!(p.modules.len(), 1);
    assert_eq!(p.disabled, vec!["real-time-messaging"]);
}

#[test]
fn every_problem_is_named() {
    let s = spec(
        r#"
tenantId: t
modules:
  - {name: video-call, concurrency: 10, tier: 8k}
  - {name: hologram, concurrency: 10}
seasons: {timeZone: Mars/Olympus_Mons}
"#,
    );
    let errors = plan("t", &s, &catalogue(), at("2026-02-10T00:00:00Z")).unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{} {e}", e.reason()))
        .collect();
    assert_eq!(text.len(), 3, "{text:?}");
    assert!(text[0].starts_with("UnknownTimeZone"), "{text:?}");
    assert!(
        text[1]
            .contains("TierNotFound video-call: tier \"8k\" not offered (available: hd, sd, uhd)"),
        "{text:?}"
    );
    assert!(text[2].contains("ProfileNotFound hologram"), "{text:?}");
}

#[test]
fn names_that_kubernetes_would_refuse_are_caught() {
    let long = "a".repeat(55);
    let s = spec("{tenantId: t, modules: [{name: video-call, concurrency: 10}]}");
    let errors = plan(&long, &s, &catalogue(), at("2026-02-10T00:00:00Z")).unwrap_err();
    assert_eq!(errors[0].reason(), "NameTooLong");
}

#[test]
fn bad_quantities_in_a_profile_are_reported() {
    let bad = profile("{image: x, sessionsPerReplica: 10, resources: {requests: {cpu: lots}}}");
    let s = spec("{tenantId: t, modules: [{name: video-call, concurrency: 10}]}");
    let mut c = Catalogue::default();
    c.profiles.insert("video-call".into(), bad);
    let errors = plan("t", &s, &c, at("2026-02-10T00:00:00Z")).unwrap_err();
    assert_eq!(errors[0].reason(), "InvalidProfile");
    assert!(errors[0].to_string().contains("resources.requests.cpu"));
}

#[test]
fn quota_sums_every_module_at_its_ceiling_plus_surge() {
    let s = spec(
        "{tenantId: t, modules: [{name: video-call, concurrency: 1000, tier: hd}, {name: real-time-messaging, concurrency: 20000}]}",
    );
    let p = plan("t", &s, &catalogue(), at("2026-02-10T00:00:00Z")).unwrap();
    let f: Vec<Footprint> = p.modules.iter().map(|m| m.footprint().unwrap()).collect();
    // video: 25 + ⌈25 × 25%⌉ = 32 pods; messaging: 4 + 1 = 5 pods.
    assert_eq!((f[0].pods, f[1].pods), (32, 5));
    let hard = quota_hard(&f).unwrap();
    let show: BTreeMap<&str, String> = hard
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    assert_eq!(show["pods"], "37");
    // 32 × 1 CPU + 5 × 500m
    assert_eq!(show["requests.cpu"], "34500m");
    // 32 × 1Gi + 5 × 512Mi
    assert_eq!(
        show["requests.memory"],
        Quantity::parse("34Gi")
            .unwrap()
            .checked_add(Quantity::parse("512Mi").unwrap())
            .unwrap()
            .to_string()
    );
    // Messaging declares no limits: its pods get the LimitRange's (1 CPU,
    // 1Gi), and limits stay capped. 32 × 2 + 5 × 1
    assert_eq!(show["limits.cpu"], "69");
    assert_eq!(show["limits.memory"], "69Gi");
}

fn gpu() -> ModuleProfileSpec {
    profile(
        "{image: ai:1, sessionsPerReplica: 10, resources: {requests: {cpu: '4', memory: 16Gi}, limits: {cpu: '4', memory: 16Gi, nvidia.com/gpu: '1'}}}",
    )
}

fn hard_of(yaml: &str, c: &Catalogue) -> BTreeMap<String, String> {
    let p = plan("t", &spec(yaml), c, at("2026-02-10T00:00:00Z")).unwrap();
    let f: Vec<Footprint> = p.modules.iter().map(|m| m.footprint().unwrap()).collect();
    quota_hard(&f)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

#[test]
fn a_resource_only_one_module_asks_for_is_capped_at_that_modules_share() {
    let mut c = catalogue();
    c.profiles.insert("ai".into(), gpu());
    // ai: 30 sessions / 10 = 3 replicas + 1 surge = 4 pods, one GPU each;
    // messaging (no GPU): 4 + 1 pods.
    let hard = hard_of(
        "{tenantId: t, modules: [{name: ai, concurrency: 30}, {name: real-time-messaging, concurrency: 20000}]}",
        &c,
    );
    assert_eq!(hard["requests.nvidia.com/gpu"], "4");
    // A quota caps extended resources by request only.
    assert!(!hard.contains_key("limits.nvidia.com/gpu"));
    // CPU still covers both: 4 × 4 + 5 × 500m.
    assert_eq!(hard["requests.cpu"], "18500m");
    assert_eq!(hard["pods"], "9");
}

#[test]
fn a_module_without_resources_counts_at_the_limit_range_defaults_and_caps_stay() {
    let mut c = catalogue();
    c.profiles.insert(
        "bare".into(),
        profile("{image: bare:1, sessionsPerReplica: 100}"),
    );
    // video: 1 + 1 pods; bare: 1 + 1 pods.
    let hard = hard_of(
        "{tenantId: t, modules: [{name: video-call, concurrency: 40}, {name: bare, concurrency: 100}]}",
        &c,
    );
    let defaults_req: BTreeMap<&str, &str> = DEFAULT_REQUESTS.into_iter().collect();
    let defaults_lim: BTreeMap<&str, &str> = DEFAULT_LIMITS.into_iter().collect();
    let sum = |per_pod: &[&str]| {
        per_pod
            .iter()
            .map(|q| Quantity::parse(q).unwrap().checked_mul(2).unwrap())
            .fold(Quantity(0), |a, b| a.checked_add(b).unwrap())
            .to_string()
    };
    assert_eq!(hard["requests.cpu"], sum(&["1", defaults_req["cpu"]]));
    assert_eq!(
        hard["requests.memory"],
        sum(&["1Gi", defaults_req["memory"]])
    );
    assert_eq!(hard["limits.cpu"], sum(&["2", defaults_lim["cpu"]]));
    assert_eq!(hard["limits.memory"], sum(&["2Gi", defaults_lim["memory"]]));
    assert_eq!(hard["pods"], "4");
}

#[test]
fn ephemeral_storage_asked_for_by_one_module_is_capped() {
    let mut c = catalogue();
    c.profiles.insert(
        "rec".into(),
        profile("{image: rec:1, sessionsPerReplica: 100, resources: {requests: {ephemeral-storage: 2Gi}, limits: {ephemeral-storage: 4Gi}}}"),
    );
    let hard = hard_of(
        "{tenantId: t, modules: [{name: rec, concurrency: 100}, {name: video-call, concurrency: 40}]}",
        &c,
    );
    assert_eq!(hard["requests.ephemeral-storage"], "4Gi");
    assert_eq!(hard["limits.ephemeral-storage"], "8Gi");
    // rec declares no CPU: its 2 pods count at the default request.
    assert_eq!(hard["requests.cpu"], "2200m");
}

#[test]
fn a_request_above_the_default_limit_becomes_the_limit_so_the_pod_is_valid() {
    let mut c = catalogue();
    c.profiles.insert(
        "big".into(),
        profile("{image: big:1, sessionsPerReplica: 100, resources: {requests: {cpu: '3', memory: 256Mi}}}"),
    );
    let p = plan(
        "t",
        &spec("{tenantId: t, modules: [{name: big, concurrency: 100}]}"),
        &c,
        at("2026-02-10T00:00:00Z"),
    )
    .unwrap();
    let r = p.modules[0].resources.as_ref().unwrap();
    let limits = r.limits.as_ref().unwrap();
    // CPU: 3 is over the default limit of 1, so the limit is 3; memory's
    // request is under the default limit, which the LimitRange fills in.
    assert_eq!(limits["cpu"].0, "3");
    assert!(!limits.contains_key("memory"));
    let f = p.modules[0].footprint().unwrap();
    assert_eq!(f.limits["cpu"].to_string(), "3");
    assert_eq!(f.limits["memory"].to_string(), "1Gi");
}

#[test]
fn a_held_quota_keeps_the_larger_of_old_and_new_per_resource() {
    let q = |pairs: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::parse(v).unwrap()))
            .collect()
    };
    let old = q(&[
        ("pods", "5"),
        ("requests.cpu", "5"),
        ("requests.nvidia.com/gpu", "2"),
    ]);
    let new = q(&[
        ("pods", "8"),
        ("requests.cpu", "2"),
        ("requests.memory", "1Gi"),
    ]);
    assert!(shrinks(&old, &new));
    assert_eq!(
        hold(&old, &new),
        q(&[
            ("pods", "8"),
            ("requests.cpu", "5"),
            ("requests.memory", "1Gi"),
            ("requests.nvidia.com/gpu", "2"),
        ])
    );
    let grown = q(&[
        ("pods", "6"),
        ("requests.cpu", "5"),
        ("requests.nvidia.com/gpu", "2"),
    ]);
    assert!(
        !shrinks(&old, &grown),
        "nothing to hold when nothing shrinks"
    );
}

#[test]
fn quota_of_a_single_module_caps_limits_too() {
    let s = spec("{tenantId: t, modules: [{name: video-call, concurrency: 40}]}");
    let p = plan("t", &s, &catalogue(), at("2026-02-10T00:00:00Z")).unwrap();
    let hard = quota_hard(&[p.modules[0].footprint().unwrap()]).unwrap();
    // 1 replica + 1 surge pod.
    assert_eq!(hard["pods"].to_string(), "2");
    assert_eq!(hard["limits.cpu"].to_string(), "4");
    assert_eq!(hard["limits.memory"].to_string(), "4Gi");
}

fn with_plan(yaml: &str) -> Catalogue {
    let mut c = catalogue();
    c.plans
        .insert("pro".into(), serde_saphyr::from_str(yaml).unwrap());
    c
}

const PRO: &str = r#"
modules:
  - {name: video-call, maxConcurrency: 2000, maxPeakConcurrency: 3000, tiers: [sd, hd]}
  - {name: real-time-messaging, maxConcurrency: 50000}
"#;

#[test]
fn a_subscription_within_its_plan_is_planned() {
    let s = spec(
        "{tenantId: t, plan: pro, modules: [{name: video-call, concurrency: 2000, tier: hd}]}",
    );
    assert!(plan("t", &s, &with_plan(PRO), at("2026-02-10T00:00:00Z")).is_ok());
}

#[test]
fn asking_more_than_the_plan_sells_is_refused_naming_module_and_limit() {
    let s = spec(
        r#"
tenantId: t
plan: pro
modules:
  - {name: video-call, concurrency: 2500, tier: uhd}
  - {name: real-time-messaging, concurrency: 100}
"#,
    );
    let errors = plan("t", &s, &with_plan(PRO), at("2026-02-10T00:00:00Z")).unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{} {e}", e.reason()))
        .collect();
    assert_eq!(
        text,
        vec![
            "ExceedsPlan video-call: exceeds plan \"pro\": concurrency 2500 is over the plan's maxConcurrency 2000",
            "ExceedsPlan video-call: exceeds plan \"pro\": tier \"uhd\" is not in the plan's tiers [sd, hd]",
        ]
    );
}

#[test]
fn a_module_outside_the_plan_is_refused_unless_switched_off() {
    let plan_yaml = "{modules: [{name: real-time-messaging, maxConcurrency: 100}]}";
    let s = spec(
        "{tenantId: t, plan: pro, modules: [{name: video-call, concurrency: 10}, {name: real-time-messaging, concurrency: 10}]}",
    );
    let errors = plan("t", &s, &with_plan(plan_yaml), at("2026-02-10T00:00:00Z")).unwrap_err();
    assert_eq!(
        errors,
        vec![InvalidSpec::ModuleNotInPlan {
            module: "video-call".into(),
            plan: "pro".into()
        }]
    );
    let s = spec(
        "{tenantId: t, plan: pro, modules: [{name: video-call, concurrency: 10, enabled: false}, {name: real-time-messaging, concurrency: 10}]}",
    );
    assert!(plan("t", &s, &with_plan(plan_yaml), at("2026-02-10T00:00:00Z")).is_ok());
}

#[test]
fn a_season_that_would_exceed_the_plans_peak_is_refused_all_year() {
    let s = spec(
        r#"
tenantId: t
plan: pro
modules: [{name: video-call, concurrency: 2000}]
seasons: {windows: [{name: summer, from: "07-01", to: "08-31", concurrencyPercent: 200}]}
"#,
    );
    // In February the window is not active, yet the subscription is refused now.
    let errors = plan("t", &s, &with_plan(PRO), at("2026-02-10T00:00:00Z")).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].reason(), "ExceedsPlan");
    assert!(errors[0].to_string().contains(
        "window summer raises concurrency to 4000, over the plan's maxPeakConcurrency 3000"
    ));
}

#[test]
fn without_a_peak_a_window_may_not_take_a_module_above_the_plans_maximum() {
    let plan_yaml = "{modules: [{name: video-call, maxConcurrency: 1000}]}";
    let s = |concurrency: i64, pct: i32| {
        spec(&format!(
            r#"
tenantId: t
plan: pro
modules: [{{name: video-call, concurrency: {concurrency}}}]
seasons: {{windows: [{{name: promo, from: "11-01", to: "11-11", concurrencyPercent: {pct}}}]}}
"#
        ))
    };
    // 1000 × 1000% = 10000 over the plan's maximum of 1000, all year.
    let errors = plan(
        "t",
        &s(1000, 1000),
        &with_plan(plan_yaml),
        at("2026-02-10T00:00:00Z"),
    )
    .unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{} {e}", e.reason()))
        .collect();
    assert_eq!(
        text,
        vec![
            "ExceedsPlan video-call: exceeds plan \"pro\": window promo raises concurrency to 10000, over the plan's maxConcurrency (it sets no maxPeakConcurrency) 1000"
        ]
    );
    // The same window within the maximum: 400 × 250% = 1000.
    assert!(
        plan(
            "t",
            &s(400, 250),
            &with_plan(plan_yaml),
            at("2026-02-10T00:00:00Z")
        )
        .is_ok()
    );
    // One session over: 401 × 250% = 1002.5, rounded up.
    assert!(
        plan(
            "t",
            &s(401, 250),
            &with_plan(plan_yaml),
            at("2026-02-10T00:00:00Z")
        )
        .is_err()
    );
}

#[test]
fn calendar_windows_are_held_to_the_plans_peak_too() {
    let mut c = with_plan("{modules: [{name: video-call, maxConcurrency: 1000}]}");
    c.calendars.insert(
        "festival".into(),
        serde_saphyr::from_str(
            r#"{windows: [{name: singles-day, from: "11-11", to: "11-11", concurrencyPercent: 300}]}"#,
        )
        .unwrap(),
    );
    let s = spec(
        "{tenantId: t, plan: pro, modules: [{name: video-call, concurrency: 500}], seasons: {calendars: [festival]}}",
    );
    let errors = plan("t", &s, &c, at("2026-02-10T00:00:00Z")).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .to_string()
            .contains("window festival/singles-day raises concurrency to 1500"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_subscription_without_a_plan_is_refused_when_plans_are_required() {
    let s = spec("{tenantId: t, modules: [{name: video-call, concurrency: 10}]}");
    let mut c = catalogue();
    assert!(plan("t", &s, &c, at("2026-02-10T00:00:00Z")).is_ok());
    c.require_plan = true;
    let errors = plan("t", &s, &c, at("2026-02-10T00:00:00Z")).unwrap_err();
    assert_eq!(errors, vec![InvalidSpec::PlanRequired]);
    assert_eq!(errors[0].reason(), "PlanRequired");
    assert!(errors[0].to_string().starts_with("spec.plan: required"));
    // Naming a plan satisfies the rule (and the plan's limits then apply).
    let mut c = with_plan(PRO);
    c.require_plan = true;
    let s = spec("{tenantId: t, plan: pro, modules: [{name: video-call, concurrency: 10}]}");
    assert!(plan("t", &s, &c, at("2026-02-10T00:00:00Z")).is_ok());
}

#[test]
fn an_unknown_plan_or_calendar_is_named() {
    let s = spec("{tenantId: t, plan: gold, modules: [], seasons: {calendars: [cn-school]}}");
    let errors = plan("t", &s, &catalogue(), at("2026-02-10T00:00:00Z")).unwrap_err();
    let reasons: Vec<&str> = errors.iter().map(|e| e.reason()).collect();
    assert_eq!(reasons, vec!["CalendarNotFound", "PlanNotFound"]);
}

#[test]
fn calendar_windows_merge_with_inline_ones_each_in_its_own_time_zone() {
    let mut c = catalogue();
    c.calendars.insert(
        "cn-school".into(),
        serde_saphyr::from_str(
            r#"
timeZone: Asia/Shanghai
windows: [{name: summer, from: "07-01", to: "08-31", concurrencyPercent: 200, floorPercent: 20}]
"#,
        )
        .unwrap(),
    );
    c.calendars.insert(
        "evenings".into(),
        // No time zone of its own: the subscription's applies.
        serde_saphyr::from_str(
            r#"{windows: [{name: eve, start: "18:00", end: "22:00", floorPercent: 50}]}"#,
        )
        .unwrap(),
    );
    let s = spec(
        r#"
tenantId: t
modules: [{name: video-call, concurrency: 1000}]
seasons:
  calendars: [cn-school, evenings]
  timeZone: Europe/London
  windows: [{name: launch, from: "2026-07-01", to: "2026-07-03", concurrencyPercent: 300}]
"#,
    );
    // 2026-06-30 16:30 UTC is already July 1st 00:30 in Shanghai, 17:30 in London.
    let p = plan("t", &s, &c, at("2026-06-30T16:30:00Z")).unwrap();
    assert_eq!(p.active_windows, vec!["cn-school/summer"]);
    assert_eq!(
        module(&p, "video-call").numbers,
        Numbers {
            ceiling: 2000,
            max_replicas: 50,
            min_replicas: 10
        }
    );
    // The next change: London's 18:00 evening window.
    assert_eq!(
        window::format_instant(p.next_transition.unwrap(), &p.time_zone),
        "2026-06-30T18:00:00+01:00"
    );
    // July 1st, 19:00 London: all three; the largest percentages win.
    let p = plan("t", &s, &c, at("2026-07-01T18:00:00Z")).unwrap();
    assert_eq!(
        p.active_windows,
        vec!["cn-school/summer", "evenings/eve", "launch"]
    );
    assert_eq!(
        module(&p, "video-call").numbers,
        Numbers {
            ceiling: 3000,
            max_replicas: 75,
            min_replicas: 38
        }
    );
}

#[test]
fn the_quota_allows_no_load_balancer_and_no_node_port() {
    let f = Footprint::new("im", 2, None).unwrap();
    let hard = quota_hard(&[f]).unwrap();
    assert_eq!(hard["services.loadbalancers"], Quantity(0));
    assert_eq!(hard["services.nodeports"], Quantity(0));
    let none = quota_hard(&[]).unwrap();
    assert_eq!(none["services.nodeports"], Quantity(0));
}

#[test]
fn a_subscription_name_that_cannot_name_children_is_refused() {
    // The CRD refuses such names at apply; the offline preview reads files
    // and must not render children named "-video-call".
    let s = spec("{tenantId: t, modules: [{name: video-call, concurrency: 10}]}");
    for name in ["", "Acme", "-acme", "9acme", "acme_1", "ac.me"] {
        let errors = plan(name, &s, &catalogue(), at("2026-02-10T00:00:00Z")).unwrap_err();
        assert_eq!(errors[0].reason(), "InvalidName", "{name:?}");
        let text = errors[0].to_string();
        assert!(
            text.starts_with(&format!("metadata.name: {name:?} is not a DNS-1035 label")),
            "{text}"
        );
    }
}

#[test]
fn names_the_crd_holds_to_a_pattern_are_checked_before_anything_else() {
    // Each would otherwise be reported in words that name nothing (": not
    // in plan"), or render a label Kubernetes refuses.
    let cases = [
        (
            "{tenantId: t, modules: [{name: '', concurrency: 10}]}",
            "spec.modules[0].name: \"\" is not a DNS-1035 label",
        ),
        (
            "{tenantId: t, modules: [{name: video-call, concurrency: 10}, {name: Video_Call, concurrency: 1}]}",
            "spec.modules[1].name: \"Video_Call\" is not a DNS-1035 label",
        ),
        (
            "{tenantId: t, modules: [{name: video-call, concurrency: 10}, {name: video-call, concurrency: 1}]}",
            "spec.modules[1].name: \"video-call\" is not unique among the modules",
        ),
        (
            "{tenantId: 'T 1', modules: []}",
            "spec.tenantId: \"T 1\" is not a DNS-1123 label",
        ),
        (
            "{tenantId: t, modules: [], seasons: {windows: [{name: '', days: [Mon]}]}}",
            "spec.seasons.windows[0].name: \"\" is not a DNS-1123 label",
        ),
        (
            "{tenantId: t, modules: [], seasons: {windows: [{name: w, days: [Mon]}, {name: w, days: [Tue]}]}}",
            "spec.seasons.windows[1].name: \"w\" is not unique among the windows",
        ),
    ];
    for (yaml, message) in cases {
        let errors = plan("t", &spec(yaml), &catalogue(), at("2026-02-10T00:00:00Z")).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors[0].reason(), "InvalidName", "{yaml}: {text:?}");
        assert!(text[0].starts_with(message), "{yaml}: {text:?}");
        assert_eq!(
            text.len(),
            1,
            "nothing else is reported of a misnamed spec: {text:?}"
        );
    }
}

#[test]
fn profile_fields_that_would_make_invalid_pods_are_refused_naming_the_field() {
    // What the CRD holds these fields to, checked again: a profile written
    // under an older CRD, or read from a file by the offline preview, would
    // otherwise render a Deployment or HPA the API server refuses.
    let base = "image: x:1, sessionsPerReplica: 10";
    let cases = [
        (
            "{image: '', sessionsPerReplica: 10}",
            "image \"\" must be a container image reference",
        ),
        (
            "{image: ' x:1', sessionsPerReplica: 10}",
            "image \" x:1\" must be a container image reference",
        ),
        (
            "{image: x:1, tiers: {hd: {image: ''}}, sessionsPerReplica: 10}",
            "tiers.hd.image \"\" must be",
        ),
        (
            &format!("{{{base}, port: 0}}"),
            "port 0 is out of range 1..=65535",
        ),
        (
            &format!("{{{base}, port: 70000}}"),
            "port 70000 is out of range",
        ),
        (
            "{image: x:1, sessionsPerReplica: 0}",
            "sessionsPerReplica 0 is out of range 1..=1000000",
        ),
        (
            &format!("{{{base}, minReplicas: -3}}"),
            "minReplicas -3 is out of range 1..=10000",
        ),
        (
            &format!("{{{base}, scaling: {{cpuUtilization: 0}}}}"),
            "scaling.cpuUtilization 0 is out of range 1..=1000",
        ),
        (
            &format!("{{{base}, scaling: {{memoryUtilization: -1}}}}"),
            "scaling.memoryUtilization -1 is out of range",
        ),
        (
            &format!("{{{base}, terminationGracePeriodSeconds: -1}}"),
            "terminationGracePeriodSeconds -1 is out of range 0..=86400",
        ),
        (
            &format!("{{{base}, security: {{runAsUser: -1}}}}"),
            "security.runAsUser -1 is out of range",
        ),
        (
            &format!("{{{base}, security: {{addCapabilities: [net_raw]}}}}"),
            "security.addCapabilities \"net_raw\" must be",
        ),
        (
            &format!("{{{base}, security: {{seccompLocalhostProfile: ''}}}}"),
            "security.seccompLocalhostProfile \"\" must be",
        ),
        (
            &format!("{{{base}, nodeSelector: {{gpu: 'a b'}}}}"),
            "nodeSelector.gpu \"a b\" must be a label value",
        ),
        (
            &format!("{{{base}, tiers: {{hd: {{sessionsPerReplica: 0}}}}}}"),
            "tiers.hd.sessionsPerReplica 0 is out of range",
        ),
        (
            &format!("{{{base}, scaling: {{sessions: {{metric: '1x'}}}}}}"),
            "scaling.sessions.metric \"1x\" must be a metric name",
        ),
        (
            &format!("{{{base}, scaling: {{sessions: {{metric: m, targetPercent: 101}}}}}}"),
            "scaling.sessions.targetPercent 101 is out of range 1..=100",
        ),
        (
            &format!("{{{base}, scaling: {{scaleDown: {{maxPercent: 150}}}}}}"),
            "scaling.scaleDown.maxPercent 150 is out of range 1..=100",
        ),
        (
            &format!("{{{base}, scaling: {{scaleUp: {{periodSeconds: 0}}}}}}"),
            "scaling.scaleUp.periodSeconds 0 is out of range 1..=1800",
        ),
        (
            &format!("{{{base}, preStop: {{httpGet: {{path: /drain}}}}}}"),
            "preStop.httpGet.port must be set when the profile has no port",
        ),
        (
            &format!("{{{base}, port: 8443, preStop: {{httpGet: {{path: drain}}}}}}"),
            "preStop.httpGet.path \"drain\" must be a path starting with /",
        ),
        (
            &format!("{{{base}, preStop: {{command: [a], httpGet: {{path: /d, port: 1}}}}}}"),
            "preStop must name exactly one of command and httpGet",
        ),
    ];
    for (yaml, message) in cases {
        let mut c = Catalogue::default();
        c.profiles.insert("video-call".into(), profile(yaml));
        let s = spec("{tenantId: t, modules: [{name: video-call, concurrency: 10, tier: hd}]}");
        let s = if yaml.contains("tiers") {
            s
        } else {
            spec("{tenantId: t, modules: [{name: video-call, concurrency: 10}]}")
        };
        let errors = plan("t", &s, &c, at("2026-02-10T00:00:00Z")).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors[0].reason(), "InvalidProfile", "{yaml}: {text:?}");
        assert!(
            text[0].starts_with(&format!("video-call: ModuleProfile {message}")),
            "{yaml}: {text:?}"
        );
    }
}

#[test]
fn lists_past_the_crd_bounds_are_refused_before_they_are_evaluated() {
    // The schema's bounds keep every reconcile cheap (each window is
    // evaluated a year ahead); an object written under an older CRD, or a
    // file read by the offline preview, is held to them too.
    let modules: Vec<String> = (0..33)
        .map(|i| format!("{{name: m{i}, concurrency: 1}}"))
        .collect();
    let windows: Vec<String> = (0..33)
        .map(|i| format!("{{name: w{i}, days: [Mon]}}"))
        .collect();
    let calendars: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
    let mut c = catalogue();
    c.calendars.insert(
        "big".into(),
        serde_saphyr::from_str(&format!(
            "{{windows: [{}]}}",
            (0..65)
                .map(|i| format!("{{name: w{i}, days: [Mon]}}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .unwrap(),
    );
    let cases = [
        (
            format!("{{tenantId: t, modules: [{}]}}", modules.join(", ")),
            "spec.modules: 33 entries, at most 32",
        ),
        (
            format!(
                "{{tenantId: t, modules: [], seasons: {{windows: [{}]}}}}",
                windows.join(", ")
            ),
            "spec.seasons.windows: 33 entries, at most 32",
        ),
        (
            format!(
                "{{tenantId: t, modules: [], seasons: {{calendars: [{}]}}}}",
                calendars.join(", ")
            ),
            "spec.seasons.calendars: 17 entries, at most 16",
        ),
        (
            "{tenantId: t, modules: [], seasons: {calendars: [big]}}".to_string(),
            "spec.seasons.calendars: CapacityCalendar \"big\" spec.windows: 65 entries, at most 64",
        ),
    ];
    for (yaml, message) in cases {
        let errors = plan("t", &spec(&yaml), &c, at("2026-02-10T00:00:00Z")).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors[0].reason(), "TooMany", "{text:?}");
        assert!(text[0].starts_with(message), "{text:?}");
    }
}

#[test]
fn a_module_is_served_in_its_own_regions_else_the_subscriptions_else_the_plans() {
    let plan_yaml = "{regions: [us-east-1, eu-west-1], modules: [{name: video-call, maxConcurrency: 1000}, {name: real-time-messaging, maxConcurrency: 1000}]}";
    let regions = |yaml: &str| {
        let p = plan(
            "t",
            &spec(yaml),
            &with_plan(plan_yaml),
            at("2026-02-10T00:00:00Z"),
        )
        .unwrap();
        (
            module(&p, "video-call").regions.clone(),
            module(&p, "real-time-messaging").regions.clone(),
        )
    };
    // Named nowhere: the plan's, sorted.
    assert_eq!(
        regions(
            "{tenantId: t, plan: pro, modules: [{name: video-call, concurrency: 10}, {name: real-time-messaging, concurrency: 10}]}"
        ),
        (
            vec!["eu-west-1".to_string(), "us-east-1".into()],
            vec!["eu-west-1".to_string(), "us-east-1".into()]
        )
    );
    // The subscription's, and a module's own over it.
    assert_eq!(
        regions(
            "{tenantId: t, plan: pro, regions: [eu-west-1], modules: [{name: video-call, concurrency: 10, regions: [us-east-1]}, {name: real-time-messaging, concurrency: 10}]}"
        ),
        (vec!["us-east-1".to_string()], vec!["eu-west-1".to_string()])
    );
    // No plan, no region: any node.
    let p = plan(
        "t",
        &spec("{tenantId: t, modules: [{name: video-call, concurrency: 10}]}"),
        &catalogue(),
        at("2026-02-10T00:00:00Z"),
    )
    .unwrap();
    assert!(module(&p, "video-call").regions.is_empty());
}

#[test]
fn a_region_outside_the_plan_is_refused_for_every_module_it_serves() {
    let plan_yaml = "{regions: [eu-west-1], modules: [{name: video-call, maxConcurrency: 1000}, {name: real-time-messaging, maxConcurrency: 1000}]}";
    let s = spec(
        "{tenantId: t, plan: pro, regions: [eu-west-1], modules: [{name: video-call, concurrency: 10, regions: [ap-south-1, eu-west-1]}, {name: real-time-messaging, concurrency: 10}]}",
    );
    let errors = plan("t", &s, &with_plan(plan_yaml), at("2026-02-10T00:00:00Z")).unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{} {e}", e.reason()))
        .collect();
    assert_eq!(
        text,
        vec![
            "ExceedsPlan video-call: exceeds plan \"pro\": region \"ap-south-1\" is not in the plan's regions [eu-west-1]"
        ]
    );
    // Without a plan naming regions, any region is sold.
    let open = "{modules: [{name: video-call, maxConcurrency: 1000}, {name: real-time-messaging, maxConcurrency: 1000}]}";
    assert!(plan("t", &s, &with_plan(open), at("2026-02-10T00:00:00Z")).is_ok());
}

#[test]
fn a_profile_held_to_one_region_cannot_serve_a_module_elsewhere() {
    let mut c = catalogue();
    c.profiles.get_mut("video-call").unwrap().node_selector = Some(BTreeMap::from([(
        REGION_LABEL.to_string(),
        "us-east-1".to_string(),
    )]));
    let at_ = at("2026-02-10T00:00:00Z");
    let errors = plan(
        "t",
        &spec(
            "{tenantId: t, regions: [eu-west-1], modules: [{name: video-call, concurrency: 10}]}",
        ),
        &c,
        at_,
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains(
            "the profile runs its pods only in region \"us-east-1\", but the module is served in [eu-west-1]"
        ),
        "{}",
        errors[0]
    );
    // Served there, or anywhere: fine.
    for regions in ["[us-east-1]", "[]"] {
        let yaml = format!(
            "{{tenantId: t, regions: {regions}, modules: [{{name: video-call, concurrency: 10}}]}}"
        );
        assert!(plan("t", &spec(&yaml), &c, at_).is_ok(), "{regions}");
    }
}
