//! Draining modules and their data. A switched-off module keeps serving
//! until its drain deadline, inside the quota share it had when the drain
//! began. The namespace admin tries to grow that share or stretch the drain
//! by editing the module's children, and to steer what happens to data at
//! the deadline; the operator decides from what it recorded in the
//! subscription's status, which the admin cannot write.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{PersistentVolumeClaim, ResourceQuota},
};
use kube::ResourceExt;

use super::{
    Tenant,
    support::{T, cluster::unique, get_opt, kubectl, tools::kubectl_apply, wait_for},
};

/// The quota's hard limits, as the API server holds them.
async fn quota(t: &Tenant, sub: &str) -> Vec<(String, String)> {
    let q: ResourceQuota = t.f.get(&format!("{sub}-capacity")).await.expect("quota");
    q.spec
        .and_then(|s| s.hard)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn deadline_of(s: &tenant_capacity_operator::api::TenantSubscription, module: &str) -> Timestamp {
    s.status
        .as_ref()
        .and_then(|st| st.modules.iter().find(|m| m.name == module))
        .and_then(|m| m.drain_deadline.as_deref())
        .expect("a drain deadline")
        .parse()
        .expect("an RFC 3339 deadline")
}

/// During a drain the admin raises the module's HPA ceiling and its pods'
/// resources and rewrites the old `draining-since` annotation to postpone
/// removal: the quota never moves from what the module had, the HPA and
/// the Deployment are put back, and the module goes at the recorded deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_admin_cannot_grow_or_prolong_a_drain() {
    let t = Tenant::new("tb-drain").await;
    let (video, im) = (t.f.video.clone(), t.f.im.clone());
    let child = format!("acme-{video}");
    let spec = |video_on: bool| {
        format!(
            "  tenantId: acme\n  downgrade: {{drainSeconds: 40}}\n  modules:\n    - {{name: {video}, concurrency: 160, enabled: {video_on}}}\n    - {{name: {im}, concurrency: 100}}\n"
        )
    };
    t.f.apply_sub("acme", &spec(true)).await;
    t.f.wait_available("acme").await;
    // video 4 replicas + 1 surge, messaging 3 + 1.
    let bought = quota(&t, "acme").await;
    assert!(bought.contains(&("pods".into(), "9".into())), "{bought:?}");

    t.f.apply_sub("acme", &spec(false)).await;
    let s = t.f.wait_draining("acme", &video).await;
    let deadline = deadline_of(&s, &video);
    assert_eq!(quota(&t, "acme").await, bought, "the drain keeps the share");

    // The attacks, as the namespace admin. The record itself is out of reach:
    let rewrite = t.as_admin(&[
        "patch",
        "tsub",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"modules":[]}}"#,
    ]);
    assert!(
        rewrite.as_ref().is_err_and(|e| e.contains("forbidden")),
        "the admin rewrote the subscription's status: {rewrite:?}"
    );
    t.as_admin(&[
        "patch",
        "hpa",
        &child,
        "--type=merge",
        "-p",
        r#"{"spec":{"maxReplicas":50}}"#,
    ])
    .expect("the admin may edit the HPA");
    let big = format!(
        r#"{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"{video}","resources":{{"requests":{{"cpu":"4","memory":"4Gi"}},"limits":{{"cpu":"4","memory":"4Gi"}}}}}}]}}}}}}}}"#
    );
    t.as_admin(&["patch", "deployment", &child, "-p", &big])
        .expect("the admin may edit the Deployment");
    t.as_admin(&[
        "annotate",
        "--overwrite",
        "deployment",
        &child,
        "capacity.tenancy.dev/draining-since=2099-01-01T00:00:00Z",
    ])
    .expect("the admin may annotate the Deployment");

    // Until the deadline: the quota stays what the module had; the HPA and
    // the pods' size are put back.
    let mut restored = false;
    let mut looks = 0;
    while Timestamp::now() < deadline - SignedDuration::from_secs(2) {
        let now = quota(&t, "acme").await;
        assert_eq!(
            now, bought,
            "the quota moved during the drain after the admin's edits"
        );
        let hpa = t.f.hpa_numbers(&child).await;
        let d: Option<Deployment> = t.f.get(&child).await;
        let cpu = d.as_ref().and_then(|d| {
            let c = &d.spec.as_ref()?.template.spec.as_ref()?.containers[0];
            c.resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("cpu")
                .map(|q| q.0.clone())
        });
        restored = hpa == Some((1, 4)) && cpu.as_deref() == Some("100m");
        looks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(looks >= 10, "the drain was watched only {looks} times");
    assert!(restored, "the HPA and the Deployment were not put back");

    // Removed at the recorded deadline, whatever the annotation says.
    wait_for("video removed at its recorded deadline", T, || async {
        t.f.module_gone(&child).await.then_some(())
    })
    .await;
    let removed = Timestamp::now();
    assert!(
        removed >= deadline,
        "removed at {removed}, before {deadline}"
    );
    assert!(
        removed <= deadline + SignedDuration::from_secs(30),
        "removed at {removed}, long after the recorded deadline {deadline}"
    );
    wait_for("quota of messaging alone", T, || async {
        let q = quota(&t, "acme").await;
        q.contains(&("pods".into(), "4".into()))
            .then_some(())
            .ok_or(format!("{q:?}"))
    })
    .await;
    t.f.finish().await;
}

