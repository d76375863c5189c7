//! The Helm chart on the local cluster (hack/cluster.sh): `helm install`
//! into a fresh namespace, then the operator binary runs as a local process
//! authenticated as the chart's ServiceAccount (a TokenRequest token) and
//! brings a TenantSubscription to Ready (so the chart's RBAC is enough),
//! serves /metrics over HTTPS to `metrics.readers` only (so the chart lets
//! it review its callers), the same identity is refused Secrets and
//! namespace deletion (so it is no more than that), `helm upgrade` changes the Deployment and `helm uninstall`
//! removes the release but leaves the CRDs. tests/helm_chart.rs checks the
//! chart offline.
//!
//! helm and kubectl come from PATH and the cluster from KUBECONFIG
//! (`eval "$(hack/cluster.sh env)"`, which hack/test.sh does). Without them
//! this test fails: a missing tool must never look like a pass.

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api,
    api::{DeleteParams, ListParams},
};
use serde_json::Value;
use support::{
    OperatorProcess, TestNamespace,
    chart::{CHART, CHART_NAME, KWOK_TOLERATION, args_of, has_pair, write},
    https::{self, Trust},
    token_kubeconfig,
    tools::{kubectl, kubectl_apply, kubectl_get, ok, require_cluster, require_helm, run},
    unique,
    wait::{POLL, wait_blocking},
};
use tenant_capacity_operator::api::TenantSubscription;

const TIMEOUT: Duration = Duration::from_secs(120);

