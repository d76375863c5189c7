//! The operator's children belong to the operator: a namespace admin can
//! neither edit, detach, freeze nor orphan them, nor make objects that
//! claim the subscription as owner (the chart's child-protection policies,
//! templates/child-protection.yaml). Without them every attack below
//! succeeds and keeps capacity the subscription no longer grants. Nor can
//! it open load balancers or node ports (the quota allows none).

use serde_json::Value;

use crate::{
    Tenant,
    support::{T, chart::ChartObjects, tools::kubectl, wait_blocking, wait_for},
};

/// The chart's child-protection policies, bound to one namespace only.
fn policies(namespace: &str) -> ChartObjects {
    let p = ChartObjects::apply(
        "tbc",
        "templates/child-protection.yaml",
        &[format!(
            "childProtection.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={namespace}"
        )],
    );
    assert_eq!(p.docs.len(), 4, "two policies and their bindings");
    p
}

const REFUSED: &str = "is managed by tenant-capacity-operator";

fn refused(t: &Tenant, what: &str, args: &[&str], needle: &str) {
    match t.as_admin(args) {
        Ok(out) => panic!("{what}: the namespace admin was allowed: {out}"),
        Err(e) => assert!(
            e.contains(needle),
            "{what}: refused, but not by the policy: {e}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_admin_cannot_edit_detach_freeze_or_orphan_children() {
    let t = Tenant::new("tb-child").await;
    let f = &t.f;
    let spec = |c: i64| {
        format!(
            "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: {c}}}\n",
            f.video
        )
    };
    let sub = f.apply_sub("acme", &spec(400)).await;
    f.wait_available("acme").await;
    let video = format!("acme-{}", f.video);
    let ns = t.ns().to_string();
    let _policies = policies(&ns);
    // The policies take effect once the API server has loaded them.
    wait_blocking("the child-protection policy in force", T, || {
        t.as_admin(&[
            "patch",
            "hpa",
            &video,
            "--dry-run=server",
            "--type=merge",
            "-p",
            r#"{"spec":{"maxReplicas":50}}"#,
        ])
        .err()
        .filter(|e| e.contains(REFUSED))
    });

    let selector = format!("capacity.tenancy.dev/module={}", f.video);
    let rs = kubectl(&["get", "rs", "-n", &ns, "-l", &selector, "-o", "name"]);
    let rs = rs
        .lines()
        .next()
        .expect("the module's ReplicaSet")
        .to_string();
    let pod = kubectl(&["get", "pods", "-n", &ns, "-l", &selector, "-o", "name"]);
    let pod = pod.lines().next().expect("a module pod").to_string();
    let attacks: [(&str, Vec<&str>, &str); 8] = [
        (
            "raise the autoscaler's ceiling",
            vec![
                "patch",
                "hpa",
                &video,
                "--type=merge",
                "-p",
                r#"{"spec":{"maxReplicas":50}}"#,
            ],
            REFUSED,
        ),
        (
            "detach the autoscaler from its subscription",
            vec![
                "patch",
                "hpa",
                &video,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/metadata/ownerReferences"}]"#,
            ],
            REFUSED,
        ),
        (
            "freeze the Deployment with a finalizer",
            vec![
                "patch",
                "deployment",
                &video,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":["example.com/keep"]}}"#,
            ],
            REFUSED,
        ),
        (
            "give the Deployment bigger pods",
            vec![
                "set",
                "resources",
                "deployment",
                &video,
                "--requests=cpu=8",
                "--limits=cpu=8",
            ],
            REFUSED,
        ),
        (
            "orphan the module's pods by deleting its Deployment",
            vec!["delete", "deployment", &video, "--cascade=orphan"],
            REFUSED,
        ),
        (
            "delete its ReplicaSet",
            vec!["delete", &rs, "--cascade=orphan"],
            REFUSED,
        ),
        (
            "take a pod out of its ReplicaSet",
            vec!["label", &pod, "--overwrite", "pod-template-hash=kept"],
            REFUSED,
        ),
        (
            "make an object that looks like a child",
            vec![
                "create",
                "deployment",
                "forged",
                "--image=x",
                "--dry-run=client",
                "-o",
                "json",
            ],
            "",
        ),
    ];
    for (what, args, needle) in &attacks[..7] {
        refused(&t, what, args, needle);
    }
    // A Deployment of the tenant's own passes; one labelled as the operator's does not.
    let forged = t
        .as_admin(&attacks[7].1)
        .expect("kubectl renders a Deployment");
    let mut forged: Value = serde_json::from_str(&forged).unwrap();
    forged["metadata"]["labels"]["app.kubernetes.io/managed-by"] =
        "tenant-capacity-operator".into();
    let e = t
        .apply_as_admin(&forged.to_string())
        .expect_err("a forged child");
    assert!(e.contains(REFUSED), "{e}");
    forged["metadata"]["labels"] = serde_json::json!({"app": "mine"});
    forged["metadata"]["name"] = "mine".into();
    t.apply_as_admin(&forged.to_string())
        .expect("the tenant's own Deployment is the tenant's business (the quota caps it)");
    // Claiming the subscription as owner is refused, whatever the kind.
    let uid = sub.metadata.uid.clone().unwrap();
    let claim = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"claim","ownerReferences":[{{"apiVersion":"capacity.tenancy.dev/v1alpha1","kind":"TenantSubscription","name":"acme","uid":"{uid}"}}]}}}}"#
    );
    let e = t
        .apply_as_admin(&claim)
        .expect_err("an object owned by the subscription");
    assert!(
        e.contains("only tenant-capacity-operator makes objects owned by a TenantSubscription"),
        "{e}"
    );
    // Load balancers and node ports are nothing a plan sells: the quota
    // refuses them; a ClusterIP Service of the tenant's own is fine.
    for type_ in ["LoadBalancer", "NodePort"] {
        let svc = format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{}"}},"spec":{{"type":"{type_}","selector":{{"app":"mine"}},"ports":[{{"port":80}}]}}}}"#,
            type_.to_lowercase()
        );
        let e = t.apply_as_admin(&svc).expect_err(type_);
        assert!(e.contains("exceeded quota"), "{type_}: {e}");
    }
    t.apply_as_admin(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"internal"},"spec":{"selector":{"app":"mine"},"ports":[{"port":80}]}}"#,
    )
    .expect("a ClusterIP Service");
    // Restarting a pod stays possible: its ReplicaSet replaces it.
    t.as_admin(&["delete", &pod, "--wait=false"])
        .expect("a namespace admin may delete (restart) a module pod");

    // Nothing changed, and the operator and the cluster's controllers still
    // do their work: a new ceiling is applied and the pods come back.
    assert_eq!(f.hpa_numbers(&video).await, Some((1, 10)));
    f.apply_sub("acme", &spec(800)).await;
    wait_for("the new ceiling applied by the operator", T, || async {
        (f.hpa_numbers(&video).await? == (1, 20)).then_some(())
    })
    .await;
    f.wait_available("acme").await;
    t.f.finish().await;
}
