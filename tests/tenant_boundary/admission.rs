//! Who may write what was bought, and what is refused at the door: the
//! namespace admin only reads its subscription (RBAC); the provider's own
//! over-plan subscriptions are refused at `kubectl apply` by the chart's
//! ValidatingAdmissionPolicies, naming the module and the limit; what
//! admission cannot see (a CapacityCalendar, a missing plan under
//! `--require-plan`) the operator still refuses; a subscription name that
//! cannot name a Service is refused at apply; a child the API server refuses
//! shows in status.

use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;

use crate::{
    TENANT_ADMIN, Tenant,
    support::{
        Fixture, TestNamespace,
        chart::ChartObjects,
        cluster::{apply_yaml, assign_namespace, install_crds, profile_yaml, unique},
        tools::{kubectl, run, try_kubectl_apply},
        wait_blocking, wait_for,
    },
};

/// The label that puts a namespace under the admission policies a test
/// installs (its value: the namespace), so they never judge other tests'
/// subscriptions on the shared cluster.
const ADMISSION_LABEL: &str = "tenant-boundary.test/admission";

/// A cluster-scoped catalogue object (plan, calendar, profile) removed when
/// the test ends, however it ends.
struct Catalogued(Vec<(&'static str, String)>);

impl Drop for Catalogued {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let _ = run(
                "kubectl",
                &["delete", kind, name, "--ignore-not-found", "--wait=false"],
                None,
            );
        }
    }
}

/// The chart's admission policies and bindings, rendered under a release
/// name of their own and scoped to namespaces labelled for this test;
/// deleted when dropped.
struct Admission {
    _policies: ChartObjects,
}

impl Admission {
    /// Install them for `namespace`, and wait until both refuse: a
    /// subscription without a plan, and one with a module `plan` does not sell.
    fn install(namespace: &str, plan: &str) -> Self {
        kubectl(&[
            "label",
            "namespace",
            namespace,
            &format!("{ADMISSION_LABEL}={namespace}"),
            "--overwrite",
        ]);
        let policies = ChartObjects::apply(
            "tb-adm",
            "templates/admission.yaml",
            &[format!(
                "admission.namespaceSelector.matchLabels.{}={namespace}",
                ADMISSION_LABEL.replace('.', "\\.")
            )],
        );
        assert_eq!(
            policies.names().len(),
            4,
            "two policies, two bindings: {:?}",
            policies.names()
        );
        for d in policies
            .docs
            .iter()
            .filter(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        {
            assert_eq!(
                d["spec"]["matchResources"]["namespaceSelector"],
                serde_json::json!({"matchLabels": {ADMISSION_LABEL: namespace}}),
                "scoped to this test's namespace"
            );
        }
        let admission = Self {
            _policies: policies,
        };
        // Policies take effect once the API server has loaded them.
        let probes = [
            "  tenantId: probe\n  modules: []\n".to_string(),
            format!(
                "  tenantId: probe\n  plan: {plan}\n  modules: [{{name: probe-not-sold, concurrency: 1}}]\n"
            ),
        ];
        wait_blocking(
            "the admission policies to be in force",
            Duration::from_secs(60),
            || {
                probes
                    .iter()
                    .all(|spec| {
                        let out = run(
                            "kubectl",
                            &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
                            Some(&sub_yaml("probe", spec)),
                        );
                        !out.status.success()
                    })
                    .then_some(())
            },
        );
        admission
    }
}

fn sub_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

/// `kubectl apply` as the provider (the admin kubeconfig), expected refused:
/// the API server's message.
fn refused(ns: &str, manifest: &str) -> String {
    match try_kubectl_apply(Some(ns), manifest) {
        Ok(out) => panic!("accepted ({out}):\n{manifest}"),
        Err(e) => e,
    }
}

fn assert_mentions(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "{p:?} not in: {text}");
    }
}

