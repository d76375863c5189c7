//! The chart's Grafana dashboard and alerts against real data: the
//! operator binary serves /metrics (plain HTTP on a loopback port) for a
//! tenant it converges, one module held at its ceiling by live sessions;
//! a real Prometheus scrapes it every second with the chart's rules
//! loaded. Every query of every panel, with the template variables set to
//! that tenant, returns at least one series; every variable's query finds
//! series; every alert's expression evaluates, and the capacity alert
//! is pending for the module held back.
//!
//! Run with `cargo test --test observability -- --nocapture` to see each
//! query and what it returned.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::{
    Api,
    api::{DeleteParams, ListParams},
};
use serde_json::Value;
use support::{
    prometheus::{self as prom, DASHBOARD, JOB, Prometheus},
    sessions::{METRIC, SessionLoad},
    *,
};
use tenant_capacity_operator::{
    api::TenantSubscription,
    render::{LABEL_MODULE, LABEL_SUBSCRIPTION},
};

const TENANT: &str = "obs";
/// `$__rate_interval` (and any other rate window) in the panels' queries:
/// Prometheus has scraped the whole test by then, every second.
const RATE_WINDOW: &str = "2m";

/// The test's namespace and module profiles, deleted when dropped (also
/// when the test fails).
struct Cleanup {
    namespace: String,
    profiles: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ns = [
            "delete",
            "namespace",
            &self.namespace,
            "--ignore-not-found",
            "--wait=false",
        ];
        let _ = support::tools::try_kubectl(&ns);
        for p in &self.profiles {
            let _ = support::tools::try_kubectl(&[
                "delete",
                "moduleprofile",
                p,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[observability] {}", msg.as_ref());
}

async fn status_of(api: &Api<TenantSubscription>, name: &str) -> Option<TenantSubscription> {
    let s = api.get_opt(name).await.ok().flatten()?;
    let st = s.status.as_ref()?;
    (st.observed_generation == s.metadata.generation).then_some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_alert_evaluates_against_a_real_prometheus_scraping_the_operator()
{
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::for_tenant(&client, "obs", TENANT).await;
    let rtc = unique("rtc");
    let broken = unique("broken");
    let _cleanup = Cleanup {
        namespace: ns.name.clone(),
        profiles: vec![rtc.clone(), broken.clone()],
    };
    // 10 sessions a replica, the HPA aiming at 80 %: 8 a pod.
    apply_yaml(
        &client,
        None,
        &support::sessions::profile_yaml(&rtc, 10, "", "  port: 8443"),
    )
    .await;
    // A profile the provider got wrong: a CPU request above its limit,
    // which the API server refuses in a Deployment.
    apply_yaml(
        &client,
        None,
        &profile_yaml(&broken, "").replace("requests: {cpu: 100m,", "requests: {cpu: 500m,"),
    )
    .await;

    let op = OperatorProcess::launch()
        .namespace(&ns.name)
        .args(["--require-plan=false"])
        .start();
    let target = op.metrics_address().to_string();
    let dir = tempfile::tempdir().unwrap();
    let rule = prom::rendered_rule(&[]);
    let rules = prom::write_rules_file(dir.path(), &rule);
    let prometheus = Prometheus::start(JOB, &target, Some(&rules));
    log(format!(
        "prometheus on {} scraping {target} as job {JOB}",
        prometheus.address
    ));
    let up = format!("up{{job=\"{JOB}\"}} == 1");
    wait_for("Prometheus scraping the operator", T, || async {
        prometheus.query(&up).ok().filter(|r| !r.is_empty())
    })
    .await;

    let subs: Api<TenantSubscription> = Api::namespaced(client.clone(), &ns.name);
    let sub_yaml = |name: &str, module: &str, concurrency: i64| {
        format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: {name}}}\nspec:\n  tenantId: {TENANT}\n  modules:\n    - {{name: {module}, concurrency: {concurrency}}}\n"
        )
    };

    // Reconciles that fail, for the failure panels: a subscription whose
    // Deployment the API server refuses (422), counted, then deleted.
    apply_yaml(&client, Some(&ns.name), &sub_yaml("broken", &broken, 10)).await;
    wait_for("a reconcile failure counted", T, || async {
        let text = op.metrics()?;
        text.lines()
            .find(|l| l.starts_with("tenant_capacity_reconcile_failures_total{error=\"api_422\"}"))
            .map(str::to_string)
    })
    .await;
    subs.delete("broken", &DeleteParams::default())
        .await
        .unwrap();
    // Its quota is collected before the tenant's own pods come: it would cap them too.
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the broken subscription and its quota gone", T, || async {
        let gone = subs.get_opt("broken").await.ok()?.is_none()
            && quotas
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty();
        gone.then_some(())
    })
    .await;

    // The tenant: 20 sessions bought (a ceiling of 2 replicas), 300 live.
    apply_yaml(&client, Some(&ns.name), &sub_yaml("acme", &rtc, 20)).await;
    wait_for("acme Ready", T, || async {
        let s = status_of(&subs, "acme").await?;
        is(&s, "Ready", "True", "Available").then_some(())
    })
    .await;
    let load = SessionLoad::start(
        &client,
        &ns.name,
        &format!("{LABEL_SUBSCRIPTION}=acme,{LABEL_MODULE}={rtc}"),
        METRIC,
        Duration::from_secs(2),
    );
    load.set(300);
    let s = wait_for("acme CapacityLimited in sessions", T, || async {
        let s = status_of(&subs, "acme").await?;
        condition(&s, "CapacityLimited")
            .is_some_and(|c| c.status == "True" && c.message.contains("sessions live"))
            .then_some(s)
    })
    .await;
    log(format!(
        "CapacityLimited: {}",
        condition(&s, "CapacityLimited").unwrap().message
    ));
    // Prometheus has scraped the module held back, and the live sessions.
    let limited = format!(
        "tenant_capacity_module_capacity_limited{{job=\"{JOB}\",module=\"{rtc}\"}} == 1 and on(module) tenant_capacity_module_sessions > 0 and on(module) tenant_capacity_module_replicas == 2"
    );
    wait_for("the module held back, as scraped", T, || async {
        prometheus.query(&limited).ok().filter(|r| !r.is_empty())
    })
    .await;

    // Every panel's every query, with the variables set to this tenant.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let vars = [
        ("job", JOB),
        ("namespace", ns.name.as_str()),
        ("tenant", TENANT),
        ("module", rtc.as_str()),
        ("__rate_interval", RATE_WINDOW),
        ("__interval", RATE_WINDOW),
        ("__range", RATE_WINDOW),
    ];
    let targets = prom::dashboard_targets(&dashboard);
    assert!(targets.len() >= 15, "{} queries", targets.len());
    let mut empty = Vec::new();
    for (panel, expr) in &targets {
        let q = prom::substitute(expr, &vars);
        match prometheus.query(&q) {
            Ok(r) if !r.is_empty() => log(format!(
                "{panel}: {q} -> {} series, e.g. {} = {}",
                r.len(),
                r[0]["metric"],
                r[0]["value"][1]
            )),
            Ok(_) => empty.push(format!("panel {panel:?}: {q} returned no series")),
            Err(e) => empty.push(format!("panel {panel:?}: {q} failed: {e}")),
        }
    }
    // Each variable's query (`label_values(selector, label)`) finds series
    // carrying the label.
    for (name, query) in prom::dashboard_variables(&dashboard) {
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("${name}: not label_values(): {query}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let selector = prom::substitute(selector.trim(), &vars);
        let label = label.trim();
        match prometheus.series(&selector) {
            Ok(s) if s.iter().any(|x| x[label].is_string()) => {
                log(format!("${name}: {selector} -> {} series", s.len()))
            }
            Ok(_) => empty.push(format!(
                "variable ${name}: {selector} has no series with {label}"
            )),
            Err(e) => empty.push(format!("variable ${name}: {selector} failed: {e}")),
        }
    }

    // Every alert's expression parses and evaluates on these series, and
    // Prometheus evaluates each rule without error.
    // Each series an alert reads is exported (an alert on a renamed metric
    // would evaluate to nothing, silently).
    for (alert, expr) in prom::alerts(&rule) {
        match prometheus.query(&expr) {
            Ok(r) => log(format!("alert {alert}: {} series now", r.len())),
            Err(e) => empty.push(format!("alert {alert}: {expr} failed: {e}")),
        }
        for metric in prom::metric_names(&expr) {
            let selector = format!("{metric}{{job=\"{JOB}\"}}");
            if !prometheus.series(&selector).is_ok_and(|s| !s.is_empty()) {
                empty.push(format!("alert {alert}: no series {selector}"));
            }
        }
    }
    let loaded = wait_for("every rule evaluated", T, || async {
        let rules = prometheus.rules().ok()?;
        let evaluated = rules.len() == prom::alerts(&rule).len()
            && rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        evaluated.then_some(rules)
    })
    .await;
    for r in &loaded {
        if r["health"] != "ok" {
            empty.push(format!(
                "rule {}: health {} ({})",
                r["name"], r["health"], r["lastError"]
            ));
        }
    }
    // The module held back makes the capacity alert pending (it fires
    // after `for`), naming the tenant's module, with its ceiling as value.
    let pending = wait_for("TenantCapacityLimited pending", T, || async {
        let rules = prometheus.rules().ok()?;
        let r = rules
            .into_iter()
            .find(|r| r["name"] == "TenantCapacityLimited")?;
        r["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["module"] == rtc.as_str() && a["state"] == "pending")
            .cloned()
    })
    .await;
    log(format!("pending: {pending}"));
    assert_eq!(pending["labels"]["tenant"], TENANT);
    assert_eq!(pending["labels"]["namespace"], ns.name.as_str());
    assert_eq!(pending["labels"]["subscription"], "acme");
    assert_eq!(
        pending["value"].as_str().map(|v| v.parse::<f64>().ok()),
        Some(Some(2.0))
    );
    // None of the operator's own alerts is pending: it is up, leads, synced.
    for quiet in [
        "TenantCapacityOperatorDown",
        "TenantCapacityNoLeader",
        "TenantCapacityCachesNotSynced",
        "TenantCapacityPodsRefused",
    ] {
        let r = loaded.iter().find(|r| r["name"] == quiet).unwrap();
        assert!(
            r["alerts"].as_array().is_none_or(|a| a.is_empty()),
            "{quiet}: {}",
            r["alerts"]
        );
    }

    assert!(
        empty.is_empty(),
        "queries without data:\n{}\n(prometheus log:\n{})",
        empty.join("\n"),
        prometheus.log()
    );
    drop(load);
    drop(prometheus);
    assert!(op.stop().success());
    ns.delete().await;
}
