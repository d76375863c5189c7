//! Self-checks of the local control plane started by `hack/cluster.sh up`.
//!
//! They drive the real cluster through `kubectl` alone (found on PATH after
//! `eval "$(hack/cluster.sh env)"`, which also sets KUBECONFIG). Without
//! KUBECONFIG they fail: a missing cluster must never look like a pass.
//! Every test works in its own namespace, deleted at the end.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{
    TestNamespace,
    tools::{kubectl, kubectl_apply, require_cluster, try_kubectl},
    wait_blocking,
};

const TIMEOUT: Duration = Duration::from_secs(120);
/// A namespace of its own for one test (deleted when dropped, also on panic).
fn namespace(test: &str) -> TestNamespace {
    TestNamespace::with_kubectl(&format!("selfcheck-{test}"))
}

fn apply(namespace: &str, manifest: &str) {
    kubectl_apply(Some(namespace), manifest);
}

fn fake_nodes() -> BTreeSet<String> {
    let out = kubectl(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.metadata.annotations.kwok\.x-k8s\.io/node}{"\n"}{end}"#,
    ]);
    let nodes: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, fake)| *fake == "fake")
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(
        !nodes.is_empty(),
        "no kwok fake nodes in the cluster:\n{out}"
    );
    nodes
}

/// Extracts the string value of `"key": "..."` at or after `from` in JSON text.
fn json_string_after(json: &str, from: usize, key: &str) -> Option<String> {
    let needle = format!("\"{key}\"");
    let at = from + json[from..].find(&needle)? + needle.len();
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// Parses a CPU quantity as printed by kubectl ("800m", "1", "12n") into millicores.
fn millicores(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, scale) = if let Some(n) = q.strip_suffix('m') {
        (n, 1.0)
    } else if let Some(n) = q.strip_suffix('u') {
        (n, 1e-3)
    } else if let Some(n) = q.strip_suffix('n') {
        (n, 1e-6)
    } else {
        (q, 1000.0)
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

#[test]
fn server_version_matches_pinned_kubernetes() {
    require_cluster();
    let versions =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/versions.env"))
            .expect("read hack/versions.env");
    let pinned = versions
        .lines()
        .find_map(|l| l.trim().strip_prefix("K8S_VERSION="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .expect("K8S_VERSION in hack/versions.env");

    let json = kubectl(&["version", "-o", "json"]);
    let server = json
        .find("\"serverVersion\"")
        .unwrap_or_else(|| panic!("no serverVersion in:\n{json}"));
    let git_version = json_string_after(&json, server, "gitVersion")
        .unwrap_or_else(|| panic!("no serverVersion.gitVersion in:\n{json}"));
    assert_eq!(
        git_version, pinned,
        "server version differs from hack/versions.env"
    );
}

#[test]
fn deployment_pods_run_on_fake_nodes() {
    let ns = namespace("deploy");
    let nodes = fake_nodes();
    apply(
        ns.name(),
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
        resources:
          requests: {cpu: 100m, memory: 64Mi}
"#,
    );
    wait_blocking(
        "2 Running pods of deployment web on fake nodes",
        TIMEOUT,
        || {
            let out = try_kubectl(&[
                "get",
                "pods",
                "-n",
                ns.name(),
                "-l",
                "app=web",
                "-o",
                r#"jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase}{"\n"}{end}"#,
            ])?;
            let pods: Vec<Vec<&str>> = out
                .lines()
                .map(|l| l.split_whitespace().collect())
                .collect();
            let good = pods
                .iter()
                .filter(|p| p.len() == 3 && nodes.contains(p[1]) && p[2] == "Running")
                .count();
            if pods.len() == 2 && good == 2 {
                Ok(())
            } else {
                Err(format!("{out:?} (fake nodes: {nodes:?})"))
            }
        },
    );
}

#[test]
fn resource_quota_tracks_usage() {
    let ns = namespace("quota");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: ResourceQuota
metadata:
  name: quota
spec:
  hard:
    pods: "10"
    requests.cpu: "4"
    requests.memory: 8Gi
"#,
    );
    let quota = |path: &str| {
        try_kubectl(&[
            "get",
            "resourcequota",
            "quota",
            "-n",
            ns.name(),
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    // Until the quota controller has filled in status, admission rejects pods.
    wait_blocking("ResourceQuota status.hard", TIMEOUT, || {
        let hard = quota("{.status.hard.pods}")?;
        if hard == "10" {
            Ok(())
        } else {
            Err(format!("status.hard.pods={hard:?}"))
        }
    });
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: worker
spec:
  containers:
  - name: worker
    image: registry.invalid/worker:1
    resources:
      requests: {cpu: 250m, memory: 128Mi}
      limits: {cpu: 250m, memory: 128Mi}
"#,
    );
    wait_blocking(
        "ResourceQuota status.used to count the pod",
        TIMEOUT,
        || {
            let used = quota(
                r#"{.status.used.pods} {.status.used.requests\.cpu} {.status.used.requests\.memory}"#,
            )?;
            if used == "1 250m 128Mi" {
                Ok(())
            } else {
                Err(format!("status.used={used:?}"))
            }
        },
    );
}

#[test]
fn garbage_collector_deletes_dependents() {
    let ns = namespace("gc");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: owner
data: {role: owner}
"#,
    );
    let uid = kubectl(&[
        "get",
        "configmap",
        "owner",
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert!(!uid.is_empty(), "owner ConfigMap has no uid");
    apply(
        ns.name(),
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: dependent
  ownerReferences:
  - apiVersion: v1
    kind: ConfigMap
    name: owner
    uid: {uid}
data: {{role: dependent}}
"#
        ),
    );
    kubectl(&[
        "delete",
        "configmap",
        "owner",
        "-n",
        ns.name(),
        "--wait=true",
    ]);
    wait_blocking(
        "the garbage collector to delete the dependent ConfigMap",
        TIMEOUT,
        || match try_kubectl(&[
            "get",
            "configmap",
            "dependent",
            "-n",
            ns.name(),
            "-o",
            "name",
        ]) {
            Err(e) if e.contains("NotFound") || e.contains("not found") => Ok(()),
            Err(e) => Err(e),
            Ok(out) => Err(format!("still present: {}", out.trim())),
        },
    );
}

#[test]
fn top_pods_reports_annotated_cpu_usage() {
    let ns = namespace("top");
    apply(
        ns.name(),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: busy
  annotations:
    kwok.x-k8s.io/usage-cpu: 800m
    kwok.x-k8s.io/usage-memory: 300Mi
spec:
  containers:
  - name: busy
    image: registry.invalid/busy:1
    resources:
      requests: {cpu: "1", memory: 512Mi}
"#,
    );
    wait_blocking("pod busy Running", TIMEOUT, || {
        let phase = try_kubectl(&[
            "get",
            "pod",
            "busy",
            "-n",
            ns.name(),
            "-o",
            "jsonpath={.status.phase}",
        ])?;
        if phase == "Running" {
            Ok(())
        } else {
            Err(format!("phase={phase:?}"))
        }
    });
    // metrics-server needs two scrapes (10s apart) to compute a CPU rate.
    let cpu = wait_blocking(
        "kubectl top pods to report ~800m for pod busy",
        TIMEOUT,
        || {
            let out = try_kubectl(&["top", "pods", "-n", ns.name(), "--no-headers"])?;
            let line = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some("busy"))
                .ok_or_else(|| format!("no line for busy in {out:?}"))?;
            let cpu_col = line.split_whitespace().nth(1).unwrap_or_default();
            let cpu = millicores(cpu_col).ok_or_else(|| format!("unparsable CPU in {line:?}"))?;
            if (700.0..=900.0).contains(&cpu) {
                Ok(cpu)
            } else {
                Err(format!("{line:?}"))
            }
        },
    );
    assert!((700.0..=900.0).contains(&cpu));
}

/// POSTs `value` as `metric` of pod `pod` to the custom metrics adapter's
/// write port (`TCO_CUSTOM_METRICS_WRITE_URL`, from `hack/cluster.sh env`).
fn write_pod_metric(ns: &str, pod: &str, metric: &str, value: i64) -> Result<(), String> {
    let url = std::env::var("TCO_CUSTOM_METRICS_WRITE_URL")
        .map_err(|_| "TCO_CUSTOM_METRICS_WRITE_URL is not set: eval \"$(hack/cluster.sh env)\"")?;
    let out = support::tools::run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!("\"{value}\""),
            &format!("{url}/write-metrics/namespaces/{ns}/pods/{pod}/{metric}"),
        ],
        None,
    );
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!(
            "write refused: {code} {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The custom metrics API serves what is written per pod, and the real HPA
/// controller reads it: a `Pods` metric at twice its target doubles the
/// replicas.
#[test]
fn custom_metrics_api_serves_written_pod_values_to_the_hpa() {
    let ns = namespace("custom-metrics");
    apply(
        ns.name(),
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: rtc
spec:
  replicas: 2
  selector:
    matchLabels: {app: rtc}
  template:
    metadata:
      labels: {app: rtc}
    spec:
      containers:
      - name: rtc
        image: registry.invalid/rtc:1
        resources:
          requests: {cpu: 100m, memory: 64Mi}
"#,
    );
    let pods = wait_blocking("2 pods of rtc Running", TIMEOUT, || {
        let out = try_kubectl(&[
            "get",
            "pods",
            "-n",
            ns.name(),
            "-l",
            "app=rtc",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])?;
        let names: Vec<String> = out.split_whitespace().map(String::from).collect();
        if names.len() == 2 {
            Ok(names)
        } else {
            Err(format!("running: {names:?}"))
        }
    });
    for pod in &pods {
        write_pod_metric(ns.name(), pod, "rtc_sessions_active", 40).unwrap();
    }
    let raw = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/pods/*/rtc_sessions_active",
        ns.name()
    );
    let served = kubectl(&["get", "--raw", &raw]);
    for pod in &pods {
        assert!(served.contains(&format!("\"name\":\"{pod}\"")), "{served}");
    }
    assert_eq!(served.matches("\"value\":\"40\"").count(), 2, "{served}");
    // Target 20 a pod, 40 served: the HPA asks for 4 replicas.
    apply(
        ns.name(),
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: rtc
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: rtc}
  minReplicas: 1
  maxReplicas: 10
  metrics:
  - type: Pods
    pods:
      metric: {name: rtc_sessions_active}
      target: {type: AverageValue, averageValue: "20"}
"#,
    );
    wait_blocking(
        "the HPA to read 40 sessions a pod and want 4",
        TIMEOUT,
        || {
            let out = try_kubectl(&[
                "get",
                "hpa",
                "rtc",
                "-n",
                ns.name(),
                "-o",
                "jsonpath={.status.currentMetrics[0].pods.current.averageValue} {.status.desiredReplicas}",
            ])?;
            if out.trim() == "40 4" {
                Ok(())
            } else {
                Err(format!("averageValue desiredReplicas = {out:?}"))
            }
        },
    );
}
