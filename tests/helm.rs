//! The Helm chart (charts/tenant-capacity-operator) and the GitOps health check.
//!
//! Offline: the chart's CRDs equal crds/crds.yaml, `helm lint` passes, the
//! values schema refuses wrong types, the RBAC is exactly the documented least
//! privilege, and docs/argocd-health.lua gives the right verdicts in a real Lua
//! interpreter (hack/test-argocd-health.sh).
//!
//! Against the local cluster (hack/cluster.sh): `helm install` into a fresh
//! namespace, then the operator binary runs as a local process authenticated
//! as the chart's ServiceAccount (a TokenRequest token) and brings a
//! TenantSubscription to Ready (so the chart's RBAC is enough), the same
//! identity is refused Secrets and namespace deletion (so it is no more than
//! that), `helm upgrade` changes the Deployment and `helm uninstall` removes
//! the release but leaves the CRDs.
//!
//! helm and kubectl come from PATH and the cluster from KUBECONFIG
//! (`eval "$(hack/cluster.sh env)"`, which hack/test.sh does). Without them
//! these tests fail: a missing tool must never look like a pass.

use std::{
    collections::BTreeSet,
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/tenant-capacity-operator"
);
const CHART_NAME: &str = "tenant-capacity-operator";
const OPERATOR: &str = env!("CARGO_BIN_EXE_tenant-capacity-operator");
const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);
const KWOK_TOLERATION: &str =
    "{key: kwok.x-k8s.io/node, operator: Equal, value: fake, effect: NoSchedule}";

// --- tools ------------------------------------------------------------------

fn require_helm() {
    let out = Command::new("helm").arg("version").arg("--short").output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`helm version` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "helm is not on PATH ({e}): run `eval \"$(hack/cluster.sh env)\"` first (hack/test.sh does), \
             which puts the pinned helm and kubectl on PATH"
        ),
    }
}

fn require_cluster() {
    match std::env::var_os("KUBECONFIG") {
        Some(p) if !p.is_empty() => assert!(
            Path::new(&p).is_file(),
            "KUBECONFIG={} does not exist: start the cluster with `hack/cluster.sh up` (or use hack/test.sh)",
            p.to_string_lossy()
        ),
        _ => panic!(
            "KUBECONFIG is not set: these tests need the local cluster. Run \
             `hack/cluster.sh up && eval \"$(hack/cluster.sh env)\"` first, or use hack/test.sh"
        ),
    }
    require_helm();
    let out = run("kubectl", &["version", "--request-timeout=10s"], None);
    assert!(
        out.status.success(),
        "kubectl cannot reach the cluster: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(cmd);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().unwrap_or_else(|e| {
        panic!("cannot run {cmd} ({e}); put it on PATH with `eval \"$(hack/cluster.sh env)\"`")
    });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for command")
}

/// Run and return stdout, failing the test when the command fails.
fn ok(cmd: &str, args: &[&str]) -> String {
    ok_in(cmd, args, None)
}

fn ok_in(cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(cmd, args, stdin);
    assert!(
        out.status.success(),
        "`{cmd} {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn kubectl(args: &[&str]) -> String {
    let mut all = vec!["--request-timeout=20s"];
    all.extend_from_slice(args);
    ok("kubectl", &all)
}

/// `kubectl get ... -o json`, or None when it does not exist.
fn kubectl_get(args: &[&str]) -> Option<Value> {
    let mut all = vec!["--request-timeout=20s", "get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--ignore-not-found"]);
    let text = ok("kubectl", &all);
    if text.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(&text).expect("kubectl JSON"))
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000;
    format!("{prefix}-{}-{t}{n}", std::process::id() % 10_000)
}

/// Poll `check` every POLL until it returns Some, failing after `timeout`
/// with `what` and whatever `context` says then.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(POLL);
    }
}

// --- rendering ----------------------------------------------------------------

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

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
            &["resourcequotas"],
            &["get", "list", "watch", "create", "patch"],
        ),
        ("", &["persistentvolumeclaims"], &["list", "delete"]),
        ("events.k8s.io", &["events"], &["create", "patch"]),
    ])
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
    args.windows(2).any(|w| w[0] == flag && w[1] == value)
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

