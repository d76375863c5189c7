//! A subscription acts only in a namespace the provider assigned to its
//! tenant (the namespace label `capacity.tenancy.dev/tenant`), one per
//! namespace, and the tenant billed is the namespace's, whatever
//! `spec.tenantId` says.

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{Namespace, ResourceQuota},
};
use kube::{Api, api::ListParams};
use tenant_capacity_operator::api::TenantSubscription;

use super::{Tenant, support::*};

fn sub_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

/// The first status the operator reports for the subscription's current
/// generation, whatever it says: what was written by then is checked before
/// the reason, so the test shows the write itself, not only the wording.
async fn first_status(t: &Tenant, name: &str) -> TenantSubscription {
    t.f.wait_status(name, "a status", |_| true).await
}

fn ready_message(s: &TenantSubscription) -> String {
    condition(s, "Ready").unwrap().message.clone()
}

async fn quotas(t: &Tenant) -> usize {
    Api::<ResourceQuota>::namespaced(t.f.client.clone(), t.ns())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len()
}

/// A workload someone else runs in the namespace, with `replicas` ready pods.
async fn shared_workload(t: &Tenant, replicas: i32) {
    apply_yaml(
        &t.f.client,
        Some(t.ns()),
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: shared-app}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: shared-app}}}}
  template:
    metadata: {{labels: {{app: shared-app}}}}
    spec:
      containers: [{{name: c, image: registry.example.com/shared:1}}]
"#
        ),
    )
    .await;
    wait_shared_ready(t, replicas).await;
}

async fn wait_shared_ready(t: &Tenant, replicas: i32) {
    wait_for(
        &format!("shared-app with {replicas} ready pods"),
        T,
        || async {
            let d: Deployment = t.f.get("shared-app").await?;
            (d.status?.ready_replicas == Some(replicas)).then_some(())
        },
    )
    .await;
}

/// The namespace admin cannot assign its namespace to a tenant.
fn admin_cannot_label_the_namespace(t: &Tenant) {
    assert!(!t.admin_can("patch", "namespaces"));
    assert!(!t.admin_can("update", "namespaces"));
    let ns = t.ns().to_string();
    let refused = t
        .as_admin(&[
            "label",
            "namespace",
            &ns,
            &format!("{TENANT_LABEL}=intruder"),
            "--overwrite",
        ])
        .expect_err("the namespace admin labelled its namespace");
    assert!(refused.contains("forbidden"), "{refused}");
}

/// `modules: []` in a namespace nobody assigned: before, a quota of
/// `pods: 0` blocked everything else running there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_in_an_unassigned_namespace_writes_nothing() {
    let t = Tenant::new("tb-ns-shared").await;
    admin_cannot_label_the_namespace(&t);
    shared_workload(&t, 2).await;

    apply_yaml(
        &t.f.client,
        Some(t.ns()),
        &sub_yaml("x", "  tenantId: acme\n  modules: []\n"),
    )
    .await;
    first_status(&t, "x").await;
    assert_eq!(quotas(&t).await, 0, "a quota was written");
    let s = t.f.wait_not_ready("x", "NamespaceNotAssigned").await;
    let msg = ready_message(&s);
    assert!(
        msg.contains(TENANT_LABEL) && msg.contains(t.ns()) && msg.contains("nothing is written"),
        "{msg}"
    );
    assert!(is(&s, "Stalled", "True", "NamespaceNotAssigned"));
    // Another look (a change of the spec) still writes nothing.
    apply_yaml(
        &t.f.client,
        Some(t.ns()),
        &sub_yaml("x", "  tenantId: acme\n  modules: []\n  paused: false\n"),
    )
    .await;
    t.f.wait_not_ready("x", "NamespaceNotAssigned").await;
    assert_eq!(quotas(&t).await, 0, "a quota was written");

    // What ran there keeps running, and can still grow.
    kubectl(&[
        "scale",
        "deployment",
        "shared-app",
        "--replicas=3",
        "-n",
        t.ns(),
    ]);
    wait_shared_ready(&t, 3).await;

    // Once the provider assigns the namespace, the subscription acts.
    assign_namespace(&t.f.client, t.ns(), "acme").await;
    wait_for("the quota once the namespace is assigned", T, || async {
        (quotas(&t).await == 1).then_some(())
    })
    .await;
    t.f.finish().await;
}

