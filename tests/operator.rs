//! The operator against the real local control plane: objects, numbers,
//! plan changes, drains, garbage collection, drift and bad input.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ResourceQuota, Service},
    events::v1::Event,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use support::*;
use tenant_capacity_operator::api::ModuleState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_becomes_children_with_the_right_numbers() {
    let f = Fixture::new("core").await;
    let spec = format!(
        "  tenantId: acme\n  modules:\n    - {{name: {v}, concurrency: 1000}}\n    - {{name: {v2}, concurrency: 90, tier: uhd}}\n    - {{name: {im}, concurrency: 100}}\n",
        v = f.video,
        v2 = f.video,
        im = f.im
    );
    // Duplicate module names are refused by the schema (list-map key), so use two subscriptions instead.
    let bad = f.subs().get("acme").await.ok();
    assert!(bad.is_none());
    let dup_err = try_apply(
        &f.client,
        Some(&f.ns.name),
        &serde_saphyr::from_str::<serde_json::Value>(&format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: acme}}\nspec:\n{spec}"
        ))
        .unwrap(),
    )
    .await
    .expect_err("duplicate module names are refused");
    assert!(
        dup_err
            .to_string()
            .contains("spec.modules: duplicate entries"),
        "{dup_err}"
    );

    let sub = f
        .apply_sub("acme", &format!("  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 1000}}\n    - {{name: {}, concurrency: 100}}\n", f.video, f.im))
        .await;
    let video = format!("acme-{}", f.video);
    let im = format!("acme-{}", f.im);

    let s = f.wait_available("acme").await;
    let st = s.status.unwrap();
    assert_eq!(st.observed_generation, sub.metadata.generation);
    for c in ["Ready", "Reconciling", "Stalled", "CapacityLimited"] {
        assert!(
            st.conditions.iter().any(|x| x.type_ == c),
            "condition {c} missing"
        );
    }
    let vm = st.modules.iter().find(|m| m.name == f.video).unwrap();
    assert_eq!(vm.state, Some(ModuleState::Active));
    // ⌈1000 / 40⌉ = 25 replicas; floor = profile minimum 1.
    assert_eq!(
        (vm.min_replicas, vm.max_replicas, vm.concurrency),
        (Some(1), Some(25), Some(1000))
    );
    assert!(vm.ready_replicas.unwrap_or(0) >= 1);

    // Becoming Available is announced; starting out Progressing is not.
    let events: Api<Event> = Api::namespaced(f.client.clone(), &f.ns.name);
    let reasons = wait_for("Available event", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let reasons: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("acme"))
            .filter_map(|e| e.reason.clone())
            .collect();
        reasons.iter().any(|r| r == "Available").then_some(reasons)
    })
    .await;
    assert_eq!(reasons, ["Available"]);

    // HPA: numbers and CPU target from the profile.
    let h: HorizontalPodAutoscaler = f.get(&video).await.unwrap();
    assert_eq!((h.spec.min_replicas, h.spec.max_replicas), (Some(1), 25));
    let target = h.spec.metrics.as_ref().unwrap()[0]
        .resource
        .as_ref()
        .unwrap()
        .target
        .average_utilization;
    assert_eq!(target, Some(65));
    assert_eq!(h.spec.scale_target_ref.name, video);
    // messaging: ⌈100/40⌉ = 3, floor is the profile's minReplicas 2.
    assert_eq!(f.hpa_numbers(&im).await, Some((2, 3)));

    // Service only for the module with a port.
    let svc: Service = f.get(&video).await.expect("video Service");
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8443);
    assert!(f.get::<Service>(&im).await.is_none());

    // Labels and owner references on every child; the quota has no module label.
    let d: Deployment = f.get(&video).await.unwrap();
    let labels = d.labels();
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "tenant-capacity-operator"
    );
    assert_eq!(labels["capacity.tenancy.dev/subscription"], "acme");
    assert_eq!(labels["capacity.tenancy.dev/module"], f.video);
    assert_eq!(
        d.owner_references()[0].uid,
        sub.metadata.uid.clone().unwrap()
    );
    // The operator never owns spec.replicas: the HPA does the scaling.
    let ours = d
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("tenant-capacity-operator"))
        .unwrap();
    let owned = serde_json::to_string(&ours.fields_v1).unwrap();
    assert!(
        !owned.contains("f:replicas"),
        "operator owns spec.replicas: {owned}"
    );

    // Quota: (25 + 7 surge) + (3 + 1 surge) pods, at 100m/64Mi requests and 200m/128Mi limits each.
    let q: ResourceQuota = f.get("acme-capacity").await.unwrap();
    assert!(!q.labels().contains_key("capacity.tenancy.dev/module"));
    let hard = q.spec.unwrap().hard.unwrap();
    assert_eq!(hard["pods"].0, "36");
    assert_eq!(hard["requests.cpu"].0, "3600m");
    assert_eq!(hard["limits.memory"].0, "4608Mi");
    // The quota controller accounts the running pods against it.
    wait_for("quota used", T, || async {
        let q: ResourceQuota = f.get("acme-capacity").await?;
        let used = q.status?.used?;
        (used.get("pods")?.0 != "0").then_some(())
    })
    .await;

    // Printer columns.
    let table = kubectl(&["get", "tsub", "-n", &f.ns.name]);
    let header = table.lines().next().unwrap();
    for col in [
        "NAME", "TENANT", "PLAN", "READY", "REASON", "WINDOWS", "AGE",
    ] {
        assert!(header.contains(col), "column {col} missing in {header}");
    }
    assert!(
        table.contains("acme") && table.contains("Available"),
        "{table}"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_changes_update_in_place_and_new_modules_appear() {
    let f = Fixture::new("change").await;
    let video = format!("t-{}", f.video);
    f.apply_sub(
        "t",
        &format!(
            "  tenantId: t\n  modules:\n    - {{name: {}, concurrency: 400}}\n",
            f.video
        ),
    )
    .await;
    f.wait_status("t", "first plan applied", |s| {
        s.status.as_ref().is_some_and(|st| !st.modules.is_empty())
    })
    .await;
    wait_for("HPA 1..10", T, || async {
        (f.hpa_numbers(&video).await? == (1, 10)).then_some(())
    })
    .await;
    let hpa_uid = f
        .get::<HorizontalPodAutoscaler>(&video)
        .await
        .unwrap()
        .metadata
        .uid;
    assert_eq!(f.quota_hard("t", "pods").await.as_deref(), Some("13"));

    // Upgrade: more concurrency.
    f.apply_sub(
        "t",
        &format!(
            "  tenantId: t\n  modules:\n    - {{name: {}, concurrency: 800}}\n",
            f.video
        ),
    )
    .await;
    wait_for("HPA max 20", T, || async {
        (f.hpa_numbers(&video).await? == (1, 20)).then_some(())
    })
    .await;
    wait_for("quota 25 pods", T, || async {
        (f.quota_hard("t", "pods").await? == "25").then_some(())
    })
    .await;
    // Tier switch: uhd serves 15 per replica → ⌈800/15⌉ = 54.
    f.apply_sub(
        "t",
        &format!(
            "  tenantId: t\n  modules:\n    - {{name: {}, concurrency: 800, tier: uhd}}\n",
            f.video
        ),
    )
    .await;
    wait_for("HPA max 54", T, || async {
        (f.hpa_numbers(&video).await? == (1, 54)).then_some(())
    })
    .await;
    let same = f
        .get::<HorizontalPodAutoscaler>(&video)
        .await
        .unwrap()
        .metadata
        .uid;
    assert_eq!(same, hpa_uid, "the HPA is updated in place, not replaced");

    // A new module gets its objects; the quota grows to cover it.
    f.apply_sub(
        "t",
        &format!("  tenantId: t\n  modules:\n    - {{name: {}, concurrency: 800, tier: uhd}}\n    - {{name: {}, concurrency: 100}}\n", f.video, f.im),
    )
    .await;
    let im = format!("t-{}", f.im);
    wait_for("messaging objects", T, || async {
        f.get::<Deployment>(&im).await?;
        (f.hpa_numbers(&im).await? == (2, 3)).then_some(())
    })
    .await;
    // 54 + 14 surge + 3 + 1 surge
    wait_for("quota 72 pods", T, || async {
        (f.quota_hard("t", "pods").await? == "72").then_some(())
    })
    .await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switched_off_module_drains_then_only_its_objects_go() {
    let f = Fixture::new("drain").await;
    let video = format!("d-{}", f.video);
    let im = format!("d-{}", f.im);
    let both = |video_enabled: bool| {
        format!(
            "  tenantId: d\n  downgrade: {{drainSeconds: 6}}\n  modules:\n    - {{name: {}, concurrency: 400, enabled: {video_enabled}}}\n    - {{name: {}, concurrency: 100}}\n",
            f.video, f.im
        )
    };
    f.apply_sub("d", &both(true)).await;
    f.wait_available("d").await;
    assert_eq!(f.quota_hard("d", "pods").await.as_deref(), Some("17")); // 10+3 and 3+1

    f.apply_sub("d", &both(false)).await;
    let s = f.wait_draining("d", &f.video).await;
    let m = s
        .status
        .as_ref()
        .unwrap()
        .modules
        .iter()
        .find(|m| m.name == f.video)
        .unwrap()
        .clone();
    assert!(m.drain_deadline.is_some());
    assert!(is(&s, "Reconciling", "True", "Draining"));
    // While draining: still serving, quota kept.
    assert!(f.get::<Deployment>(&video).await.is_some());
    assert!(f.get::<Service>(&video).await.is_some());
    assert_eq!(f.quota_hard("d", "pods").await.as_deref(), Some("17"));
    let drained_at = std::time::Instant::now();

    wait_for("video objects removed", T, || async {
        f.module_gone(&video).await.then_some(())
    })
    .await;
    assert!(
        drained_at.elapsed() >= Duration::from_secs(3),
        "removed before the drain ended"
    );
    // Only its objects: messaging stays; the quota shrinks to messaging alone.
    assert!(f.get::<Deployment>(&im).await.is_some());
    wait_for("quota 4 pods", T, || async {
        (f.quota_hard("d", "pods").await? == "4").then_some(())
    })
    .await;
    let s = f.wait_available("d").await;
    assert!(s.status.unwrap().modules.iter().all(|m| m.name != f.video));

    // Removing a module from the list drains it the same way.
    f.apply_sub("d", &format!("  tenantId: d\n  downgrade: {{drainSeconds: 2}}\n  modules:\n    - {{name: {}, concurrency: 400}}\n", f.video)).await;
    wait_for("video back", T, || async {
        f.get::<Deployment>(&video).await
    })
    .await;
    wait_for("messaging removed", T, || async {
        f.get::<Deployment>(&im).await.is_none().then_some(())
    })
    .await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_subscription_collects_every_child() {
    let f = Fixture::new("gc").await;
    let video = format!("g-{}", f.video);
    f.apply_sub(
        "g",
        &format!(
            "  tenantId: g\n  modules:\n    - {{name: {}, concurrency: 100}}\n",
            f.video
        ),
    )
    .await;
    wait_for("children", T, || async {
        f.get::<Deployment>(&video).await?;
        f.get::<HorizontalPodAutoscaler>(&video).await?;
        f.get::<Service>(&video).await?;
        f.get::<ResourceQuota>("g-capacity").await
    })
    .await;
    f.subs()
        .delete("g", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("garbage collection", Duration::from_secs(90), || async {
        let gone =
            f.module_gone(&video).await && f.get::<ResourceQuota>("g-capacity").await.is_none();
        gone.then_some(())
    })
    .await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_are_restored_and_strangers_are_left_alone() {
    let f = Fixture::new("drift").await;
    let video = format!("h-{}", f.video);
    let ns = f.ns.name.clone();
    // A stranger carrying our labels, without an owner reference.
    apply_yaml(
        &f.client,
        Some(&ns),
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: h-stranger
  labels: {{app.kubernetes.io/managed-by: tenant-capacity-operator, capacity.tenancy.dev/subscription: h, capacity.tenancy.dev/module: {m}}}
data: {{a: b}}
"#,
            m = f.im
        ),
    )
    .await;
    let stranger_svc = apply_yaml(
        &f.client,
        Some(&ns),
        &format!(
            r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: h-{m}
  labels: {{app.kubernetes.io/managed-by: tenant-capacity-operator, capacity.tenancy.dev/subscription: h, capacity.tenancy.dev/module: {m}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: elsewhere}}
  minReplicas: 1
  maxReplicas: 7
"#,
            m = f.im
        ),
    )
    .await;
    f.apply_sub("h", &format!("  tenantId: h\n  downgrade: {{drainSeconds: 1}}\n  modules:\n    - {{name: {}, concurrency: 400}}\n", f.video)).await;
    f.wait_available("h").await;

    // Deleted by hand: recreated.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(f.client.clone(), &ns);
    let old_uid = hpas.get(&video).await.unwrap().metadata.uid;
    hpas.delete(&video, &DeleteParams::default()).await.unwrap();
    wait_for("HPA recreated", T, || async {
        let h = hpas.get_opt(&video).await.ok()??;
        (h.metadata.uid != old_uid).then_some(())
    })
    .await;

    // Edited by another manager: restored.
    hpas.patch(&video, &PatchParams::apply("someone-else").force(), &Patch::Apply(serde_json::json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "spec": {"maxReplicas": 99, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": video}}
    })))
    .await
    .unwrap();
    wait_for("maxReplicas restored", T, || async {
        (f.hpa_numbers(&video).await?.1 == 10).then_some(())
    })
    .await;

    // A field nobody set for us (a label added by someone else) stays.
    let deploys: Api<Deployment> = Api::namespaced(f.client.clone(), &ns);
    deploys
        .patch(
            &video,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"team": "video"}}})),
        )
        .await
        .unwrap();

    // Adding the messaging module collides with the stranger's HPA: the
    // module is reported, the stranger is untouched.
    f.apply_sub(
        "h",
        &format!("  tenantId: h\n  downgrade: {{drainSeconds: 1}}\n  modules:\n    - {{name: {}, concurrency: 400}}\n    - {{name: {}, concurrency: 100}}\n", f.video, f.im),
    )
    .await;
    let s = f.wait_not_ready("h", "ObjectConflict").await;
    let msg = &condition(&s, "Ready").unwrap().message;
    assert!(msg.contains(&format!("h-{}", f.im)), "{msg}");
    let svc: HorizontalPodAutoscaler = f.get(&format!("h-{}", f.im)).await.unwrap();
    assert_eq!(
        svc.metadata.resource_version, stranger_svc.metadata.resource_version,
        "stranger's HPA was changed"
    );
    assert!(svc.owner_references().is_empty());
    // Applied whole or not at all: the colliding module got no Deployment either.
    assert!(f.get::<Deployment>(&format!("h-{}", f.im)).await.is_none());
    let d: Deployment = f.get(&video).await.unwrap();
    assert_eq!(d.labels().get("team").map(String::as_str), Some("video"));

    // Drop the module again: the stranger HPA and ConfigMap survive.
    f.apply_sub("h", &format!("  tenantId: h\n  downgrade: {{drainSeconds: 1}}\n  modules:\n    - {{name: {}, concurrency: 400}}\n", f.video)).await;
    f.wait_available("h").await;
    let svc: HorizontalPodAutoscaler = f
        .get(&format!("h-{}", f.im))
        .await
        .expect("stranger HPA survives");
    assert_eq!(
        svc.metadata.resource_version,
        stranger_svc.metadata.resource_version
    );
    assert!(
        f.get::<k8s_openapi::api::core::v1::ConfigMap>("h-stranger")
            .await
            .is_some()
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_bad_input_naming_the_field() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "schema").await;
    let cases: &[(&str, &str)] = &[
        (
            "{tenantId: x, modules: [{name: video, concurrency: 0}]}",
            "spec.modules[0].concurrency",
        ),
        (
            "{tenantId: x, modules: [{name: video, concurrency: -5}]}",
            "spec.modules[0].concurrency",
        ),
        (
            "{tenantId: x, modules: [{name: video, concurrency: 10, tier: 'HD!'}]}",
            "spec.modules[0].tier",
        ),
        (
            "{tenantId: x, modules: [{name: a, concurrency: 1}, {name: a, concurrency: 2}]}",
            "spec.modules: duplicate entries for key [name=\"a\"]",
        ),
        (
            "{tenantId: x, modules: [], seasons: {windows: [{name: w, start: '25:00', end: '02:00'}]}}",
            "spec.seasons.windows[0].start",
        ),
        (
            "{tenantId: x, modules: [], seasons: {windows: [{name: w, from: '02-30', to: '03-01'}]}}",
            "spec.seasons.windows[0].from",
        ),
        (
            "{tenantId: x, modules: [], seasons: {windows: [{name: w, days: [Mon], floorPercent: 101}]}}",
            "spec.seasons.windows[0].floorPercent",
        ),
        (
            "{tenantId: x, modules: [], seasons: {windows: [{name: w, from: '07-01'}]}}",
            "spec.seasons.windows[0].from",
        ),
        (
            "{tenantId: x, modules: [], seasons: {windows: [{name: w, floorPercent: 10}]}}",
            "spec.seasons.windows[0]",
        ),
        ("{tenantId: 'Not A Label', modules: []}", "spec.tenantId"),
        (
            "{tenantId: x, modules: [], downgrade: {drainSeconds: -1}}",
            "spec.downgrade.drainSeconds",
        ),
    ];
    for (spec, field) in cases {
        let value: serde_json::Value = serde_saphyr::from_str(&format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: bad}}\nspec: {spec}"
        ))
        .unwrap();
        let err = try_apply(&client, Some(&ns.name), &value)
            .await
            .expect_err(spec);
        let text = err.to_string();
        assert!(
            text.contains(field),
            "{spec}: error does not name {field}: {text}"
        );
    }
    let profile: serde_json::Value = serde_saphyr::from_str(
        "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: ModuleProfile\nmetadata: {name: bad-profile}\nspec: {image: x, sessionsPerReplica: 0, tiers: {'Bad Tier': {}}}",
    )
    .unwrap();
    let err = try_apply(&client, None, &profile)
        .await
        .expect_err("bad profile")
        .to_string();
    assert!(
        err.contains("spec.sessionsPerReplica") && err.contains("spec.tiers"),
        "{err}"
    );
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_errors_leave_running_children_untouched() {
    let f = Fixture::new("semantic").await;
    let video = format!("s-{}", f.video);
    let good = format!(
        "  tenantId: s\n  modules:\n    - {{name: {}, concurrency: 400}}\n",
        f.video
    );
    f.apply_sub("s", &good).await;
    f.wait_available("s").await;
    let before = f.versions("s", &video).await;

    let cases = [
        (
            format!(
                "    - {{name: {}, concurrency: 4000}}\n    - {{name: no-such-module, concurrency: 5}}\n",
                f.video
            ),
            "ProfileNotFound",
            "no-such-module",
        ),
        (
            format!("    - {{name: {}, concurrency: 4000, tier: hd}}\n", f.video),
            "TierNotFound",
            "tier \"hd\"",
        ),
        (
            format!(
                "    - {{name: {}, concurrency: 4000}}\n  seasons: {{timeZone: Mars/Olympus_Mons}}\n",
                f.video
            ),
            "UnknownTimeZone",
            "Mars/Olympus_Mons",
        ),
        (
            format!(
                "    - {{name: {}, concurrency: 4000}}\n  seasons: {{windows: [{{name: leap, from: '2027-02-29', to: '2027-03-02'}}]}}\n",
                f.video
            ),
            "InvalidWindow",
            "2027-02-29",
        ),
    ];
    for (modules, reason, needle) in &cases {
        f.apply_sub("s", &format!("  tenantId: s\n  modules:\n{modules}"))
            .await;
        let s = f.wait_not_ready("s", reason).await;
        let msg = condition(&s, "Ready").unwrap().message.clone();
        assert!(msg.contains(needle), "{reason}: {msg}");
        assert!(is(&s, "Stalled", "True", reason));
        // An Event names it too.
        let events: Api<Event> = Api::namespaced(f.client.clone(), &f.ns.name);
        wait_for("event", T, || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().is_some_and(|n| n.contains(needle))
                })
                .then_some(())
        })
        .await;
        // Nothing that runs was touched.
        assert_eq!(f.versions("s", &video).await, before);
    }

    // A second subscription in the tenant's namespace is a conflict, not a
    // second writer: reported, nothing written, the first one untouched.
    f.apply_sub(
        "other",
        &format!(
            "  tenantId: s\n  modules:\n    - {{name: {}, concurrency: 40}}\n",
            f.im
        ),
    )
    .await;
    f.wait_not_ready("other", "DuplicateSubscription").await;
    assert!(
        f.get::<Deployment>(&format!("other-{}", f.im))
            .await
            .is_none()
    );
    assert_eq!(f.versions("s", &video).await, before);

    // Fixing the input converges again.
    f.apply_sub("s", &good).await;
    f.wait_available("s").await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_window_raises_the_floor_on_time_and_lets_it_fall() {
    let f = Fixture::new("season").await;
    let video = format!("w-{}", f.video);
    // A window starting at the next full minute (UTC) and lasting one minute.
    let window = Window::at_next_full_minute(Duration::from_secs(5), 1);
    let spec = format!(
        "  tenantId: w\n  modules:\n    - {{name: {}, concurrency: 400}}\n  seasons:\n    timeZone: UTC\n    windows:\n      - {{name: rush, days: [{}], start: '{}', end: '{}', concurrencyPercent: 200, floorPercent: 50}}\n",
        f.video,
        window.day(),
        window.start_hhmm(),
        window.end_hhmm(),
    );
    f.apply_sub("w", &spec).await;
    let s = f
        .wait_status("w", "planned", |s| {
            s.status.as_ref().is_some_and(|st| !st.modules.is_empty())
        })
        .await;
    let st = s.status.unwrap();
    assert!(st.active_windows.is_empty());
    assert_eq!(
        st.next_transition.as_deref(),
        Some(window.start_rfc3339().as_str())
    );
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 10)));

    // In the window: ceiling 200% (20 replicas), floor 50% (10), pods warm before load.
    wait_for("window on", Duration::from_secs(100), || async {
        (f.hpa_numbers(&video).await? == (10, 20)).then_some(())
    })
    .await;
    assert!(
        jiff::Timestamp::now() >= window.start.timestamp(),
        "window applied before it started"
    );
    let s = f
        .wait_status("w", "rush active", |s| {
            s.status.as_ref().unwrap().active_windows == vec!["rush".to_string()]
        })
        .await;
    assert_eq!(f.quota_hard("w", "pods").await.as_deref(), Some("25"));
    drop(s);
    wait_for("10 pods running", Duration::from_secs(60), || async {
        let d: Deployment = f.get(&video).await?;
        (d.status?.ready_replicas? >= 10).then_some(())
    })
    .await;

    // After it: back to the plain plan.
    wait_for("window off", Duration::from_secs(100), || async {
        (f.hpa_numbers(&video).await? == (1, 10)).then_some(())
    })
    .await;
    assert!(
        jiff::Timestamp::now() >= window.end.timestamp(),
        "window ended early"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_again_grows_a_series_instead_of_a_new_object() {
    use tenant_capacity_operator::controller::events::{EventType, Events};
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "events").await;
    let regarding = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("capacity.tenancy.dev/v1alpha1".into()),
        kind: Some("TenantSubscription".into()),
        namespace: Some(ns.name.clone()),
        name: Some("acme".into()),
        uid: Some("00000000-0000-0000-0000-000000000001".into()),
        ..Default::default()
    };
    let events = Events::new(client.clone(), "tenant-capacity-operator", None);
    let mut verbs = Vec::new();
    for _ in 0..3 {
        verbs.push(
            events
                .publish(
                    &regarding,
                    EventType::Warning,
                    "ExceedsPlan",
                    "Reconcile",
                    "too big",
                )
                .await
                .unwrap(),
        );
    }
    assert_eq!(verbs, ["create", "patch", "patch"]);
    events
        .publish(
            &regarding,
            EventType::Normal,
            "Available",
            "Reconcile",
            "ok",
        )
        .await
        .unwrap();
    let list = Api::<Event>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    let by_reason = |r: &str| {
        list.items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(r))
            .collect::<Vec<_>>()
    };
    let exceeds = by_reason("ExceedsPlan");
    assert_eq!(
        exceeds.len(),
        1,
        "one object for three repeats: {exceeds:?}"
    );
    let series = exceeds[0].series.as_ref().expect("series");
    assert_eq!(series.count, 3);
    assert_eq!(exceeds[0].note.as_deref(), Some("too big"));
    assert_eq!(exceeds[0].type_.as_deref(), Some("Warning"));
    assert_eq!(
        exceeds[0].reporting_controller.as_deref(),
        Some("tenant-capacity-operator")
    );
    let available = by_reason("Available");
    assert_eq!(available.len(), 1);
    assert!(available[0].series.is_none());
    assert_eq!(events.remembered(), 2);
    ns.delete().await;
}

