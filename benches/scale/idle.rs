//! Phases 3 and 4, quiet idle and steady memory: the operator's writes (by
//! the audit log) while nothing changes, over a window that spans forced
//! resyncs, and its RSS meanwhile. The window opens once the metrics
//! pipeline has caught up (every HPA active): the status writes before that
//! follow the HPAs' first real numbers and are reported as "settling".

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    Bench, Res, Results, log, operator, per_thousand,
    report::{mib, secs},
    setup::wait_hpas_active,
    support::OperatorProcess,
};

/// RSS at the end of the idle window, and the most seen during it.
pub struct Steady {
    pub rss: u64,
    pub rss_max: u64,
}

pub async fn run(b: &Bench, op: &OperatorProcess, results: &mut Results) -> Res<Steady> {
    let n = b.tenants();
    let settle_start = b.audit.mark()?;
    let t_settle = Instant::now();
    wait_hpas_active(&b.client, 3 * n, per_thousand(n, 900)).await?;
    // Then until the operator has caught up with what the HPAs reported: a
    // stretch with no operator write longer than its 2 s status batching.
    let t_quiet = Instant::now();
    loop {
        let mark = b.audit.mark()?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        if operator::writes_since(b, &mark)?.total() == 0
            || t_quiet.elapsed() > Duration::from_secs(300)
        {
            break;
        }
    }
    let settle = operator::writes_since(b, &settle_start)?;
    log(format!(
        "every HPA active {:.1}s after convergence; {} operator writes meanwhile",
        t_settle.elapsed().as_secs_f64(),
        settle.total()
    ));
    results.insert(
        "settling",
        json!({"seconds": secs(t_settle.elapsed()), "operator_writes": settle.total(), "operator_writes_by_verb_resource_code": settle.by_key()}),
    );
    let idle_start = b.audit.mark()?;
    let resyncs_before = operator::metric(op, "tenant_capacity_reconciliations_total")?;
    let mut rss_samples = Vec::new();
    let t_idle = Instant::now();
    while t_idle.elapsed() < Duration::from_secs(b.args.idle_seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_samples.push(op.memory().0);
    }
    let reconciles_idle =
        operator::metric(op, "tenant_capacity_reconciliations_total")? - resyncs_before;
    let idle = operator::writes_since(b, &idle_start)?;
    let (steady_rss, _) = op.memory();
    log(format!(
        "quiet idle {}s: {} reconciles, {} writes by the operator; steady RSS {:.1} MiB",
        b.args.idle_seconds,
        reconciles_idle,
        idle.total(),
        mib(steady_rss)
    ));
    results.insert(
        "quiet_idle",
        json!({
            "seconds": b.args.idle_seconds,
            "resync_seconds": b.args.resync_seconds,
            "reconciles": reconciles_idle,
            "forced_resync_rounds": reconciles_idle as f64 / n as f64,
            "operator_writes": idle.total(),
            "operator_writes_by_verb_resource_code": idle.by_key(),
        }),
    );
    Ok(Steady {
        rss: steady_rss,
        rss_max: rss_samples.iter().copied().max().unwrap_or(0),
    })
}
