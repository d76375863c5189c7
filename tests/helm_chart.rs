//! The Helm chart (charts/tenant-capacity-operator) and the GitOps health
//! check, offline: the chart's CRDs equal crds/crds.yaml, `helm lint`
//! passes, the values schema refuses wrong types, the RBAC is exactly the
//! documented least privilege, and docs/argocd-health.lua gives the right
//! verdicts in a real Lua interpreter (hack/test-argocd-health.sh).
//!
//! No cluster needed; helm comes from PATH (`eval "$(hack/cluster.sh env)"`,
//! which hack/test.sh does). Without it these tests fail: a missing tool
//! must never look like a pass. tests/helm.rs installs the chart on the
//! local cluster.

mod support;

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::{Value, json};
use support::{
    chart::{CHART, KWOK_TOLERATION, args_of, has_pair, write},
    prometheus::{self as prom, ALERT_TESTS, DASHBOARD},
    tools::{ok, require_helm, run},
};

// --- rendering ----------------------------------------------------------------

/// The non-default values of the lint and template checks.
fn custom_values(profile: &str) -> String {
    format!(
        r#"replicaCount: 2
image: {{repository: registry.example.com/platform/tco, tag: "1.2.3", pullPolicy: Always}}
leaderElection: {{enabled: false}}
watchNamespace: tenant-a
serviceMonitor: {{enabled: true, interval: 15s, labels: {{release: prometheus}}}}
podAnnotations: {{example.com/team: platform}}
tolerations: [{KWOK_TOLERATION}]
moduleProfiles:
  {profile}:
    image: registry.example.com/rtc/video-gateway:2.4.1
    port: 8443
    sessionsPerReplica: 40
    resources: {{requests: {{cpu: "1", memory: 1Gi}}}}
subscriptionPlans:
  pro:
    modules:
      - {{name: {profile}, maxConcurrency: 2000}}
capacityCalendars:
  evenings:
    timeZone: Europe/Berlin
    windows:
      - {{name: evening, days: [Mon, Tue], start: "18:00", end: "22:00", floorPercent: 30}}
"#
    )
}