/// A ValidatingWebhookConfiguration for HPAs in one namespace whose
/// endpoint cannot be reached (failurePolicy Fail): every HPA write there
/// fails with the API server's 500, a failure that passes, not a refusal.
/// Deleted when dropped.
struct UnreachableWebhook(String);

impl UnreachableWebhook {
    async fn install(client: &kube::Client, namespace: &str) -> Self {
        let name = unique("unreachable");
        kubectl(&["label", "namespace", namespace, &format!("{name}=on")]);
        apply_yaml(
            client,
            None,
            &format!(
                "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: {name}}}\nwebhooks:\n- name: {name}.test.invalid\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  failurePolicy: Fail\n  timeoutSeconds: 1\n  clientConfig: {{url: 'https://127.0.0.1:1/never'}}\n  namespaceSelector: {{matchLabels: {{{name}: 'on'}}}}\n  rules: [{{apiGroups: [autoscaling], apiVersions: ['*'], operations: [CREATE, UPDATE], resources: [horizontalpodautoscalers]}}]\n"
            ),
        )
        .await;
        // The API server loads webhooks from its own watch: wait until an
        // HPA write there (a dry run) meets it.
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
        let probe: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "webhook-probe"},
            "spec": {"maxReplicas": 1, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "none"}}
        }))
        .unwrap();
        wait_for("the webhook in force", T, || async {
            let params = kube::api::PostParams {
                dry_run: true,
                ..Default::default()
            };
            match hpas.create(&params, &probe).await {
                Err(kube::Error::Api(s)) if s.message.contains("failed calling webhook") => {
                    Some(())
                }
                _ => None,
            }
        })
        .await;
        Self(name)
    }
}