#[test]
fn helm_lint_passes_with_default_and_custom_values() {
    require_helm();
    ok("helm", &["lint", "--strict", CHART]);
    let dir = tempfile::tempdir().unwrap();
    let values = write(dir.path(), "values.yaml", &custom_values("video-call"));
    ok(
        "helm",
        &["lint", "--strict", CHART, "-f", values.to_str().unwrap()],
    );
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
        triples(&[(
            "capacity.tenancy.dev",
            &["moduleprofiles", "subscriptionplans", "capacitycalendars"],
            &["get", "list", "watch"]
        )])
    );
    let leases = must(&docs, "Role", &format!("{full}-leader-election"));
    assert_eq!(leases["metadata"]["namespace"], "ops");
    assert_eq!(
        grants(&leases["rules"]),
        triples(&[(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "patch"]
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

    // Aggregation into the built-in roles.
    let edit = must(&docs, "ClusterRole", &format!("{full}-edit"));
    let labels = &edit["metadata"]["labels"];
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        grants(&edit["rules"]),
        triples(&[(
            "capacity.tenancy.dev",
            &["tenantsubscriptions"],
            &[
                "get",
                "list",
                "watch",
                "create",
                "update",
                "patch",
                "delete",
                "deletecollection"
            ]
        )])
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
        has_pair(&args, "--metrics-bind-address", ":8080"),
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
            .any(|p| p["name"] == "http-metrics" && p["containerPort"] == 8080)
    );
    assert_eq!(pod["serviceAccountName"], full);

    // Metrics Service; no ServiceMonitor and no catalogue by default.
    let svc = must(&docs, "Service", &format!("{full}-metrics"));
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
    for kind in [
        "ServiceMonitor",
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
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
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

// --- against the cluster ------------------------------------------------------

/// Everything the lifecycle test made, removed even when it fails.
struct Cleanup {
    release: String,
    release_ns: String,
    namespaces: Vec<String>,
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
        for ns in &self.namespaces {
            let _ = run(
                "kubectl",
                &[
                    "delete",
                    "namespace",
                    ns,
                    "--ignore-not-found",
                    "--wait=false",
                ],
                None,
            );
        }
    }
}

/// The operator binary as a local process.
struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(kubeconfig: &Path, log: PathBuf, args: &[&str]) -> Self {
        let file = File::create(&log).expect("operator log file");
        let child = Command::new(OPERATOR)
            .arg("run")
            .args([
                "--metrics-bind-address",
                "127.0.0.1:0",
                "--health-probe-bind-address",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("WATCH_NAMESPACE")
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the operator binary");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn context(&self) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!(
            "operator log (last 30 lines):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        ok("kill", &["-TERM", &pid]);
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(
            "the operator to exit after SIGTERM",
            Duration::from_secs(30),
            || child.try_wait().unwrap(),
            || {
                format!(
                    "operator log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        )
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    wait_for(
        &format!("TenantSubscription {ns}/{name} Ready=True at its generation"),
        TIMEOUT,
        || {
            // A refusal will not go away by waiting: fail at once, naming it.
            let log = op.log();
            if let Some(line) = log.lines().find(|l| l.to_lowercase().contains("forbidden")) {
                panic!(
                    "the operator was refused an API call (the chart's RBAC is not enough):\n{line}"
                );
            }
            let s = kubectl_get(&["tenantsubscription", name, "-n", ns])?;
            let ready = condition(&s, "Ready")?;
            (ready["status"] == "True"
                && s["status"]["observedGeneration"] == s["metadata"]["generation"])
                .then_some(s)
        },
        || {
            let s = kubectl_get(&["tenantsubscription", name, "-n", ns])
                .map(|s| s["status"].to_string())
                .unwrap_or_default();
            format!("status: {s}\n{}", op.context())
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

/// A kubeconfig that authenticates with `token`, for the admin kubeconfig's
/// API server and CA.
fn token_kubeconfig(dir: &Path, token: &str) -> PathBuf {
    let server = kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let ca = kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    assert!(
        server.starts_with("https://") && !ca.is_empty(),
        "admin kubeconfig lacks server/CA: {server:?}"
    );
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "cluster", "user": "operator"}}],
        "current-context": "operator",
    });
    write(
        dir,
        "operator.kubeconfig",
        &serde_json::to_string_pretty(&config).unwrap(),
    )
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
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::{Api, api::DeleteParams, api::ListParams};
    use tenant_capacity_operator::api::TenantSubscription;

    require_cluster();
    let release = unique("tco");
    let release_ns = format!("{release}-ops");
    let tenant_ns = format!("{release}-tenant");
    let profile = format!("{release}-video");
    let full = format!("{release}-{CHART_NAME}");
    let sa = format!("system:serviceaccount:{release_ns}:{full}");
    let _cleanup = Cleanup {
        release: release.clone(),
        release_ns: release_ns.clone(),
        namespaces: vec![release_ns.clone(), tenant_ns.clone()],
        profile: profile.clone(),
    };
    kubectl(&["create", "namespace", &release_ns]);
    kubectl(&["create", "namespace", &tenant_ns]);
    // The operator's pods meet the restricted Pod Security Standard: the API
    // server's PodSecurity admission refuses them otherwise (and helm --wait
    // then times out).
    kubectl(&[
        "label",
        "namespace",
        &release_ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // --- install: the pods tolerate the fake nodes; the catalogue has one profile.
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
    tolerations: [{KWOK_TOLERATION}]
"#
        ),
    );
    let values = values.to_str().unwrap();
    let installed = ok(
        "helm",
        &[
            "install",
            &release,
            CHART,
            "-n",
            &release_ns,
            "-f",
            values,
            "--wait",
            "--timeout",
            "3m",
        ],
    );
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
    let d =
        kubectl_get(&["deployment", &full, "-n", &release_ns]).expect("the operator Deployment");
    assert_eq!(
        d["status"]["readyReplicas"], 1,
        "helm --wait waited for a ready replica"
    );
    assert!(kubectl_get(&["serviceaccount", &full, "-n", &release_ns]).is_some());
    let p = kubectl_get(&["moduleprofile", &profile]).expect("the ModuleProfile from values");
    assert_eq!(
        p["metadata"]["labels"]["app.kubernetes.io/instance"],
        release.as_str()
    );

    // --- run the operator as the chart's ServiceAccount, with leader election.
    let token = kubectl(&[
        "create",
        "token",
        &full,
        "-n",
        &release_ns,
        "--duration",
        "1h",
    ]);
    let kubeconfig = token_kubeconfig(dir.path(), token.trim());
    let op = OperatorProcess::start(
        &kubeconfig,
        dir.path().join("operator-1.log"),
        &[
            "--namespace",
            &tenant_ns,
            "--leader-elect",
            "--leader-election-namespace",
            &release_ns,
        ],
    );
    ok_in(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: acme, namespace: {tenant_ns}}}\n\
             spec:\n  tenantId: acme\n  modules:\n    - {{name: {profile}, concurrency: 100}}\n"
        )),
    );
    let sub = wait_ready(&tenant_ns, "acme", &op);
    let uid = sub["metadata"]["uid"].as_str().unwrap();
    let child = format!("acme-{profile}");
    for (kind, name) in [
        ("deployment", child.as_str()),
        ("hpa", &child),
        ("service", &child),
        ("resourcequota", "acme-capacity"),
    ] {
        let o = kubectl_get(&[kind, name, "-n", &tenant_ns])
            .unwrap_or_else(|| panic!("{kind}/{name} missing\n{}", op.context()));
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["uid"], uid,
            "{kind}/{name} owned by the subscription"
        );
    }
    let hpa = kubectl_get(&["hpa", &child, "-n", &tenant_ns]).unwrap();
    assert_eq!(hpa["spec"]["maxReplicas"], 3, "⌈100 / 40⌉");
    // The Ready transition was announced: events.k8s.io create works too.
    wait_for(
        "an Event from the operator about the subscription",
        TIMEOUT,
        || {
            let list = kubectl_get(&["events.v1.events.k8s.io", "-n", &tenant_ns])?;
            list["items"]
                .as_array()?
                .iter()
                .any(|e| {
                    e["regarding"]["name"] == "acme"
                        && e["reportingController"] == "tenant-capacity-operator"
                })
                .then_some(())
        },
        || op.context(),
    );
    let lease = kubectl_get(&["lease", "tenant-capacity-operator", "-n", &release_ns])
        .expect("the leader-election Lease");
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{lease}"
    );
    let log = op.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
    let status = op.stop();
    assert!(status.success(), "operator exit status {status}");
    // A clean stop releases the Lease (a patch the Role allows).
    wait_for(
        "the Lease to be released",
        Duration::from_secs(30),
        || {
            let l = kubectl_get(&["lease", "tenant-capacity-operator", "-n", &release_ns])?;
            l["spec"]["holderIdentity"]
                .as_str()
                .is_none_or(str::is_empty)
                .then_some(())
        },
        String::new,
    );

    // --- and nothing more: Secrets and namespaces are out of reach.
    assert!(
        can_i(&sa, &["patch", "deployments.apps", "-n", &tenant_ns]),
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
        &[
            "update",
            "tenantsubscriptions.capacity.tenancy.dev",
            "--subresource",
            "finalizers",
            "-n",
            &tenant_ns
        ]
    ));
    for ns in [&tenant_ns, &release_ns] {
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
                &tenant_ns
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
        &["delete", "leases.coordination.k8s.io", "-n", &release_ns]
    ));
    rt.block_on(async {
        let c = token_client(&kubeconfig).await;
        let subs: Api<TenantSubscription> = Api::namespaced(c.clone(), &tenant_ns);
        assert_eq!(
            status_of(subs.list(&ListParams::default()).await),
            200,
            "the token works"
        );
        let secrets: Api<Secret> = Api::namespaced(c.clone(), &tenant_ns);
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
            status_of(
                namespaces
                    .delete(&tenant_ns, &DeleteParams::default())
                    .await
            ),
            403,
            "DELETE a namespace"
        );
    });
    let ns = kubectl_get(&["namespace", &tenant_ns]).expect("the tenant namespace survives");
    assert_eq!(ns["status"]["phase"], "Active");

    // --- upgrade: two replicas, a new pod annotation, and the namespaced grants
    // narrowed to the tenant namespace.
    let before = kubectl_get(&["deployment", &full, "-n", &release_ns]).unwrap();
    ok(
        "helm",
        &[
            "upgrade",
            &release,
            CHART,
            "-n",
            &release_ns,
            "-f",
            values,
            "--set",
            "replicaCount=2",
            "--set-string",
            "podAnnotations.example\\.com/rollout=second",
            "--set",
            &format!("watchNamespace={tenant_ns}"),
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    let after = wait_for(
        "two updated, ready operator replicas",
        TIMEOUT,
        || {
            let d = kubectl_get(&["deployment", &full, "-n", &release_ns])?;
            let st = &d["status"];
            (st["readyReplicas"] == 2 && st["updatedReplicas"] == 2 && st["replicas"] == 2)
                .then_some(d)
        },
        String::new,
    );
    assert_eq!(after["spec"]["replicas"], 2);
    assert_eq!(
        after["spec"]["template"]["metadata"]["annotations"]["example.com/rollout"],
        "second"
    );
    assert_ne!(
        after["metadata"]["generation"],
        before["metadata"]["generation"]
    );
    assert!(has_pair(&args_of(&after), "--namespace", &tenant_ns));
    let history = ok(
        "helm",
        &["history", &release, "-n", &release_ns, "-o", "json"],
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
    assert!(kubectl_get(&["rolebinding", &format!("{full}-manager"), "-n", &tenant_ns]).is_some());
    // (RBAC caches follow the new bindings within moments: poll.)
    wait_for(
        "the namespaced grants to hold only in watchNamespace",
        TIMEOUT,
        || {
            (can_i(&sa, &["patch", "deployments.apps", "-n", &tenant_ns])
                && !can_i(&sa, &["patch", "deployments.apps", "-n", &release_ns])
                && !can_i(
                    &sa,
                    &[
                        "list",
                        "tenantsubscriptions.capacity.tenancy.dev",
                        "-n",
                        "default",
                    ],
                )
                && can_i(&sa, &["list", "moduleprofiles.capacity.tenancy.dev"]))
            .then_some(())
        },
        String::new,
    );
    // The narrowed grants are still enough: a plan change reaches the HPA.
    let op = OperatorProcess::start(
        &kubeconfig,
        dir.path().join("operator-2.log"),
        &[
            "--namespace",
            &tenant_ns,
            "--leader-elect",
            "--leader-election-namespace",
            &release_ns,
        ],
    );
    kubectl(&[
        "patch",
        "tenantsubscription",
        "acme",
        "-n",
        &tenant_ns,
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/modules/0/concurrency", "value": 200}]"#,
    ]);
    let sub = wait_ready(&tenant_ns, "acme", &op);
    assert_eq!(sub["status"]["observedGeneration"], 2);
    wait_for(
        "the HPA to follow the new concurrency",
        TIMEOUT,
        || {
            (kubectl_get(&["hpa", &child, "-n", &tenant_ns])?["spec"]["maxReplicas"] == 5)
                .then_some(())
        },
        || op.context(),
    );
    let log = op.log();
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
            &release_ns,
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    assert!(
        kubectl_get(&["deployment", &full, "-n", &release_ns]).is_none(),
        "Deployment removed"
    );
    assert!(
        kubectl_get(&["serviceaccount", &full, "-n", &release_ns]).is_none(),
        "ServiceAccount removed"
    );
    assert!(
        kubectl_get(&["service", &format!("{full}-metrics"), "-n", &release_ns]).is_none(),
        "metrics Service removed"
    );
    for role in ["manager", "catalogue", "edit", "view"] {
        assert!(
            kubectl_get(&["clusterrole", &format!("{full}-{role}")]).is_none(),
            "ClusterRole {role} removed"
        );
    }
    assert!(kubectl_get(&["clusterrolebinding", &format!("{full}-catalogue")]).is_none());
    assert!(kubectl_get(&["rolebinding", &format!("{full}-manager"), "-n", &tenant_ns]).is_none());
    assert!(
        kubectl_get(&[
            "role",
            &format!("{full}-leader-election"),
            "-n",
            &release_ns
        ])
        .is_none()
    );
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
        kubectl_get(&["tenantsubscription", "acme", "-n", &tenant_ns]).is_some(),
        "subscriptions survive uninstall"
    );
    // The ServiceAccount is gone, and with it its token (the API server
    // caches a successful token check for a few seconds: poll).
    rt.block_on(async {
        let c = token_client(&kubeconfig).await;
        let subs: Api<TenantSubscription> = Api::namespaced(c, &tenant_ns);
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