/// The namespace admin reads its subscription but changes nothing that was
/// bought: create, patch (concurrency up, plan dropped, a 1000% window),
/// delete, status, and the plans and calendars are all refused (403).
#[tokio::test]
async fn the_namespace_admin_cannot_write_what_was_bought() {
    let t = Tenant::new("tb-rbac").await;
    let plan = unique("tb-pro");
    let _catalogue = Catalogued(vec![("subscriptionplan", plan.clone())]);
    apply_yaml(
        &t.f.client,
        None,
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {{name: {plan}}}\n\
             spec: {{modules: [{{name: {}, maxConcurrency: 1000}}]}}\n",
            t.f.video
        ),
    )
    .await;
    let spec = format!(
        "  tenantId: acme\n  plan: {plan}\n  modules:\n    - {{name: {}, concurrency: 400}}\n",
        t.f.video
    );
    t.f.apply_sub("acme", &spec).await;
    t.f.wait_available("acme").await;
    let child = format!("acme-{}", t.f.video);
    let before = t.f.hpa_numbers(&child).await.expect("the HPA");
    assert_eq!(before.1, 10, "⌈400 / 40⌉");
    let quota_before = t.f.quota_hard("acme", "pods").await;

    // The built-in admin role follows the aggregated ClusterRoles shortly.
    let write_verbs = ["create", "update", "patch", "delete"];
    wait_blocking(
        "the namespace admin to hold no write on subscriptions",
        Duration::from_secs(60),
        || {
            let can: Vec<&str> = write_verbs
                .iter()
                .copied()
                .filter(|v| t.admin_can(v, "tenantsubscriptions.capacity.tenancy.dev"))
                .collect();
            if can.is_empty() {
                Ok(())
            } else {
                Err(format!("{TENANT_ADMIN} may still {can:?} subscriptions"))
            }
        },
    );

    let forbidden = |what: &str, r: Result<String, String>| {
        let e = r.expect_err(&format!("{what}: the namespace admin was allowed"));
        assert!(
            e.contains("Forbidden") || e.contains("forbidden"),
            "{what}: not refused by RBAC: {e}"
        );
    };
    forbidden(
        "create a subscription",
        t.apply_as_admin(&sub_yaml(
            "mine",
            &format!(
                "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 100000}}\n",
                t.f.video
            ),
        )),
    );
    forbidden(
        "raise concurrency",
        t.as_admin(&[
            "patch",
            "tsub",
            "acme",
            "--type=json",
            "-p",
            r#"[{"op": "replace", "path": "/spec/modules/0/concurrency", "value": 100000}]"#,
        ]),
    );
    forbidden(
        "drop the plan",
        t.as_admin(&[
            "patch",
            "tsub",
            "acme",
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/spec/plan"}]"#,
        ]),
    );
    forbidden(
        "add a 1000% window",
        t.as_admin(&[
            "patch",
            "tsub",
            "acme",
            "--type=merge",
            "-p",
            r#"{"spec": {"seasons": {"windows": [{"name": "mine", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], "concurrencyPercent": 1000}]}}}"#,
        ]),
    );
    forbidden(
        "server-side apply over the provider's fields",
        t.apply_as_admin(&sub_yaml(
            "acme",
            &format!(
                "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 100000}}\n",
                t.f.video
            ),
        )),
    );
    forbidden("delete it", t.as_admin(&["delete", "tsub", "acme"]));
    forbidden(
        "write its status",
        t.as_admin(&[
            "patch",
            "tsub",
            "acme",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status": {"activeWindows": ["mine"]}}"#,
        ]),
    );
    forbidden(
        "raise the plan",
        t.as_admin(&[
            "patch",
            "subscriptionplan",
            &plan,
            "--type=json",
            "-p",
            r#"[{"op": "replace", "path": "/spec/modules/0/maxConcurrency", "value": 100000000}]"#,
        ]),
    );
    forbidden(
        "write a plan of its own",
        t.apply_as_admin(&format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {{name: {plan}-mine}}\n\
             spec: {{modules: [{{name: {}, maxConcurrency: 100000000}}]}}\n",
            t.f.video
        )),
    );
    forbidden(
        "write a calendar",
        t.apply_as_admin(&format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: CapacityCalendar\nmetadata: {{name: {plan}-mine}}\n\
             spec: {{windows: [{{name: always, days: [Mon], concurrencyPercent: 1000}}]}}\n"
        )),
    );

    // Reading still works: the subscription and its status.
    let reason = t
        .as_admin(&[
            "get",
            "tsub",
            "acme",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].reason}"#,
        ])
        .expect("the admin reads the status");
    assert_eq!(reason, "Available");

    // Nothing moved.
    let sub = t.f.subs().get("acme").await.unwrap();
    assert_eq!(sub.spec.plan.as_deref(), Some(plan.as_str()));
    assert_eq!(sub.spec.modules[0].concurrency, 400);
    assert!(sub.spec.seasons.is_none());
    assert_eq!(t.f.hpa_numbers(&child).await, Some(before));
    assert_eq!(t.f.quota_hard("acme", "pods").await, quota_before);
    t.f.finish().await;
}