fn template(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    args.extend_from_slice(extra);
    let text = ok("helm", &args);
    serde_saphyr::from_multiple::<Value>(&text).expect("helm template output is YAML")
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn must<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(docs, kind, name).unwrap_or_else(|| {
        let have: Vec<String> = docs
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap_or("?"),
                    d["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect();
        panic!("no {kind}/{name} rendered; have {have:?}")
    })
}

/// (apiGroup, resource, verb) triples of an RBAC rule list.
fn grants(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules.as_array().expect("rules") {
        let s = |k: &str| {
            r[k].as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        for g in s("apiGroups") {
            for res in s("resources") {
                for v in s("verbs") {
                    out.insert((g.clone(), res.clone(), v));
                }
            }
        }
    }
    out
}

fn triples(spec: &[(&str, &[&str], &[&str])]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (g, resources, verbs) in spec {
        for r in *resources {
            for v in *verbs {
                out.insert((g.to_string(), r.to_string(), v.to_string()));
            }
        }
    }
    out
}

/// What the operator's code uses, and nothing else (see the rules' comments
/// in templates/rbac.yaml; the cluster test proves it is enough).
fn expected_manager_grants() -> BTreeSet<(String, String, String)> {
    let g = "capacity.tenancy.dev";
    triples(&[
        (g, &["tenantsubscriptions"], &["get", "list", "watch"]),
        (g, &["tenantsubscriptions/status"], &["patch"]),
        (g, &["tenantsubscriptions/finalizers"], &["update"]),
        (
            "apps",
            &["deployments"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        (
            "autoscaling",
            &["horizontalpodautoscalers"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        (
            "",
            &["services"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        (
            "",
            &["resourcequotas", "limitranges"],
            &["get", "list", "watch", "create", "patch"],
        ),
        ("", &["persistentvolumeclaims"], &["list", "delete"]),
        ("", &["pods"], &["list", "watch"]),
        ("events.k8s.io", &["events"], &["create", "patch"]),
    ])
}

// --- offline checks -------------------------------------------------------------

#[test]
fn chart_crds_are_the_repository_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = std::fs::read(root.join("crds/crds.yaml")).expect("crds/crds.yaml");
    let chart = std::fs::read(Path::new(CHART).join("crds/crds.yaml"))
        .expect("charts/tenant-capacity-operator/crds/crds.yaml");
    assert!(
        repo == chart,
        "charts/tenant-capacity-operator/crds/crds.yaml differs from crds/crds.yaml; \
         run `cp crds/crds.yaml charts/tenant-capacity-operator/crds/crds.yaml`"
    );
    let text = String::from_utf8(chart).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("CRD YAML");
    let kinds: BTreeSet<&str> = docs
        .iter()
        .map(|d| d["spec"]["names"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "CapacityCalendar",
            "ModuleProfile",
            "SubscriptionPlan",
            "TenantSubscription"
        ])
    );
    assert!(
        docs.iter()
            .all(|d| d["spec"]["group"] == "capacity.tenancy.dev")
    );
}

#[test]
fn argocd_health_check_gives_the_right_verdicts() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/test-argocd-health.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run hack/test-argocd-health.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "hack/test-argocd-health.sh failed ({}):\n{text}",
        out.status
    );
    for verdict in [
        "-> Healthy",
        "-> Progressing",
        "-> Degraded",
        "-> Suspended",
    ] {
        assert!(text.contains(verdict), "no case ended {verdict}:\n{text}");
    }
}

/// Every optional feature of the chart switched on (the catalogue and a
/// scoped watch come from [`custom_values`]).
const ALL_FEATURES: &str = r#"metrics:
  certSecret: tco-metrics-tls
  readers: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}]
  service: {type: ClusterIP, annotations: {example.com/scrape: "true"}}
serviceMonitor:
  enabled: true
  labels: {release: prometheus}
  bearerTokenSecret: {name: scrape-token, key: token}
  tlsConfig: {serverName: tco.ops.svc, insecureSkipVerify: false}
rbac:
  provider:
    subjects: [{kind: Group, name: platform-team, apiGroup: rbac.authorization.k8s.io}]
admission:
  namespaceSelector: {matchLabels: {tenancy: "true"}}
childProtection:
  exemptUsers: [break-glass]
  namespaceSelector: {matchLabels: {tenancy: "true"}}
networkPolicy:
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
keepCatalogueOnUninstall: true
logLevel: debug
extraArgs: [--resync-seconds=60]
extraEnv: [{name: NO_COLOR, value: "1"}]
imagePullSecrets: [{name: registry}]
podLabels: {team: platform}
nodeSelector: {kubernetes.io/os: linux}
priorityClassName: system-cluster-critical
"#;

/// `helm lint --strict`: clean with the default values, with custom ones
/// and with every optional feature on, also with plain-HTTP metrics (its
/// own branch of the templates).
#[test]
fn helm_lint_passes_with_default_and_custom_values() {
    require_helm();
    let dir = tempfile::tempdir().unwrap();
    let custom = write(dir.path(), "values.yaml", &custom_values("video-call"));
    let all = write(dir.path(), "all.yaml", ALL_FEATURES);
    let (custom, all) = (custom.to_str().unwrap(), all.to_str().unwrap());
    for extra in [
        &[][..],
        &["-f", custom],
        &["-f", custom, "-f", all],
        &["-f", custom, "-f", all, "--set", "metrics.secure=false"],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend_from_slice(extra);
        let out = ok("helm", &args);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed")
                && !out.contains("[WARNING]")
                && !out.contains("[ERROR]"),
            "helm lint {extra:?}:\n{out}"
        );
    }
    // The features are on in what lint checked.
    let docs = template("rel", "ops", &["-f", custom, "-f", all]);
    for kind in [
        "ServiceMonitor",
        "ModuleProfile",
        "NetworkPolicy",
        "ValidatingAdmissionPolicy",
        "Job",
    ] {
        assert!(docs.iter().any(|d| d["kind"] == kind), "no {kind} rendered");
    }
}

/// Every value is documented: each property of values.schema.json, at any
/// depth, has a description, and each key values.yaml sets is a property.
#[test]
fn every_value_has_a_description_in_the_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("values.schema.json")).unwrap(),
    )
    .unwrap();
    fn undocumented(node: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = node["properties"].as_object() {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if v["description"].as_str().is_none_or(|d| d.len() <= 3) {
                    out.push(p.clone());
                }
                undocumented(v, &p, out);
            }
        }
        undocumented_items(node, path, out);
    }
    fn undocumented_items(node: &Value, path: &str, out: &mut Vec<String>) {
        if node["items"].is_object() {
            undocumented(&node["items"], &format!("{path}[]"), out);
        }
    }
    let mut missing = Vec::new();
    undocumented(&schema, "", &mut missing);
    for (name, def) in schema["definitions"].as_object().unwrap() {
        undocumented(def, &format!("#{name}"), &mut missing);
    }
    assert!(
        missing.is_empty(),
        "properties without a description: {missing:?}"
    );

    // values.yaml's keys, down to where the schema stops naming properties
    // (free-form maps such as podAnnotations).
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("values.yaml")).unwrap(),
    )
    .unwrap();
    fn unknown(values: &Value, schema: &Value, root: &Value, path: &str, out: &mut Vec<String>) {
        let schema = match schema["$ref"].as_str() {
            Some(r) => &root["definitions"][r.trim_start_matches("#/definitions/")],
            None => schema,
        };
        let (Some(values), Some(props)) = (values.as_object(), schema["properties"].as_object())
        else {
            return;
        };
        for (k, v) in values {
            match props.get(k) {
                Some(s) => unknown(v, s, root, &format!("{path}.{k}"), out),
                None => out.push(format!("{path}.{k}")),
            }
        }
    }
    let mut unknown_keys = Vec::new();
    unknown(&values, &schema, &schema, "", &mut unknown_keys);
    assert!(
        unknown_keys.is_empty(),
        "values without a schema property: {unknown_keys:?}"
    );
}

