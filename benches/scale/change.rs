//! Phase 6, change latency: plan changes (one module's concurrency raised,
//! so a new HPA ceiling and a new quota) sent at a fixed rate, each to a
//! different tenant; per change, the time from sending the apply to the
//! later of the HPA showing the new ceiling and the subscription Ready at
//! the new generation, both seen through watches. Where that time went is
//! worked out afterwards from the audit log and the operator's log (see
//! [`attribution`]).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
    Bench, Res, Results, attribution, log,
    objects::{MODULES, apply_subscription, desired_with, video_ceiling},
    support::OperatorProcess,
    tracker::Tracker,
};

/// Returns the latency figures (also reported as "change_latency").
pub async fn run(
    b: &Bench,
    op: &OperatorProcess,
    tracker: &Tracker,
    namespaces: &[String],
    results: &mut Results,
) -> Res<Value> {
    let (client, catalogue, args) = (&b.client, &b.catalogue, &b.args);
    let count = ((args.change_rate * args.change_seconds as f64) as usize).min(namespaces.len());
    let interval = Duration::from_secs_f64(1.0 / args.change_rate);
    log(format!(
        "change latency: {count} plan changes at {}/s",
        args.change_rate
    ));
    // Each change raises one tenant's video concurrency: a new HPA ceiling and quota.
    let new_video = MODULES[0].1 + 80;
    let expect_max =
        video_ceiling(&desired_with(catalogue, "x", 0, new_video)).context("bench-video HPA")?;
    let mark = b.audit.mark()?;
    let log_from = op.line_count();
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = Vec::new();
    for (i, ns) in namespaces.iter().take(count).enumerate() {
        tick.tick().await;
        let client = client.clone();
        let ns = ns.clone();
        pending.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let s = apply_subscription(&client, &ns, i, new_video).await?;
            Ok::<_, anyhow::Error>((ns, s.metadata.generation.unwrap_or(0), t0))
        }));
    }
    for p in pending {
        sent.push(p.await??);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut latencies = Vec::new();
    let mut each = Vec::new();
    loop {
        latencies.clear();
        each.clear();
        {
            let st = tracker.state.lock().unwrap();
            for (ns, generation, t0) in &sent {
                let sub = st
                    .subs
                    .get(ns)
                    .filter(|(g, ready, _)| g == generation && *ready)
                    .map(|(_, _, t)| *t);
                let hpa = st
                    .hpas
                    .get(ns)
                    .filter(|(m, _)| *m == expect_max)
                    .map(|(_, t)| *t);
                if let (Some(a), Some(b)) = (sub, hpa) {
                    let ms = a.max(b).saturating_duration_since(*t0).as_secs_f64() * 1000.0;
                    latencies.push(ms);
                    each.push(attribution::Sent {
                        namespace: ns.clone(),
                        sent: attribution::wall(*t0),
                        latency_ms: ms,
                    });
                }
            }
        }
        if latencies.len() == sent.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    // Let the operator's log lines of the last changes arrive.
    let lines = crate::support::wait::poll(
        "the operator's log of every applied change",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let lines = op.lines_since(log_from);
            let applied = lines
                .iter()
                .filter(|l| l.contains("spec change applied"))
                .count();
            futures::future::ready((applied >= each.len()).then_some(lines))
        },
    )
    .await
    .unwrap_or_else(|_| op.lines_since(log_from));
    let attributed = attribution::attribute(b, &mark, &each, &lines)?;
    log(format!(
        "change latency, median half: {}",
        attribution::line(&attributed["median_half"])
    ));
    log(format!(
        "change latency, slowest 1%: {}",
        attribution::line(&attributed["slowest_1_percent"])
    ));
    let r = json!({
        "changes": sent.len(),
        "completed": latencies.len(),
        "rate_per_s": args.change_rate,
        "p50_ms": (q(0.50) * 10.0).round() / 10.0,
        "p90_ms": (q(0.90) * 10.0).round() / 10.0,
        "p99_ms": (q(0.99) * 10.0).round() / 10.0,
        "max_ms": (q(1.0) * 10.0).round() / 10.0,
        "attribution": attributed,
    });
    log(format!("change latency: {r}"));
    results.insert("change_latency", r.clone());
    Ok(r)
}
