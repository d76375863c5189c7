//! Bad input at volume: every invalid object is refused at apply time naming
//! the field, or marked Ready=False with a reason; the operator never
//! panics, and a valid tenant next to them keeps converging.

mod support;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Api, api::ListParams};
use support::*;

fn sub(name: &str, spec: &str) -> serde_json::Value {
    serde_saphyr::from_str(&format!(
        "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: {name}}}\nspec: {spec}"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_bad_input_is_refused_or_reported_and_good_tenants_carry_on() {
    let f = Fixture::new("bad").await;
    let v = f.video.clone();
    let huge_list: String = (0..10_000)
        .map(|i| format!("{{name: m{i}, concurrency: 1}}"))
        .collect::<Vec<_>>()
        .join(", ");

    // Refused by the API server, naming the field.
    let refused: Vec<(String, &str)> = vec![
        (format!("{{tenantId: x, modules: [{huge_list}]}}"), "spec.modules"),
        ("{tenantId: x, modules: [{name: a, concurrency: 1e30}]}".into(), "spec.modules[0].concurrency"),
        ("{tenantId: x, modules: [{name: a, concurrency: 100000001}]}".into(), "spec.modules[0].concurrency"),
        ("{tenantId: x, modules: [{name: a, concurrency: '5'}]}".into(), "spec.modules[name=\"a\"].concurrency: expected numeric"),
        ("{tenantId: x, modules: [{name: '', concurrency: 5}]}".into(), "spec.modules[0].name"),
        ("{tenantId: x, modules: [{name: 'vidéo', concurrency: 5}]}".into(), "spec.modules[0].name"),
        ("{tenantId: x, modules: [{name: '视频', concurrency: 5}]}".into(), "spec.modules[0].name"),
        ("{tenantId: '', modules: []}".into(), "spec.tenantId"),
        ("{modules: []}".into(), "spec.tenantId"),
        ("{tenantId: x}".into(), "spec.modules"),
        ("{tenantId: x, modules: {a: 1}}".into(), "spec.modules"),
        ("{tenantId: x, modules: [], paused: 'yes please'}".into(), "spec.paused"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, from: '04-31', to: '05-01'}]}}".into(), "spec.seasons.windows[0].from"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, from: '13-01', to: '12-01'}]}}".into(), "spec.seasons.windows[0].from"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, from: '2027-01-01', to: '2026-01-01'}]}}".into(), "spec.seasons.windows[0].to"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, from: '2027-01-01', to: '01-05'}]}}".into(), "spec.seasons.windows[0].to"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, start: '9:00', end: '10:00'}]}}".into(), "spec.seasons.windows[0].start"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, start: '10:00', end: '10:00'}]}}".into(), "spec.seasons.windows[0].end"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, days: [Funday]}]}}".into(), "spec.seasons.windows[0].days[0]"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, days: []}]}}".into(), "spec.seasons.windows[0].days"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, days: [Mon], concurrencyPercent: 0}]}}".into(), "spec.seasons.windows[0].concurrencyPercent"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, days: [Mon], concurrencyPercent: 100000}]}}".into(), "spec.seasons.windows[0].concurrencyPercent"),
        ("{tenantId: x, modules: [], seasons: {windows: [{name: w, days: [Mon], floorPercent: -1}]}}".into(), "spec.seasons.windows[0].floorPercent"),
        ("{tenantId: x, modules: [], seasons: {timeZone: ''}}".into(), "spec.seasons.timeZone"),
        ("{tenantId: x, modules: [], downgrade: {drainSeconds: 99999999}}".into(), "spec.downgrade.drainSeconds"),
        ("{tenantId: x, modules: [], downgrade: {dataRetention: Shred}}".into(), "spec.downgrade.dataRetention"),
        ("{tenantId: x, modules: [], regions: ['EU West']}".into(), "spec.regions[0]"),
        ("{tenantId: x, modules: [{name: a, concurrency: 1, regions: ['-eu']}]}".into(), "spec.modules[0].regions[0]"),
    ];
    let mut misses = Vec::new();
    for (i, (spec, field)) in refused.iter().enumerate() {
        let err = try_apply(&f.client, Some(&f.ns.name), &sub(&format!("r{i}"), spec))
            .await
            .expect_err(&spec[..spec.len().min(120)]);
        let text = err.to_string();
        if !text.contains(field) {
            misses.push(format!(
                "case {i}: error does not name {field}: {}",
                &text[..text.len().min(300)]
            ));
        }
    }
    assert!(misses.is_empty(), "{misses:#?}");
    let too_many_tolerations = format!(
        "{{image: x, sessionsPerReplica: 10, tolerations: [{}]}}",
        vec!["{key: a, operator: Exists}"; 33].join(", ")
    );
    let bad_profiles = [
        ("{image: '', sessionsPerReplica: 10}", "spec.image"),
        (
            "{image: x, sessionsPerReplica: 0}",
            "spec.sessionsPerReplica",
        ),
        (
            "{image: x, sessionsPerReplica: 10, minReplicas: 0}",
            "spec.minReplicas",
        ),
        (
            "{image: x, sessionsPerReplica: 10, port: 70000}",
            "spec.port",
        ),
        (
            "{image: x, sessionsPerReplica: 10, scaling: {cpuUtilization: 0}}",
            "spec.scaling.cpuUtilization",
        ),
        (
            "{image: x, sessionsPerReplica: 10, tiers: {'HD!': {}}}",
            "spec.tiers",
        ),
        // The bounds of docs/security.md "Fuzzing and schema bounds".
        ("{image: 'x y', sessionsPerReplica: 10}", "spec.image"),
        (
            "{image: x, sessionsPerReplica: 10, resources: {requests: {cpu: lots}}}",
            "spec.resources.requests.cpu",
        ),
        (
            "{image: x, sessionsPerReplica: 10, resources: {limits: {cpu: '1111111111111111111111111111111111111111111111111111111111111111111'}}}",
            "spec.resources.limits.cpu",
        ),
        (
            "{image: x, sessionsPerReplica: 10, resources: {claims: [{name: gpu}]}}",
            "spec.resources.claims",
        ),
        (
            "{image: x, sessionsPerReplica: 10, nodeSelector: {gpu: 'a b'}}",
            "spec.nodeSelector.gpu",
        ),
        (too_many_tolerations.as_str(), "spec.tolerations"),
        (
            "{image: x, sessionsPerReplica: 10, zoneSpread: {maxSkew: 0}}",
            "spec.zoneSpread.maxSkew",
        ),
        (
            "{image: x, sessionsPerReplica: 10, zoneSpread: {whenUnsatisfiable: Sometimes}}",
            "spec.zoneSpread.whenUnsatisfiable",
        ),
        (
            "{image: x, sessionsPerReplica: 10, scaling: {sessions: {metric: '1 sessions'}}}",
            "spec.scaling.sessions.metric",
        ),
        (
            "{image: x, sessionsPerReplica: 10, scaling: {sessions: {metric: m, targetPercent: 120}}}",
            "spec.scaling.sessions.targetPercent",
        ),
        (
            "{image: x, sessionsPerReplica: 10, scaling: {scaleDown: {maxPercent: 150}}}",
            "spec.scaling.scaleDown.maxPercent",
        ),
        (
            "{image: x, sessionsPerReplica: 10, scaling: {scaleUp: {periodSeconds: 0}}}",
            "spec.scaling.scaleUp.periodSeconds",
        ),
        (
            "{image: x, sessionsPerReplica: 10, preStop: {}}",
            "spec.preStop",
        ),
        (
            "{image: x, sessionsPerReplica: 10, preStop: {httpGet: {path: drain}}}",
            "spec.preStop.httpGet.path",
        ),
    ];
    for (i, (spec, field)) in bad_profiles.iter().enumerate() {
        let value: serde_json::Value = serde_saphyr::from_str(&format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: ModuleProfile\nmetadata: {{name: bad-profile-{i}}}\nspec: {spec}"
        ))
        .unwrap();
        let err = try_apply(&f.client, None, &value)
            .await
            .expect_err(spec)
            .to_string();
        assert!(err.contains(field), "profile {i}: {err}");
    }
    for (yaml, case, field) in [
        (
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {name: bad-plan}\nspec: {modules: [{name: a, maxConcurrency: 10, maxPeakConcurrency: 5}]}",
            "peak below max",
            "maxPeakConcurrency",
        ),
        (
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: CapacityCalendar\nmetadata: {name: bad-cal}\nspec: {windows: [{name: w, from: '02-30', to: '03-01'}]}",
            "02-30",
            "spec.windows[0].from",
        ),
    ] {
        let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        let err = try_apply(&f.client, None, &value)
            .await
            .expect_err(case)
            .to_string();
        assert!(err.contains(field), "{err}");
    }

    // Accepted by the schema, refused by the operator with a reason.
    let reported: Vec<(String, &str)> = vec![
        (
            "{tenantId: x, modules: [{name: no-such-profile, concurrency: 5}]}".into(),
            "ProfileNotFound",
        ),
        (
            format!("{{tenantId: x, modules: [{{name: {v}, concurrency: 5, tier: 8k}}]}}"),
            "TierNotFound",
        ),
        (
            format!(
                "{{tenantId: x, modules: [{{name: {v}, concurrency: 5}}], seasons: {{timeZone: Mars/Base}}}}"
            ),
            "UnknownTimeZone",
        ),
        (
            format!(
                "{{tenantId: x, modules: [{{name: {v}, concurrency: 5}}], seasons: {{timeZone: '☃'}}}}"
            ),
            "UnknownTimeZone",
        ),
        (
            format!(
                "{{tenantId: x, modules: [{{name: {v}, concurrency: 5}}], seasons: {{windows: [{{name: w, from: '2027-02-29', to: '2027-03-01'}}]}}}}"
            ),
            "InvalidWindow",
        ),
        (
            format!(
                "{{tenantId: x, plan: no-such-plan, modules: [{{name: {v}, concurrency: 5}}]}}"
            ),
            "PlanNotFound",
        ),
        (
            format!(
                "{{tenantId: x, modules: [{{name: {v}, concurrency: 5}}], seasons: {{calendars: [no-such-calendar]}}}}"
            ),
            "CalendarNotFound",
        ),
        (
            format!("{{tenantId: x, modules: [{{name: {v}, concurrency: 5}}]}}"),
            "NameTooLong",
        ),
    ];
    // A valid tenant, in a namespace of its own (only one subscription acts
    // in a namespace), converges, and keeps converging while the bad ones
    // are reported.
    let g = Fixture::new("bad-good").await;
    let gv = g.video.clone();
    g.apply_sub(
        "good",
        &format!("  tenantId: good\n  modules:\n    - {{name: {gv}, concurrency: 400}}\n"),
    )
    .await;
    g.wait_available("good").await;
    // One subscription of tenant x at a time (a second one in the namespace
    // would only be reported as a duplicate); the last one's own name is too
    // long for its children's names.
    assign_namespace(&f.client, &f.ns.name, "x").await;
    for (i, (spec, reason)) in reported.iter().enumerate() {
        let name = if i + 1 == reported.len() {
            f.subs()
                .delete("bad", &Default::default())
                .await
                .expect("delete the previous case");
            wait_for("the previous case gone", T, || async {
                f.subs().get_opt("bad").await.ok()?.is_none().then_some(())
            })
            .await;
            format!("bad-{}", "n".repeat(50))
        } else {
            "bad".to_string()
        };
        try_apply(&f.client, Some(&f.ns.name), &sub(&name, spec))
            .await
            .unwrap();
        let s = f
            .wait_status(&name, reason, |s| {
                is(s, "Ready", "False", reason) && is(s, "Stalled", "True", reason)
            })
            .await;
        assert!(!condition(&s, "Ready").unwrap().message.is_empty());
    }
    g.apply_sub(
        "good",
        &format!("  tenantId: good\n  modules:\n    - {{name: {gv}, concurrency: 800}}\n"),
    )
    .await;
    wait_for("good tenant still converging", T, || async {
        let h = get_opt::<HorizontalPodAutoscaler>(&g.client, &g.ns.name, &format!("good-{gv}"))
            .await?;
        (h.spec.max_replicas == 20).then_some(())
    })
    .await;
    // Nothing was created for the invalid ones.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(f.client.clone(), &f.ns.name);
    assert_eq!(
        hpas.list(&ListParams::default()).await.unwrap().items.len(),
        0
    );
    g.finish().await;
    println!(
        "bad input: {} refused at apply time, {} reported as Ready=False, 1 valid tenant unaffected",
        refused.len() + bad_profiles.len() + 2,
        reported.len(),
    );
    assert!(
        f.operator
            .metrics
            .encode()
            .contains("tenant_capacity_reconciliations_total")
    );
    f.finish().await;
}