/// The release and the catalogue it installed, removed even when the test
/// fails (before its namespaces go).
struct Cleanup {
    release: String,
    release_ns: String,
    profile: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run(
            "helm",
            &[
                "uninstall",
                &self.release,
                "-n",
                &self.release_ns,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
        let _ = run(
            "kubectl",
            &[
                "delete",
                "moduleprofile",
                &self.profile,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// The subscription once it is Ready=True for its current generation.
fn wait_ready(ns: &str, name: &str, op: &OperatorProcess) -> Value {
    wait_blocking(
        &format!("TenantSubscription {ns}/{name} Ready=True at its generation"),
        TIMEOUT,
        || {
            // A refusal will not go away by waiting: fail at once, naming it.
            let log = op.log_text();
            if let Some(line) = log.lines().find(|l| l.to_lowercase().contains("forbidden")) {
                panic!(
                    "the operator was refused an API call (the chart's RBAC is not enough):\n{line}"
                );
            }
            let s = kubectl_get(&["tenantsubscription", name, "-n", ns]);
            let ready = s.as_ref().and_then(|s| {
                (condition(s, "Ready")?["status"] == "True"
                    && s["status"]["observedGeneration"] == s["metadata"]["generation"])
                    .then_some(s)
            });
            match ready {
                Some(s) => Ok(s.clone()),
                None => Err(format!(
                    "status: {}\n{}",
                    s.map(|s| s["status"].to_string()).unwrap_or_default(),
                    op.tail(30)
                )),
            }
        },
    )
}

/// `kubectl auth can-i` as the ServiceAccount: "yes" or "no".
fn can_i(sa: &str, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i", "--as", sa];
    all.extend_from_slice(args);
    let out = run("kubectl", &all, None);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match (out.status.success(), answer.as_str()) {
        (true, "yes") => true,
        (false, "no") => false,
        _ => panic!(
            "kubectl auth can-i {args:?}: unexpected {answer:?} / {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// HTTP status of the API calls the ServiceAccount must be refused, made with
/// its own token through kube-rs.
fn status_of<T>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

async fn token_client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the token kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("token config");
    kube::Client::try_from(cfg).expect("token client")
}

#[test]
fn install_run_as_its_service_account_upgrade_and_uninstall() {
    require_cluster();
    require_helm();
    let release = unique("tco");
    // Deleted after the release (dropped after `_cleanup`).
    let namespaces = [
        TestNamespace::with_kubectl("tco-ops"),
        TestNamespace::with_kubectl_for("tco-tenant", "acme"),
    ];
    let (release_ns, tenant_ns) = (namespaces[0].name(), namespaces[1].name());
    let profile = format!("{release}-video");
    let full = format!("{release}-{CHART_NAME}");
    let sa = format!("system:serviceaccount:{release_ns}:{full}");
    let _cleanup = Cleanup {
        release: release.clone(),
        release_ns: release_ns.to_string(),
        profile: profile.clone(),
    };
    // The operator's pods meet the restricted Pod Security Standard: the API
    // server's PodSecurity admission refuses them otherwise (and helm --wait
    // then times out).
    kubectl(&[
        "label",
        "namespace",
        release_ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    // The chart's admission policies judge only this test's tenant namespace:
    // other tests on the cluster run subscriptions without plans.
    let admission_label = "tco-helm-test/release";
    kubectl(&[
        "label",
        "namespace",
        tenant_ns,
        &format!("{admission_label}={release}"),
    ]);
    let plan = format!("{release}-pro");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // --- install: the pods tolerate the fake nodes; the catalogue has one
    // profile and one plan.
    let values = write(
        dir.path(),
        "values.yaml",
        &format!(
            r#"tolerations: [{KWOK_TOLERATION}]
moduleProfiles:
  {profile}:
    image: registry.example.com/rtc/video:1.0
    port: 8443
    sessionsPerReplica: 40
    resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{cpu: 200m, memory: 128Mi}}}}
subscriptionPlans:
  {plan}:
    regions: [eu-west-1, us-east-1]
    modules:
      - {{name: {profile}, maxConcurrency: 1000}}
admission:
  namespaceSelector:
    matchLabels: {{{admission_label}: {release}}}
metrics:
  readers: [{{kind: ServiceAccount, name: prometheus, namespace: {release_ns}}}]
"#
        ),
    );
    let values = values.to_str().unwrap();
    // `helm install` or `upgrade` with these values, and `extra` flags,
    // waiting (at most 3 minutes) until the release is ready.
    let helm = |verb: &str, extra: &[&str]| {
        let mut args = vec![
            verb,
            release.as_str(),
            CHART,
            "-n",
            release_ns,
            "-f",
            values,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--wait", "--timeout", "3m"]);
        ok("helm", &args)
    };
    let installed = helm("install", &[]);
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(installed.contains("NOTES:"), "{installed}");
    assert!(!installed.contains("PodSecurity"), "{installed}");

    for crd in [
        "moduleprofiles",
        "tenantsubscriptions",
        "subscriptionplans",
        "capacitycalendars",
    ] {
        let c = kubectl_get(&["crd", &format!("{crd}.capacity.tenancy.dev")])
            .unwrap_or_else(|| panic!("CRD {crd} missing"));
        let established = c["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["type"] == "Established" && x["status"] == "True");
        assert!(established, "CRD {crd} not established");
    }
    let d = kubectl_get(&["deployment", &full, "-n", release_ns]).expect("the operator Deployment");
    assert_eq!(
        d["status"]["readyReplicas"], 1,
        "helm --wait waited for a ready replica"
    );
    assert!(kubectl_get(&["serviceaccount", &full, "-n", release_ns]).is_some());
    assert!(
        kubectl_get(&["networkpolicy", &full, "-n", release_ns]).is_some(),
        "the NetworkPolicy is accepted (enforced only with a NetworkPolicy controller)"
    );
    let p = kubectl_get(&["moduleprofile", &profile]).expect("the ModuleProfile from values");
    assert_eq!(
        p["metadata"]["labels"]["app.kubernetes.io/instance"],
        release.as_str()
    );

    // --- helm test: the hook Job is admitted in the restricted namespace,
    // scheduled, reported Succeeded and then deleted. The local cluster's
    // pods are not run (kwok completes a Job's pods without running them),
    // so this proves the hook's wiring, not the probe's verdict: tests/cli.rs
    // runs `probe` against a real operator's /readyz, and tests/helm_chart.rs
    // checks the URL names the Service's health port.
    let tested = ok(
        "helm",
        &["test", &release, "-n", release_ns, "--timeout", "3m"],
    );
    let job = format!("{full}-test-ready");
    assert!(
        tested.contains(&format!("TEST SUITE:     {job}"))
            && tested
                .lines()
                .any(|l| l.starts_with("Phase:") && l.ends_with("Succeeded")),
        "{tested}"
    );
    wait_blocking("the succeeded test Job deleted", TIMEOUT, || {
        kubectl_get(&["job", &job, "-n", release_ns])
            .is_none()
            .then_some(())
    });

    // --- run the operator as the chart's ServiceAccount, with leader election.
    let token = kubectl(&[
        "create",
        "token",
        &full,
        "-n",
        release_ns,
        "--duration",
        "1h",
    ]);
    let kubeconfig = token_kubeconfig(&dir.path().join("operator.kubeconfig"), token.trim())
        .expect("a kubeconfig with the ServiceAccount's token");
    // It serves /metrics as the chart runs it: HTTPS, to metrics.readers.
    let start_operator = || {
        OperatorProcess::launch()
            .kubeconfig(&kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .namespace(tenant_ns)
            .args(["--leader-elect", "--leader-election-namespace", release_ns])
            .secure_metrics()
            .start()
    };
    let op = start_operator();
    kubectl_apply(
        None,
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: acme, namespace: {tenant_ns}}}\n\
             spec:\n  tenantId: acme\n  plan: {plan}\n  modules:\n    - {{name: {profile}, concurrency: 100}}\n"
        ),
    );
    let sub = wait_ready(tenant_ns, "acme", &op);
    let uid = sub["metadata"]["uid"].as_str().unwrap();
    let child = format!("acme-{profile}");
    for (kind, name) in [
        ("deployment", child.as_str()),
        ("hpa", &child),
        ("service", &child),
        ("resourcequota", "acme-capacity"),
    ] {
        let o = kubectl_get(&[kind, name, "-n", tenant_ns])
            .unwrap_or_else(|| panic!("{kind}/{name} missing\n{}", op.tail(30)));
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["uid"], uid,
            "{kind}/{name} owned by the subscription"
        );
    }
    let hpa = kubectl_get(&["hpa", &child, "-n", tenant_ns]).unwrap();
    assert_eq!(hpa["spec"]["maxReplicas"], 3, "⌈100 / 40⌉");
    // /metrics: the chart lets the operator review its callers (else 503),
    // and metrics.readers in: Prometheus' ServiceAccount reads, the
    // operator's own is refused, no token is unauthorized.
    kubectl(&["create", "serviceaccount", "prometheus", "-n", release_ns]);
    let prometheus = kubectl(&["create", "token", "prometheus", "-n", release_ns]);
    let scrape = |token: Option<&str>| {
        https::get(op.metrics_address(), "/metrics", token, &Trust::Anything)
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", op.tail(20)))
    };
    let want = format!(
        "tenant_capacity_module_max_replicas{{namespace=\"{tenant_ns}\",subscription=\"acme\""
    );
    // (RBAC caches follow a new binding within moments: poll.)
    wait_blocking(
        "Prometheus' ServiceAccount to read /metrics",
        TIMEOUT,
        || {
            (can_i(
                &format!("system:serviceaccount:{release_ns}:prometheus"),
                &["get", "/metrics"],
            ))
            .then_some(())
        },
    );
    let (code, body) = scrape(Some(prometheus.trim()));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&want), "{body}");
    assert_eq!(
        scrape(Some(token.trim())).0,
        403,
        "the operator's own token"
    );
    assert_eq!(scrape(None).0, 401);
    // The chart's admission policies refuse more than the plan sells, and a
    // subscription without a plan (the policies load within moments: poll).
    for (spec, says) in [
        (
            format!(
                "{{tenantId: acme, plan: {plan}, modules: [{{name: {profile}, concurrency: 5000}}]}}"
            ),
            format!("{profile}: concurrency 5000 is over the maxConcurrency 1000 of plan {plan}"),
        ),
        (
            format!("{{tenantId: acme, modules: [{{name: {profile}, concurrency: 100}}]}}"),
            "spec.plan: required".to_string(),
        ),
        (
            format!(
                "{{tenantId: acme, plan: {plan}, regions: [eu-west-1], modules: [{{name: {profile}, concurrency: 100, regions: [ap-south-1]}}]}}"
            ),
            format!(
                "{profile}: region ap-south-1 is not in the regions [eu-west-1, us-east-1] of plan {plan}"
            ),
        ),
    ] {
        let manifest = format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: acme, namespace: {tenant_ns}}}\nspec: {spec}\n"
        );
        wait_blocking(&format!("admission to refuse: {says}"), TIMEOUT, || {
            // A dry run: while the policies load, an accepted one changes nothing.
            let out = run(
                "kubectl",
                &["apply", "--dry-run=server", "-f", "-"],
                Some(&manifest),
            );
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            (!out.status.success() && err.contains(&says))
                .then_some(())
                .ok_or(err)
        });
    }
    let hpa = kubectl_get(&["hpa", &child, "-n", tenant_ns]).unwrap();
    assert_eq!(
        hpa["spec"]["maxReplicas"], 3,
        "refused changes changed nothing"
    );
    // The Ready transition was announced: events.k8s.io create works too.
    wait_blocking(
        "an Event from the operator about the subscription",
        TIMEOUT,
        || {
            let list = kubectl_get(&["events.v1.events.k8s.io", "-n", tenant_ns]);
            let announced = list
                .as_ref()
                .and_then(|l| l["items"].as_array())
                .is_some_and(|items| {
                    items.iter().any(|e| {
                        e["regarding"]["name"] == "acme"
                            && e["reportingController"] == "tenant-capacity-operator"
                    })
                });
            if announced { Ok(()) } else { Err(op.tail(30)) }
        },
    );
    let lease = kubectl_get(&["lease", "tenant-capacity-operator", "-n", release_ns])
        .expect("the leader-election Lease");
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{lease}"
    );
    let log = op.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
    let status = op.stop();
    assert!(status.success(), "operator exit status {status}");
    // A clean stop releases the Lease (a patch the Role allows).
    wait_blocking("the Lease to be released", Duration::from_secs(30), || {
        let l = kubectl_get(&["lease", "tenant-capacity-operator", "-n", release_ns])?;
        l["spec"]["holderIdentity"]
            .as_str()
            .is_none_or(str::is_empty)
            .then_some(())
    });

    // --- and nothing more: Secrets and namespaces are out of reach.
    assert!(
        can_i(&sa, &["patch", "deployments.apps", "-n", tenant_ns]),
        "control: the operator may patch Deployments"
    );
    assert!(can_i(
        &sa,
        &[
            "list",
            "tenantsubscriptions.capacity.tenancy.dev",
            "--all-namespaces"
        ]
    ));
    assert!(can_i(
        &sa,
        &["create", "tokenreviews.authentication.k8s.io"]
    ));
    assert!(can_i(
        &sa,
        &["create", "subjectaccessreviews.authorization.k8s.io"]
    ));
    assert!(
        !can_i(&sa, &["get", "/metrics"]),
        "the operator itself is no metrics reader"
    );
    assert!(can_i(
        &sa,
        &[
            "update",
            "tenantsubscriptions.capacity.tenancy.dev",
            "--subresource",
            "finalizers",
            "-n",
            tenant_ns
        ]
    ));
    for ns in [tenant_ns, release_ns] {
        assert!(
            !can_i(&sa, &["get", "secrets", "-n", ns]),
            "the ServiceAccount may read Secrets in {ns}"
        );
        assert!(!can_i(&sa, &["list", "secrets", "-n", ns]));
    }
    assert!(
        !can_i(&sa, &["delete", "namespaces"]),
        "the ServiceAccount may delete namespaces"
    );
    assert!(
        !can_i(
            &sa,
            &[
                "update",
                "tenantsubscriptions.capacity.tenancy.dev",
                "-n",
                tenant_ns
            ]
        ),
        "spec is the users', not the operator's"
    );
    assert!(!can_i(
        &sa,
        &["create", "moduleprofiles.capacity.tenancy.dev"]
    ));
    assert!(!can_i(
        &sa,
        &["delete", "leases.coordination.k8s.io", "-n", release_ns]
    ));
    rt.block_on(async {
        let c = token_client(&kubeconfig).await;
        let subs: Api<TenantSubscription> = Api::namespaced(c.clone(), tenant_ns);
        assert_eq!(
            status_of(subs.list(&ListParams::default()).await),
            200,
            "the token works"
        );
        let secrets: Api<Secret> = Api::namespaced(c.clone(), tenant_ns);
        assert_eq!(
            status_of(secrets.get("anything").await),
            403,
            "GET a Secret"
        );
        assert_eq!(
            status_of(secrets.list(&ListParams::default()).await),
            403,
            "LIST Secrets"
        );
        let namespaces: Api<Namespace> = Api::all(c.clone());
        assert_eq!(
            status_of(namespaces.delete(tenant_ns, &DeleteParams::default()).await),
            403,
            "DELETE a namespace"
        );
    });
    let ns = kubectl_get(&["namespace", tenant_ns]).expect("the tenant namespace survives");
    assert_eq!(ns["status"]["phase"], "Active");

    // --- upgrade: two replicas, a new pod annotation, and the namespaced grants
    // narrowed to the tenant namespace.
    let before = kubectl_get(&["deployment", &full, "-n", release_ns]).unwrap();
    helm(
        "upgrade",
        &[
            "--set",
            "replicaCount=2",
            "--set-string",
            "podAnnotations.example\\.com/rollout=second",
            "--set",
            &format!("watchNamespace={tenant_ns}"),
        ],
    );
    let after = wait_blocking("two updated, ready operator replicas", TIMEOUT, || {
        let d = kubectl_get(&["deployment", &full, "-n", release_ns])?;
        let st = &d["status"];
        (st["readyReplicas"] == 2 && st["updatedReplicas"] == 2 && st["replicas"] == 2).then_some(d)
    });
    assert_eq!(after["spec"]["replicas"], 2);
    assert_eq!(
        after["spec"]["template"]["metadata"]["annotations"]["example.com/rollout"],
        "second"
    );
    assert_ne!(
        after["metadata"]["generation"],
        before["metadata"]["generation"]
    );
    assert!(has_pair(&args_of(&after), "--namespace", tenant_ns));
    let history = ok(
        "helm",
        &["history", &release, "-n", release_ns, "-o", "json"],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&history)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        kubectl_get(&["clusterrolebinding", &format!("{full}-manager")]).is_none(),
        "cluster-wide binding replaced"
    );
    assert!(kubectl_get(&["rolebinding", &format!("{full}-manager"), "-n", tenant_ns]).is_some());
    // (RBAC caches follow the new bindings within moments: poll.)
    wait_blocking(
        "the namespaced grants to hold only in watchNamespace",
        TIMEOUT,
        || {
            (can_i(&sa, &["patch", "deployments.apps", "-n", tenant_ns])
                && !can_i(&sa, &["patch", "deployments.apps", "-n", release_ns])
                && !can_i(
                    &sa,
                    &[
                        "list",
                        "tenantsubscriptions.capacity.tenancy.dev",
                        "-n",
                        "default",
                    ],
                )
                && can_i(&sa, &["list", "moduleprofiles.capacity.tenancy.dev"])
                // A namespace's tenant label, even with one watched namespace.
                && can_i(&sa, &["watch", "namespaces"]))
            .then_some(())
        },
    );
    // The narrowed grants are still enough: a plan change reaches the HPA.
    let op = start_operator();
    kubectl(&[
        "patch",
        "tenantsubscription",
        "acme",
        "-n",
        tenant_ns,
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/modules/0/concurrency", "value": 200}]"#,
    ]);
    let sub = wait_ready(tenant_ns, "acme", &op);
    assert_eq!(sub["status"]["observedGeneration"], 2);
    wait_blocking("the HPA to follow the new concurrency", TIMEOUT, || {
        let hpa = kubectl_get(&["hpa", &child, "-n", tenant_ns]);
        if hpa.is_some_and(|h| h["spec"]["maxReplicas"] == 5) {
            Ok(())
        } else {
            Err(op.tail(30))
        }
    });
    let log = op.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
    assert!(op.stop().success());

    // --- uninstall: the release goes, the CRDs (and the subscriptions) stay.
    ok(
        "helm",
        &[
            "uninstall",
            &release,
            "-n",
            release_ns,
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    assert!(
        kubectl_get(&["deployment", &full, "-n", release_ns]).is_none(),
        "Deployment removed"
    );
    assert!(
        kubectl_get(&["serviceaccount", &full, "-n", release_ns]).is_none(),
        "ServiceAccount removed"
    );
    assert!(
        kubectl_get(&["service", &format!("{full}-metrics"), "-n", release_ns]).is_none(),
        "metrics Service removed"
    );
    for policy in ["plan-limits", "plan-required"] {
        assert!(
            kubectl_get(&["validatingadmissionpolicy", &format!("{full}-{policy}")]).is_none(),
            "ValidatingAdmissionPolicy {policy} removed"
        );
    }
    for role in [
        "manager",
        "catalogue",
        "provider",
        "view",
        "metrics-auth",
        "metrics-reader",
    ] {
        assert!(
            kubectl_get(&["clusterrole", &format!("{full}-{role}")]).is_none(),
            "ClusterRole {role} removed"
        );
    }
    for binding in ["catalogue", "metrics-auth", "metrics-reader"] {
        assert!(
            kubectl_get(&["clusterrolebinding", &format!("{full}-{binding}")]).is_none(),
            "ClusterRoleBinding {binding} removed"
        );
    }
    assert!(kubectl_get(&["networkpolicy", &full, "-n", release_ns]).is_none());
    assert!(kubectl_get(&["rolebinding", &format!("{full}-manager"), "-n", tenant_ns]).is_none());
    assert!(kubectl_get(&["role", &format!("{full}-leader-election"), "-n", release_ns]).is_none());
    assert!(
        kubectl_get(&["moduleprofile", &profile]).is_none(),
        "the catalogue from values goes with the release"
    );
    for crd in [
        "moduleprofiles",
        "tenantsubscriptions",
        "subscriptionplans",
        "capacitycalendars",
    ] {
        assert!(
            kubectl_get(&["crd", &format!("{crd}.capacity.tenancy.dev")]).is_some(),
            "CRD {crd} survives uninstall"
        );
    }
    assert!(
        kubectl_get(&["tenantsubscription", "acme", "-n", tenant_ns]).is_some(),
        "subscriptions survive uninstall"
    );
    // The ServiceAccount is gone, and with it its token (the API server
    // caches a successful token check for a few seconds: poll).
    rt.block_on(async {
        let c = token_client(&kubeconfig).await;
        let subs: Api<TenantSubscription> = Api::namespaced(c, tenant_ns);
        let start = Instant::now();
        loop {
            let code = status_of(subs.list(&ListParams::default()).await);
            if code == 401 {
                break;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "the token of a deleted ServiceAccount still answers {code}"
            );
            tokio::time::sleep(POLL).await;
        }
    });
}
