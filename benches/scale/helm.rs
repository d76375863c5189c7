//! Phase 7, what users do instead: the same tenants as one Helm release
//! each (the small chart in hack/bench/tenant-chart, values computed by the
//! same rendering as the operator's), `helm upgrade --install` per tenant
//! with a few at once (as a GitOps pipeline's workers would), until every
//! Deployment is available; then one tenant's plan change by `helm upgrade`,
//! until its HPA shows the new ceiling. Both as a ratio to the operator.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Api, Client};
use serde_json::{Value, json};
use tenant_capacity_operator::{
    capacity,
    render::{self, Child},
};

use crate::{
    Args, Bench, Res, Results, log,
    objects::{MODULES, desired_with},
    report::secs,
    setup::{delete_namespaces, namespaces, wait_available},
    wait_until,
};

/// `cold`: the operator's cold convergence; `latency`: its change latency.
pub async fn run(b: &Bench, cold: Duration, latency: &Value, results: &mut Results) -> Res<()> {
    let n = b.tenants();
    let h = b.args.helm_tenants.unwrap_or(n).min(n);
    let mut helm = compare(&b.client, &b.catalogue, h, &b.args).await?;
    let op_change_p50 = latency["p50_ms"].as_f64().unwrap_or(f64::NAN);
    helm["converge_ratio_to_operator"] =
        json!(helm["converge_s"].as_f64().unwrap() / secs(cold) * (n as f64 / h as f64));
    helm["change_ratio_to_operator_p50"] =
        json!(helm["change_ms"].as_f64().unwrap() / op_change_p50);
    results.insert("helm_per_tenant", helm);
    delete_namespaces(&b.client, "bh").await
}

async fn compare(
    client: &Client,
    catalogue: &capacity::Catalogue,
    h: usize,
    args: &Args,
) -> Res<Value> {
    let chart = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/hack/bench/tenant-chart"
    ));
    let dir = PathBuf::from("target/bench/helm-values");
    std::fs::create_dir_all(&dir)?;
    let ns = namespaces(client, "bh", h).await?;
    let values = |i: usize, ns: &str, video: i64| -> Res<PathBuf> {
        let path = dir.join(format!("{ns}-{video}.json"));
        std::fs::write(
            &path,
            serde_json::to_string(&release_values(catalogue, ns, i, video))?,
        )?;
        Ok(path)
    };
    let install = |i: usize, ns: String, video: i64| {
        let file = values(i, &ns, video);
        let chart = chart.clone();
        async move {
            let out = tokio::process::Command::new("helm")
                .args([
                    "upgrade",
                    "--install",
                    "tenant",
                    chart.to_str().unwrap(),
                    "-n",
                    &ns,
                    "-f",
                ])
                .arg(file?)
                .output()
                .await
                .context("run helm (is it on PATH? eval \"$(hack/cluster.sh env)\")")?;
            if !out.status.success() {
                bail!(
                    "helm upgrade --install in {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        }
    };
    log(format!(
        "helm: {h} releases, {} at once",
        args.helm_parallel
    ));
    let t0 = Instant::now();
    stream::iter(ns.iter().cloned().enumerate())
        .map(|(i, ns)| install(i, ns, MODULES[0].1))
        .buffer_unordered(args.helm_parallel)
        .try_collect::<Vec<_>>()
        .await?;
    let installed = t0.elapsed();
    // Helm-managed objects carry managed-by: Helm.
    wait_available(
        client,
        "app.kubernetes.io/managed-by=Helm,capacity.tenancy.dev/tenant",
        3 * h,
        Duration::from_secs(1800),
    )
    .await?;
    let converged = t0.elapsed();
    log(format!(
        "helm: {h} releases installed in {:.1}s, available after {:.1}s",
        installed.as_secs_f64(),
        converged.as_secs_f64()
    ));

    // One plan change: a tenant's video concurrency rises.
    let new_video = MODULES[0].1 + 80;
    let expect = release_values(catalogue, &ns[0], 0, new_video)["modules"][0]["maxReplicas"]
        .as_i64()
        .unwrap() as i32;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns[0]);
    let t0 = Instant::now();
    install(0, ns[0].clone(), new_video).await?;
    wait_until(
        "Helm plan change on the HPA",
        Duration::from_secs(120),
        || async {
            (hpas
                .get("capacity-bench-video")
                .await
                .ok()?
                .spec
                .max_replicas
                == expect)
                .then_some(())
        },
    )
    .await?;
    let change = t0.elapsed();
    log(format!(
        "helm: one plan change applied in {:.0} ms",
        change.as_secs_f64() * 1000.0
    ));
    Ok(json!({
        "tenants": h,
        "parallel": args.helm_parallel,
        "installed_s": secs(installed),
        "converge_s": secs(converged),
        "change_ms": (change.as_secs_f64() * 1000.0).round(),
    }))
}

/// The numbers a pipeline would compute and hand to the chart, taken from the
/// same rendering as the operator's.
fn release_values(catalogue: &capacity::Catalogue, ns: &str, i: usize, video: i64) -> Value {
    let children = desired_with(catalogue, ns, i, video);
    let mut modules = Vec::new();
    let mut quota = json!({});
    for (m, _) in MODULES {
        let name = render::child_name("capacity", m);
        let d = children.iter().find_map(|c| match c {
            Child::Deployment(d) if d.metadata.name.as_deref() == Some(&name) => Some(d),
            _ => None,
        });
        let h = children.iter().find_map(|c| match c {
            Child::Hpa(h) if h.metadata.name.as_deref() == Some(&name) => Some(h),
            _ => None,
        });
        let (Some(d), Some(h)) = (d, h) else { continue };
        let container = &d
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        let hs = &h.spec;
        let profile = &catalogue.profiles[m];
        modules.push(json!({
            "name": m,
            "image": container.image,
            "port": profile.port,
            "minReplicas": hs.min_replicas.unwrap_or(1),
            "maxReplicas": hs.max_replicas,
            "cpuUtilization": profile.scaling.cpu_utilization,
            "sessionsPerReplica": profile.sessions_per_replica,
            "resources": container.resources,
        }));
    }
    let mut limit_range = json!([]);
    for c in &children {
        match c {
            Child::Quota(q) => quota = json!(q.spec.as_ref().and_then(|s| s.hard.clone())),
            Child::LimitRange(l) => limit_range = json!(l.spec.as_ref().map(|s| &s.limits)),
            _ => {}
        }
    }
    json!({
        "tenant": format!("tenant-{i}"),
        "subscription": "capacity",
        "modules": modules,
        "quota": quota,
        "limitRange": limit_range,
    })
}
