//! Plans, shared calendars, pause, safe downgrades, data retention and
//! metering against the real local control plane.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{PersistentVolumeClaim, Pod},
    events::v1::Event,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
};
use support::*;

fn plan_yaml(name: &str, module: &str, max: i64) -> String {
    format!(
        "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {{name: {name}}}\nspec:\n  modules:\n    - {{name: {module}, maxConcurrency: {max}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_plan_rechecks_its_subscriptions_and_leaves_children_alone() {
    let f = Fixture::new("plan").await;
    let plan = unique("pro");
    let video = format!("p-{}", f.video);
    let video_only = |concurrency: i64| {
        format!(
            "  tenantId: p\n  plan: {plan}\n  modules:\n    - {{name: {}, concurrency: {concurrency}}}\n",
            f.video
        )
    };
    apply_yaml(&f.client, None, &plan_yaml(&plan, &f.video, 2000)).await;
    f.apply_sub("p", &video_only(1500)).await;
    f.wait_available("p").await;
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 38)));

    // The plan shrinks under the subscription: refused and named, and the
    // ceiling comes down to what the plan now sells (1000 / 40 = 25); the
    // Deployment is not touched.
    apply_yaml(&f.client, None, &plan_yaml(&plan, &f.video, 1000)).await;
    let s = f.wait_not_ready("p", "ExceedsPlan").await;
    let msg = condition(&s, "Ready").unwrap().message.clone();
    assert!(
        msg.contains(&f.video) && msg.contains("maxConcurrency 1000"),
        "{msg}"
    );
    wait_for("the ceiling lowered to the plan", T, || async {
        (f.hpa_numbers(&video).await? == (1, 25)).then_some(())
    })
    .await;
    assert_eq!(
        f.quota_hard("p", "pods").await.as_deref(),
        Some("32"),
        "25 pods and their surge"
    );
    let before = f.versions("p", &video).await;
    let events: Api<Event> = Api::namespaced(f.client.clone(), &f.ns.name);
    wait_for("ExceedsPlan event", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ExceedsPlan"))
            .then_some(())
    })
    .await;
    // A change made while refused is not applied either.
    f.apply_sub("p", &video_only(1800)).await;
    let s = f.wait_not_ready("p", "ExceedsPlan").await;
    assert!(
        condition(&s, "Ready")
            .unwrap()
            .message
            .contains("concurrency 1800")
    );
    assert_eq!(
        f.versions("p", &video).await,
        before,
        "a refused subscription's children are not raised"
    );

    // A module the plan does not sell.
    f.apply_sub(
        "p",
        &format!("  tenantId: p\n  plan: {plan}\n  modules:\n    - {{name: {}, concurrency: 500}}\n    - {{name: {}, concurrency: 10}}\n", f.video, f.im),
    )
    .await;
    let s = f.wait_not_ready("p", "ModuleNotInPlan").await;
    assert!(condition(&s, "Ready").unwrap().message.contains(&f.im));

    // The plan grows: the subscription is applied at once.
    f.apply_sub("p", &video_only(1800)).await;
    apply_yaml(&f.client, None, &plan_yaml(&plan, &f.video, 3000)).await;
    f.wait_available("p").await;
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 45)));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_calendar_switches_tenants_in_and_out_of_its_window() {
    let f = Fixture::new("cal").await;
    let cal = unique("cal");
    let video = format!("c-{}", f.video);
    let calendar = |pct: i32, window: &str| {
        format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: CapacityCalendar\nmetadata: {{name: {cal}}}\nspec:\n  timeZone: UTC\n  windows:\n    - {{name: always, days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun], concurrencyPercent: {pct}}}\n{window}"
        )
    };
    apply_yaml(&f.client, None, &calendar(100, "")).await;
    f.apply_sub(
        "c",
        &format!("  tenantId: c\n  modules:\n    - {{name: {}, concurrency: 400}}\n  seasons: {{calendars: [{cal}]}}\n", f.video),
    )
    .await;
    f.wait_status("c", "always active and Ready", |s| {
        is(s, "Ready", "True", "Available")
            && s.status.as_ref().unwrap().active_windows == vec![format!("{cal}/always")]
    })
    .await;
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 10)));

    // Editing the calendar re-plans the subscription right away.
    apply_yaml(&f.client, None, &calendar(150, "")).await;
    wait_for("ceiling 150%", T, || async {
        (f.hpa_numbers(&video).await? == (1, 15)).then_some(())
    })
    .await;

    // A window starting at the next full minute, for one minute.
    let window = Window::at_next_full_minute(Duration::from_secs(5), 1);
    let rush = format!(
        "    - {{name: rush, days: [{}], start: '{}', end: '{}', floorPercent: 40}}\n",
        window.day(),
        window.start_hhmm(),
        window.end_hhmm()
    );
    apply_yaml(&f.client, None, &calendar(150, &rush)).await;
    let s = f
        .wait_status("c", "next transition known", |s| {
            s.status.as_ref().unwrap().next_transition.is_some()
        })
        .await;
    assert_eq!(
        s.status.unwrap().next_transition.as_deref(),
        Some(window.start_rfc3339().as_str())
    );
    wait_for(
        "in the window: floor 40% of 15",
        Duration::from_secs(100),
        || async { (f.hpa_numbers(&video).await? == (6, 15)).then_some(()) },
    )
    .await;
    assert!(jiff::Timestamp::now() >= window.start.timestamp());
    let s = f
        .wait_status("c", "rush listed", |s| {
            s.status
                .as_ref()
                .unwrap()
                .active_windows
                .contains(&format!("{cal}/rush"))
        })
        .await;
    drop(s);
    wait_for("out of the window", Duration::from_secs(100), || async {
        (f.hpa_numbers(&video).await? == (1, 15)).then_some(())
    })
    .await;
    assert!(jiff::Timestamp::now() >= window.end.timestamp());

    // A calendar that disappears is named, and the children stay.
    Api::<tenant_capacity_operator::api::CapacityCalendar>::all(f.client.clone())
        .delete(&cal, &DeleteParams::default())
        .await
        .unwrap();
    f.wait_not_ready("c", "CalendarNotFound").await;
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 15)));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_rises_lets_reductions_through_and_unpause_converges() {
    let f = Fixture::new("pause").await;
    let video = format!("z-{}", f.video);
    let spec = |c: i64, paused: bool| {
        format!(
            "  tenantId: z\n  paused: {paused}\n  modules:\n    - {{name: {}, concurrency: {c}}}\n",
            f.video
        )
    };
    f.apply_sub("z", &spec(400, false)).await;
    f.wait_available("z").await;
    f.apply_sub("z", &spec(800, true)).await;
    let s = f.wait_paused("z").await;
    assert!(condition(&s, "Ready").unwrap().message.contains("paused"));
    assert_eq!(
        f.hpa_numbers(&video).await,
        Some((1, 10)),
        "paused: the new concurrency must not be applied"
    );
    // A child deleted while paused comes back as it was (paused holds
    // capacity where it is; it does not give up the autoscaler).
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(f.client.clone(), &f.ns.name);
    let uid = hpas.get(&video).await.unwrap().metadata.uid;
    hpas.delete(&video, &DeleteParams::default()).await.unwrap();
    f.apply_sub("z", &spec(900, true)).await;
    wait_for("the HPA back, at the paused numbers", T, || async {
        let h = f.get::<HorizontalPodAutoscaler>(&video).await?;
        (h.metadata.uid != uid && h.spec.max_replicas == 10).then_some(())
    })
    .await;
    f.wait_paused("z").await;
    // A lower concurrency while paused takes effect.
    f.apply_sub("z", &spec(200, true)).await;
    wait_for("the ceiling lowered while paused", T, || async {
        (f.hpa_numbers(&video).await? == (1, 5)).then_some(())
    })
    .await;

    f.apply_sub("z", &spec(900, false)).await;
    wait_for("converged after unpause", T, || async {
        (f.hpa_numbers(&video).await? == (1, 23)).then_some(())
    })
    .await;
    f.wait_available("z").await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_kills_no_pod_before_the_drain_ends_and_data_follows_retention() {
    let f = Fixture::new("down").await;
    let video = format!("k-{}", f.video);
    let im = format!("k-{}", f.im);
    let ns = f.ns.name.clone();
    // Profiles in the fixture have no grace period; give the video one.
    apply_yaml(
        &f.client,
        None,
        &profile_yaml(
            &f.video,
            "  port: 8443\n  terminationGracePeriodSeconds: 900\n  scaling: {cpuUtilization: 65}",
        ),
    )
    .await;
    let pvc = |name: &str, module: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\n  labels: {{capacity.tenancy.dev/subscription: k, capacity.tenancy.dev/module: {module}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n"
        )
    };
    apply_yaml(&f.client, Some(&ns), &pvc("video-recordings", &f.video)).await;
    apply_yaml(&f.client, Some(&ns), &pvc("im-history", &f.im)).await;
    let spec = |video_on: bool, im_on: bool, retention: &str| {
        format!(
            "  tenantId: k\n  downgrade: {{drainSeconds: 8, dataRetention: {retention}}}\n  modules:\n    - {{name: {}, concurrency: 80, enabled: {video_on}}}\n    - {{name: {}, concurrency: 100, enabled: {im_on}}}\n",
            f.video, f.im
        )
    };
    f.apply_sub("k", &spec(true, true, "Retain")).await;
    f.wait_available("k").await;
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), &ns);
    let module_pods = |m: String| {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels(&format!("capacity.tenancy.dev/module={m}")))
                .await
                .unwrap()
                .items
        }
    };
    let before = module_pods(f.video.clone()).await;
    assert!(!before.is_empty());
    for p in &before {
        assert_eq!(
            p.spec.as_ref().unwrap().termination_grace_period_seconds,
            Some(900),
            "pods get the profile's grace"
        );
    }

    // Switching video off: it drains for 8 seconds, every pod untouched meanwhile.
    f.apply_sub("k", &spec(false, true, "Retain")).await;
    let s = f.wait_draining("k", &f.video).await;
    let deadline: jiff::Timestamp = s
        .status
        .unwrap()
        .modules
        .iter()
        .find(|m| m.name == f.video)
        .unwrap()
        .drain_deadline
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let mut checks = 0;
    while jiff::Timestamp::now() < deadline - jiff::SignedDuration::from_millis(500) {
        let now_pods = module_pods(f.video.clone()).await;
        for p in &before {
            let same = now_pods.iter().find(|q| q.metadata.uid == p.metadata.uid);
            let same = same
                .unwrap_or_else(|| panic!("pod {} removed before the drain ended", p.name_any()));
            assert!(
                same.metadata.deletion_timestamp.is_none(),
                "pod {} terminating before the drain ended",
                p.name_any()
            );
        }
        checks += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(checks >= 5, "the drain was observed only {checks} times");
    wait_for("video removed after the drain", T, || async {
        f.get::<Deployment>(&video).await.is_none().then_some(())
    })
    .await;
    assert!(jiff::Timestamp::now() >= deadline);
    // Retain: the module's data survives its removal.
    assert!(
        get_opt::<PersistentVolumeClaim>(&f.client, &ns, "video-recordings")
            .await
            .is_some()
    );

    // Delete: the module's data goes with it, and only that module's.
    f.apply_sub("k", &spec(false, false, "Delete")).await;
    wait_for("messaging removed", T, || async {
        f.get::<Deployment>(&im).await.is_none().then_some(())
    })
    .await;
    wait_for("messaging data deleted", T, || async {
        get_opt::<PersistentVolumeClaim>(&f.client, &ns, "im-history")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        get_opt::<PersistentVolumeClaim>(&f.client, &ns, "video-recordings")
            .await
            .is_some()
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_capacity_is_metered_per_tenant_and_module() {
    let f = Fixture::new("meter").await;
    f.apply_sub(
        "m",
        &format!(
            "  tenantId: m\n  modules:\n    - {{name: {}, concurrency: 100}}\n",
            f.im
        ),
    )
    .await;
    f.wait_available("m").await;
    let read = |name: &str| {
        let prefix = format!(
            "tenant_capacity_module_{name}_total{{namespace=\"{}\",subscription=\"m\",tenant=\"m\",module=\"{}\"}} ",
            f.ns.name, f.im
        );
        f.operator
            .metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse::<f64>().unwrap()))
    };
    // Two replicas (the profile's floor) metered every second.
    let (replica_s, session_s) = wait_for("metering", Duration::from_secs(20), || async {
        eprintln!(
            "{}",
            f.operator
                .metrics
                .encode()
                .lines()
                .filter(|l| l.contains("seconds_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let r = read("replica_seconds")?;
        (r >= 4.0).then(|| (r, read("session_capacity_seconds").unwrap()))
    })
    .await;
    // 40 sessions per replica: session-seconds are exactly 40 × replica-seconds.
    assert!(
        (session_s - 40.0 * replica_s).abs() < 1e-6 * session_s.max(1.0),
        "{session_s} vs {replica_s}"
    );
    f.finish().await;
}