/// A claim as the namespace admin makes it, with the labels of `sub`'s `module`.
fn claim(name: &str, sub: &str, module: &str, extra_label: &str, owners: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\n  labels: {{capacity.tenancy.dev/subscription: {sub}, capacity.tenancy.dev/module: {module}{extra_label}}}\n{owners}spec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    )
}

/// What happens to data is the policy recorded when each module's drain
/// began; only unowned claims with both labels are deleted; a delete the
/// API server refuses is reported (with its message) and tried again until
/// the claim is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_follows_the_policy_recorded_at_drain_start_and_only_the_modules_own_claims_go() {
    let t = Tenant::new("tb-data").await;
    let ns = t.ns().to_string();
    let (video, im) = (t.f.video.clone(), t.f.im.clone());

    // The provider's legal hold: deleting a claim labelled so is refused.
    let hold = unique("legal-hold");
    kubectl_apply(
        None,
        &format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {hold}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {{apiGroups: [""], apiVersions: [v1], operations: [DELETE], resources: [persistentvolumeclaims]}}
  validations:
    - expression: "!has(oldObject.metadata.labels) || !('example.com/legal-hold' in oldObject.metadata.labels)"
      message: claim is under legal hold
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {hold}}}
spec:
  policyName: {hold}
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
"#
        ),
    );

    // The tenant's own StatefulSet, owning a claim that carries messaging's labels.
    t.apply_as_admin(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: archiver}\nspec:\n  replicas: 0\n  serviceName: archiver\n  selector: {matchLabels: {app: archiver}}\n  template:\n    metadata: {labels: {app: archiver}}\n    spec: {containers: [{name: a, image: registry.example.com/archiver:1}]}\n",
    )
    .expect("the admin may create a StatefulSet");
    let sts_uid = t
        .as_admin(&[
            "get",
            "statefulset",
            "archiver",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap();
    let owned = format!(
        "  ownerReferences: [{{apiVersion: apps/v1, kind: StatefulSet, name: archiver, uid: {sts_uid}}}]\n"
    );
    let held = ", example.com/legal-hold: 'true'";
    for manifest in [
        claim("video-recordings", "acme", &video, "", ""),
        claim("im-history", "acme", &im, "", ""),
        claim("im-archive", "acme", &im, "", &owned),
        claim("im-other", "other", &im, "", ""),
        claim("im-held", "acme", &im, held, ""),
    ] {
        t.apply_as_admin(&manifest)
            .expect("the admin may create claims");
    }

    let spec = |video_on: bool, im_on: bool, drain: u32, retention: &str| {
        format!(
            "  tenantId: acme\n  downgrade: {{drainSeconds: {drain}, dataRetention: {retention}}}\n  modules:\n    - {{name: {video}, concurrency: 80, enabled: {video_on}}}\n    - {{name: {im}, concurrency: 100, enabled: {im_on}}}\n"
        )
    };
    t.f.apply_sub("acme", &spec(true, true, 30, "Retain")).await;
    t.f.wait_available("acme").await;

    // Video drains under Retain. Then, while it still drains, the spec
    // switches to Delete (and a short drain) to drop messaging with its data.
    t.f.apply_sub("acme", &spec(false, true, 30, "Retain"))
        .await;
    t.f.wait_draining("acme", &video).await;
    t.f.apply_sub("acme", &spec(false, false, 3, "Delete"))
        .await;
    let s = t.f.wait_draining("acme", &im).await;
    let video_deadline = deadline_of(&s, &video);
    assert!(
        Timestamp::now() < video_deadline,
        "video must still be draining when the policy changes"
    );

    // Messaging's deletable claims go; the held one is refused, reported
    // with the API server's message, and the module stays in status.
    wait_for("messaging's unheld data deleted", T, || async {
        get_opt::<PersistentVolumeClaim>(&t.f.client, &ns, "im-history")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let s =
        t.f.wait_status("acme", "messaging reporting data left", |s| {
            s.status.as_ref().is_some_and(|st| {
                st.modules.iter().any(|m| {
                    m.name == im
                        && m.message.as_deref().is_some_and(|msg| {
                            msg.contains("deleting data: 1 PersistentVolumeClaim left")
                                && msg.contains("claim is under legal hold")
                        })
                })
            })
        })
        .await;
    let tsub = kubectl(&["get", "tsub", "acme", "-n", &ns, "-o", "yaml"]);
    assert!(
        tsub.contains("im-held"),
        "the refused claim is named: {tsub}"
    );
    drop(s);

    // The hold is lifted: the next try deletes it and the module leaves status.
    kubectl(&["delete", "validatingadmissionpolicybinding", &hold]);
    t.f.wait_status("acme", "messaging gone from status", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.modules.iter().all(|m| m.name != im))
    })
    .await;
    assert!(
        get_opt::<PersistentVolumeClaim>(&t.f.client, &ns, "im-held")
            .await
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
    );

    // Video was drained under Retain: its data stays, whatever the spec says now.
    wait_for("video removed", T, || async {
        t.f.module_gone(&format!("acme-{video}"))
            .await
            .then_some(())
    })
    .await;
    t.f.wait_status("acme", "video gone from status", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.modules.iter().all(|m| m.name != video))
    })
    .await;
    for kept in ["video-recordings", "im-archive", "im-other"] {
        let c = get_opt::<PersistentVolumeClaim>(&t.f.client, &ns, kept).await;
        assert!(
            c.as_ref()
                .is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
            "{kept} was deleted: {:?}",
            c.map(|c| c.name_any())
        );
    }
    kubectl(&["delete", "validatingadmissionpolicy", &hold]);
    t.f.finish().await;
}
