//! Faults: the operator killed mid-reconcile, and the API server (and etcd)
//! going away under a running operator. Nothing may be lost or duplicated.
//!
//! The tests here restart control-plane components, so they take a lock and
//! run one at a time.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::ResourceQuota,
};
use kube::{Api, Client, ResourceExt, api::ListParams};
use support::*;
use tenant_capacity_operator::api::TenantSubscription;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The operator binary watching one namespace, or all of them with `None`.
fn start_operator(ns: Option<&str>) -> OperatorProcess {
    // Its subscriptions name no plan.
    let launch = OperatorProcess::launch().args(["--require-plan=false"]);
    match ns {
        Some(ns) => launch.namespace(ns),
        None => launch,
    }
    .start()
}

fn cluster(args: &[&str]) {
    let out = Command::new(format!("{ROOT}/hack/cluster.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hack/cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Components stopped for a test; started again when dropped, even when the test fails.
struct Outage(Vec<&'static str>);

impl Outage {
    fn begin(components: &[&'static str]) -> Self {
        for c in components {
            cluster(&["stop-component", c]);
        }
        Self(components.to_vec())
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        for c in self.0.iter().rev() {
            cluster(&["start-component", c]);
        }
    }
}

fn sub_yaml(name: &str, video: &str, im: &str, c: i64) -> String {
    format!(
        "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: {name}}}\nspec:\n  tenantId: {name}\n  modules:\n    - {{name: {video}, concurrency: {c}}}\n    - {{name: {im}, concurrency: 100}}\n"
    )
}

/// Every subscription has exactly its children, each owned by it.
async fn assert_children_exact(client: &Client, ns: &str, n: usize) {
    let deployments: Vec<Deployment> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let hpas: Vec<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let quotas: Vec<ResourceQuota> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(deployments.len(), 2 * n, "Deployments");
    assert_eq!(hpas.len(), 2 * n, "HPAs");
    assert_eq!(quotas.len(), n, "ResourceQuotas");
    for d in &deployments {
        let owner = &d.owner_references()[0];
        assert_eq!(owner.kind, "TenantSubscription");
        assert!(d.name_any().starts_with(&format!("{}-", owner.name)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_reconcile_then_restart_converges_without_duplicates() {
    let _serial = SERIAL.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let (video, im) = (unique("video"), unique("im"));
    apply_yaml(&client, None, &profile_yaml(&video, "  port: 8443")).await;
    apply_yaml(&client, None, &profile_yaml(&im, "")).await;
    // One tenant per namespace, as in production (a ResourceQuota caps its whole namespace).
    const N: usize = 20;
    let mut namespaces = Vec::new();
    for i in 0..N {
        let ns = TestNamespace::for_tenant(&client, "kill", &format!("k{i}")).await;
        apply_yaml(
            &client,
            Some(&ns.name),
            &sub_yaml(&format!("k{i}"), &video, &im, 100 + i as i64),
        )
        .await;
        namespaces.push(ns);
    }
    let subs: Vec<Api<TenantSubscription>> = namespaces
        .iter()
        .map(|ns| Api::namespaced(client.clone(), &ns.name))
        .collect();
    let ready = || async {
        let mut n = 0;
        for api in &subs {
            n += ready_count(api).await;
        }
        n
    };
    let mut kills = 0;
    for _ in 0..3 {
        let mut op = start_operator(None);
        // Kill while some, not all, are done.
        let seen = wait_for("progress", Duration::from_secs(60), || async {
            let r = ready().await;
            (r > 0).then_some(r)
        })
        .await;
        if seen < N {
            op.kill();
            kills += 1;
        }
        drop(op);
    }
    let _op = start_operator(None);
    wait_for(
        "all Ready after restarts",
        Duration::from_secs(120),
        || async { (ready().await == N).then_some(()) },
    )
    .await;
    println!("SIGKILLs injected mid-reconcile: {kills}; {N} subscriptions converged");
    for ns in namespaces {
        assert_children_exact(&client, &ns.name, 1).await;
        ns.delete().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_and_etcd_outages_are_ridden_out_without_a_restart() {
    let _serial = SERIAL.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::for_tenant(&client, "outage", "o").await;
    let (video, im) = (unique("video"), unique("im"));
    apply_yaml(&client, None, &profile_yaml(&video, "  port: 8443")).await;
    apply_yaml(&client, None, &profile_yaml(&im, "")).await;
    apply_yaml(&client, Some(&ns.name), &sub_yaml("o", &video, &im, 400)).await;
    let subs: Api<TenantSubscription> = Api::namespaced(client.clone(), &ns.name);
    let mut op = start_operator(Some(&ns.name));
    wait_for("Ready", T, || async {
        (ready_count(&subs).await == 1).then_some(())
    })
    .await;

    let mut outages = 0;
    for components in [
        &["kube-apiserver"][..],
        &["etcd"][..],
        &["kube-apiserver", "etcd"][..],
    ] {
        let before = op.line_count();
        let outage = Outage::begin(components);
        // Without the API server, the operator's watches fail: it says so and keeps running.
        // (With only etcd down the API server still serves its cache: nothing to report.)
        if components.contains(&"kube-apiserver") {
            let noticed = Instant::now();
            while op
                .lines_since(before)
                .iter()
                .all(|l| !l.contains("WARN") && !l.contains("ERROR"))
            {
                assert!(
                    noticed.elapsed() < Duration::from_secs(60),
                    "the operator did not report the outage"
                );
                assert!(op.alive(), "the operator exited during the outage");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert!(op.alive());
        drop(outage);
        outages += 1;
        // Converges on a change made after the API is back, without a restart.
        let c = 400 + 400 * outages;
        let hpa = format!("o-{video}");
        wait_for("apply after the outage", T, || async {
            try_apply(
                &client,
                Some(&ns.name),
                &serde_saphyr::from_str(&sub_yaml("o", &video, &im, c)).unwrap(),
            )
            .await
            .ok()
        })
        .await;
        let back = Instant::now();
        wait_for(
            "converged after the outage",
            Duration::from_secs(60),
            || async {
                let h = get_opt::<HorizontalPodAutoscaler>(&client, &ns.name, &hpa).await?;
                (h.spec.max_replicas as i64 == c / 40).then_some(())
            },
        )
        .await;
        let took = back.elapsed();
        println!("{components:?} outage: converged {took:?} after the API was back");
        // Watch backoff is capped at 5 s: recovery takes seconds, not minutes.
        assert!(
            took < Duration::from_secs(30),
            "took {took:?} to converge after the outage"
        );
        assert!(op.alive(), "the operator had to restart");
    }
    let warnings: Vec<String> = op
        .lines()
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(3)
        .cloned()
        .collect();
    println!("outages survived: {outages}; first warnings: {warnings:#?}");
    wait_for("Ready at the end", T, || async {
        (ready_count(&subs).await == 1).then_some(())
    })
    .await;
    assert_children_exact(&client, &ns.name, 1).await;
    ns.delete().await;
}
