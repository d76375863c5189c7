//! End-to-end scenarios (issue #6, "capacity follows demand"): simulated load
//! on the fake nodes drives the real HorizontalPodAutoscaler, and the numbers
//! the operator derives (ceilings, floors, quota, status) are checked against
//! what the cluster actually does. Each scenario has its own namespace.
//!
//! Load is simulated with the kwok annotation `kwok.x-k8s.io/usage-cpu` on
//! running pods (the operator owns the pod template, so a background task
//! re-annotates pods as they appear). metrics-server reports a pod 10–20 s
//! after it starts and refreshes every 10 s; the HPA syncs every 5 s.
//!
//! Run with `cargo test --test scenarios -- --nocapture` to see the timings.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{Pod, ResourceQuota, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use support::*;
use tenant_capacity_operator::api::{ModuleState, ModuleStatus, TenantSubscription};

const USAGE_CPU: &str = "kwok.x-k8s.io/usage-cpu";
/// Enough for a scale-out: two metrics-server scrapes plus a few HPA syncs.
const SCALE: Duration = Duration::from_secs(120);

fn log(scenario: &str, msg: impl AsRef<str>) {
    eprintln!("[scenario {scenario}] {}", msg.as_ref());
}

// ---------------------------------------------------------------------------
// Simulated load

