//! The command line: `crd`, `render` offline, and `run` serving metrics and
//! health probes while reconciling against the local cluster.

mod support;

use std::{process::Command, time::Duration};

use kube::Api;
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
