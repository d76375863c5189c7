//! The command line: `crd`, `render` offline, `run` serving metrics and
//! health probes while reconciling against the local cluster, `probe` of
//! its health port, and the binary as the kubectl plugin `kubectl capacity`
//! run by the real kubectl.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use kube::Api;
use serde_json::Value;
use support::*;
use tenant_capacity_operator::api::TenantSubscription;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(process::BIN)
        .args(args)
        .output()
        .expect("run the binary")
}

#[test]
fn crd_prints_the_committed_crds() {
    let out = run(&["crd"]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(format!("{ROOT}/crds/crds.yaml")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn render_previews_every_example_offline() {
    let profiles = format!("{ROOT}/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(format!("{ROOT}/examples/subscriptions")).unwrap() {
        let path = entry.unwrap().path();
        let out = run(&[
            "render",
            "-f",
            path.to_str().unwrap(),
            "--profiles",
            &profiles,
            "--at",
            "2026-07-15T12:00:00Z",
        ]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert!(
            kinds.contains(&"Deployment") && kinds.contains(&"HorizontalPodAutoscaler"),
            "{kinds:?}"
        );
        assert_eq!(kinds.iter().filter(|k| **k == "ResourceQuota").count(), 1);
        assert_eq!(kinds.iter().filter(|k| **k == "LimitRange").count(), 1);
        seen += 1;
    }
    assert_eq!(seen, 4);
    // The education tenant in its summer holiday: video 200% of 1000 at 40 per replica.
    let out = run(&[
        "render",
        "-f",
        &format!("{ROOT}/examples/subscriptions/online-education.yaml"),
        "--profiles",
        &profiles,
        "--at",
        "2026-07-15T04:00:00Z",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("# edu: active windows [cn-school-holidays/summer-holiday], next transition 2026-07-15T18:00:00+08:00"), "{text}");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let hpa = docs
        .iter()
        .find(|d| {
            d["kind"] == "HorizontalPodAutoscaler" && d["metadata"]["name"] == "edu-video-call"
        })
        .unwrap();
    assert_eq!(
        (
            hpa["spec"]["minReplicas"].as_i64(),
            hpa["spec"]["maxReplicas"].as_i64()
        ),
        (Some(25), Some(50))
    );
}

#[test]
fn render_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub.yaml");
    std::fs::write(
        &sub,
        "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {name: x, namespace: y}\nspec: {tenantId: x, modules: [{name: hologram, concurrency: 5}, {name: video-call, concurrency: 5, tier: 8k}]}\n",
    )
    .unwrap();
    let out = run(&[
        "render",
        "-f",
        sub.to_str().unwrap(),
        "--profiles",
        &format!("{ROOT}/examples/profiles"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hologram: ModuleProfile \"hologram\" not found (ProfileNotFound)"),
        "{err}"
    );
    assert!(
        err.contains("video-call: tier \"8k\" not offered (available: hd, sd, uhd) (TierNotFound)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_and_metrics_and_reconciles() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::for_tenant(&client, "cli", "c").await;
    let module = unique("im");
    apply_yaml(&client, None, &profile_yaml(&module, "")).await;

    // The subscription below names no plan.
    let op = OperatorProcess::launch()
        .namespace(&ns.name)
        .args(["--require-plan=false"])
        .start();
    // The bound addresses are logged (port 0 picks free ports).
    let (metrics, health) = op.addresses().clone();

    assert_eq!(http_get(&health, "/healthz").map(|r| r.0), Some(200));
    wait_for("readyz 200", Duration::from_secs(30), || async {
        (http_get(&health, "/readyz")?.0 == 200).then_some(())
    })
    .await;
    // `probe`, as the chart's `helm test` runs it, finds it ready.
    let probed = run(&["probe", "--url", &format!("http://{health}/readyz")]);
    assert!(
        probed.status.success(),
        "probe of a ready operator: {}",
        String::from_utf8_lossy(&probed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&probed.stdout),
        format!("http://{health}/readyz: 200 ok\n")
    );

    apply_yaml(
        &client,
        Some(&ns.name),
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: c}}\nspec: {{tenantId: c, modules: [{{name: {module}, concurrency: 100}}]}}"
        ),
    )
    .await;
    let want = format!(
        "tenant_capacity_module_max_replicas{{namespace=\"{}\",subscription=\"c\",tenant=\"c\",module=\"{module}\"}} 3",
        ns.name
    );
    let body = wait_for(
        "per-module capacity metric",
        Duration::from_secs(30),
        || async {
            let (code, body) = http_get(&metrics, "/metrics")?;
            (code == 200 && body.contains(&want)).then_some(body)
        },
    )
    .await;
    assert!(body.contains("tenant_capacity_reconciliations_total"));
    assert!(body.contains("tenant_capacity_reconcile_duration_seconds_bucket"));
    assert!(body.contains("tenant_capacity_api_writes_total{kind=\"Deployment\",verb=\"apply\"}"));

    // `status` shows the per-module table once the subscription is Ready.
    let table = wait_for("status table", Duration::from_secs(30), || async {
        let out = run(&["status", "-n", &ns.name, "c"]);
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && text.contains("Ready: True (Available)")).then_some(text)
    })
    .await;
    let header = table
        .lines()
        .find(|l| l.starts_with("MODULE"))
        .expect("table header");
    for col in ["STATE", "FLOOR", "CEILING", "REPLICAS", "READY", "SESSIONS"] {
        assert!(header.contains(col), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with(&module))
        .expect("module row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    // name, state, tier, floor, ceiling, desired, replicas, ready, sessions
    assert_eq!(
        (cells[1], cells[3], cells[4], cells[8]),
        ("Active", "1", "3", "100"),
        "{row}"
    );
    assert!(table.contains("Next transition: none"), "{table}");

    // A deleted subscription's gauges leave /metrics at the next metering
    // beat (every 15 s); nothing reconciles a subscription that is gone.
    let subs: Api<TenantSubscription> = Api::namespaced(client.clone(), &ns.name);
    subs.delete("c", &Default::default()).await.unwrap();
    wait_for(
        "gauges of the deleted subscription gone",
        Duration::from_secs(60),
        || async {
            let (code, body) = http_get(&metrics, "/metrics")?;
            (code == 200 && !body.contains(&want)).then_some(())
        },
    )
    .await;

    let status = op.stop();
    assert!(status.success(), "graceful exit on SIGTERM, got {status}");
    ns.delete().await;
}

/// Text logs written to a pipe (a file, a collector) carry no terminal
/// colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_pipe_have_no_colour_codes() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::for_tenant(&client, "cli-log", "c").await;
    let op = OperatorProcess::launch()
        .namespace(&ns.name)
        .text_logs()
        .free_ports()
        .expect("free ports")
        .start();
    let line = op
        .wait_line("caches synced", Duration::from_secs(60))
        .expect("the operator logs that its caches synced");
    assert!(line.contains("INFO"), "a text line: {line}");
    let text = op.log_text();
    assert!(
        !text.contains('\u{1b}'),
        "an escape character in logs written to a pipe:\n{text}"
    );
    op.stop();
    ns.delete().await;
}

/// A server on loopback that answers one request with `answer`, then
/// closes; returns its address.
fn answer_once(answer: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        conn.write_all(answer.as_bytes()).unwrap();
    });
    address
}

#[test]
fn probe_fails_on_an_unready_or_silent_health_port() {
    // What /readyz answers before the caches are synced, or while the API
    // server refuses the operator something.
    let unready = answer_once(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 18\r\nconnection: close\r\n\r\ncaches not synced\n",
    );
    let out = run(&["probe", "--url", &format!("http://{unready}/readyz")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("http://{unready}/readyz: 503\ncaches not synced\n")
    );
    // Nothing listening.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = run(&["probe", "--url", &format!("http://{closed}/readyz")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("connecting to {closed}: ")),
        "{err}"
    );
    // Listening but never answering: given up after --timeout-seconds.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let started = std::time::Instant::now();
    let out = run(&[
        "probe",
        "--url",
        &format!("http://{address}/readyz"),
        "--timeout-seconds",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no answer within 1s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- the kubectl plugin ---------------------------------------------------------

/// The binary installed as the kubectl plugin: a symbolic link named
/// `kubectl-capacity` in a folder of its own, put first on kubectl's PATH.
struct Plugin {
    dir: tempfile::TempDir,
}

impl Plugin {
    fn install() -> Self {
        tools::require_cluster();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(process::BIN, dir.path().join("kubectl-capacity"))
            .expect("link kubectl-capacity to the binary");
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("kubectl-capacity")
    }

    /// The real kubectl, finding the plugin on PATH.
    fn kubectl(&self, args: &[&str]) -> Output {
        let path = std::env::join_paths(std::iter::once(self.dir.path().to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        Command::new("kubectl")
            .args(args)
            .env("PATH", path)
            .output()
            .expect("run kubectl")
    }

    /// `kubectl capacity ARGS`, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.capacity(args);
        assert!(
            out.status.success(),
            "kubectl capacity {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn capacity(&self, args: &[&str]) -> Output {
        let mut all = vec!["capacity"];
        all.extend_from_slice(args);
        self.kubectl(&all)
    }
}

fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A kubeconfig like KUBECONFIG's whose current context defaults to
/// `namespace`, plus a context `other` without a namespace.
fn kubeconfig_in(dir: &Path, namespace: &str) -> PathBuf {
    let text = std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap();
    let mut config: Value = serde_saphyr::from_str(&text).unwrap();
    let current = config["current-context"].as_str().unwrap().to_string();
    let contexts = config["contexts"].as_array_mut().unwrap();
    let mut other = contexts
        .iter()
        .find(|c| c["name"] == current.as_str())
        .unwrap()
        .clone();
    for c in contexts.iter_mut() {
        if c["name"] == current.as_str() {
            c["context"]["namespace"] = namespace.into();
        }
    }
    other["name"] = "other".into();
    other["context"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    contexts.push(other);
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_capacity_shows_a_converged_subscription() {
    let plugin = Plugin::install();
    let listed = plugin.kubectl(&["plugin", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(plugin.path().to_str().unwrap()),
        "kubectl plugin list: {}{}",
        String::from_utf8_lossy(&listed.stdout),
        String::from_utf8_lossy(&listed.stderr)
    );

    let f = Fixture::new("kcap").await;
    let ns = f.ns.name.clone();
    f.apply_sub(
        "acme",
        &format!(
            "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 100}}\n    - {{name: {}, concurrency: 200, tier: sd}}\n",
            f.im, f.video
        ),
    )
    .await;
    f.wait_available("acme").await;
    // Replicas follow the floor soon after Ready: wait until the status
    // shows every module's pods ready, then read it once for comparison.
    let sub = f
        .wait_status("acme", "every module's replicas ready", |s| {
            s.status.as_ref().is_some_and(|st| {
                st.modules.len() == 2
                    && st
                        .modules
                        .iter()
                        .all(|m| m.ready_replicas.is_some() && m.ready_replicas == m.min_replicas)
            })
        })
        .await
        .clone();
    let _ = sub.metadata.uid.as_ref().expect("read from the cluster");
    let status = sub.status.clone().unwrap();

    // The table: a header of the subscription, then one row per module with
    // the numbers the status holds.
    let table = plugin.ok(&["status", "-n", &ns, "acme"]);
    assert!(
        table.starts_with(&format!("{ns}/acme (tenant acme)\nReady: True (Available)")),
        "{table}"
    );
    let header = table.lines().find(|l| l.starts_with("MODULE")).unwrap();
    assert_eq!(
        cells(header),
        [
            "MODULE", "STATE", "TIER", "FLOOR", "CEILING", "DESIRED", "REPLICAS", "READY",
            "SESSIONS", "NOTE"
        ]
    );
    for m in &status.modules {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", m.name)))
            .unwrap_or_else(|| panic!("no row for {}:\n{table}", m.name));
        let c = cells(row);
        let n = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or("-".into());
        assert_eq!(c[1], "Active", "{row}");
        assert_eq!(c[2], m.tier.as_deref().unwrap_or("-"), "{row}");
        assert_eq!(
            (c[3], c[4], c[7], c[8]),
            (
                n(m.min_replicas).as_str(),
                n(m.max_replicas).as_str(),
                n(m.ready_replicas).as_str(),
                m.concurrency.unwrap().to_string().as_str()
            ),
            "{row}"
        );
    }
    let video = status.modules.iter().find(|m| m.name == f.video).unwrap();
    assert_eq!(
        (video.tier.as_deref(), video.max_replicas, video.concurrency),
        (Some("sd"), Some(4), Some(200)),
        "⌈200 / 60 per replica at sd⌉"
    );

    // The same subscription as the API server has it, in JSON and YAML.
    let api_status = serde_json::to_value(&status).unwrap();
    for format in ["json", "yaml"] {
        let text = plugin.ok(&["status", "-n", &ns, "acme", "-o", format]);
        let v: Value = if format == "json" {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        } else {
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        assert_eq!(v["kind"], "TenantSubscription", "{format}");
        assert_eq!(v["metadata"]["namespace"], ns.as_str());
        assert_eq!(
            v["metadata"]["uid"],
            sub.metadata.uid.clone().unwrap().as_str()
        );
        assert!(v["metadata"].get("managedFields").is_none(), "{format}");
        // The status may have moved on since (a later reconcile): compare
        // what a converged status keeps.
        assert_eq!(v["status"]["modules"], api_status["modules"], "{format}");
        let ready = v["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("True"), Some("Available"))
        );
    }

    // Wide: regions, ready pods by zone and drain deadlines too.
    let wide = plugin.ok(&["status", "-n", &ns, "acme", "-o", "wide"]);
    let header = wide.lines().find(|l| l.starts_with("MODULE")).unwrap();
    assert_eq!(
        cells(header),
        [
            "MODULE", "STATE", "TIER", "FLOOR", "CEILING", "DESIRED", "REPLICAS", "READY",
            "SESSIONS", "REGIONS", "ZONES", "DEADLINE", "NOTE"
        ]
    );
    let im = &status.modules.iter().find(|m| m.name == f.im).unwrap();
    let row = wide
        .lines()
        .find(|l| l.starts_with(&format!("{} ", f.im)))
        .unwrap();
    let zones = if im.ready_by_zone.is_empty() {
        "-".to_string()
    } else {
        im.ready_by_zone
            .iter()
            .map(|(z, n)| format!("{z}={n}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(cells(row)[10], zones, "{row}");

    // Without a name: the namespace's subscriptions, like `kubectl get`.
    f.apply_sub(
        "beta",
        &format!(
            "  tenantId: acme\n  paused: true\n  modules:\n    - {{name: {}, concurrency: 40}}\n",
            f.im
        ),
    )
    .await;
    let list = plugin.ok(&["status", "-n", &ns]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        cells(lines[0]),
        [
            "NAME", "TENANT", "PLAN", "READY", "REASON", "MODULES", "WINDOWS", "AGE"
        ],
        "{list}"
    );
    assert_eq!(
        &cells(lines[1])[..7],
        [
            "acme",
            "acme",
            "<none>",
            "True",
            "Available",
            "2/2",
            "<none>"
        ]
    );
    assert_eq!(cells(lines[2])[0], "beta", "{list}");
    assert_eq!(lines.len(), 3, "{list}");
    let wide = plugin.ok(&["status", "-n", &ns, "-o", "wide"]);
    let acme = wide.lines().find(|l| l.starts_with("acme ")).unwrap();
    let sessions: i64 = status.modules.iter().filter_map(|m| m.concurrency).sum();
    assert_eq!(cells(acme)[8], "false", "{wide}");
    assert_eq!(cells(acme)[9], sessions.to_string(), "{wide}");
    let beta = wide.lines().find(|l| l.starts_with("beta ")).unwrap();
    assert_eq!(cells(beta)[8], "true", "{wide}");
    let all = plugin.ok(&["status", "-A"]);
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines()
            .any(|l| cells(l).get(..2) == Some(&[ns.as_str(), "acme"][..])),
        "{all}"
    );
    let items: Value =
        serde_json::from_str(&plugin.ok(&["status", "-n", &ns, "-o", "json"])).unwrap();
    assert_eq!(items["kind"], "List");
    let names: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "beta"]);

    // A missing subscription: the API server's refusal, as kubectl prints it.
    let missing = plugin.capacity(&["status", "-n", &ns, "missing"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "Error from server (NotFound): tenantsubscriptions.capacity.tenancy.dev \"missing\" not found\n"
    );
    assert!(missing.stdout.is_empty());

    // --kubeconfig and --context: the context's namespace is the default;
    // an unknown context is named and nothing is printed.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_in(dir.path(), &ns);
    let kubeconfig = kubeconfig.to_str().unwrap();
    let table = plugin.ok(&["status", "acme", "--kubeconfig", kubeconfig]);
    assert!(table.starts_with(&format!("{ns}/acme ")), "{table}");
    let other = plugin.capacity(&[
        "status",
        "acme",
        "--kubeconfig",
        kubeconfig,
        "--context",
        "other",
    ]);
    assert_eq!(
        other.status.code(),
        Some(1),
        "no acme in the default namespace"
    );
    assert!(
        String::from_utf8_lossy(&other.stderr).starts_with("Error from server (NotFound)"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let bad = plugin.capacity(&["status", "-n", &ns, "acme", "--context", "no-such-context"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "error: context was not found for specified context: no-such-context\n"
    );
    assert!(bad.stdout.is_empty());

    // render: with the cluster's catalogue (the fixture's profiles), and
    // offline from files, in the same words as the binary's own `render`.
    let file = dir.path().join("sub.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: acme}}\n\
             spec: {{tenantId: acme, modules: [{{name: {}, concurrency: 200, tier: sd}}]}}\n",
            f.video
        ),
    )
    .unwrap();
    let text = plugin.ok(&[
        "render",
        "-n",
        &ns,
        "-f",
        file.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let rendered: Value = serde_json::from_str(&text).unwrap();
    let hpa = rendered["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "HorizontalPodAutoscaler")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(hpa["metadata"]["namespace"], ns.as_str());
    assert_eq!(
        hpa["spec"]["maxReplicas"].as_i64(),
        video.max_replicas.map(i64::from),
        "as the operator itself applied"
    );

    let status_cli = run(&["status", "-n", &ns, "acme"]);
    assert!(status_cli.status.success());
    assert!(
        String::from_utf8_lossy(&status_cli.stdout)
            .starts_with(&format!("{ns}/acme (tenant acme)\nReady: True (Available)")),
        "tenant-capacity-operator status, the same code path"
    );
    f.finish().await;
}

#[test]
fn kubectl_capacity_renders_files_offline_as_the_binary_does() {
    let plugin = Plugin::install();
    let args = [
        "render",
        "-f",
        &format!("{ROOT}/examples/subscriptions/online-education.yaml"),
        "--profiles",
        &format!("{ROOT}/examples"),
        "--at",
        "2026-07-15T04:00:00Z",
    ];
    let text = plugin.ok(&args);
    assert!(text.starts_with("# edu: active windows [cn-school-holidays/summer-holiday], next transition 2026-07-15T18:00:00+08:00"), "{text}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let hpa = docs
        .iter()
        .find(|d| {
            d["kind"] == "HorizontalPodAutoscaler" && d["metadata"]["name"] == "edu-video-call"
        })
        .unwrap();
    assert_eq!(
        (
            hpa["spec"]["minReplicas"].as_i64(),
            hpa["spec"]["maxReplicas"].as_i64()
        ),
        (Some(25), Some(50))
    );
    let own = run(&args);
    assert_eq!(String::from_utf8(own.stdout).unwrap(), text);
    // A subscription that cannot be rendered: each reason, and exit 1.
    let bad = plugin.capacity(&[
        "render",
        "-f",
        &format!("{ROOT}/examples/subscriptions/online-education.yaml"),
        "--profiles",
        &format!("{ROOT}/examples/profiles"),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.starts_with("error: subscription \"edu\" cannot be applied:\n")
            && err.contains("spec.plan: SubscriptionPlan \"pro\" not found (PlanNotFound)"),
        "{err}"
    );
    let version = plugin.ok(&["version"]);
    assert_eq!(
        version,
        format!("kubectl-capacity {}\n", env!("CARGO_PKG_VERSION"))
    );
}
