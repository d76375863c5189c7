//! Sessions as the demand signal, end to end: live session counts written
//! per pod to the custom metrics API (the local cluster's adapter) drive
//! the real HPA controller up to the ceiling the tenant bought; the status
//! speaks in sessions; when the load falls, and when a seasonal window
//! ends under load, pods leave no faster than the module's scale-down pace.
//!
//! Run with `cargo test --test sessions -- --nocapture` to see the timings.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler};
use kube::Api;
use support::{sessions::SessionLoad, *};
use tenant_capacity_operator::{
    api::{ModuleStatus, TenantSubscription},
    render::{LABEL_MODULE, LABEL_SUBSCRIPTION},
};

/// The module's scale-down pace in this test: at most 1 pod (or 10 %) per
/// PERIOD, after a 10 s stabilisation.
const PERIOD: u64 = 15;
/// Scale-outs: a few HPA syncs (5 s) after the adapter serves new values.
const SCALE: Duration = Duration::from_secs(120);

fn log(msg: impl AsRef<str>) {
    eprintln!("[sessions] {}", msg.as_ref());
}

fn module<'a>(s: &'a TenantSubscription, name: &str) -> Option<&'a ModuleStatus> {
    s.status.as_ref()?.modules.iter().find(|m| m.name == name)
}

