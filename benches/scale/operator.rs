//! The operator under measurement: the binary as its own process and
//! ServiceAccount, its /metrics, and its writes as the audit log counts them.

use std::{collections::HashSet, path::PathBuf, time::Duration};

use anyhow::Context as _;

use crate::{
    Bench, Res, setup,
    support::{
        OperatorProcess,
        audit::{Mark, Writes},
        process::metric_value,
    },
};

/// Started with the benchmark's resync period and concurrency, logging (as
/// JSON, which the change phase reads) to target/bench/operator-<tag>.log.
pub fn start(b: &Bench, tag: &str) -> Res<OperatorProcess> {
    let mut launch = OperatorProcess::launch()
        .free_ports()?
        .args([
            "--resync-seconds",
            &b.args.resync_seconds.to_string(),
            "--concurrency",
            &b.args.operator_concurrency.to_string(),
        ])
        .kubeconfig(&b.kubeconfig)
        .env("RUST_LOG", "info")
        .log_file(PathBuf::from(format!("target/bench/operator-{tag}.log")));
    match &b.args.operator_bin {
        // An earlier build, from before plans were required and /metrics
        // was HTTPS, knows neither flag.
        Some(bin) => launch = launch.bin(bin).without_metrics_secure_flag(),
        // The benchmark's subscriptions name no plan.
        None => launch = launch.args(["--require-plan=false"]),
    }
    launch.spawn().context("start the operator binary")
}

/// SIGTERM, and wait (up to 30 s) until it has exited.
pub fn stop(mut op: OperatorProcess) -> Res<()> {
    tokio::task::block_in_place(|| op.stop_within(Duration::from_secs(30)))
        .context("operator did not stop on SIGTERM")?;
    Ok(())
}

fn scrape(op: &OperatorProcess) -> Res<String> {
    tokio::task::block_in_place(|| op.metrics()).context("no /metrics from the operator")
}

/// An unlabelled counter from its /metrics.
pub fn metric(op: &OperatorProcess, name: &str) -> Res<u64> {
    metric_value(&scrape(op)?, name)
        .map(|v| v as u64)
        .with_context(|| format!("metric {name} not exported"))
}

/// Subscriptions the process has reconciled to an outcome since it started
/// (each publishes its modules' ceilings).
pub fn confirmed_subscriptions(op: &OperatorProcess) -> Res<usize> {
    let text = scrape(op)?;
    let mut subs = HashSet::new();
    for l in text
        .lines()
        .filter(|l| l.starts_with("tenant_capacity_module_max_replicas{"))
    {
        if let Some(ns) = l
            .split("namespace=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            && ns.starts_with("bo-")
        {
            subs.insert(ns.to_string());
        }
    }
    Ok(subs.len())
}

/// The operator's writes since `mark`, by the audit log.
pub fn writes_since(b: &Bench, mark: &Mark) -> Res<Writes> {
    let user = setup::operator_user();
    Ok(b.audit.writes_since(mark, &[&user], |e| {
        e["user"]["username"].as_str() == Some(user.as_str())
    })?)
}
