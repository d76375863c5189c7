//! A lowered ceiling comes down in steps, each waiting a period after the
//! HPA's last scale. The namespace admin can make the HPA scale whenever it
//! likes: scaling the module's Deployment by hand (the scale subresource is
//! the admin's), which the HPA scales straight back. Done every few seconds
//! this must not hold the old ceiling (and the quota sized to it) up.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;

use crate::{Tenant, support::wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_the_deployment_by_hand_does_not_hold_a_lowered_ceiling_up() {
    let t = Tenant::new("tb-ramp").await;
    let f = &t.f;
    let video = format!("acme-{}", f.video);
    // 400 sessions, 10 replicas, all warm (a floor of 100 % all week); the
    // fixture's profile steps down at most 1 pod per 15 s.
    f.apply_sub(
        "acme",
        &format!(
            "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 400}}\n  seasons:\n    timeZone: UTC\n    windows:\n      - {{name: warm, days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun], floorPercent: 100}}\n",
            f.video
        ),
    )
    .await;
    f.wait_available("acme").await;
    wait_for("10 ready replicas", Duration::from_secs(120), || async {
        let d: Deployment = f.get(&video).await?;
        (d.status?.ready_replicas? == 10).then_some(())
    })
    .await;
    // The plan comes down to 80 sessions: 2 replicas, 8 pods above them.
    f.apply_sub(
        "acme",
        &format!(
            "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 80}}\n",
            f.video
        ),
    )
    .await;
    let lowered = Instant::now();
    // The attack: every 3 s, scale the Deployment back up to 10 by hand.
    let ns = t.ns().to_string();
    let attacker = video.clone();
    let attack = tokio::task::spawn_blocking(move || {
        let mut done = 0;
        let mut last_error = String::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(400) {
            let out = crate::support::tools::try_kubectl(&[
                "--as",
                crate::TENANT_ADMIN,
                "-n",
                &ns,
                "scale",
                "deployment",
                &attacker,
                "--replicas=10",
            ]);
            // The built-in admin role is aggregated asynchronously: a
            // refusal now and then is counted, not fatal (asserted below).
            match out {
                Ok(_) => done += 1,
                Err(e) if e.contains("NotFound") || e.contains("not found") => break,
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_secs(3));
        }
        (done, last_error)
    });
    // 8 steps of one pod, each within two periods (2 × 16 s) of the last.
    wait_for(
        "the ceiling down to 2 under the attack",
        Duration::from_secs(8 * 32 + 60),
        || async { (f.hpa_numbers(&video).await?.1 == 2).then_some(()) },
    )
    .await;
    let took = lowered.elapsed();
    f.wait_status("acme", "the ramp over", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.modules
                .iter()
                .all(|m| m.ramping_down.is_none() && m.max_replicas == Some(2))
        })
    })
    .await;
    assert_eq!(f.quota_hard("acme", "pods").await.as_deref(), Some("3"));
    t.f.finish().await;
    let (scaled, last_error) = attack.await.unwrap();
    eprintln!(
        "[tb-ramp] ceiling 10 → 2 in {:.0}s while the admin scaled by hand {scaled} times",
        took.as_secs_f64()
    );
    assert!(
        scaled >= 5,
        "the attack ran: {scaled} scales (last refusal: {last_error})"
    );
}
