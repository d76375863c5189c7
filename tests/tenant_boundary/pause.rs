//! Pause and a spec the plan no longer covers hold every rise, but never
//! keep capacity the plan stopped selling: a peak kept by pausing during a
//! window ends with the window, and a lower plan binds a paused
//! subscription too.

use std::time::Duration;

use crate::{
    Tenant,
    support::{Window, apply_yaml, unique, wait_for},
};

fn plan_yaml(name: &str, module: &str, max: i64) -> String {
    format!(
        "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {{name: {name}}}\nspec:\n  modules:\n    - {{name: {module}, maxConcurrency: {max}, maxPeakConcurrency: {}}}\n",
        max * 3
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_in_a_peak_window_does_not_keep_the_peak() {
    let t = Tenant::new("tb-pause").await;
    let f = &t.f;
    let plan = unique("peak");
    apply_yaml(&f.client, None, &plan_yaml(&plan, &f.video, 1000)).await;
    let video = format!("acme-{}", f.video);
    let w = Window::at_next_full_minute(Duration::from_secs(10), 1);
    let spec = |paused: bool| {
        format!(
            "  tenantId: acme\n  plan: {plan}\n  paused: {paused}\n  modules:\n    - {{name: {}, concurrency: 400}}\n  seasons:\n    timeZone: UTC\n    windows:\n      - {{name: peak, days: [{}], start: '{}', end: '{}', concurrencyPercent: 200, floorPercent: 20}}\n",
            f.video,
            w.day(),
            w.start_hhmm(),
            w.end_hhmm()
        )
    };
    f.apply_sub("acme", &spec(false)).await;
    f.wait_available("acme").await;
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 10)));
    // The window opens: 800 sessions, 20 replicas, a floor of 4.
    let long = Duration::from_secs(180);
    wait_for("the peak in force", long, || async {
        (f.hpa_numbers(&video).await? == (4, 20)).then_some(())
    })
    .await;
    // Paused at the peak: the peak ends with the window all the same.
    f.apply_sub("acme", &spec(true)).await;
    f.wait_paused("acme").await;
    assert_eq!(f.hpa_numbers(&video).await, Some((4, 20)));
    wait_for("the ceiling back to what was bought", long, || async {
        (f.hpa_numbers(&video).await? == (1, 10)).then_some(())
    })
    .await;
    wait_for("the quota back with it", long, || async {
        (f.quota_hard("acme", "pods").await? == "13").then_some(())
    })
    .await;

    // The provider lowers the plan under the paused subscription: it binds.
    apply_yaml(&f.client, None, &plan_yaml(&plan, &f.video, 200)).await;
    wait_for("the ceiling lowered to the plan", long, || async {
        (f.hpa_numbers(&video).await? == (1, 5)).then_some(())
    })
    .await;
    let s = f.wait_paused("acme").await;
    let m = &s.status.unwrap().modules[0];
    assert_eq!((m.max_replicas, m.concurrency), (Some(5), Some(200)));
    t.f.finish().await;
}