/// The Deployment's replicas as the HPA sets them, sampled every 500 ms
/// with the time of the sample, until dropped.
struct Replicas {
    samples: Arc<Mutex<Vec<(Instant, i32)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replicas {
    fn record(api: Api<Deployment>, name: String) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let shared = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                match api.get_opt(&name).await {
                    Ok(Some(d)) => {
                        if let Some(n) = d.spec.and_then(|s| s.replicas) {
                            shared.lock().unwrap().push((Instant::now(), n));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("[sessions] reading Deployment {name}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { samples, task }
    }

    fn now(&self) -> Option<i32> {
        self.samples.lock().unwrap().last().map(|s| s.1)
    }

    /// The largest fall of the replicas within any span shorter than
    /// `span`, over the samples taken since `from`.
    fn largest_drop_within(&self, from: Instant, span: Duration) -> i32 {
        let samples = self.samples.lock().unwrap();
        let s: Vec<&(Instant, i32)> = samples.iter().filter(|s| s.0 >= from).collect();
        let mut worst = 0;
        for (i, a) in s.iter().enumerate() {
            for b in &s[i + 1..] {
                if b.0.duration_since(a.0) >= span {
                    break;
                }
                worst = worst.max(a.1 - b.1);
            }
        }
        worst
    }

    /// The distinct values seen since `from`, in order.
    fn steps_since(&self, from: Instant) -> Vec<i32> {
        let mut steps: Vec<i32> = Vec::new();
        for (t, n) in self.samples.lock().unwrap().iter() {
            if *t >= from && steps.last() != Some(n) {
                steps.push(*n);
            }
        }
        steps
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_drive_the_hpa_to_the_ceiling_and_pods_leave_at_the_scale_down_pace() {
    let f = Fixture::new("sessions").await;
    let rtc = unique("rtc");
    // 10 sessions a replica, the HPA aiming at 80 %: 8 a pod.
    apply_yaml(
        &f.client,
        None,
        &support::sessions::profile_yaml(
            &rtc,
            10,
            &format!(
                "    scaleDown: {{stabilizationSeconds: 10, periodSeconds: {PERIOD}, maxPercent: 10, maxPods: 1}}"
            ),
            "  port: 8443\n  terminationGracePeriodSeconds: 30\n  preStop:\n    httpGet: {path: /drain, port: 8080}",
        ),
    )
    .await;
    let sub = "live";
    let child = format!("{sub}-{rtc}");
    // 20 sessions bought (2 replicas); a window of 500 % (100 sessions, 10
    // replicas) opens at the next full minute and lasts 4 minutes.
    let window = Window::at_next_full_minute(Duration::from_secs(15), 4);
    f.apply_sub(
        sub,
        &format!(
            "  tenantId: live\n  modules:\n    - {{name: {rtc}, concurrency: 20}}\n  seasons:\n    timeZone: UTC\n    windows:\n      - {{name: festival, days: [{}], start: '{}', end: '{}', concurrencyPercent: 500}}\n",
            window.day(),
            window.start_hhmm(),
            window.end_hhmm(),
        ),
    )
    .await;
    f.wait_available(sub).await;

    // What the operator rendered: the Pods metric at 80 % of a replica, a
    // bounded scale-down, the drain hook.
    let h: HorizontalPodAutoscaler = f.get(&child).await.unwrap();
    let h = serde_json::to_value(&h).unwrap();
    assert_eq!(
        h["spec"]["metrics"],
        serde_json::json!([{"type": "Pods", "pods": {"metric": {"name": "rtc_sessions_active"},
            "target": {"type": "AverageValue", "averageValue": "8"}}}])
    );
    assert_eq!(
        h["spec"]["behavior"]["scaleDown"]["policies"],
        serde_json::json!([{"type": "Pods", "value": 1, "periodSeconds": PERIOD},
            {"type": "Percent", "value": 10, "periodSeconds": PERIOD}])
    );
    let d: Deployment = f.get(&child).await.unwrap();
    let pod = serde_json::to_value(d.spec.unwrap().template.spec.unwrap()).unwrap();
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        pod["containers"][0]["lifecycle"]["preStop"]["httpGet"]["path"],
        "/drain"
    );

    // 300 live sessions: the HPA wants ⌈300 / 8⌉ = 38 replicas, the tenant
    // bought 2.
    let load = SessionLoad::start(
        &f.client,
        &f.ns.name,
        &format!("{LABEL_SUBSCRIPTION}={sub},{LABEL_MODULE}={rtc}"),
        support::sessions::METRIC,
        Duration::from_secs(2),
    );
    let replicas = Replicas::record(Api::namespaced(f.client.clone(), &f.ns.name), child.clone());
    load.set(300);
    let s = f
        .wait_status_within(
            sub,
            "CapacityLimited in sessions at 2 replicas",
            SCALE,
            |s| {
                condition(s, "CapacityLimited").is_some_and(|c| {
                    c.status == "True"
                    && c.message.contains(&format!(
                        "{rtc}: 300 sessions live, ceiling 20 (HPA wants 38 replicas, ceiling 2)"
                    ))
                })
            },
        )
        .await;
    log(format!(
        "before the window: {}",
        condition(&s, "CapacityLimited").unwrap().message
    ));

    // The window opens: the real HPA scales on sessions up to the new
    // ceiling, 10 replicas, and no further.
    let opened = wait_for(
        "10 ready replicas in the window",
        SCALE + Duration::from_secs(90),
        || async {
            let d: Deployment = f.get(&child).await?;
            (d.status?.ready_replicas? == 10).then(Instant::now)
        },
    )
    .await;
    let s = f
        .wait_status_within(
            sub,
            "CapacityLimited in sessions at 10 replicas",
            SCALE,
            |s| {
                condition(s, "CapacityLimited").is_some_and(|c| {
                    c.message.contains(&format!(
                        "{rtc}: 300 sessions live, ceiling 100 (HPA wants 38 replicas, ceiling 10)"
                    ))
                })
            },
        )
        .await;
    log(format!(
        "window open, 10 replicas: {}",
        condition(&s, "CapacityLimited").unwrap().message
    ));
    let d: Deployment = f.get(&child).await.unwrap();
    assert_eq!(
        d.spec.and_then(|s| s.replicas),
        Some(10),
        "no further than the ceiling; recorded {:?}",
        replicas.steps_since(opened - Duration::from_secs(120))
    );

    // The HPA's policies count from the pods at a period's start, scale-ups
    // included: let a period pass since its last scale so that its bound
    // is one pod from 10.
    wait_for(
        "a period since the HPA's last scale",
        Duration::from_secs(2 * PERIOD) + T,
        || async {
            let h: HorizontalPodAutoscaler = f.get(&child).await?;
            let last = h.status?.last_scale_time?.0;
            (jiff::Timestamp::now().duration_since(last)
                > jiff::SignedDuration::from_secs(PERIOD as i64 + 1))
            .then_some(())
        },
    )
    .await;
    // The load falls to what 8 replicas carry (64 = 8 × 8): the HPA's own
    // scale-down, one pod per period at most.
    load.set(64);
    let fell = Instant::now();
    wait_for("8 replicas after the load fell", SCALE, || async {
        (replicas.now()? == 8).then_some(())
    })
    .await;
    let took = fell.elapsed();
    let steps = replicas.steps_since(fell);
    log(format!(
        "load 300 → 64: replicas {steps:?} in {:.1}s",
        took.as_secs_f64()
    ));
    assert_eq!(steps, [10, 9, 8], "one pod at a time");
    assert!(
        took >= Duration::from_secs(PERIOD),
        "2 pods left within one {PERIOD}s period ({took:?})"
    );
    assert!(
        jiff::Timestamp::now() < window.end.timestamp(),
        "the load fell too slowly: the window ended {:.0}s after it opened",
        opened.elapsed().as_secs_f64()
    );

    // The window ends with 8 pods carrying 64 live sessions, and the
    // ceiling falls to 2: it comes down a step per period, not at once.
    let to_end = window
        .end
        .duration_since(&jiff::Zoned::now())
        .as_secs()
        .max(0) as u64;
    let s = f
        .wait_status_within(
            sub,
            "ramping down after the window",
            Duration::from_secs(to_end) + T,
            |s| module(s, &rtc).is_some_and(|m| m.ramping_down.is_some()),
        )
        .await;
    let ended = Instant::now();
    assert!(
        jiff::Timestamp::now() >= window.end.timestamp(),
        "ramping before the window ended"
    );
    let m = module(&s, &rtc).unwrap();
    let ramp = m.ramping_down.clone().unwrap();
    assert_eq!(ramp.to_max_replicas, 2);
    // Down to the 8 that run at once (when the HPA's own last scale-down
    // was less than a period ago), or already a first step of one pod.
    assert!(
        matches!(m.max_replicas, Some(7 | 8)),
        "the first ceiling of the ramp: {m:?}"
    );
    assert!(
        m.message
            .as_deref()
            .is_some_and(|t| t.starts_with(&format!("{rtc}: ramping down to 2 replicas until "))),
        "{:?}",
        m.message
    );
    assert_eq!(
        condition(&s, "Reconciling").map(|c| c.reason.as_str()),
        Some("RampingDown")
    );
    log(format!(
        "window ended: {}; rampingDown {ramp:?}",
        m.message.as_deref().unwrap()
    ));
    wait_for(
        "2 replicas at the end of the ramp",
        Duration::from_secs(8 * PERIOD) + T,
        || async { (replicas.now()? == 2).then_some(()) },
    )
    .await;
    let took = ended.elapsed();
    let steps = replicas.steps_since(ended - Duration::from_secs(1));
    let worst = replicas.largest_drop_within(
        ended - Duration::from_secs(1),
        Duration::from_secs(PERIOD - 1),
    );
    log(format!(
        "ramp 8 → 2: replicas {steps:?} in {:.1}s; largest drop within {}s: {worst}",
        took.as_secs_f64(),
        PERIOD - 1
    ));
    assert_eq!(
        worst, 1,
        "more than one pod left within one {PERIOD}s period: {steps:?}"
    );
    assert!(
        took >= Duration::from_secs(5 * PERIOD - 5),
        "6 steps of one pod, each a period after the last, took only {took:?}"
    );
    let s = f
        .wait_status(sub, "the ramp over", |s| {
            module(s, &rtc).is_some_and(|m| m.ramping_down.is_none() && m.max_replicas == Some(2))
        })
        .await;
    assert_ne!(
        condition(&s, "Reconciling").map(|c| c.reason.as_str()),
        Some("RampingDown")
    );
    assert_eq!(
        f.quota_hard(sub, "pods").await.as_deref(),
        Some("3"),
        "the quota follows"
    );
    drop(replicas);
    drop(load);
    f.finish().await;
}