/// `helm test`: a Job running the operator's own image and binary (`probe`)
/// against /readyz through the Service's health port, which the Service
/// exposes and the NetworkPolicy lets anyone reach. (On the local cluster
/// its pods are not run: tests/cli.rs runs `probe` itself against a real
/// operator, tests/helm.rs runs `helm test`.)
#[test]
fn helm_test_probes_readiness_through_the_service() {
    require_helm();
    for (release, namespace, extra) in [
        ("rel", "ops", &[][..]),
        (
            "a-release-name-long-enough-to-be-cut-by-the-chart-123",
            "tco-system",
            &[
                "--set",
                "metrics.healthPort=9440",
                "--set-json",
                "networkPolicy.metricsFrom=[]",
                "--set-json",
                &format!("tolerations=[{}]", kwok_toleration_json()),
            ][..],
        ),
    ] {
        let docs = template(release, namespace, extra);
        let hooks: Vec<&Value> = docs
            .iter()
            .filter(|d| d["metadata"]["annotations"]["helm.sh/hook"] == "test")
            .collect();
        assert_eq!(hooks.len(), 1, "one test hook");
        let job = hooks[0];
        assert_eq!(job["kind"], "Job");
        let name = job["metadata"]["name"].as_str().unwrap();
        assert!(name.len() <= 63 && name.ends_with("-test-ready"), "{name}");
        assert_eq!(job["metadata"]["namespace"], namespace);
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let operator = &deployment["spec"]["template"]["spec"]["containers"][0];
        let pod = &job["spec"]["template"]["spec"];
        let probe = &pod["containers"][0];
        assert_eq!(
            probe["image"], operator["image"],
            "the operator's own image"
        );
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "no API access needed"
        );
        assert_eq!(
            pod["tolerations"],
            deployment["spec"]["template"]["spec"]["tolerations"]
        );
        // Restricted, as the operator itself.
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(probe["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(
            probe["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(
            probe["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );

        // The URL names the Service, its health port, and /readyz.
        let service = docs
            .iter()
            .find(|d| {
                d["kind"] == "Service"
                    && d["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
            })
            .expect("the operator's Service");
        let health = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "health")
            .expect("the Service exposes the health port");
        assert_eq!(health["targetPort"], "health");
        let container_port = operator["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "health")
            .unwrap()["containerPort"]
            .clone();
        assert_eq!(health["port"], container_port);
        let args: Vec<&str> = probe["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let url = format!(
            "http://{}.{namespace}.svc:{}/readyz",
            service["metadata"]["name"].as_str().unwrap(),
            health["port"]
        );
        assert_eq!(
            args,
            ["probe", "--url", url.as_str(), "--timeout-seconds", "10"]
        );
        assert!(
            operator["args"]
                .as_array()
                .unwrap()
                .windows(2)
                .any(|w| w[0] == "--health-probe-bind-address"
                    && w[1] == format!(":{}", health["port"]).as_str()),
            "the operator listens there: {:?}",
            operator["args"]
        );
        // The Service does not select the probe's own pod.
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        let selector = service["spec"]["selector"].as_object().unwrap();
        assert!(
            !selector.iter().all(|(k, v)| &labels[k] == v),
            "the Service selects the test pod: {labels}"
        );
        // The NetworkPolicy admits the health port from any peer.
        let np = docs.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
        assert!(
            np["spec"]["ingress"]
                .as_array()
                .unwrap()
                .iter()
                .any(|rule| rule.get("from").is_none()
                    && rule["ports"]
                        .as_array()
                        .is_some_and(|ports| ports.iter().any(|p| p["port"] == "health"))),
            "{}",
            np["spec"]["ingress"]
        );
    }
}

fn kwok_toleration_json() -> String {
    let v: Value = serde_saphyr::from_str(KWOK_TOLERATION).unwrap();
    v.to_string()
}

/// NOTES.txt says what to do next: check readiness (`helm test`), apply a
/// catalogue and a subscription, follow it with `kubectl capacity`, find
/// the metrics.
#[test]
fn notes_say_what_to_do_next() {
    require_helm();
    let out = ok(
        "helm",
        &["install", "rel", CHART, "-n", "ops", "--dry-run=client"],
    );
    let notes = &out[out.find("NOTES:").expect("NOTES")..];
    for says in [
        "helm test rel -n ops",
        "kubectl -n ops rollout status deployment/rel-tenant-capacity-operator",
        "Service rel-tenant-capacity-operator-metrics, port health",
        "kubectl apply -f examples/profiles -f examples/plans -f examples/calendars",
        "kind: TenantSubscription",
        "kubectl capacity status -n tenant-acme acme",
        "ln -s \"$(command -v tenant-capacity-operator)\" ~/.local/bin/kubectl-capacity",
        "/metrics on Service rel-tenant-capacity-operator-metrics, port metrics (8443, HTTPS)",
        "kubectl -n ops port-forward svc/rel-tenant-capacity-operator-metrics 8443",
    ] {
        assert!(notes.contains(says), "NOTES do not say {says:?}:\n{notes}");
    }
}

#[test]
fn values_schema_refuses_wrong_types_and_unknown_keys() {
    require_helm();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("string replicaCount", "replicaCount: two\n", "replicaCount"),
        (
            "string boolean",
            "serviceMonitor: {enabled: \"yes\"}\n",
            "enabled",
        ),
        (
            "list for a map",
            "podAnnotations: [a, b]\n",
            "podAnnotations",
        ),
        (
            "number for a namespace",
            "watchNamespace: 7\n",
            "watchNamespace",
        ),
        ("misspelt top-level key", "replicas: 2\n", "replicas"),
        (
            "misspelt nested key",
            "leaderElection: {enable: false}\n",
            "enable",
        ),
        ("unknown log format", "logFormat: xml\n", "logFormat"),
        (
            "profile spec not a map",
            "moduleProfiles: {video: 3}\n",
            "moduleProfiles",
        ),
        (
            "string for metrics.secure",
            "metrics: {secure: \"no\"}\n",
            "secure",
        ),
        (
            "a metrics reader of no kind",
            "metrics: {readers: [{name: prometheus}]}\n",
            "kind",
        ),
        (
            "a misspelt network policy peer",
            "networkPolicy: {metricsFrom: [{namespaceSelectr: {}}]}\n",
            "namespaceSelectr",
        ),
    ];
    for (i, (what, yaml, mentions)) in cases.iter().enumerate() {
        let f = write(dir.path(), &format!("bad{i}.yaml"), yaml);
        let out = run(
            "helm",
            &["template", "bad", CHART, "-f", f.to_str().unwrap()],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{what}: helm template accepted {yaml:?}"
        );
        assert!(
            err.contains("schema"),
            "{what}: not refused by the schema: {err}"
        );
        assert!(
            err.contains(mentions),
            "{what}: error does not name {mentions:?}: {err}"
        );
    }
    // --set with a wrong type too.
    let out = run(
        "helm",
        &[
            "template",
            "bad",
            CHART,
            "--set",
            "leaderElection.enabled=maybe",
        ],
        None,
    );
    assert!(
        !out.status.success(),
        "--set leaderElection.enabled=maybe was accepted"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("schema"));
}

#[test]
fn default_render_is_least_privilege_and_hardened() {
    require_helm();
    let docs = template("rel", "ops", &[]);
    let full = "rel-tenant-capacity-operator";
    for d in &docs {
        let text = serde_json::to_string(d).unwrap();
        if matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")) {
            assert!(
                !text.contains("\"*\""),
                "a wildcard in {}: {text}",
                d["metadata"]["name"]
            );
        }
        assert_ne!(
            d["kind"], "CustomResourceDefinition",
            "CRDs belong in crds/, not templates/"
        );
    }

    // Exactly the documented grants, each bound as intended.
    let manager = must(&docs, "ClusterRole", &format!("{full}-manager"));
    assert_eq!(grants(&manager["rules"]), expected_manager_grants());
    let catalogue = must(&docs, "ClusterRole", &format!("{full}-catalogue"));
    assert_eq!(
        grants(&catalogue["rules"]),
        triples(&[
            (
                "capacity.tenancy.dev",
                &["moduleprofiles", "subscriptionplans", "capacitycalendars"],
                &["get", "list", "watch"]
            ),
            ("", &["namespaces", "nodes"], &["get", "list", "watch"]),
        ])
    );
    let leases = must(&docs, "Role", &format!("{full}-leader-election"));
    assert_eq!(leases["metadata"]["namespace"], "ops");
    assert_eq!(
        grants(&leases["rules"]),
        triples(&[(
            "coordination.k8s.io",
            &["leases"],
            &["get", "list", "watch", "create", "patch"]
        )])
    );
    for (kind, name, role_kind) in [
        (
            "ClusterRoleBinding",
            format!("{full}-manager"),
            "ClusterRole",
        ),
        (
            "ClusterRoleBinding",
            format!("{full}-catalogue"),
            "ClusterRole",
        ),
        ("RoleBinding", format!("{full}-leader-election"), "Role"),
    ] {
        let b = must(&docs, kind, &name);
        assert_eq!(b["roleRef"]["kind"], role_kind);
        assert_eq!(b["roleRef"]["name"], name.as_str());
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": full, "namespace": "ops"}])
        );
    }
    must(&docs, "ServiceAccount", full);

    // Aggregation into the built-in roles: reading only. Namespace users
    // (admin, edit, view) never write subscriptions, the entitlement.
    assert!(
        find(&docs, "ClusterRole", &format!("{full}-edit")).is_none(),
        "no role aggregated into edit/admin"
    );
    for d in docs.iter().filter(|d| d["kind"] == "ClusterRole") {
        let labels = &d["metadata"]["labels"];
        let aggregated = ["admin", "edit", "view"]
            .iter()
            .any(|r| labels[format!("rbac.authorization.k8s.io/aggregate-to-{r}")] == "true");
        if aggregated {
            let verbs: BTreeSet<String> = grants(&d["rules"]).into_iter().map(|g| g.2).collect();
            assert!(
                verbs
                    .iter()
                    .all(|v| ["get", "list", "watch"].contains(&v.as_str())),
                "{} aggregated into a built-in role with {verbs:?}",
                d["metadata"]["name"]
            );
        }
    }
    // The provider's role: the catalogue and the subscriptions, aggregated
    // into nothing and bound to nobody unless rbac.provider.subjects says so.
    let provider = must(&docs, "ClusterRole", &format!("{full}-provider"));
    assert!(
        provider["metadata"]["labels"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("rbac.authorization.k8s.io/aggregate-to")),
        "{provider}"
    );
    let g = "capacity.tenancy.dev";
    let mut expected = triples(&[(
        g,
        &[
            "moduleprofiles",
            "subscriptionplans",
            "capacitycalendars",
            "tenantsubscriptions",
        ],
        &[
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ],
    )]);
    expected.extend(triples(&[(
        g,
        &["tenantsubscriptions/status"],
        &["get", "list", "watch"],
    )]));
    assert_eq!(grants(&provider["rules"]), expected);
    assert!(find(&docs, "ClusterRoleBinding", &format!("{full}-provider")).is_none());
    let bound = template(
        "rel",
        "ops",
        &[
            "--set",
            "rbac.provider.subjects[0].kind=Group",
            "--set",
            "rbac.provider.subjects[0].name=platform-team",
            "--set",
            "rbac.provider.subjects[0].apiGroup=rbac.authorization.k8s.io",
        ],
    );
    let b = must(&bound, "ClusterRoleBinding", &format!("{full}-provider"));
    assert_eq!(b["roleRef"]["name"], format!("{full}-provider"));
    assert_eq!(
        b["subjects"],
        json!([{"kind": "Group", "name": "platform-team", "apiGroup": "rbac.authorization.k8s.io"}])
    );
    let view = must(&docs, "ClusterRole", &format!("{full}-view"));
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    let view_grants = grants(&view["rules"]);
    assert!(
        view_grants
            .iter()
            .all(|(_, _, v)| ["get", "list", "watch"].contains(&v.as_str())),
        "{view_grants:?}"
    );
    for r in [
        "tenantsubscriptions",
        "moduleprofiles",
        "subscriptionplans",
        "capacitycalendars",
    ] {
        assert!(
            view_grants.contains(&("capacity.tenancy.dev".into(), r.into(), "list".into())),
            "view lacks {r}"
        );
    }

    // The Deployment.
    let d = must(&docs, "Deployment", full);
    assert_eq!(d["spec"]["replicas"], 1);
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"], "ghcr.io/example/tenant-capacity-operator:0.1.0",
        "tag defaults to appVersion"
    );
    let args = args_of(d);
    assert_eq!(args[0], "run");
    assert!(
        has_pair(&args, "--metrics-bind-address", ":8443"),
        "{args:?}"
    );
    assert!(
        args.contains(&"--metrics-secure=true".to_string()),
        "{args:?}"
    );
    assert!(
        has_pair(&args, "--health-probe-bind-address", ":8081"),
        "{args:?}"
    );
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert!(
        has_pair(&args, "--leader-election-namespace", "$(POD_NAMESPACE)"),
        "{args:?}"
    );
    assert!(has_pair(&args, "--log-format", "json"), "{args:?}");
    assert!(
        !args.contains(&"--namespace".to_string()),
        "watches all namespaces by default: {args:?}"
    );
    let env = c["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAMESPACE"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
        "POD_NAMESPACE from the downward API: {env:?}"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "50m", "memory": "64Mi"})
    );
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "500m", "memory": "256Mi"})
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let ports = c["ports"].as_array().unwrap();
    let health = ports
        .iter()
        .find(|p| p["name"] == c["livenessProbe"]["httpGet"]["port"])
        .expect("probe port named");
    assert_eq!(health["containerPort"], 8081);
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "metrics" && p["containerPort"] == 8443),
        "{ports:?}"
    );
    assert_eq!(pod["serviceAccountName"], full);

    // Metrics Service; no ServiceMonitor and no catalogue by default.
    let svc = must(&docs, "Service", &format!("{full}-metrics"));
    assert_eq!(
        svc["spec"]["ports"],
        json!([
            {"name": "metrics", "port": 8443, "targetPort": "metrics", "protocol": "TCP", "appProtocol": "https"},
            {"name": "health", "port": 8081, "targetPort": "health", "protocol": "TCP", "appProtocol": "http"},
        ])
    );
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
    for kind in [
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "ModuleProfile",
        "SubscriptionPlan",
        "CapacityCalendar",
    ] {
        assert!(
            docs.iter().all(|x| x["kind"] != kind),
            "{kind} rendered by default"
        );
    }
}