/// Keeps every pod of one module annotated with a simulated CPU use, including
/// pods the HPA creates later. Stops when dropped.
struct Load {
    cpu: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(client: &Client, ns: &str, sub: &str, module: &str, cpu: &str) -> Self {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let selector =
            format!("capacity.tenancy.dev/subscription={sub},capacity.tenancy.dev/module={module}");
        let cpu = Arc::new(Mutex::new(cpu.to_string()));
        let want = cpu.clone();
        let task = tokio::spawn(async move {
            loop {
                let value = want.lock().unwrap().clone();
                if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                    for p in list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                    {
                        if p.annotations().get(USAGE_CPU) != Some(&value) {
                            let body = serde_json::json!({"metadata": {"annotations": {USAGE_CPU: value}}});
                            let _ = pods
                                .patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&body))
                                .await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { cpu, task }
    }

    fn set(&self, cpu: &str) {
        *self.cpu.lock().unwrap() = cpu.to_string();
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// Watching what the cluster does between the assertions

#[derive(Debug, Clone, Default)]
struct Peaks {
    samples: u64,
    /// Most replicas the Deployment asked for (spec) and had (status).
    max_spec_replicas: i32,
    max_replicas: i32,
    /// Most pods the quota counted, and every sample where used > hard.
    max_used_pods: i64,
    over_quota: Vec<String>,
}

/// Samples one Deployment and one ResourceQuota a few times a second.
struct Sampler {
    peaks: Arc<Mutex<Peaks>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(client: &Client, ns: &str, deployment: &str, quota: &str) -> Self {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
        let (deployment, quota) = (deployment.to_string(), quota.to_string());
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let p = peaks.clone();
        let task = tokio::spawn(async move {
            loop {
                let d = deployments.get_opt(&deployment).await.ok().flatten();
                let q = quotas.get_opt(&quota).await.ok().flatten();
                {
                    let mut p = p.lock().unwrap();
                    p.samples += 1;
                    if let Some(d) = &d {
                        p.max_spec_replicas = p
                            .max_spec_replicas
                            .max(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0));
                        p.max_replicas = p
                            .max_replicas
                            .max(d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
                    }
                    if let Some(st) = q.and_then(|q| q.status)
                        && let (Some(used), Some(hard)) = (pods_of(&st.used), pods_of(&st.hard))
                    {
                        p.max_used_pods = p.max_used_pods.max(used);
                        if used > hard {
                            p.over_quota.push(format!("used {used} > hard {hard}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Self { peaks, task }
    }

    fn peaks(&self) -> Peaks {
        self.peaks.lock().unwrap().clone()
    }
}

type Quantities =
    std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;

fn pods_of(m: &Option<Quantities>) -> Option<i64> {
    m.as_ref()?.get("pods")?.0.parse().ok()
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// Reading state

async fn deployment(f: &Fixture, name: &str) -> Option<Deployment> {
    f.get::<Deployment>(name).await
}

/// (spec.replicas, status.replicas, status.readyReplicas)
fn counts(d: &Deployment) -> (i32, i32, i32) {
    let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let st = d.status.as_ref();
    (
        spec,
        st.and_then(|s| s.replicas).unwrap_or(0),
        st.and_then(|s| s.ready_replicas).unwrap_or(0),
    )
}

async fn ready_replicas(f: &Fixture, name: &str) -> Option<i32> {
    deployment(f, name).await.map(|d| counts(&d).2)
}

fn hpa_desired(h: &HorizontalPodAutoscaler) -> Option<i32> {
    h.status.as_ref().map(|s| s.desired_replicas)
}

fn hpa_cpu(h: &HorizontalPodAutoscaler) -> Option<i32> {
    h.status
        .as_ref()?
        .current_metrics
        .iter()
        .flatten()
        .find_map(|m| {
            m.resource
                .as_ref()
                .filter(|r| r.name == "cpu")
                .and_then(|r| r.current.average_utilization)
        })
}

fn hpa_condition(h: &HorizontalPodAutoscaler, type_: &str) -> Option<(String, String)> {
    let c = h
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn module<'a>(s: &'a TenantSubscription, name: &str) -> Option<&'a ModuleStatus> {
    s.status.as_ref()?.modules.iter().find(|m| m.name == name)
}

/// The replicas the CapacityLimited message says the HPA wants, if the
/// condition is True with a message of the documented form for this module.
fn limited_wants(s: &TenantSubscription, module: &str, ceiling: i32) -> Option<i32> {
    let c = condition(s, "CapacityLimited")?;
    if c.status != "True" {
        return None;
    }
    let prefix = format!("{module}: HPA wants ");
    let suffix = format!(" replicas, ceiling is {ceiling}");
    let part = c.message.split("; ").find(|p| p.starts_with(&prefix))?;
    part.strip_prefix(&prefix)?
        .strip_suffix(&suffix)?
        .parse()
        .ok()
}

/// Check `check` every 500 ms for `period`: an observation, not a synchronisation.
async fn holds_for<F, Fut>(what: &str, period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    while start.elapsed() < period {
        if let Err(e) = check().await {
            panic!(
                "{what} stopped holding after {:.1}s: {e}",
                start.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn video_spec(f: &Fixture, concurrency: i64) -> String {
    format!(
        "  tenantId: edu\n  modules:\n    - {{name: {}, concurrency: {concurrency}}}\n",
        f.video
    )
}

/// Put the module's pods under `cpu` and wait until the HPA has scaled the
/// Deployment to `ceiling` ready replicas and the subscription says it is
/// capacity-limited. Returns how long the scale-out took and the replicas
/// the status says the HPA wants.
async fn load_to_ceiling(
    f: &Fixture,
    scenario: &str,
    sub: &str,
    module: &str,
    ceiling: i32,
    load: &Load,
    cpu: &str,
) -> (Duration, i32) {
    let name = format!("{sub}-{module}");
    let t0 = Instant::now();
    load.set(cpu);
    wait_for(
        &format!("{name}: {ceiling} ready replicas under load"),
        SCALE,
        || async { (ready_replicas(f, &name).await? == ceiling).then_some(()) },
    )
    .await;
    let scaled = t0.elapsed();
    let s = f
        .wait_status_within(
            sub,
            &format!("{sub}: CapacityLimited for {module}"),
            SCALE,
            |s| limited_wants(s, module, ceiling).is_some_and(|n| n > ceiling),
        )
        .await;
    let wants = limited_wants(&s, module, ceiling).unwrap();
    log(
        scenario,
        format!(
            "{name}: load {cpu}/pod: 1 → {ceiling} replicas in {:.1}s; CapacityLimited after {:.1}s: {:?}",
            scaled.as_secs_f64(),
            t0.elapsed().as_secs_f64(),
            condition(&s, "CapacityLimited").unwrap().message
        ),
    );
    (scaled, wants)
}

// ---------------------------------------------------------------------------
// 1. Load rises: the real HPA scales to the ceiling bought, and no further.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_scales_out_to_the_ceiling_bought_and_no_further() {
    let f = Fixture::new("sc-load").await;
    let sub = "edu";
    let video = format!("{sub}-{}", f.video);
    // ⌈160 / 40⌉ = 4 replicas; quota 4 + ⌈4 × 25 %⌉ surge = 5 pods.
    f.apply_sub(sub, &video_spec(&f, 160)).await;
    let s = f.wait_available(sub).await;
    assert!(is(&s, "CapacityLimited", "False", "WithinCeiling"));
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 4)));
    assert_eq!(f.quota_hard(sub, "pods").await.as_deref(), Some("5"));
    assert_eq!(deployment(&f, &video).await.map(|d| counts(&d).1), Some(1));

    let sampler = Sampler::start(&f.client, &f.ns.name, &video, &format!("{sub}-capacity"));
    // 200m per pod is 200 % of the 100m request against a 65 % target:
    // the HPA would want ⌈4 × 200 / 65⌉ = 13 replicas once it has 4.
    let load = Load::start(&f.client, &f.ns.name, sub, &f.video, "1m");
    load_to_ceiling(&f, "load", sub, &f.video, 4, &load, "200m").await;
    // The first message may come from a metric still ramping up; once every
    // pod reports 200 %, it settles on about ⌈4 × 200 / 65⌉ = 13.
    let s = f
        .wait_status_within(sub, "HPA wants about 13", SCALE, |s| {
            limited_wants(s, &f.video, 4).is_some_and(|n| (12..=14).contains(&n))
        })
        .await;
    let wants = limited_wants(&s, &f.video, 4).unwrap();

    // The HPA itself says why it stopped: maxReplicas.
    let h: HorizontalPodAutoscaler = f.get(&video).await.unwrap();
    assert_eq!(
        hpa_condition(&h, "ScalingLimited"),
        Some(("True".into(), "TooManyReplicas".into()))
    );
    let cpu = hpa_cpu(&h).unwrap_or(0);
    assert!(cpu >= 150, "the HPA sees the load: {cpu}%");
    let s = f.subs().get(sub).await.unwrap();
    let m = module(&s, &f.video).unwrap();
    assert_eq!(
        (m.max_replicas, m.desired_replicas, m.replicas),
        (Some(4), Some(4), Some(4))
    );
    assert_eq!(
        m.message.as_deref(),
        Some(format!("{}: HPA wants {wants} replicas, ceiling is 4", f.video).as_str())
    );

    // No further: three more HPA syncs under the same load change nothing.
    holds_for(
        "4 replicas at the ceiling",
        Duration::from_secs(15),
        || async {
            let d = deployment(&f, &video).await.ok_or("no Deployment")?;
            let h: HorizontalPodAutoscaler = f.get(&video).await.ok_or("no HPA")?;
            let (spec, have, _) = counts(&d);
            if spec != 4 || have != 4 || hpa_desired(&h) != Some(4) {
                return Err(format!(
                    "spec {spec}, replicas {have}, HPA desired {:?}",
                    hpa_desired(&h)
                ));
            }
            Ok(())
        },
    )
    .await;
    let p = sampler.peaks();
    log("load", format!("peaks over {} samples: {p:?}", p.samples));
    assert_eq!(
        (p.max_spec_replicas, p.max_replicas),
        (4, 4),
        "never above the ceiling"
    );
    assert!(
        p.max_used_pods <= 5 && p.over_quota.is_empty(),
        "quota exceeded: {p:?}"
    );
    assert_eq!(f.quota_hard(sub, "pods").await.as_deref(), Some("5"));

    // Load falls to what 4 replicas carry (⌈4 × 30 / 65⌉ = 2): no longer limited.
    let t0 = Instant::now();
    load.set("30m");
    let s = f
        .wait_status_within(
            sub,
            "CapacityLimited=False after the load fell",
            SCALE,
            |s| is(s, "CapacityLimited", "False", "WithinCeiling"),
        )
        .await;
    let h: HorizontalPodAutoscaler = f.get(&video).await.unwrap();
    log(
        "load",
        format!(
            "load 30m/pod: CapacityLimited=False after {:.1}s (HPA CPU {:?}%, desired {:?})",
            t0.elapsed().as_secs_f64(),
            hpa_cpu(&h),
            hpa_desired(&h)
        ),
    );
    assert_eq!(module(&s, &f.video).unwrap().message, None);
    drop(load);
    f.finish().await;
}

// ---------------------------------------------------------------------------
// 2. The tenant upgrades: ceiling and quota rise, the HPA scales further at once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_lifts_the_ceiling_and_the_hpa_scales_further_within_seconds() {
    let f = Fixture::new("sc-upgrade").await;
    let sub = "edu";
    let video = format!("{sub}-{}", f.video);
    f.apply_sub(sub, &video_spec(&f, 160)).await;
    f.wait_available(sub).await;
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 4)));
    assert_eq!(f.quota_hard(sub, "pods").await.as_deref(), Some("5"));
    let sampler = Sampler::start(&f.client, &f.ns.name, &video, &format!("{sub}-capacity"));
    let load = Load::start(&f.client, &f.ns.name, sub, &f.video, "1m");
    load_to_ceiling(&f, "upgrade", sub, &f.video, 4, &load, "200m").await;

    // Upgrade: 240 concurrent sessions → ⌈240 / 40⌉ = 6 replicas, quota 6 + 2 = 8.
    let applied = Instant::now();
    f.apply_sub(sub, &video_spec(&f, 240)).await;
    let hpa_at = wait_for("HPA max 6", T, || async {
        (f.hpa_numbers(&video).await? == (1, 6)).then_some(applied.elapsed())
    })
    .await;
    let quota_at = wait_for("quota 8 pods", T, || async {
        (f.quota_hard(sub, "pods").await? == "8").then_some(applied.elapsed())
    })
    .await;
    // The HPA's decision (spec.replicas), then the pods themselves (Ready).
    let scaled = wait_for("HPA scaled beyond the old ceiling", T, || async {
        (deployment(&f, &video).await.map(|d| counts(&d).0)? > 4).then_some(applied.elapsed())
    })
    .await;
    let beyond = wait_for("Ready replicas beyond the old ceiling", T, || async {
        (ready_replicas(&f, &video).await? > 4).then_some(applied.elapsed())
    })
    .await;
    log(
        "upgrade",
        format!(
            "apply → HPA maxReplicas 6: {:.2}s, quota 8 pods: {:.2}s, HPA scales past 4: {:.2}s, > 4 Ready: {:.2}s",
            hpa_at.as_secs_f64(),
            quota_at.as_secs_f64(),
            scaled.as_secs_f64(),
            beyond.as_secs_f64()
        ),
    );
    // The HPA syncs every 5 s and may be inside its 15 s scale-up period: allow two periods.
    assert!(
        beyond < Duration::from_secs(30),
        "scaled beyond the old ceiling only after {beyond:?}"
    );

    // And on to the new ceiling, still limited: ⌈6 × 200 / 65⌉ = 19 wanted.
    wait_for("6 ready replicas", SCALE, || async {
        (ready_replicas(&f, &video).await? == 6).then_some(())
    })
    .await;
    let s = f
        .wait_status_within(sub, "CapacityLimited at the new ceiling", SCALE, |s| {
            limited_wants(s, &f.video, 6).is_some_and(|n| n > 6)
        })
        .await;
    log(
        "upgrade",
        format!(
            "at the new ceiling after {:.1}s: {}",
            applied.elapsed().as_secs_f64(),
            condition(&s, "CapacityLimited").unwrap().message
        ),
    );
    let m = module(&s, &f.video).unwrap();
    assert_eq!((m.max_replicas, m.concurrency), (Some(6), Some(240)));
    let p = sampler.peaks();
    assert!(p.max_replicas <= 6 && p.max_spec_replicas <= 6, "{p:?}");
    assert!(p.over_quota.is_empty() && p.max_used_pods <= 8, "{p:?}");

    // A tier with fewer sessions per replica (uhd: 15) is an upgrade too: ⌈240 / 15⌉ = 16.
    // The tier is in the pod template (env TIER), so this also rolls every pod
    // (surge, never fewer serving). The new pods have no metrics for 10–20 s and
    // the HPA does not scale without them: ceiling and quota rise at once, the
    // replicas follow once the rolled pods report. Count the HPA's scale
    // (spec.replicas), not the surge pods of the rollout.
    let applied = Instant::now();
    f.apply_sub(
        sub,
        &format!(
            "  tenantId: edu\n  modules:\n    - {{name: {}, concurrency: 240, tier: uhd}}\n",
            f.video
        ),
    )
    .await;
    let lifted = wait_for("HPA max 16, quota 20", T, || async {
        (f.hpa_numbers(&video).await? == (1, 16) && f.quota_hard(sub, "pods").await? == "20")
            .then_some(applied.elapsed())
    })
    .await;
    let scaled = wait_for("HPA scaled beyond 6", T, || async {
        (deployment(&f, &video).await.map(|d| counts(&d).0)? > 6).then_some(applied.elapsed())
    })
    .await;
    let rolled = wait_for("more than 6 updated, Ready replicas", SCALE, || async {
        let st = deployment(&f, &video).await?.status?;
        (st.updated_replicas? > 6 && st.ready_replicas? > 6).then_some(applied.elapsed())
    })
    .await;
    log(
        "upgrade",
        format!(
            "tier uhd: apply → HPA max 16 and quota 20: {:.2}s, HPA scales past 6: {:.2}s, > 6 updated Ready: {:.2}s",
            lifted.as_secs_f64(),
            scaled.as_secs_f64(),
            rolled.as_secs_f64()
        ),
    );
    assert!(scaled < SCALE, "scaled beyond 6 only after {scaled:?}");
    let p = sampler.peaks();
    assert!(p.over_quota.is_empty() && p.max_used_pods <= 20, "{p:?}");
    drop(load);
    f.finish().await;
}

// ---------------------------------------------------------------------------
// 3. A seasonal window: floors rise before the load, and fall back after.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_season_warms_the_floor_before_load_and_lets_it_fall_after() {
    let f = Fixture::new("sc-season").await;
    let sub = "edu";
    let video = format!("{sub}-{}", f.video);
    // A two-minute window starting at the next full minute (UTC), at least 10 s away.
    let window = Window::at_next_full_minute(Duration::from_secs(10), 2);
    let (start, end) = (&window.start, &window.end);
    // ceiling 200 sessions → 5 replicas (quota 7); in the window 150 % → 300
    // sessions → 8 replicas (quota 10) and a floor of 50 % → 4 replicas.
    let spec = format!(
        "  tenantId: edu\n  modules:\n    - {{name: {}, concurrency: 200}}\n  seasons:\n    timeZone: UTC\n    windows:\n      - {{name: evening, days: [{}], start: '{}', end: '{}', concurrencyPercent: 150, floorPercent: 50}}\n",
        f.video,
        window.day(),
        window.start_hhmm(),
        window.end_hhmm(),
    );
    f.apply_sub(sub, &spec).await;
    let s = f.wait_available(sub).await;
    let st = s.status.as_ref().unwrap();
    assert!(st.active_windows.is_empty());
    assert_eq!(
        st.next_transition.as_deref(),
        Some(window.start_rfc3339().as_str())
    );
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 5)));
    assert_eq!(f.quota_hard(sub, "pods").await.as_deref(), Some("7"));
    wait_for("1 replica before the window", T, || async {
        (deployment(&f, &video).await.map(|d| counts(&d))? == (1, 1, 1)).then_some(())
    })
    .await;
    log(
        "season",
        format!(
            "window {} → {} UTC; waiting {:.0}s for it",
            window.start_hhmm(),
            window.end_hhmm(),
            start.duration_since(&jiff::Zoned::now()).as_secs_f64()
        ),
    );
    let load = Load::start(&f.client, &f.ns.name, sub, &f.video, "1m");

    // The window starts: floor and ceiling rise on time, pods are Ready while idle.
    let to_start =
        Duration::from_secs(start.duration_since(&jiff::Zoned::now()).as_secs().max(0) as u64);
    wait_for("floor 4, ceiling 8", to_start + T, || async {
        (f.hpa_numbers(&video).await? == (4, 8)).then_some(())
    })
    .await;
    let late = jiff::Timestamp::now().duration_since(start.timestamp());
    assert!(
        late >= jiff::SignedDuration::ZERO,
        "window applied {late:?} before it started"
    );
    let warm = wait_for("4 Ready replicas from the floor", T, || async {
        (ready_replicas(&f, &video).await? >= 4)
            .then(|| jiff::Timestamp::now().duration_since(start.timestamp()))
    })
    .await;
    // Right after raising replicas to a new floor the HPA reports no metrics; wait for them.
    let idle = wait_for("the HPA reports CPU", T, || async {
        hpa_cpu(&f.get::<HorizontalPodAutoscaler>(&video).await?)
    })
    .await;
    log(
        "season",
        format!(
            "floor applied {:.2}s after the start, 4 pods Ready {:.2}s after it, HPA CPU {idle}%",
            late.as_secs_f64(),
            warm.as_secs_f64()
        ),
    );
    assert!(
        idle < 20,
        "the pods came from the floor, not from load: CPU {idle}%"
    );
    assert_eq!(f.quota_hard(sub, "pods").await.as_deref(), Some("10"));
    let s = f
        .wait_status(sub, "window listed", |s| {
            s.status.as_ref().unwrap().active_windows == vec!["evening".to_string()]
        })
        .await;
    let m = module(&s, &f.video).unwrap();
    assert_eq!(
        (m.min_replicas, m.max_replicas, m.concurrency),
        (Some(4), Some(8), Some(300))
    );

    // Load arrives (50 % of the request, under the 65 % target): the warm floor
    // carries it, no scale-out is needed.
    load.set("50m");
    let seen = wait_for("the HPA sees the load", SCALE, || async {
        let h: HorizontalPodAutoscaler = f.get(&video).await?;
        (hpa_cpu(&h)? >= 40).then_some(h)
    })
    .await;
    log(
        "season",
        format!(
            "load 50m/pod seen at {}% CPU: HPA desired {:?}",
            hpa_cpu(&seen).unwrap(),
            hpa_desired(&seen)
        ),
    );
    assert_eq!(hpa_desired(&seen), Some(4));
    assert_eq!(deployment(&f, &video).await.map(|d| counts(&d).1), Some(4));
    load.set("1m");

    // The window ends: floor and ceiling fall back on time; the quota follows.
    let to_end =
        Duration::from_secs(end.duration_since(&jiff::Zoned::now()).as_secs().max(0) as u64);
    wait_for("floor 1, ceiling 5", to_end + T, || async {
        (f.hpa_numbers(&video).await? == (1, 5)).then_some(())
    })
    .await;
    let ended = Instant::now();
    assert!(
        jiff::Timestamp::now() >= end.timestamp(),
        "window ended early"
    );
    wait_for("quota 7 pods", T, || async {
        (f.quota_hard(sub, "pods").await? == "7").then_some(())
    })
    .await;
    let s = f
        .wait_status(sub, "no window", |s| {
            s.status.as_ref().unwrap().active_windows.is_empty()
        })
        .await;
    assert_eq!(module(&s, &f.video).unwrap().min_replicas, Some(1));

    // Nothing but the HPA's own scale-down stabilisation (60 s in the
    // fixture's profile) holds the 4 pods now (4 ≤ the new ceiling 5, so no
    // ramp): the HPA says so, or has already started to scale in.
    let h = wait_for("HPA scaling in or stabilising", T, || async {
        let h: HorizontalPodAutoscaler = f.get(&video).await?;
        let stabilising =
            hpa_condition(&h, "AbleToScale").is_some_and(|(_, r)| r == "ScaleDownStabilized");
        (stabilising || hpa_desired(&h)? < 4).then_some(h)
    })
    .await;
    log(
        "season",
        format!(
            "after the window: HPA desired {:?}, AbleToScale {:?}",
            hpa_desired(&h),
            hpa_condition(&h, "AbleToScale")
        ),
    );
    // The real scale-in, once the stabilisation window has passed: a pod
    // every 15 s at most (the profile's scale-down pace).
    wait_for(
        "scaled in to 1 replica",
        Duration::from_secs(240),
        || async { (deployment(&f, &video).await.map(|d| counts(&d))? == (1, 1, 1)).then_some(()) },
    )
    .await;
    log(
        "season",
        format!(
            "scaled in to 1 replica {:.1}s after the window ended",
            ended.elapsed().as_secs_f64()
        ),
    );
    drop(load);
    f.finish().await;
}

// ---------------------------------------------------------------------------
// 4. A module switched off and on again: drain, removal, re-creation, quota.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_switched_off_drains_goes_and_comes_back_with_the_quota_following() {
    let f = Fixture::new("sc-onoff").await;
    let sub = "edu";
    let video = format!("{sub}-{}", f.video);
    let im = format!("{sub}-{}", f.im);
    let spec = |video_on: bool| {
        format!(
            "  tenantId: edu\n  downgrade: {{drainSeconds: 8}}\n  modules:\n    - {{name: {}, concurrency: 160, enabled: {video_on}}}\n    - {{name: {}, concurrency: 100}}\n",
            f.video, f.im
        )
    };
    // video 4 + 1 surge, messaging ⌈100 / 40⌉ = 3 + 1 surge: 9 pods.
    f.apply_sub(sub, &spec(true)).await;
    f.wait_available(sub).await;
    assert_eq!(f.quota_hard(sub, "pods").await.as_deref(), Some("9"));
    let uid = |o: Option<String>| o.expect("uid");
    let im_uids = (
        uid(f.get::<Deployment>(&im).await.unwrap().metadata.uid),
        uid(f
            .get::<HorizontalPodAutoscaler>(&im)
            .await
            .unwrap()
            .metadata
            .uid),
    );
    let video_uid = uid(f.get::<Deployment>(&video).await.unwrap().metadata.uid);

    // Busy when switched off: at its ceiling under load.
    let load = Load::start(&f.client, &f.ns.name, sub, &f.video, "1m");
    load_to_ceiling(&f, "onoff", sub, &f.video, 4, &load, "200m").await;

    // Off: Draining, still serving every replica, quota kept.
    let off = Instant::now();
    f.apply_sub(sub, &spec(false)).await;
    let s = f.wait_draining(sub, &f.video).await;
    assert!(
        is(&s, "Reconciling", "True", "Draining"),
        "{:?}",
        condition(&s, "Reconciling")
    );
    assert!(module(&s, &f.video).unwrap().drain_deadline.is_some());
    let d = deployment(&f, &video)
        .await
        .expect("still there while draining");
    assert_eq!(counts(&d).2, 4, "draining keeps every serving replica");
    let record = module(&s, &f.video).unwrap();
    assert!(
        record.draining_since.is_some() && record.max_replicas == Some(4),
        "the drain is recorded in status: {record:?}"
    );
    assert!(
        f.get::<HorizontalPodAutoscaler>(&video).await.is_some()
            && f.get::<Service>(&video).await.is_some()
    );
    assert_eq!(f.quota_hard(sub, "pods").await.as_deref(), Some("9"));
    log(
        "onoff",
        format!(
            "switched off: Draining after {:.2}s, 4 replicas still Ready, quota 9 pods",
            off.elapsed().as_secs_f64()
        ),
    );

    // After the drain: exactly its objects go, messaging is untouched.
    wait_for("video objects removed", T, || async {
        f.module_gone(&video).await.then_some(())
    })
    .await;
    let removed = off.elapsed();
    assert!(
        removed >= Duration::from_secs(7),
        "removed after {removed:?}, before the 8 s drain ended"
    );
    wait_for("quota 4 pods", T, || async {
        (f.quota_hard(sub, "pods").await? == "4").then_some(())
    })
    .await;
    log(
        "onoff",
        format!(
            "removed {:.2}s after switching off (drainSeconds 8); quota 4 pods",
            removed.as_secs_f64()
        ),
    );
    assert_eq!(
        (
            uid(f.get::<Deployment>(&im).await.unwrap().metadata.uid),
            uid(f
                .get::<HorizontalPodAutoscaler>(&im)
                .await
                .unwrap()
                .metadata
                .uid)
        ),
        im_uids
    );
    assert_eq!(f.hpa_numbers(&im).await, Some((2, 3)));
    let s = f.wait_available(sub).await;
    assert!(module(&s, &f.video).is_none());
    assert_eq!(module(&s, &f.im).unwrap().state, Some(ModuleState::Active));
    wait_for("video pods gone", T, || async {
        let pods: Api<Pod> = Api::namespaced(f.client.clone(), &f.ns.name);
        let sel = format!("capacity.tenancy.dev/module={}", f.video);
        pods.list(&ListParams::default().labels(&sel))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;

    // On again: new objects, quota back to 9, at its floor until load returns.
    load.set("1m");
    let on = Instant::now();
    f.apply_sub(sub, &spec(true)).await;
    wait_for("quota 9 pods again", T, || async {
        (f.quota_hard(sub, "pods").await? == "9").then_some(())
    })
    .await;
    wait_for("video re-created and Ready", T, || async {
        (ready_replicas(&f, &video).await? >= 1).then_some(())
    })
    .await;
    log(
        "onoff",
        format!(
            "switched on: Ready {:.2}s after the apply",
            on.elapsed().as_secs_f64()
        ),
    );
    let d: Deployment = f.get(&video).await.unwrap();
    assert_ne!(
        d.metadata.uid.as_deref(),
        Some(video_uid.as_str()),
        "a new Deployment"
    );
    assert!(
        !d.annotations()
            .contains_key("capacity.tenancy.dev/draining-since")
    );
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 4)));
    assert!(f.get::<Service>(&video).await.is_some());
    let s = f.wait_available(sub).await;
    assert_eq!(
        module(&s, &f.video).unwrap().state,
        Some(ModuleState::Active)
    );
    drop(load);
    f.finish().await;
}

// ---------------------------------------------------------------------------
// 5. Two tenants: one at its ceiling never takes capacity from the other.

fn intruder(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "x", "image": "registry.example.com/x:1",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}}],
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_ceiling_never_takes_capacity_from_another() {
    // One namespace (and one namespace-scoped operator) per tenant.
    let a = Fixture::new("sc-busy").await;
    let b = Fixture::new("sc-calm").await;
    let (va, vb) = (format!("a-{}", a.video), format!("b-{}", b.video));
    a.apply_sub(
        "a",
        &format!(
            "  tenantId: busy\n  modules:\n    - {{name: {}, concurrency: 160}}\n",
            a.video
        ),
    )
    .await;
    b.apply_sub(
        "b",
        &format!(
            "  tenantId: calm\n  modules:\n    - {{name: {}, concurrency: 120}}\n",
            b.video
        ),
    )
    .await;
    a.wait_available("a").await;
    b.wait_available("b").await;
    // a: 4 replicas, 5 pods; b: ⌈120 / 40⌉ = 3 replicas, 4 pods.
    assert_eq!(
        (
            a.hpa_numbers(&va).await,
            a.quota_hard("a", "pods").await.as_deref()
        ),
        (Some((1, 4)), Some("5"))
    );
    assert_eq!(
        (
            b.hpa_numbers(&vb).await,
            b.quota_hard("b", "pods").await.as_deref()
        ),
        (Some((1, 3)), Some("4"))
    );
    let quota_b = b.get::<ResourceQuota>("b-capacity").await.unwrap().spec;
    let sampler_a = Sampler::start(&a.client, &a.ns.name, &va, "a-capacity");
    let sampler_b = Sampler::start(&b.client, &b.ns.name, &vb, "b-capacity");

    // Heavy load on a: 400 % of its requests.
    let load_a = Load::start(&a.client, &a.ns.name, "a", &a.video, "1m");
    let load_b = Load::start(&b.client, &b.ns.name, "b", &b.video, "1m");
    load_to_ceiling(&a, "tenants", "a", &a.video, 4, &load_a, "400m").await;

    // a's quota caps a even when it goes around its HPA: of two extra pods,
    // the first takes the rolling-update surge slot, the second is refused.
    // Quota admission counts from the quota's status, which the quota
    // controller rewrites from its own cache; pods created in the same instant
    // as the HPA's can slip past it (kubernetes/kubernetes#123434). So wait
    // until the quota has accounted for a's 4 pods before going around.
    let pods_a: Api<Pod> = Api::namespaced(a.client.clone(), &a.ns.name);
    let running = |pods: &[Pod]| {
        pods.iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count() as i64
    };
    wait_for("a's quota accounts for its 4 pods", T, || async {
        let n = running(&pods_a.list(&ListParams::default()).await.ok()?.items);
        let used = pods_of(&a.get::<ResourceQuota>("a-capacity").await?.status?.used)?;
        (n == 4 && used == 4).then_some(())
    })
    .await;
    pods_a
        .create(&PostParams::default(), &intruder("extra-1"))
        .await
        .expect("the surge slot is free");
    let refused = pods_a
        .create(&PostParams::default(), &intruder("extra-2"))
        .await
        .expect_err("over the quota");
    let msg = refused.to_string();
    assert!(
        msg.contains("exceeded quota") && msg.contains("a-capacity"),
        "{msg}"
    );
    log(
        "tenants",
        format!(
            "a's 6th pod refused: {}",
            msg.lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect::<String>()
        ),
    );
    assert_eq!(
        running(&pods_a.list(&ListParams::default()).await.unwrap().items),
        5,
        "a has its 4 replicas and 1 extra pod, no more"
    );
    let _ = pods_a.delete("extra-1", &DeleteParams::default()).await;

    // b all this time: one replica, same ceiling, same quota.
    let h: HorizontalPodAutoscaler = b.get(&vb).await.unwrap();
    assert_eq!(
        (h.spec.min_replicas, h.spec.max_replicas, hpa_desired(&h)),
        (Some(1), 3, Some(1))
    );
    assert_eq!(
        b.get::<ResourceQuota>("b-capacity").await.unwrap().spec,
        quota_b
    );
    let pb = sampler_b.peaks();
    assert_eq!(
        (pb.max_spec_replicas, pb.max_replicas),
        (1, 1),
        "b moved while a was busy: {pb:?}"
    );
    let s = b.subs().get("b").await.unwrap();
    assert!(is(&s, "CapacityLimited", "False", "WithinCeiling"));

    // b's own load rises: b scales to its own ceiling while a stays capped at 4.
    let (scaled, _) = load_to_ceiling(&b, "tenants", "b", &b.video, 3, &load_b, "200m").await;
    log(
        "tenants",
        format!(
            "b scaled to its ceiling of 3 in {:.1}s while a held 4",
            scaled.as_secs_f64()
        ),
    );
    assert_eq!(ready_replicas(&a, &va).await, Some(4));
    assert_eq!(
        b.get::<ResourceQuota>("b-capacity").await.unwrap().spec,
        quota_b
    );
    assert_eq!(a.quota_hard("a", "pods").await.as_deref(), Some("5"));
    let (pa, pb) = (sampler_a.peaks(), sampler_b.peaks());
    log("tenants", format!("peaks a: {pa:?}\npeaks b: {pb:?}"));
    assert!(
        pa.max_replicas <= 4
            && pa.max_spec_replicas <= 4
            && pa.max_used_pods <= 5
            && pa.over_quota.is_empty(),
        "{pa:?}"
    );
    assert!(
        pb.max_replicas <= 3 && pb.max_used_pods <= 4 && pb.over_quota.is_empty(),
        "{pb:?}"
    );
    drop((load_a, load_b));
    a.finish().await;
    b.finish().await;
}
