//! When the API server refuses the operator (a rule of its RBAC removed),
//! `/readyz` fails naming the verb and the resource, the log says so, and
//! both recover by themselves once the rule is back. The operator runs as
//! its own binary, authenticated as a ServiceAccount bound to the chart's
//! roles, rendered under a release of the test's own and then narrowed.

use serde_json::{Value, json};

use crate::support::{chart::CHART, *};

/// The chart's operator roles (`-catalogue`, `-manager`) for a release of
/// this test, bound to a ServiceAccount in `ns`; removed when dropped.
struct OperatorRoles {
    catalogue: Vec<Value>,
    manager: Value,
    binding: Value,
    service_account: String,
    ns: String,
}

impl OperatorRoles {
    fn render(ns: &str) -> Self {
        let release = unique("refusals");
        let rendered = tools::ok(
            "helm",
            &[
                "template",
                &release,
                CHART,
                "--namespace",
                ns,
                "--show-only",
                "templates/rbac.yaml",
                "--set",
                &format!("watchNamespace={ns}"),
                "--set",
                "leaderElection.enabled=false",
            ],
        );
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&rendered).expect("rendered RBAC is YAML");
        let named = |suffix: &str| {
            docs.iter()
                .filter(|d| d["metadata"]["name"].as_str().unwrap().ends_with(suffix))
                .cloned()
                .collect::<Vec<_>>()
        };
        let catalogue = named("-catalogue");
        let manager = named("-manager");
        assert_eq!((catalogue.len(), manager.len()), (2, 2), "{rendered}");
        let (role, binding) = if manager[0]["kind"] == "ClusterRole" {
            (manager[0].clone(), manager[1].clone())
        } else {
            (manager[1].clone(), manager[0].clone())
        };
        assert_eq!(
            binding["kind"], "RoleBinding",
            "watchNamespace binds in {ns}"
        );
        let service_account = binding["subjects"][0]["name"].as_str().unwrap().to_string();
        Self {
            catalogue,
            manager: role,
            binding,
            service_account,
            ns: ns.to_string(),
        }
    }

    /// The manager role without `verb` on `resource` (every verb with "*").
    fn manager_without(&self, resource: &str, verb: &str) -> Value {
        let mut role = self.manager.clone();
        let rules = role["rules"].as_array_mut().unwrap();
        for rule in rules.iter_mut() {
            if rule["resources"]
                .as_array()
                .unwrap()
                .contains(&json!(resource))
            {
                let verbs = rule["verbs"].as_array_mut().unwrap();
                let before = verbs.len();
                verbs.retain(|v| verb != "*" && v != verb);
                assert!(verbs.len() < before, "{resource} has no {verb} to remove");
            }
        }
        rules.retain(|r| !r["verbs"].as_array().unwrap().is_empty());
        role
    }

    fn apply(objects: &[&Value]) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        wait_blocking("RBAC applied", T, || {
            tools::try_kubectl_apply(None, &list.to_string()).map(|_| ())
        });
    }

    /// Every role and binding, the manager role as given, and the account.
    fn install(&self, manager: &Value) {
        tools::kubectl(&[
            "create",
            "serviceaccount",
            &self.service_account,
            "-n",
            &self.ns,
        ]);
        let mut all: Vec<&Value> = self.catalogue.iter().collect();
        all.extend([manager, &self.binding]);
        Self::apply(&all);
    }

    fn token(&self) -> String {
        tools::kubectl(&[
            "create",
            "token",
            &self.service_account,
            "-n",
            &self.ns,
            "--duration",
            "1h",
        ])
        .trim()
        .to_string()
    }
}

impl Drop for OperatorRoles {
    fn drop(&mut self) {
        for d in self.catalogue.iter().chain([&self.manager]) {
            if d["metadata"]["namespace"].is_null() {
                let kind = d["kind"].as_str().unwrap().to_lowercase();
                let name = d["metadata"]["name"].as_str().unwrap();
                let _ = tools::try_kubectl(&["delete", &kind, name, "--ignore-not-found"]);
            }
        }
    }
}

/// `/readyz`: its status code and body.
fn readyz(op: &OperatorProcess) -> Option<(u16, String)> {
    http_get(&op.addresses().1, "/readyz")
}

fn hpa_max(ns: &str, name: &str) -> Option<i64> {
    tools::kubectl_get(&["hpa", name, "-n", ns])?["spec"]["maxReplicas"].as_i64()
}