#[test]
fn metrics_are_https_for_readers_only_behind_a_network_policy() {
    require_helm();
    let full = "rel-tenant-capacity-operator";
    let docs = template("rel", "ops", &[]);
    let d = must(&docs, "Deployment", full);
    let args = args_of(d);
    assert!(
        args.contains(&"--metrics-secure=true".to_string()),
        "{args:?}"
    );
    assert!(
        !args.contains(&"--metrics-cert-dir".to_string()),
        "self-signed by default: {args:?}"
    );

    // The operator may ask the API server about its callers, nothing more.
    let auth = must(&docs, "ClusterRole", &format!("{full}-metrics-auth"));
    assert_eq!(
        grants(&auth["rules"]),
        triples(&[
            ("authentication.k8s.io", &["tokenreviews"], &["create"]),
            (
                "authorization.k8s.io",
                &["subjectaccessreviews"],
                &["create"]
            ),
        ])
    );
    let b = must(&docs, "ClusterRoleBinding", &format!("{full}-metrics-auth"));
    assert_eq!(
        b["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{full}-metrics-auth")})
    );
    assert_eq!(
        b["subjects"],
        json!([{"kind": "ServiceAccount", "name": full, "namespace": "ops"}])
    );
    // Who may read: get on /metrics, bound to nobody until metrics.readers.
    let reader = must(&docs, "ClusterRole", &format!("{full}-metrics-reader"));
    assert_eq!(
        reader["rules"],
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
    assert!(
        find(
            &docs,
            "ClusterRoleBinding",
            &format!("{full}-metrics-reader")
        )
        .is_none()
    );
    let bound = template(
        "rel",
        "ops",
        &[
            "--set",
            "metrics.readers[0].kind=ServiceAccount",
            "--set",
            "metrics.readers[0].name=prometheus",
            "--set",
            "metrics.readers[0].namespace=monitoring",
        ],
    );
    let b = must(
        &bound,
        "ClusterRoleBinding",
        &format!("{full}-metrics-reader"),
    );
    assert_eq!(b["roleRef"]["name"], format!("{full}-metrics-reader"));
    assert_eq!(
        b["subjects"],
        json!([{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}])
    );

    // The NetworkPolicy: the metrics port from the selected namespaces, the
    // probes' port from anywhere, egress untouched.
    let np = must(&docs, "NetworkPolicy", full);
    assert_eq!(np["metadata"]["namespace"], "ops");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        np["spec"]["ingress"],
        json!([
            {"from": [{"namespaceSelector": {"matchLabels": {"metrics": "enabled"}}}],
             "ports": [{"port": "metrics", "protocol": "TCP"}]},
            {"ports": [{"port": "health", "protocol": "TCP"}]},
        ])
    );
    let ports = d["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap();
    for name in ["metrics", "health"] {
        assert!(
            ports.iter().any(|p| p["name"] == name),
            "the policy names port {name}, the container has {ports:?}"
        );
    }
    // Empty metricsFrom: nobody reaches the metrics port (an ingress rule
    // without `from` would admit everyone).
    let closed = template(
        "rel",
        "ops",
        &["--set-json", "networkPolicy.metricsFrom=[]"],
    );
    assert_eq!(
        must(&closed, "NetworkPolicy", full)["spec"]["ingress"],
        json!([{"ports": [{"port": "health", "protocol": "TCP"}]}])
    );
    let off = template("rel", "ops", &["--set", "networkPolicy.enabled=false"]);
    assert!(off.iter().all(|x| x["kind"] != "NetworkPolicy"));

    // The ServiceMonitor scrapes over HTTPS with Prometheus' token; a
    // self-signed certificate cannot be verified.
    let sm_docs = template("rel", "ops", &["--set", "serviceMonitor.enabled=true"]);
    let ep = &must(&sm_docs, "ServiceMonitor", full)["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "metrics");
    assert_eq!(ep["scheme"], "https");
    // The series' own `namespace` (the tenant's) is kept, not renamed.
    assert_eq!(ep["honorLabels"], true);
    assert_eq!(
        ep["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    assert_eq!(ep["tlsConfig"], json!({"insecureSkipVerify": true}));

    // With a certificate Secret (cert-manager's, say): mounted, passed, and
    // verified by the ServiceMonitor against its CA under the Service's name.
    let certs = template(
        "rel",
        "ops",
        &[
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "metrics.certSecret=tco-metrics-cert",
            "--set",
            "serviceMonitor.bearerTokenSecret.name=prom-token",
            "--set",
            "serviceMonitor.bearerTokenSecret.key=token",
        ],
    );
    let d = must(&certs, "Deployment", full);
    let dir = "/etc/tenant-capacity-operator/metrics-certs";
    assert!(has_pair(&args_of(d), "--metrics-cert-dir", dir));
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "metrics-certs", "secret": {"secretName": "tco-metrics-cert",
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}}])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "metrics-certs", "mountPath": dir, "readOnly": true}])
    );
    let ep = &must(&certs, "ServiceMonitor", full)["spec"]["endpoints"][0];
    assert_eq!(
        ep["tlsConfig"],
        json!({"serverName": format!("{full}-metrics.ops.svc"),
               "ca": {"secret": {"name": "tco-metrics-cert", "key": "ca.crt"}}})
    );
    must(&certs, "Service", &format!("{full}-metrics"));
    assert_eq!(
        ep["authorization"],
        json!({"type": "Bearer", "credentials": {"name": "prom-token", "key": "token"}})
    );
    assert!(ep["bearerTokenFile"].is_null());

    // metrics.secure=false: plain HTTP, no reviews to grant.
    let plain = template(
        "rel",
        "ops",
        &[
            "--set",
            "metrics.secure=false",
            "--set",
            "serviceMonitor.enabled=true",
        ],
    );
    assert!(
        args_of(must(&plain, "Deployment", full)).contains(&"--metrics-secure=false".to_string())
    );
    assert!(find(&plain, "ClusterRole", &format!("{full}-metrics-auth")).is_none());
    let ep = &must(&plain, "ServiceMonitor", full)["spec"]["endpoints"][0];
    assert_eq!(ep["scheme"], "http");
    assert!(ep["tlsConfig"].is_null() && ep["bearerTokenFile"].is_null());
    assert_eq!(
        must(&plain, "Service", &format!("{full}-metrics"))["spec"]["ports"][0]["appProtocol"],
        "http"
    );
}