impl Drop for UnreachableWebhook {
    fn drop(&mut self) {
        let _ = tools::run(
            "kubectl",
            &[
                "delete",
                "validatingwebhookconfiguration",
                &self.0,
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// The status goes out together with the children's writes. When one of
/// those writes then fails (not refused: an admission webhook that cannot
/// be reached), the status that said the change was applied is put back at
/// once, the retries write the children first and the status after (so it
/// does not flap at every retry), and once the writes go through the change
/// is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_written_with_children_whose_writes_failed_is_put_back() {
    let f = Fixture::new("together").await;
    let video = format!("t-{}", f.video);
    let spec = |c: u32| {
        format!(
            "  tenantId: t\n  modules:\n    - {{name: {}, concurrency: {c}}}\n",
            f.video
        )
    };
    f.apply_sub("t", &spec(400)).await;
    let before = f
        .wait_status("t", "first plan applied", |s| {
            s.status.as_ref().is_some_and(|st| !st.modules.is_empty())
        })
        .await;
    let first = before.metadata.generation.unwrap();
    wait_for("HPA 1..10", T, || async {
        (f.hpa_numbers(&video).await? == (1, 10)).then_some(())
    })
    .await;
    let webhook = UnreachableWebhook::install(&f.client, &f.ns.name).await;

    // Every resourceVersion of the subscription and the observedGeneration
    // its status said then.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let watching = {
        let (subs, seen) = (f.subs(), seen.clone());
        let params = kube::api::WatchParams::default().fields("metadata.name=t");
        let from = f.subs().get("t").await.unwrap().resource_version().unwrap();
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut events = subs.watch(&params, &from).await.unwrap().boxed();
            while let Some(Ok(kube::api::WatchEvent::Modified(s))) = events.next().await {
                let rv = s.resource_version().unwrap_or_default();
                if let Some(g) = s.status.and_then(|st| st.observed_generation) {
                    seen.lock().unwrap().push((rv, g));
                }
            }
        })
    };
    let failures = || {
        support::process::sum_in(
            &f.operator.metrics.encode(),
            "tenant_capacity_reconcile_failures_total",
        )
    };
    let failed_before = failures();
    let changed = f.apply_sub("t", &spec(800)).await;
    let second = changed.metadata.generation.unwrap();
    assert!(second > first);
    // The first try (together) and two retries (one after the other) fail.
    wait_for("three failed reconciles", T, || async {
        (failures() >= failed_before + 3).then_some(())
    })
    .await;
    let now = wait_for("the status put back", T, || async {
        let s = f.subs().get("t").await.ok()?;
        (s.status.as_ref()?.observed_generation == Some(first)).then_some(s)
    })
    .await;
    // Every write until now is in the watch's history.
    let rv = now.resource_version().unwrap();
    let history = wait_for("the watch caught up", T, || async {
        let seen = seen.lock().unwrap().clone();
        seen.iter().any(|(r, _)| *r == rv).then_some(seen)
    })
    .await;
    let generations: Vec<i64> = history.iter().map(|(_, g)| *g).collect();
    let claimed = generations.iter().filter(|g| **g == second).count();
    assert_eq!(
        claimed, 1,
        "the status said the change was applied once (together with the failed writes), then not again while they fail: {generations:?}"
    );
    let at = generations.iter().position(|g| *g == second).unwrap();
    assert!(
        generations[at + 1..].contains(&first),
        "put back right after: {generations:?}"
    );
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 10)));

    drop(webhook);
    f.wait_status("t", "the change applied", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.observed_generation == Some(second))
    })
    .await;
    wait_for("HPA max 20", T, || async {
        (f.hpa_numbers(&video).await? == (1, 20)).then_some(())
    })
    .await;
    watching.abort();
    f.finish().await;
}
