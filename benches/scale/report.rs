//! The results: a table on stdout and JSON in target/bench/scale-<N>.json.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;

use crate::{Args, Res, Results, log};

/// Write the JSON and print the table.
pub fn write(args: &Args, results: &Results) -> Res<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/scale-{}.json", args.tenants)));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(&out, &json)?;
    println!("{}", table(results));
    log(format!("results written to {}", out.display()));
    Ok(())
}

/// Seconds, to the millisecond.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// MiB, to a tenth.
pub fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1048576.0 * 10.0).round() / 10.0
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{} core(s), {:.0} GiB, {cpu}", num_cpus(), mem_gib())
}

pub fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn mem_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / 1048576.0)
        .unwrap_or(0.0)
}

fn table(r: &Results) -> String {
    let g = |path: &str| -> String {
        let mut v = &Value::Null;
        for (i, part) in path.split('.').enumerate() {
            v = if i == 0 {
                r.get(part).unwrap_or(&Value::Null)
            } else {
                &v[part]
            };
        }
        match v {
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(0.0);
                if n.is_f64() {
                    format!("{f:.2}")
                } else {
                    n.to_string()
                }
            }
            Value::Null => "-".into(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    };
    let rows: Vec<(String, String, String)> = vec![
        ("machine".into(), g("machine.description"), String::new()),
        (
            "control plane: nodes, controller-manager QPS/burst, HPA sync".into(),
            format!(
                "{}, {}/{}, {}",
                g("control_plane.nodes"),
                g("control_plane.kube_controller_manager.kube-api-qps"),
                g("control_plane.kube_controller_manager.kube-api-burst"),
                g("control_plane.kube_controller_manager.horizontal-pod-autoscaler-sync-period"),
            ),
            String::new(),
        ),
        (
            "tenants × modules".into(),
            format!("{} × 3", g("tenants")),
            String::new(),
        ),
        (
            "floor: bare SSA, all objects written (best of sweep)".into(),
            format!("{} s", g("floor.best_written_s")),
            String::new(),
        ),
        (
            "floor: bare SSA, all Deployments available".into(),
            format!("{} s", g("floor.best_available_s")),
            String::new(),
        ),
        (
            "1. cold convergence (all Ready)".into(),
            format!("{} s", g("cold_convergence.seconds")),
            format!(
                "{}× floor (target ≤ 1.15)",
                g("cold_convergence.ratio_to_floor_available")
            ),
        ),
        (
            "   settling: HPAs get metrics, status catches up".into(),
            format!("{} s", g("settling.seconds")),
            format!(
                "{} status writes following the HPAs",
                g("settling.operator_writes")
            ),
        ),
        (
            "2. quiet idle: operator writes".into(),
            format!(
                "{} in {} s",
                g("quiet_idle.operator_writes"),
                g("quiet_idle.seconds")
            ),
            format!(
                "{} resync rounds (target 0 writes)",
                g("quiet_idle.forced_resync_rounds")
            ),
        ),
        (
            "2. 409 / 429 responses to the operator".into(),
            format!(
                "{} / {}",
                g("conflicts_and_throttling.operator_409"),
                g("conflicts_and_throttling.operator_429")
            ),
            "target 0 / 0".into(),
        ),
        (
            "3. steady RSS".into(),
            format!("{} MiB", g("memory.steady_rss_mib")),
            "target < 48 MiB at N = 1,000".into(),
        ),
        (
            "3. peak RSS during relist (restart)".into(),
            format!("{} MiB", g("memory.peak_rss_restart_relist_mib")),
            format!("{}× steady (target < 1.5)", g("memory.peak_over_steady")),
        ),
        (
            "4. change latency p50 / p99".into(),
            format!(
                "{} / {} ms",
                g("change_latency.p50_ms"),
                g("change_latency.p99_ms")
            ),
            format!(
                "{} changes at {}/s (target p99 < 250 ms)",
                g("change_latency.changes"),
                g("change_latency.rate_per_s")
            ),
        ),
        (
            "5. restart: all confirmed".into(),
            format!("{} s", g("restart.seconds")),
            format!(
                "{} writes (target < 10 s, 0 writes)",
                g("restart.operator_writes")
            ),
        ),
        (
            "6. Helm per tenant: converge".into(),
            format!(
                "{} s for {} tenants",
                g("helm_per_tenant.converge_s"),
                g("helm_per_tenant.tenants")
            ),
            format!(
                "{}× the operator (scaled to N)",
                g("helm_per_tenant.converge_ratio_to_operator")
            ),
        ),
        (
            "6. Helm per tenant: one plan change".into(),
            format!("{} ms", g("helm_per_tenant.change_ms")),
            format!(
                "{}× the operator's p50",
                g("helm_per_tenant.change_ratio_to_operator_p50")
            ),
        ),
    ];
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (a, b, c) in rows {
        out.push_str(&format!("{a:<w0$}  {b:<w1$}  {c}\n", w0 = w0, w1 = w1));
    }
    out
}

/// The control plane's settings that bound what the benchmark can measure,
/// read from the command lines `hack/cluster.sh up` started the components
/// with (kept beside the audit log's folder), so runs on different machines
/// can be compared. A flag the cluster does not pass is reported as
/// `"default"` (the upstream default of that Kubernetes version; for
/// `GOGC`, Go's 100).
pub fn control_plane(audit_log: &std::path::Path, nodes: usize) -> Value {
    let state = audit_log
        .parent()
        .and_then(|logs| logs.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let flags = |component: &str, names: &[&str]| -> Value {
        let cmdline = std::fs::read_to_string(state.join(format!("{component}.cmdline")));
        let Ok(cmdline) = cmdline else {
            return Value::Null;
        };
        let mut out = serde_json::Map::new();
        for name in names {
            // Flags, and the Go runtime's settings (`GOGC=`) before the binary.
            let prefix = if name.starts_with("GO") {
                format!("{name}=")
            } else {
                format!("--{name}=")
            };
            let value = cmdline
                .split_whitespace()
                .find_map(|arg| arg.strip_prefix(&prefix))
                .unwrap_or("default");
            out.insert((*name).to_string(), Value::String(value.to_string()));
        }
        Value::Object(out)
    };
    serde_json::json!({
        "nodes": nodes,
        "kube_controller_manager": flags("kube-controller-manager", &[
            "kube-api-qps",
            "kube-api-burst",
            "horizontal-pod-autoscaler-sync-period",
            "concurrent-horizontal-pod-autoscaler-syncs",
            "concurrent-deployment-syncs",
            "concurrent-replicaset-syncs",
        ]),
        "kube_apiserver": flags("kube-apiserver", &[
            "GOGC",
            "max-requests-inflight",
            "max-mutating-requests-inflight",
        ]),
        "metrics_server": flags("metrics-server", &[
            "metric-resolution",
            "authorization-webhook-cache-authorized-ttl",
        ]),
    })
}