#[test]
fn custom_values_render_as_asked() {
    require_helm();
    let dir = tempfile::tempdir().unwrap();
    let values = write(dir.path(), "values.yaml", &custom_values("video-call"));
    let docs = template("rel", "ops", &["-f", values.to_str().unwrap()]);
    let full = "rel-tenant-capacity-operator";

    let d = must(&docs, "Deployment", full);
    assert_eq!(d["spec"]["replicas"], 2);
    let args = args_of(d);
    assert!(
        !args.iter().any(|a| a.starts_with("--leader-elect")),
        "leader election off: {args:?}"
    );
    assert!(has_pair(&args, "--namespace", "tenant-a"), "{args:?}");
    let pod = &d["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["example.com/team"],
        "platform"
    );
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "kwok.x-k8s.io/node");
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "registry.example.com/platform/tco:1.2.3"
    );
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");

    // watchNamespace: the namespaced grants only in that namespace, the
    // catalogue still cluster-wide; no Lease role without leader election.
    let rb = must(&docs, "RoleBinding", &format!("{full}-manager"));
    assert_eq!(rb["metadata"]["namespace"], "tenant-a");
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{full}-manager")})
    );
    assert!(find(&docs, "ClusterRoleBinding", &format!("{full}-manager")).is_none());
    must(&docs, "ClusterRoleBinding", &format!("{full}-catalogue"));
    assert!(find(&docs, "Role", &format!("{full}-leader-election")).is_none());

    let sm = must(&docs, "ServiceMonitor", full);
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "15s");
    let svc = must(&docs, "Service", &format!("{full}-metrics"));
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the metrics Service by {k}"
        );
    }

    let p = must(&docs, "ModuleProfile", "video-call");
    assert_eq!(p["apiVersion"], "capacity.tenancy.dev/v1alpha1");
    assert_eq!(p["spec"]["sessionsPerReplica"], 40);
    assert_eq!(p["spec"]["resources"]["requests"]["memory"], "1Gi");
    assert_eq!(
        must(&docs, "SubscriptionPlan", "pro")["spec"]["modules"][0]["maxConcurrency"],
        2000
    );
    assert_eq!(
        must(&docs, "CapacityCalendar", "evenings")["spec"]["timeZone"],
        "Europe/Berlin"
    );
    assert!(p["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    let kept = template(
        "rel",
        "ops",
        &[
            "-f",
            values.to_str().unwrap(),
            "--set",
            "keepCatalogueOnUninstall=true",
        ],
    );
    assert_eq!(
        must(&kept, "ModuleProfile", "video-call")["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );

    // A long release name still gives valid names (a Service name is at most 63).
    let long = "a-really-long-release-name-for-a-tenant-capacity-op";
    let docs = template(long, "ops", &[]);
    let svc = docs.iter().find(|x| x["kind"] == "Service").unwrap();
    let name = svc["metadata"]["name"].as_str().unwrap();
    assert!(name.len() <= 63 && name.ends_with("-metrics"), "{name}");
}

#[test]
fn plans_are_required_and_checked_at_admission_by_default() {
    require_helm();
    let full = "rel-tenant-capacity-operator";
    let docs = template("rel", "ops", &[]);
    let args = args_of(must(&docs, "Deployment", full));
    assert!(
        args.contains(&"--require-plan=true".to_string()),
        "{args:?}"
    );
    let limits = must(
        &docs,
        "ValidatingAdmissionPolicy",
        &format!("{full}-plan-limits"),
    );
    assert_eq!(limits["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(limits["spec"]["paramKind"]["kind"], "SubscriptionPlan");
    assert_eq!(limits["spec"]["failurePolicy"], "Fail");
    let rules = &limits["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(rules["resources"], json!(["tenantsubscriptions"]));
    assert_eq!(rules["operations"], json!(["CREATE", "UPDATE"]));
    let binding = must(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        &format!("{full}-plan-limits"),
    );
    assert_eq!(binding["spec"]["policyName"], format!("{full}-plan-limits"));
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(binding["spec"]["paramRef"]["selector"], json!({}));
    assert_eq!(
        binding["spec"]["paramRef"]["parameterNotFoundAction"],
        "Allow"
    );
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"],
        json!({}),
        "every namespace by default"
    );
    must(
        &docs,
        "ValidatingAdmissionPolicy",
        &format!("{full}-plan-required"),
    );
    must(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        &format!("{full}-plan-required"),
    );

    // Scoped to labelled namespaces; plans optional; admission off.
    let scoped = template(
        "rel",
        "ops",
        &[
            "--set",
            "admission.namespaceSelector.matchLabels.tenancy=assigned",
            "--set",
            "requirePlan=false",
        ],
    );
    let binding = must(
        &scoped,
        "ValidatingAdmissionPolicyBinding",
        &format!("{full}-plan-limits"),
    );
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"],
        json!({"matchLabels": {"tenancy": "assigned"}})
    );
    assert!(
        find(
            &scoped,
            "ValidatingAdmissionPolicy",
            &format!("{full}-plan-required")
        )
        .is_none()
    );
    let args = args_of(must(&scoped, "Deployment", full));
    assert!(
        args.contains(&"--require-plan=false".to_string()),
        "{args:?}"
    );
    let off = template("rel", "ops", &["--set", "admission.enabled=false"]);
    assert!(
        off.iter().all(|d| !d["kind"]
            .as_str()
            .unwrap()
            .starts_with("ValidatingAdmissionPolicy")
            || !d["metadata"]["name"].as_str().unwrap().contains("-plan-")),
        "admission.enabled=false renders no plan policy"
    );
}

#[test]
fn children_are_protected_by_default_and_the_operator_is_exempt() {
    require_helm();
    let full = "rel-tenant-capacity-operator";
    let policies = |extra: &[&str]| -> Vec<Value> {
        template("rel", "ops", extra)
            .into_iter()
            .filter(|d| {
                d["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("ValidatingAdmissionPolicy"))
                    && !d["metadata"]["name"].as_str().unwrap().contains("-plan-")
            })
            .collect()
    };
    let on = policies(&[]);
    let names: BTreeSet<(String, String)> = on
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ["children", "owners"]
        .iter()
        .flat_map(|p| {
            [
                (
                    "ValidatingAdmissionPolicy".to_string(),
                    format!("{full}-{p}"),
                ),
                (
                    "ValidatingAdmissionPolicyBinding".to_string(),
                    format!("{full}-{p}"),
                ),
            ]
        })
        .collect();
    assert_eq!(names, expected);
    let children = must(
        &on,
        "ValidatingAdmissionPolicy",
        &format!("{full}-children"),
    );
    let exempt = children["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap();
    assert!(
        exempt.contains(&format!("system:serviceaccount:ops:{full}")),
        "the operator's ServiceAccount is exempt: {exempt}"
    );
    assert!(exempt.contains("system:masters"), "{exempt}");
    let scoped = policies(&[
        "--set",
        "childProtection.namespaceSelector.matchLabels.tenancy=assigned",
        "--set-json",
        "childProtection.exemptGroups=[]",
    ]);
    let binding = must(
        &scoped,
        "ValidatingAdmissionPolicyBinding",
        &format!("{full}-owners"),
    );
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"],
        json!({"matchLabels": {"tenancy": "assigned"}})
    );
    let children = must(
        &scoped,
        "ValidatingAdmissionPolicy",
        &format!("{full}-children"),
    );
    assert!(
        !children["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap()
            .contains("system:masters")
    );
    assert!(policies(&["--set", "childProtection.enabled=false"]).is_empty());
}

// --- alerts and dashboard -----------------------------------------------------

/// The PrometheusRule rendered out of the chart passes `promtool check
/// rules`, and every alert passes its unit tests in
/// tests/prometheus/alerts.test.yaml (`promtool test rules`): each fires in
/// one case and stays silent in another.
#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    require_helm();
    let rule = prom::rendered_rule(&[]);
    let dir = tempfile::tempdir().unwrap();
    prom::write_rules_file(dir.path(), &rule);
    let check = prom::promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    let said = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        check.status.success(),
        "promtool check rules:\n{}",
        said(&check)
    );
    let alerts = prom::alerts(&rule);
    assert!(
        said(&check).contains(&format!("{} rules found", alerts.len())),
        "{}",
        said(&check)
    );

    // Every alert has a test that fires it and one that does not.
    let tests = std::fs::read_to_string(ALERT_TESTS).unwrap();
    let cases: Value = serde_saphyr::from_str(&tests).unwrap();
    for (alert, _) in &alerts {
        let evals: Vec<&Value> = cases["tests"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
            .filter(|e| e["alertname"] == alert.as_str())
            .collect();
        let fires = |e: &&Value| e["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
        assert!(evals.iter().any(fires), "no test fires {alert}");
        assert!(
            !evals.iter().all(fires),
            "no test where {alert} stays silent"
        );
        // Each names its runbook in the docs.
        let r = rule["spec"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .find(|r| r["alert"] == alert.as_str())
            .unwrap();
        let anchor = format!("#{}", alert.to_lowercase());
        assert!(
            r["annotations"]["runbook_url"]
                .as_str()
                .is_some_and(|u| u.ends_with(&anchor)),
            "{r}"
        );
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/observability.md"
        ))
        .unwrap();
        assert!(
            docs.contains(&format!("### {alert}")),
            "{alert} has no runbook section"
        );
    }

    std::fs::copy(ALERT_TESTS, dir.path().join("alerts.test.yaml")).unwrap();
    let test = prom::promtool(dir.path(), &["test", "rules", "alerts.test.yaml"]);
    assert!(
        test.status.success(),
        "promtool test rules:\n{}",
        said(&test)
    );
    assert!(said(&test).contains("SUCCESS"), "{}", said(&test));
}

/// Labels, thresholds and the series' selector come from values; off by default.
#[test]
fn the_prometheus_rule_takes_labels_thresholds_and_selector_from_values() {
    require_helm();
    let rule = prom::rendered_rule(&[
        "--set",
        "prometheusRule.labels.release=prometheus",
        "--set",
        "prometheusRule.selector=service=\"tco-metrics\"",
        "--set",
        "prometheusRule.capacityLimited.for=30m",
        "--set-json",
        "prometheusRule.reconcileErrors.ratio=0.25",
        "--set",
        "prometheusRule.operatorDown.severity=page",
    ]);
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let rules: Vec<&Value> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let by_name = |n: &str| *rules.iter().find(|r| r["alert"] == n).unwrap();
    assert_eq!(by_name("TenantCapacityLimited")["for"], "30m");
    assert_eq!(
        by_name("TenantCapacityOperatorDown")["labels"]["severity"],
        "page"
    );
    assert!(
        by_name("TenantCapacityReconcileErrors")["expr"]
            .as_str()
            .unwrap()
            .contains("> 0.25")
    );
    for r in &rules {
        let expr = r["expr"].as_str().unwrap();
        assert!(expr.contains("{service=\"tco-metrics\"}"), "{expr}");
        assert!(!expr.contains("job="), "{expr}");
    }
    let bad = run(
        "helm",
        &[
            "template",
            "tco",
            CHART,
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.podsRefused.for=soon",
        ],
        None,
    );
    assert!(
        !bad.status.success(),
        "a `for` that is no duration is refused"
    );
}

/// The dashboard ships in a ConfigMap with Grafana's sidecar label (off by
/// default, the label and namespace configurable), holding the JSON of
/// dashboards/tenant-capacity.json as it is.
#[test]
fn the_dashboard_ships_in_a_configmap_for_grafanas_sidecar() {
    require_helm();
    let dir = tempfile::tempdir().unwrap();
    let values = write(
        dir.path(),
        "values.yaml",
        "prometheusRule: {enabled: true, labels: {release: prometheus}}\ngrafanaDashboard: {enabled: true}\nserviceMonitor: {enabled: true}\n",
    );
    ok(
        "helm",
        &["lint", "--strict", CHART, "-f", values.to_str().unwrap()],
    );
    let docs = template("tco", "ops", &["--set", "grafanaDashboard.enabled=true"]);
    let cm = must(&docs, "ConfigMap", "tco-tenant-capacity-operator-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "ops");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(cm["data"]["tenant-capacity.json"].as_str().unwrap()).unwrap();
    let file: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    assert_eq!(shipped, file);
    assert_eq!(file["uid"], "tenant-capacity");
    let vars: Vec<String> = prom::dashboard_variables(&file)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for v in ["job", "namespace", "tenant", "module"] {
        assert!(vars.iter().any(|x| x == v), "no ${v} variable: {vars:?}");
    }

    let moved = template(
        "tco",
        "ops",
        &[
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "grafanaDashboard.namespace=monitoring",
            "--set-json",
            "grafanaDashboard.labels={\"dashboards\":\"tenants\"}",
        ],
    );
    let cm = must(
        &moved,
        "ConfigMap",
        "tco-tenant-capacity-operator-dashboard",
    );
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "tenants");
}