/// The provider's pipeline applies subscriptions over their plan: each is
/// refused at `kubectl apply`, naming the module and the limit; one within
/// its plan is taken and runs within it; another namespace (not under the
/// policies here) is untouched.
#[tokio::test]
async fn over_plan_subscriptions_are_refused_at_apply() {
    let t = Tenant::new("tb-adm").await;
    let ns = t.ns().to_string();
    assign_namespace(&t.f.client, &ns, "acme").await;
    let (video, im) = (t.f.video.clone(), t.f.im.clone());
    let plan = unique("tb-pro");
    let _catalogue = Catalogued(vec![("subscriptionplan", plan.clone())]);
    apply_yaml(
        &t.f.client,
        None,
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {{name: {plan}}}\n\
             spec:\n  modules:\n    - {{name: {video}, maxConcurrency: 1000, tiers: [sd]}}\n    \
             - {{name: {im}, maxConcurrency: 5000, maxPeakConcurrency: 8000}}\n"
        ),
    )
    .await;
    let _admission = Admission::install(&ns, &plan);
    let every_day = "days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun]";

    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "a module not in the plan",
            format!(
                "  tenantId: acme\n  plan: {plan}\n  modules:\n    - {{name: chat, concurrency: 10}}\n"
            ),
            vec![format!("chat: not in plan {plan}")],
        ),
        (
            "concurrency over maxConcurrency",
            format!(
                "  tenantId: acme\n  plan: {plan}\n  modules:\n    - {{name: {video}, concurrency: 1500}}\n"
            ),
            vec![format!(
                "{video}: concurrency 1500 is over the maxConcurrency 1000 of plan {plan}"
            )],
        ),
        (
            "a tier the plan does not sell",
            format!(
                "  tenantId: acme\n  plan: {plan}\n  modules:\n    - {{name: {video}, concurrency: 100, tier: uhd}}\n"
            ),
            vec![format!(
                "{video}: tier uhd is not in the tiers [sd] of plan {plan}"
            )],
        ),
        (
            "a 1000% window, the plan setting no peak",
            format!(
                "  tenantId: acme\n  plan: {plan}\n  modules:\n    - {{name: {video}, concurrency: 400}}\n  \
                 seasons: {{windows: [{{name: promo, {every_day}, concurrencyPercent: 1000}}]}}\n"
            ),
            vec![format!(
                "{video}: window promo raises concurrency to 4000, over the maxConcurrency 1000 of plan {plan}"
            )],
        ),
        (
            "a window over maxPeakConcurrency",
            format!(
                "  tenantId: acme\n  plan: {plan}\n  modules:\n    - {{name: {im}, concurrency: 5000}}\n  \
                 seasons: {{windows: [{{name: eve, {every_day}, concurrencyPercent: 170, modules: [{im}]}}]}}\n"
            ),
            vec![format!(
                "{im}: window eve raises concurrency to 8500, over the maxPeakConcurrency 8000 of plan {plan}"
            )],
        ),
        (
            "no plan",
            format!("  tenantId: acme\n  modules:\n    - {{name: {video}, concurrency: 100}}\n"),
            vec!["spec.plan: required".to_string()],
        ),
    ];
    for (what, spec, expected) in &cases {
        let e = refused(&ns, &sub_yaml("acme", spec));
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_mentions(&e, &expected);
        assert!(e.contains("ValidatingAdmissionPolicy"), "{what}: {e}");
        assert!(
            t.f.subs().get_opt("acme").await.unwrap().is_none(),
            "{what}: stored"
        );
    }

    // Within the plan (250% of 400 is the plan's 1000): accepted, and the
    // ceilings in force stay within the plan.
    let within = format!(
        "  tenantId: acme\n  plan: {plan}\n  modules:\n    - {{name: {video}, concurrency: 400, tier: sd}}\n    \
         - {{name: {im}, concurrency: 5000}}\n  \
         seasons: {{windows: [{{name: promo, {every_day}, concurrencyPercent: 250, modules: [{video}]}}, \
         {{name: eve, {every_day}, concurrencyPercent: 160, modules: [{im}]}}]}}\n"
    );
    try_kubectl_apply(Some(&ns), &sub_yaml("acme", &within)).expect("within the plan");
    t.f.wait_available("acme").await;
    let video_hpa = t.f.hpa_numbers(&format!("acme-{video}")).await.unwrap();
    assert_eq!(video_hpa.1, 17, "⌈1000 / 60⌉, the plan's 1000 sessions");
    let im_hpa = t.f.hpa_numbers(&format!("acme-{im}")).await.unwrap();
    assert_eq!(im_hpa.1, 200, "⌈8000 / 40⌉, the plan's peak");

    // Raising it over the plan later is refused too, and nothing moves.
    let over = within.replace("concurrency: 400", "concurrency: 401");
    let e = refused(&ns, &sub_yaml("acme", &over));
    assert_mentions(
        &e,
        &[&format!(
            "{video}: window promo raises concurrency to 1003, over the maxConcurrency 1000 of plan {plan}"
        )],
    );
    assert_eq!(
        t.f.hpa_numbers(&format!("acme-{video}")).await,
        Some(video_hpa)
    );

    // Another namespace is not under these policies: its subscription without
    // a plan is stored.
    let other = TestNamespace::new(&t.f.client, "tb-adm-other").await;
    try_kubectl_apply(
        Some(&other.name),
        &sub_yaml(
            "other",
            &format!("  tenantId: other\n  modules:\n    - {{name: {video}, concurrency: 100}}\n"),
        ),
    )
    .expect("another namespace is not judged by this test's policies");
    other.delete().await;
    t.f.finish().await;
}

