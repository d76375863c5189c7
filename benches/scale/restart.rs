//! Phase 5, restart: the converged operator is stopped (SIGTERM) and a new
//! process started; the time until it has reconciled every subscription
//! (each publishes its modules' ceilings on /metrics), its writes meanwhile,
//! and its peak memory over the relist.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::{
    Bench, Res, Results,
    idle::Steady,
    log, operator,
    report::{mib, secs},
    support::OperatorProcess,
};

/// Returns the restarted operator; also reports the memory of both.
pub async fn run(
    b: &Bench,
    op: OperatorProcess,
    cold_peak_rss: u64,
    steady: &Steady,
    results: &mut Results,
) -> Res<OperatorProcess> {
    let n = b.tenants();
    operator::stop(op)?;
    let restart_start = b.audit.mark()?;
    let t0 = Instant::now();
    let op = operator::start(b, "restart")?;
    let confirmed = loop {
        let subs = operator::confirmed_subscriptions(&op).unwrap_or(0);
        if subs >= n {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("restarted operator confirmed only {subs} of {n} subscriptions in 600s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let restart_hwm = op.memory().1;
    let restart_writes = operator::writes_since(b, &restart_start)?;
    log(format!(
        "restart: all {n} confirmed after {:.2}s, {} writes, peak RSS {:.1} MiB",
        confirmed.as_secs_f64(),
        restart_writes.total(),
        mib(restart_hwm)
    ));
    results.insert(
        "restart",
        json!({"seconds": secs(confirmed), "operator_writes": restart_writes.total(), "operator_writes_by_verb_resource_code": restart_writes.by_key()}),
    );
    results.insert(
        "memory",
        json!({
            "steady_rss_mib": mib(steady.rss),
            "idle_rss_max_mib": mib(steady.rss_max),
            "peak_rss_cold_start_mib": mib(cold_peak_rss),
            "peak_rss_restart_relist_mib": mib(restart_hwm),
            "peak_over_steady": restart_hwm as f64 / steady.rss as f64,
        }),
    );
    Ok(op)
}
