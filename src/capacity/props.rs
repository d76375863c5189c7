//! Properties of the capacity rules over generated inputs: whatever a
//! subscription, plan and clock say, the math never over-grants, never
//! inverts floor and ceiling, never panics, and the quota always covers
//! every module at its ceiling.

use proptest::prelude::*;

use super::*;
use crate::api::{
    ModuleRequest, Seasons, SubscriptionPlanSpec, TenantSubscriptionSpec, Weekday, Window,
};

fn weekday() -> impl Strategy<Value = Weekday> {
    prop_oneof![
        Just(Weekday::Mon),
        Just(Weekday::Tue),
        Just(Weekday::Wed),
        Just(Weekday::Thu),
        Just(Weekday::Fri),
        Just(Weekday::Sat),
        Just(Weekday::Sun)
    ]
}

fn window() -> impl Strategy<Value = Window> {
    (
        "[a-z]{1,8}",
        proptest::option::of((1u8..=12, 1u8..=31, 1u8..=12, 1u8..=31)),
        proptest::option::of(proptest::collection::vec(weekday(), 1..4)),
        proptest::option::of((0u16..1440, 0u16..=1440)),
        proptest::option::of(1i32..=1000),
        proptest::option::of(0i32..=100),
    )
        .prop_map(|(name, dates, days, times, cp, fp)| Window {
            name,
            from: dates.map(|(m, d, _, _)| format!("{m:02}-{d:02}")),
            to: dates.map(|(_, _, m, d)| format!("{m:02}-{d:02}")),
            days,
            start: times.map(|(s, _)| format!("{:02}:{:02}", s / 60, s % 60)),
            end: times.map(|(_, e)| format!("{:02}:{:02}", e / 60, e % 60)),
            concurrency_percent: cp,
            floor_percent: fp,
            modules: None,
        })
}

fn zone() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("UTC"),
        Just("Asia/Shanghai"),
        Just("Europe/Berlin"),
        Just("America/New_York"),
        Just("Australia/Lord_Howe")
    ]
}

fn profile(sessions: i32, min: i32) -> ModuleProfileSpec {
    serde_json::from_value(serde_json::json!({
        "image": "x", "sessionsPerReplica": sessions, "minReplicas": min,
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}
    }))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn numbers_cover_the_ceiling_without_over_granting(
        concurrency in 1i64..=100_000_000,
        sessions in 1i32..=1_000_000,
        min in 1i32..=10_000,
        cp in 1u32..=1000,
        fp in 0u32..=100,
    ) {
        let n = numbers(concurrency, sessions, min, cp, fp).expect("schema-bounded inputs fit");
        prop_assert!(n.min_replicas >= 1);
        prop_assert!(n.min_replicas <= n.max_replicas);
        prop_assert_eq!(n.ceiling as i128, (concurrency as i128 * cp as i128 + 99) / 100);
        // Enough replicas for the ceiling, and not one more than needed.
        prop_assert!(n.max_replicas as i128 * sessions as i128 >= n.ceiling as i128);
        prop_assert!(n.max_replicas == 1 || (n.max_replicas as i128 - 1) * (sessions as i128) < n.ceiling as i128);
    }

    #[test]
    fn numbers_never_panic(c in any::<i64>(), s in any::<i32>(), m in any::<i32>(), cp in any::<u32>(), fp in any::<u32>()) {
        if let Some(n) = numbers(c, s, m, cp, fp) {
            prop_assert!(n.min_replicas <= n.max_replicas);
        }
    }

    #[test]
    fn plans_bound_every_ceiling_and_the_quota_covers_them(
        reqs in proptest::collection::vec((1i64..=5_000, 1i32..=200, 1i32..=5, any::<bool>()), 1..4),
        windows in proptest::collection::vec(window(), 0..4),
        tz in zone(),
        max in 1i64..=5_000,
        peak in proptest::option::of(1i64..=20_000),
        at in 0i64..4_000_000_000,
    ) {
        let mut catalogue = Catalogue::default();
        let mut modules = Vec::new();
        for (i, (c, s, min, on)) in reqs.iter().enumerate() {
            let name = format!("m{i}");
            catalogue.profiles.insert(name.clone(), profile(*s, *min));
            modules.push(ModuleRequest { name, concurrency: *c, tier: None, regions: vec![], enabled: *on });
        }
        let sold: SubscriptionPlanSpec = serde_json::from_value(serde_json::json!({
            "modules": modules.iter().map(|m| serde_json::json!({
                "name": m.name, "maxConcurrency": max, "maxPeakConcurrency": peak.map(|p| p.max(max)),
            })).collect::<Vec<_>>()
        })).unwrap();
        catalogue.plans.insert("p".into(), sold.clone());
        let spec = TenantSubscriptionSpec {
            tenant_id: "t".into(),
            plan: Some("p".into()),
            paused: false,
            regions: vec![],
            modules,
            seasons: Some(Seasons { calendars: vec![], time_zone: Some(tz.into()), windows }),
            downgrade: Default::default(),
        };
        let now = Timestamp::from_second(at).unwrap();
        // Invalid windows or plan violations are errors, never panics.
        let Ok(p) = plan("s", &spec, &catalogue, now) else { return Ok(()) };
        let mut footprints = Vec::new();
        for m in &p.modules {
            let allowed = sold.modules.iter().find(|a| a.name == m.name).unwrap();
            prop_assert!(m.concurrency <= allowed.max_concurrency);
            if let Some(peak) = allowed.max_peak_concurrency {
                prop_assert!(m.numbers.ceiling <= peak, "ceiling {} over peak {}", m.numbers.ceiling, peak);
            }
            prop_assert!(m.numbers.min_replicas <= m.numbers.max_replicas);
            footprints.push(m.footprint().unwrap());
        }
        let hard = quota_hard(&footprints).unwrap();
        let max_sum: i64 = p.modules.iter().map(|m| m.numbers.max_replicas as i64).sum();
        prop_assert!(hard["pods"].0 >= max_sum as i128 * 1_000_000_000);
        let cpu_needed: i128 = p.modules.iter().map(|m| m.numbers.max_replicas as i128 * 250_000_000).sum();
        prop_assert!(p.modules.is_empty() || hard["requests.cpu"].0 >= cpu_needed);
        // Disabled modules get nothing.
        prop_assert!(p.modules.iter().all(|m| spec.modules.iter().any(|r| r.name == m.name && r.enabled)));
    }

    #[test]
    fn the_next_transition_is_in_the_future_and_really_changes_something(
        w in window(),
        tz in zone(),
        at in 0i64..4_000_000_000,
    ) {
        let tz = jiff::tz::TimeZone::get(tz).unwrap();
        let Ok(c) = CompiledWindow::compile(&w, &tz) else { return Ok(()) };
        let now = Timestamp::from_second(at).unwrap();
        if let Some(next) = c.next_change(now) {
            prop_assert!(next > now);
            prop_assert_ne!(c.active_at(next), c.active_at(now));
            // Nothing changes before it: sample the span in between.
            let span = next.as_second() - now.as_second();
            for k in 1..8 {
                let t = Timestamp::from_second(now.as_second() + span * k / 8).unwrap();
                if t < next {
                    prop_assert_eq!(c.active_at(t), c.active_at(now), "changed at {} before {}", t, next);
                }
            }
        }
    }
}
