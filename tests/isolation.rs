//! Isolation: a subscription's objects stay in its namespace, and a tenant
//! with full rights over its own namespace still cannot run more pods than
//! it bought.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Pod, ResourceQuota},
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_exceed_its_quota_and_nothing_leaks_out_of_its_namespace() {
    let f = Fixture::new("iso").await;
    let ns = f.ns.name.clone();
    // A tenant id of its own, so objects of earlier runs (namespaces still terminating) don't match.
    let tenant = unique("t");
    f.apply_sub(
        "t",
        &format!(
            "  tenantId: {tenant}\n  modules:\n    - {{name: {}, concurrency: 80}}\n",
            f.video
        ),
    )
    .await;
    f.wait_available("t").await;

    // Nothing labelled for this subscription exists outside its namespace.
    let selector = format!(
        "app.kubernetes.io/managed-by=tenant-capacity-operator,capacity.tenancy.dev/subscription=t,capacity.tenancy.dev/tenant={tenant}"
    );
    let all_deployments: Vec<Deployment> = Api::all(f.client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items;
    let all_quotas: Vec<ResourceQuota> = Api::all(f.client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items;
    assert!(!all_deployments.is_empty());
    for d in &all_deployments {
        assert_eq!(
            d.namespace().as_deref(),
            Some(ns.as_str()),
            "Deployment {} outside the namespace",
            d.name_any()
        );
    }
    assert_eq!(all_quotas.len(), 1);
    assert_eq!(all_quotas[0].namespace().as_deref(), Some(ns.as_str()));

    // The tenant: a namespace admin (the built-in "admin" ClusterRole bound in its namespace).
    apply_yaml(
        &f.client,
        Some(&ns),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tenant-admin}\n",
    )
    .await;
    apply_yaml(
        &f.client,
        Some(&ns),
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: tenant-admin}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}}\nsubjects: [{{kind: ServiceAccount, name: tenant-admin, namespace: {ns}}}]\n"
        ),
    )
    .await;
    let mut config = Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:tenant-admin"));
    let tenant = Client::try_from(config).unwrap();

    // The tenant may not raise its own quota...
    let quotas: Api<ResourceQuota> = Api::namespaced(tenant.clone(), &ns);
    let raise = quotas
        .patch(
            "t-capacity",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"hard": {"pods": "1000"}}})),
        )
        .await;
    assert!(
        matches!(raise, Err(kube::Error::Api(ref s)) if s.code == 403),
        "tenant raised its quota: {raise:?}"
    );

    // ...and a Deployment of its own asking for 60 pods gets only what the quota leaves.
    let hard: i64 = f.quota_hard("t", "pods").await.unwrap().parse().unwrap();
    let rogue = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rogue"},
        "spec": {"replicas": 60, "selector": {"matchLabels": {"app": "rogue"}},
          "template": {"metadata": {"labels": {"app": "rogue"}}, "spec": {
            "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}, "limits": {"cpu": "10m", "memory": "8Mi"}}}]}}}
    });
    let deployments: Api<Deployment> = Api::namespaced(tenant.clone(), &ns);
    deployments
        .patch(
            "rogue",
            &PatchParams::apply("tenant"),
            &Patch::Apply(&rogue),
        )
        .await
        .expect("the tenant may create its own Deployment");
    let replicasets: Api<ReplicaSet> = Api::namespaced(f.client.clone(), &ns);
    wait_for(
        "the quota refuses pods",
        Duration::from_secs(60),
        || async {
            let list = replicasets
                .list(&ListParams::default().labels("app=rogue"))
                .await
                .ok()?;
            list.items
                .iter()
                .any(|rs| {
                    rs.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| {
                                c.type_ == "ReplicaFailure"
                                    && c.message
                                        .as_deref()
                                        .is_some_and(|m| m.contains("exceeded quota"))
                            })
                        })
                })
                .then_some(())
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), &ns);
    let count = pods.list(&ListParams::default()).await.unwrap().items.len() as i64;
    println!("tenant asked for 60 extra pods; namespace holds {count} pods, quota {hard}");
    assert!(count <= hard, "{count} pods exceed the quota of {hard}");
    let q: ResourceQuota = f.get("t-capacity").await.unwrap();
    let used: i64 = q.status.unwrap().used.unwrap()["pods"].0.parse().unwrap();
    assert!(used <= hard);
    f.finish().await;
}
