//! Phase 2, cold convergence: subscriptions created with no operator
//! running; the operator starts; the time until every subscription is
//! `Ready=True` at its current generation (seen through a watch), and its
//! ratio to the floor.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use serde_json::json;

use crate::{
    Bench, Res, Results,
    floor::Floor,
    log,
    objects::{MODULES, apply_subscription},
    operator, per_thousand,
    report::secs,
    setup::namespaces,
    support::{OperatorProcess, audit::Mark},
    tracker::Tracker,
};

/// The converged operator and what the later phases measure it with.
pub struct Converged {
    pub op: OperatorProcess,
    pub tracker: Tracker,
    /// The tenants' namespaces, bo-<i>.
    pub namespaces: Vec<String>,
    /// The audit log when the operator started.
    pub audit_start: Mark,
    pub seconds: Duration,
    /// Peak RSS over the cold start.
    pub peak_rss: u64,
}

pub async fn run(b: &Bench, floor: &Floor, results: &mut Results) -> Res<Converged> {
    let n = b.tenants();
    let ns = namespaces(&b.client, "bo", n).await?;
    stream::iter(ns.iter().enumerate())
        .map(|(i, ns)| {
            let client = b.client.clone();
            async move { apply_subscription(&client, ns, i, MODULES[0].1).await }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    let tracker = Tracker::start(&b.client).await;
    let audit_start = b.audit.mark()?;
    let t0 = Instant::now();
    let op = operator::start(b, "cold")?;
    tracker.wait_ready(n, per_thousand(n, 1800)).await?;
    let cold = t0.elapsed();
    let peak_rss = op.memory().1;
    log(format!(
        "operator cold convergence: {:.1}s ({:.2}× the floor)",
        cold.as_secs_f64(),
        secs(cold) / floor.available
    ));
    let cold_writes = operator::writes_since(b, &audit_start)?;
    results.insert(
        "cold_convergence",
        json!({
            "seconds": secs(cold),
            "ratio_to_floor_available": secs(cold) / floor.available,
            "ratio_to_floor_written": secs(cold) / floor.written,
            "operator_writes": cold_writes.total(),
            "operator_writes_by_verb_resource_code": cold_writes.by_key(),
        }),
    );
    Ok(Converged {
        op,
        tracker,
        namespaces: ns,
        audit_start,
        seconds: cold,
        peak_rss,
    })
}