#[test]
fn a_refused_watch_and_a_refused_write_fail_readiness_until_the_rule_is_back() {
    tools::require_cluster();
    let tenant = unique("refused");
    let ns = TestNamespace::with_kubectl_for("refused", &tenant);
    let ns = ns.name.clone();
    let profile = unique("refused-video");
    tools::kubectl_apply(None, &profile_yaml(&profile, ""));
    let roles = OperatorRoles::render(&ns);

    // --- A watch refused: the operator may not list LimitRanges.
    roles.install(&roles.manager_without("limitranges", "*"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(&dir.path().join("kubeconfig"), &roles.token()).unwrap();
    let op = OperatorProcess::launch()
        .kubeconfig(&kubeconfig)
        .namespace(&ns)
        .args(["--require-plan=false"])
        .env("RUST_LOG", "info,kube=warn")
        .start();
    let body = wait_blocking("/readyz to name the refused watch", T, || {
        match readyz(&op) {
            Some((503, body)) if body.contains("refused: list/watch LimitRange") => Ok(body),
            other => Err(format!("{other:?}\n{}", op.tail(10))),
        }
    });
    assert!(body.contains("forbidden"), "the API server's words: {body}");
    assert!(body.contains("caches not synced"), "{body}");
    let logged = op
        .wait_line("the API server refuses the operator", T)
        .unwrap_or_else(|| panic!("no refusal logged\n{}", op.tail(20)));
    assert!(logged.contains("list/watch LimitRange"), "{logged}");

    // The rule is back: ready again without a restart, and it works.
    OperatorRoles::apply(&[&roles.manager]);
    wait_blocking("/readyz 200 after the rule is back", T, || {
        match readyz(&op) {
            Some((200, body)) => Ok(body),
            other => Err(format!("{other:?}\n{}", op.tail(10))),
        }
    });
    assert!(
        op.wait_line("the API server allows the operator again", T)
            .is_some_and(|l| l.contains("list/watch LimitRange")),
        "{}",
        op.tail(20)
    );
    let sub = |concurrency: u32| {
        tools::kubectl_apply(
            Some(&ns),
            &format!(
                "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: acme}}\n\
                 spec:\n  tenantId: {tenant}\n  modules:\n    - {{name: {profile}, concurrency: {concurrency}}}\n"
            ),
        )
    };
    sub(100);
    let hpa = format!("acme-{profile}");
    wait_blocking("the HPA with ⌈100/40⌉ = 3 replicas at most", T, || {
        (hpa_max(&ns, &hpa) == Some(3)).then_some(())
    });

    // --- A write refused: the operator may no longer patch HPAs.
    OperatorRoles::apply(&[&roles.manager_without("horizontalpodautoscalers", "patch")]);
    sub(200);
    let body = wait_blocking("/readyz to name the refused write", T, || {
        match readyz(&op) {
            Some((503, body))
                if body.contains(&format!(
                    "refused: apply HorizontalPodAutoscaler in namespace {ns}"
                )) =>
            {
                Ok(body)
            }
            other => Err(format!("{other:?}\n{}", op.tail(10))),
        }
    });
    assert!(
        body.contains("cannot patch"),
        "the API server's words: {body}"
    );
    assert!(!body.contains("caches not synced"), "{body}");
    assert!(
        op.wait_line(
            &format!("apply HorizontalPodAutoscaler in namespace {ns}"),
            T
        )
        .is_some_and(|l| l.contains("the API server refuses the operator")),
        "{}",
        op.tail(20)
    );
    assert_eq!(
        hpa_max(&ns, &hpa),
        Some(3),
        "the refused write changed nothing"
    );

    // The rule is back: the change lands and readiness recovers by itself.
    OperatorRoles::apply(&[&roles.manager]);
    wait_blocking("the HPA raised to ⌈200/40⌉ = 5", T, || {
        (hpa_max(&ns, &hpa) == Some(5)).then_some(())
    });
    wait_blocking(
        "/readyz 200 after the write went through",
        T,
        || match readyz(&op) {
            Some((200, body)) => Ok(body),
            other => Err(format!("{other:?}\n{}", op.tail(10))),
        },
    );
    drop(op);
    let _ = tools::try_kubectl(&["delete", "moduleprofile", &profile, "--ignore-not-found"]);
}