/// What admission cannot see, the operator refuses: a CapacityCalendar's
/// window above the plan's maximum (no peak set), and, with plans required
/// (the binary's and the chart's default), a subscription without a plan.
#[tokio::test]
async fn the_operator_refuses_what_admission_cannot_see() {
    let mut t = Tenant::new("tb-backstop").await;
    t.f.restart_operator(|s| s.require_plan = true).await;
    let ns = t.ns().to_string();
    let video = t.f.video.clone();

    // No plan: nothing is written.
    t.f.apply_sub(
        "noplan",
        &format!("  tenantId: acme\n  modules:\n    - {{name: {video}, concurrency: 100}}\n"),
    )
    .await;
    let s = t.f.wait_not_ready("noplan", "PlanRequired").await;
    let ready = crate::support::condition(&s, "Ready").unwrap();
    assert!(
        ready.message.contains("spec.plan: required"),
        "{}",
        ready.message
    );
    assert!(t.f.get::<ResourceQuota>("noplan-capacity").await.is_none());
    assert!(
        t.f.hpa_numbers(&format!("noplan-{video}")).await.is_none(),
        "no HPA without a plan"
    );
    // One subscription per namespace: this one goes before the next comes.
    t.f.subs()
        .delete("noplan", &Default::default())
        .await
        .expect("delete noplan");
    wait_for("noplan gone", crate::support::T, || async {
        t.f.subs()
            .get_opt("noplan")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    let plan = unique("tb-pro");
    let calendar = unique("tb-festival");
    let _catalogue = Catalogued(vec![
        ("subscriptionplan", plan.clone()),
        ("capacitycalendar", calendar.clone()),
    ]);
    apply_yaml(
        &t.f.client,
        None,
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {{name: {plan}}}\n\
             spec: {{modules: [{{name: {video}, maxConcurrency: 1000}}]}}\n"
        ),
    )
    .await;
    apply_yaml(
        &t.f.client,
        None,
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: CapacityCalendar\nmetadata: {{name: {calendar}}}\n\
             spec: {{windows: [{{name: surge, days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun], concurrencyPercent: 1000}}]}}\n"
        ),
    )
    .await;
    let _admission = Admission::install(&ns, &plan);
    let spec = format!(
        "  tenantId: acme\n  plan: {plan}\n  modules:\n    - {{name: {video}, concurrency: 400}}\n"
    );
    try_kubectl_apply(Some(&ns), &sub_yaml("acme", &spec)).expect("within the plan");
    t.f.wait_available("acme").await;
    let child = format!("acme-{video}");
    let before = t.f.hpa_numbers(&child).await.unwrap();
    assert_eq!(before.1, 10, "⌈400 / 40⌉");
    let quota_before = t.f.quota_hard("acme", "pods").await;

    // Admission cannot read the calendar: the apply is taken...
    let with_calendar = format!("{spec}  seasons: {{calendars: [{calendar}]}}\n");
    try_kubectl_apply(Some(&ns), &sub_yaml("acme", &with_calendar))
        .expect("admission does not read calendars");
    // ...and the operator refuses it, leaving the children as they were.
    let s = t.f.wait_not_ready("acme", "ExceedsPlan").await;
    let ready = crate::support::condition(&s, "Ready").unwrap();
    assert_mentions(
        &ready.message,
        &[&format!(
            "{video}: exceeds plan \"{plan}\": window {calendar}/surge raises concurrency to 4000, over the plan's maxConcurrency (it sets no maxPeakConcurrency) 1000"
        )],
    );
    assert_eq!(t.f.hpa_numbers(&child).await, Some(before));
    assert_eq!(t.f.quota_hard("acme", "pods").await, quota_before);
    t.f.finish().await;
}