/// `spec.tenantId` claims another tenant than the namespace's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_id_other_than_the_namespace_assignment_writes_nothing() {
    let t = Tenant::new("tb-ns-mismatch").await;
    assign_namespace(&t.f.client, t.ns(), "acme").await;
    admin_cannot_label_the_namespace(&t);
    t.f.apply_sub(
        "g",
        &format!(
            "  tenantId: globex\n  modules:\n    - {{name: {}, concurrency: 400}}\n",
            t.f.video
        ),
    )
    .await;
    first_status(&t, "g").await;
    assert_eq!(quotas(&t).await, 0, "a quota was written");
    assert!(t.f.module_gone(&format!("g-{}", t.f.video)).await);
    let s = t.f.wait_not_ready("g", "TenantMismatch").await;
    let msg = ready_message(&s);
    assert!(
        msg.contains("globex") && msg.contains(&format!("{TENANT_LABEL}=acme")),
        "{msg}"
    );
    assert_eq!(quotas(&t).await, 0);
    assert!(t.f.module_gone(&format!("g-{}", t.f.video)).await);
    let ns: Namespace = Api::all(t.f.client.clone()).get(t.ns()).await.unwrap();
    assert_eq!(
        ns.metadata
            .labels
            .unwrap()
            .get(TENANT_LABEL)
            .map(String::as_str),
        Some("acme"),
        "the assignment stays the provider's"
    );
    t.f.finish().await;
}

/// A second subscription in an assigned namespace: a conflict, not a second
/// writer of the namespace's quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_subscription_in_a_namespace_is_a_conflict_and_writes_nothing() {
    let t = Tenant::new("tb-ns-dup").await;
    let im = t.f.im.clone();
    t.f.apply_sub(
        "first",
        &format!("  tenantId: acme\n  modules:\n    - {{name: {im}, concurrency: 100}}\n"),
    )
    .await;
    t.f.wait_available("first").await;
    let before = t.f.versions("first", &format!("first-{im}")).await;
    let pods = t.f.quota_hard("first", "pods").await;

    t.f.apply_sub(
        "second",
        &format!(
            "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 4000}}\n",
            t.f.video
        ),
    )
    .await;
    first_status(&t, "second").await;
    assert_eq!(quotas(&t).await, 1, "only the first one's quota");
    assert!(t.f.module_gone(&format!("second-{}", t.f.video)).await);
    let s = t.f.wait_not_ready("second", "DuplicateSubscription").await;
    let msg = ready_message(&s);
    assert!(msg.contains("first") && msg.contains(t.ns()), "{msg}");
    assert!(t.f.module_gone(&format!("second-{}", t.f.video)).await);
    assert_eq!(quotas(&t).await, 1, "only the first one's quota");
    assert_eq!(t.f.quota_hard("first", "pods").await, pods);
    assert_eq!(t.f.versions("first", &format!("first-{im}")).await, before);
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(t.f.client.clone(), t.ns())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(hpas.len(), 1, "{hpas:?}");
    assert!(
        is(
            &t.f.subs().get("first").await.unwrap(),
            "Ready",
            "True",
            "Available"
        ),
        "the first is unaffected"
    );

    // The first one gone, the second takes over.
    t.f.subs()
        .delete("first", &Default::default())
        .await
        .unwrap();
    t.f.wait_available("second").await;
    t.f.finish().await;
}

/// Metering and the per-module metrics name the namespace's tenant, even
/// when `spec.tenantId` is changed to bill someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metering_bills_the_namespace_tenant_whatever_the_tenant_id_says() {
    let t = Tenant::new("tb-ns-meter").await;
    let im = t.f.im.clone();
    let ns = t.ns().to_string();
    let spec = |tenant: &str| {
        format!("  tenantId: {tenant}\n  modules:\n    - {{name: {im}, concurrency: 100}}\n")
    };
    t.f.apply_sub("m", &spec("acme")).await;
    t.f.wait_available("m").await;
    let series = |metric: &str, tenant: &str| {
        format!(
            "{metric}{{namespace=\"{ns}\",subscription=\"m\",tenant=\"{tenant}\",module=\"{im}\"}}"
        )
    };
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let metered = series("tenant_capacity_module_replica_seconds_total", "acme");
    let gauge = series("tenant_capacity_module_max_replicas", "acme");
    let text = wait_for("metered for acme", T, || async {
        let text = t.f.operator.metrics.encode();
        (value(&text, &metered).is_some_and(|v| v > 0.0) && value(&text, &gauge).is_some())
            .then_some(text)
    })
    .await;
    let billed = value(&text, &metered).unwrap();

    // Whoever writes the subscription tries to bill another tenant.
    t.f.apply_sub("m", &spec("globex")).await;
    first_status(&t, "m").await;
    assert!(
        !t.f.operator.metrics.encode().contains("globex"),
        "a series names the tenant of spec.tenantId"
    );
    t.f.wait_not_ready("m", "TenantMismatch").await;
    wait_for("still metered for acme", T, || async {
        let text = t.f.operator.metrics.encode();
        value(&text, &metered)
            .is_some_and(|v| v > billed)
            .then_some(())
    })
    .await;
    let text = t.f.operator.metrics.encode();
    assert!(!text.contains("globex"), "{text}");
    assert!(
        value(&text, &gauge).is_none(),
        "a refused subscription exports no plan gauges: {text}"
    );
    // The children still say who they were applied for.
    let d: Deployment = t.f.get(&format!("m-{im}")).await.unwrap();
    assert_eq!(
        d.metadata
            .labels
            .unwrap()
            .get(TENANT_LABEL)
            .map(String::as_str),
        Some("acme")
    );
    t.f.finish().await;
}
