//! Tenant pods in a namespace that enforces the `restricted` Pod Security
//! Standard (the API server's own PodSecurity admission) are admitted as
//! rendered by default; a profile that asks for root is refused there, and
//! status says why.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};
use serde_json::json;

use crate::support::*;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_admitted_where_the_restricted_standard_is_enforced() {
    let f = Fixture::new("pss").await;
    kubectl(&[
        "label",
        "namespace",
        &f.ns.name,
        &format!("{ENFORCE}=restricted"),
        &format!("{ENFORCE}-version=latest"),
    ]);
    f.apply_sub(
        "acme",
        &format!(
            "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 80}}\n    - {{name: {}, concurrency: 100}}\n",
            f.video, f.im
        ),
    )
    .await;
    f.wait_available("acme").await;
    // Every replica the operator asked for was admitted (3: one video, two
    // messaging), each with the settings the standard demands.
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), &f.ns.name);
    let list = wait_for("3 pods", T, || async {
        let l = pods.list(&ListParams::default()).await.ok()?;
        (l.items.len() == 3).then_some(l)
    })
    .await;
    for p in &list.items {
        let spec = serde_json::to_value(p.spec.as_ref().unwrap()).unwrap();
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(
            spec["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        // No token volume was mounted.
        assert!(
            spec["volumes"]
                .as_array()
                .is_none_or(|v| v.iter().all(|v| v.get("projected").is_none())),
            "{spec}"
        );
    }

    // The namespace does enforce: a profile asking for root is refused,
    // in the API server's words.
    let root = unique("root");
    apply_yaml(
        &f.client,
        None,
        &profile_yaml(&root, "  security: {allowRoot: true}"),
    )
    .await;
    f.apply_sub(
        "acme",
        &format!(
            "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 80}}\n    - {{name: {}, concurrency: 100}}\n    - {{name: {root}, concurrency: 10}}\n",
            f.video, f.im
        ),
    )
    .await;
    let s = f.wait_not_ready("acme", "PodsRefused").await;
    let message = &condition(&s, "Ready").unwrap().message;
    assert!(
        message.starts_with(&format!("{root}: pods refused: "))
            && message.contains("violates PodSecurity \"restricted:latest\"")
            && message.contains("runAsNonRoot != true"),
        "{message}"
    );
    f.finish().await;
}