/// `edu.v2` and `2026-promo` are valid custom-resource names but cannot
/// name a Service (`<subscription>-<module>`): refused at apply, saying why.
#[tokio::test]
async fn a_name_that_cannot_name_a_service_is_refused_at_apply() {
    let t = Tenant::new("tb-name").await;
    let ns = t.ns().to_string();
    assign_namespace(&t.f.client, &ns, "edu").await;
    let spec = format!(
        "  tenantId: edu\n  modules:\n    - {{name: {}, concurrency: 10}}\n",
        t.f.im
    );
    let long = format!("a{}", "b".repeat(63));
    for name in ["edu.v2", "2026-promo", long.as_str()] {
        // The CRDs on this shared cluster are re-applied by every test run:
        // apply ours right before the attempt.
        install_crds(&t.f.client).await;
        let e = refused(&ns, &sub_yaml(name, &spec));
        assert_mentions(
            &e,
            &[
                &format!("metadata.name: {name} is not a valid subscription name"),
                "DNS-1035 label",
            ],
        );
    }
    try_kubectl_apply(Some(&ns), &sub_yaml("edu-v2", &spec)).expect("a DNS-1035 name");
    t.f.wait_available("edu-v2").await;
    t.f.finish().await;
}

/// A child the API server refuses (here a Deployment whose CPU request is
/// above its limit, from a profile the provider got wrong) shows in status:
/// Ready=False, `ChildRejected`, naming the child, with the API server's
/// words. Another tenant is unaffected.
#[tokio::test]
async fn a_child_the_api_server_refuses_shows_in_status() {
    let t = Tenant::new("tb-child").await;
    let broken = unique("broken");
    let _catalogue = Catalogued(vec![("moduleprofile", broken.clone())]);
    let profile = profile_yaml(&broken, "").replace(
        "resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 200m, memory: 128Mi}}",
        "resources: {requests: {cpu: 500m, memory: 64Mi}, limits: {cpu: 200m, memory: 128Mi}}",
    );
    assert!(profile.contains("cpu: 500m"));
    apply_yaml(&t.f.client, None, &profile).await;
    t.f.apply_sub(
        "acme",
        &format!("  tenantId: acme\n  modules:\n    - {{name: {broken}, concurrency: 10}}\n"),
    )
    .await;
    let other = Fixture::new("tb-child-other").await;
    other
        .apply_sub(
            "other",
            &format!(
                "  tenantId: other\n  modules:\n    - {{name: {}, concurrency: 10}}\n",
                other.im
            ),
        )
        .await;
    let s = t.f.wait_not_ready("acme", "ChildRejected").await;
    let ready = crate::support::condition(&s, "Ready").unwrap();
    assert_mentions(
        &ready.message,
        &[
            &format!("apply Deployment acme-{broken} refused by the API server (422)"),
            "must be less than or equal to cpu limit",
        ],
    );
    let module = s
        .status
        .as_ref()
        .unwrap()
        .modules
        .iter()
        .find(|m| m.name == broken)
        .expect("the module's status");
    assert_eq!(module.message.as_deref(), Some(ready.message.as_str()));
    other.wait_available("other").await;
    other.finish().await;
    t.f.finish().await;
}
