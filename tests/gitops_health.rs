//! Health as GitOps tools read it, on a live subscription taken through each
//! state: kstatus (the real `status.Compute` of sigs.k8s.io/cli-utils, what
//! Flux's `wait`/`healthChecks`, kpt and cli-utils use) and the Argo CD
//! health check (docs/argocd-health.lua in gopher-lua, as Argo CD runs it),
//! both fed `kubectl get -o json`.
//!
//! | state                         | kstatus    | Argo CD     |
//! |-------------------------------|------------|-------------|
//! | new, not observed yet         | InProgress | Progressing |
//! | converged                     | Current    | Healthy     |
//! | paused, nothing under way     | Current    | Suspended   |
//! | a module draining             | InProgress | Progressing |
//! | over the plan (while draining)| Failed     | Degraded    |
//! | a tier the profile lacks      | Failed     | Degraded    |

mod support;

use support::{health::Verdict, *};

/// The object as kubectl prints it, and what both tools read from it.
fn verdicts(ns: &str, name: Option<&str>) -> (String, Verdict, Verdict) {
    let mut args = vec!["get", "tenantsubscriptions.capacity.tenancy.dev", "-n", ns];
    args.extend(name);
    args.extend(["-o", "json"]);
    let json = kubectl(&args);
    let mut k = health::kstatus(&json);
    let mut a = health::argocd(&json);
    assert_eq!(
        (k.len(), a.len()),
        (1, 1),
        "one subscription, one verdict each:\n{json}"
    );
    let (seen, kstatus) = k.remove(0);
    if let Some(name) = name {
        assert_eq!(seen, format!("{ns}/{name}"));
    }
    (json, kstatus, a.remove(0))
}

/// Both tools read `state` as expected, with a message naming `why`.
#[track_caller]
fn expect(state: &str, ns: &str, name: Option<&str>, kstatus: &str, argocd: &str, why: &str) {
    let (json, k, a) = verdicts(ns, name);
    assert!(
        k.status == kstatus && a.status == argocd,
        "{state}: kstatus {} ({}), Argo CD {} ({}); want {kstatus} / {argocd}\n{json}",
        k.status,
        k.message,
        a.status,
        a.message
    );
    assert!(
        k.message.contains(why) || a.message.contains(why),
        "{state}: neither message names {why:?}: kstatus {:?}, Argo CD {:?}",
        k.message,
        a.message
    );
    eprintln!(
        "[health] {state}: kstatus {} ({}); Argo CD {} ({})",
        k.status, k.message, a.status, a.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kstatus_and_argocd_read_each_state_of_a_live_subscription() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::for_tenant(&client, "health", "h").await;
    let (video, im, plan) = (unique("video"), unique("im"), unique("plan"));
    apply_yaml(&client, None, &profile_yaml(&video, "  port: 8443")).await;
    apply_yaml(&client, None, &profile_yaml(&im, "")).await;
    apply_yaml(
        &client,
        None,
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {{name: {plan}}}\nspec:\n  modules:\n    - {{name: {video}, maxConcurrency: 1000}}\n    - {{name: {im}, maxConcurrency: 1000}}\n"
        ),
    )
    .await;
    let spec = |paused: bool, video_on: bool, im_extra: &str| {
        format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: s}}\nspec:\n  tenantId: h\n  plan: {plan}\n  paused: {paused}\n  downgrade: {{drainSeconds: 900}}\n  modules:\n    - {{name: {video}, concurrency: 80, enabled: {video_on}}}\n    - {{name: {im}, {im_extra}}}\n"
        )
    };
    let n = ns.name.clone();
    let s = Some("s");

    // Created before any operator runs: nothing has observed it. The API
    // server serves the schema's default status (observedGeneration 0).
    tools::kubectl_apply(Some(&n), &spec(false, true, "concurrency: 100"));
    expect(
        "new",
        &n,
        s,
        "InProgress",
        "Progressing",
        "observed generation is 0",
    );

    let operator = Operator::start(&client, &n);
    let f = Fixture {
        client: client.clone(),
        ns,
        video: video.clone(),
        im: im.clone(),
        operator,
    };
    f.wait_available("s").await;
    expect(
        "converged",
        &n,
        s,
        "Current",
        "Healthy",
        "at or above their floor",
    );

    tools::kubectl_apply(Some(&n), &spec(true, true, "concurrency: 100"));
    let paused = f
        .wait_status("s", "Ready reason Paused", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "Paused")
        })
        .await;
    assert!(
        is(&paused, "Reconciling", "False", "Reconciled"),
        "nothing under way while paused: {:?}",
        paused.status
    );
    expect("paused", &n, s, "Current", "Suspended", "paused");

    // Switched off with a 15-minute drain: the module keeps serving, the
    // subscription is reconciling until the drain ends.
    tools::kubectl_apply(Some(&n), &spec(false, false, "concurrency: 100"));
    f.wait_draining("s", &video).await;
    f.wait_status("s", "Reconciling=True (Draining)", |s| {
        is(s, "Reconciling", "True", "Draining")
    })
    .await;
    expect("draining", &n, s, "InProgress", "Progressing", "draining");

    // Over the plan while the drain still runs: refused, and a wait must
    // fail now rather than at the drain's end or its own timeout.
    tools::kubectl_apply(Some(&n), &spec(false, false, "concurrency: 5000"));
    let refused = f
        .wait_status("s", "Stalled=True (ExceedsPlan)", |s| {
            is(s, "Stalled", "True", "ExceedsPlan")
        })
        .await;
    assert!(
        refused
            .status
            .as_ref()
            .unwrap()
            .modules
            .iter()
            .any(|m| m.name == video
                && m.state == Some(tenant_capacity_operator::api::ModuleState::Draining)),
        "the drain goes on while the spec is refused: {:?}",
        refused.status
    );
    expect(
        "over the plan, draining",
        &n,
        s,
        "Failed",
        "Degraded",
        "1000",
    );

    // A tier the profile does not have; read through a List this time.
    tools::kubectl_apply(
        Some(&n),
        &spec(false, false, "concurrency: 100, tier: ultra"),
    );
    f.wait_status("s", "Stalled=True (TierNotFound)", |s| {
        is(s, "Stalled", "True", "TierNotFound")
    })
    .await;
    expect("tier not found", &n, None, "Failed", "Degraded", "ultra");

    f.finish().await;
    for (kind, name) in [
        ("moduleprofiles.capacity.tenancy.dev", &video),
        ("moduleprofiles.capacity.tenancy.dev", &im),
        ("subscriptionplans.capacity.tenancy.dev", &plan),
    ] {
        tools::kubectl(&["delete", kind, name, "--ignore-not-found", "--wait=false"]);
    }
}
