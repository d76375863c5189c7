//! A converged subscription causes zero API writes, even across resyncs,
//! counted by the API server itself (its audit log, so that other tests'
//! namespaces being deleted meanwhile do not count).

mod support;

use std::time::Duration;

use kube::{Api, Client};
use support::*;
use tenant_capacity_operator::{api::TenantSubscription, controller};

const OUR_RESOURCES: &[&str] = &[
    "deployments",
    "horizontalpodautoscalers",
    "services",
    "resourcequotas",
    "limitranges",
    "tenantsubscriptions",
];

/// Writes the API server's audit log records after `mark` to the operator's
/// resources in `namespaces`, status subresources of built-in kinds left out
/// (the controller manager writes those).
fn audit_writes(audit: &Audit, namespaces: &[String], mark: &audit::Mark) -> u64 {
    let mentioning: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    audit
        .writes_since(mark, &mentioning, |e| {
            let o = &e["objectRef"];
            let resource = o["resource"].as_str().unwrap_or("");
            namespaces
                .iter()
                .any(|ns| o["namespace"].as_str() == Some(ns))
                && OUR_RESOURCES.contains(&resource)
                && (o["subresource"].is_null() || resource == "tenantsubscriptions")
        })
        .expect("read the API server's audit log")
        .total()
}

/// Conflicts or throttles (409, 429) of writes to the resources the operator writes, from
/// kube-apiserver's own request counters. Status subresources of built-in
/// kinds are left out: the controller manager writes those.
async fn server_conflicts(client: &Client) -> u64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client
        .request_text(req)
        .await
        .expect("read kube-apiserver /metrics");
    let mut bad = 0u64;
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |k: &str| {
            let pat = format!("{k}=\"");
            line.find(&pat)
                .map(|i| &line[i + pat.len()..])
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
        };
        let resource = label("resource");
        if !OUR_RESOURCES.contains(&resource) {
            continue;
        }
        let sub = label("subresource");
        if !(sub.is_empty() || resource == "tenantsubscriptions") {
            continue;
        }
        // Writes only: a watch throttled while five operators start at once
        // is retried with backoff and says nothing about converging.
        if !matches!(label("verb"), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE") {
            continue;
        }
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if matches!(label("code"), "409" | "429") {
            bad += n as u64;
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converged_subscriptions_cause_no_writes_across_resyncs() {
    let client = client().await;
    install_crds(&client).await;
    let video = unique("video");
    let im = unique("im");
    apply_yaml(&client, None, &profile_yaml(&video, "  port: 8443")).await;
    // Messaging scales on a sessions metric whose target the API server
    // writes back in another form (5,000 a replica at 80 %: "4000" is
    // served as "4k"); it must not read as drift.
    apply_yaml(
        &client,
        None,
        &support::sessions::profile_yaml(&im, 5000, "", ""),
    )
    .await;
    // One tenant per namespace (a ResourceQuota caps its whole namespace),
    // each namespace with its operator.
    const N: usize = 5;
    let resync = Duration::from_secs(2);
    let bad_before = server_conflicts(&client).await;
    let audit = Audit::local_cluster();
    let mark = audit.mark().expect("the API server's audit log");
    let mut namespaces = Vec::new();
    let mut operators = Vec::new();
    for i in 0..N {
        let ns = TestNamespace::for_tenant(&client, "quiet", &format!("q{i}")).await;
        operators.push(Operator::start_with(&client, &ns.name, resync));
        let yaml = format!(
            r#"
apiVersion: capacity.tenancy.dev/v1alpha1
kind: TenantSubscription
metadata: {{name: q{i}}}
spec:
  tenantId: q{i}
  modules:
    - {{name: {video}, concurrency: {c}}}
    - {{name: {im}, concurrency: 100}}
  seasons:
    timeZone: Asia/Shanghai
    windows: [{{name: summer, from: "07-01", to: "08-31", concurrencyPercent: 200}}]
"#,
            c = 100 * (i + 1)
        );
        apply_yaml(&client, Some(&ns.name), &yaml).await;
        namespaces.push(ns);
    }
    let subs: Vec<Api<TenantSubscription>> = namespaces
        .iter()
        .map(|ns| Api::namespaced(client.clone(), &ns.name))
        .collect();
    wait_for("all Ready", Duration::from_secs(120), || async {
        let mut ready = 0;
        for api in &subs {
            ready += ready_count(api).await;
        }
        (ready == N).then_some(())
    })
    .await;
    // The case below is the one meant: the target as the API server keeps it.
    let hpa: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler =
        Api::namespaced(client.clone(), &namespaces[0].name)
            .get(&format!("q0-{im}"))
            .await
            .expect("the messaging HPA");
    let target = hpa.spec.metrics.unwrap_or_default();
    let target = target
        .iter()
        .find_map(|m| m.pods.as_ref()?.target.average_value.as_ref())
        .map(|q| q.0.clone());
    assert_eq!(
        target.as_deref(),
        Some("4k"),
        "the sessions target as served"
    );
    let names: Vec<String> = namespaces.iter().map(|ns| ns.name.clone()).collect();
    let server_writes = || audit_writes(&audit, &names, &mark);
    let own_writes = || operators.iter().map(|o| o.writes()).sum::<u64>();
    let reconciliations = || operators.iter().map(|o| o.reconciliations()).sum::<u64>();

    // Let pod readiness settle: converged means a full round of resyncs without a write.
    let rounds = |n: u64| n * N as u64;
    let settled = wait_for("a quiet round", Duration::from_secs(90), || async {
        let (w0, own0, r0) = (server_writes(), own_writes(), reconciliations());
        wait_for("a resync round", Duration::from_secs(30), || async {
            (reconciliations() >= r0 + rounds(1)).then_some(())
        })
        .await;
        (server_writes() == w0 && own_writes() == own0).then_some(())
    })
    .await;
    let _: () = settled;

    // Measure: several forced resyncs of every subscription.
    let (w0, own0, r0) = (server_writes(), own_writes(), reconciliations());
    wait_for("three resync rounds", Duration::from_secs(60), || async {
        (reconciliations() >= r0 + rounds(3)).then_some(())
    })
    .await;
    let (w1, bad_after) = (server_writes(), server_conflicts(&client).await);
    let reconciles = reconciliations() - r0;
    println!(
        "quiet idle: {reconciles} reconciles, {} API writes (server count), {} (operator count)",
        w1 - w0,
        own_writes() - own0
    );
    assert!(reconciles >= rounds(3));
    assert_eq!(
        w1 - w0,
        0,
        "the API server saw writes to our resources while converged"
    );
    assert_eq!(
        own_writes() - own0,
        0,
        "the operator made writes while converged"
    );
    assert_eq!(
        bad_after - bad_before,
        0,
        "409 or 429 responses on our resources"
    );
    for o in operators {
        o.stop().await;
    }

    // Restarted, with existing objects fetched either way (a streamed
    // WatchList, or lists in pages), the operator finds every child as it
    // left it: each subscription is reconciled and nothing is written.
    let w0 = server_writes();
    let restarted: Vec<Operator> = names
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let how = if i % 2 == 0 {
                controller::InitialList::Paged
            } else {
                controller::InitialList::Stream
            };
            Operator::start_listing(&client, ns, resync, how)
        })
        .collect();
    wait_for(
        "every restarted operator to reconcile twice",
        Duration::from_secs(60),
        || async {
            restarted
                .iter()
                .all(|o| o.reconciliations() >= 2)
                .then_some(())
        },
    )
    .await;
    let restart_writes: u64 = restarted.iter().map(|o| o.writes()).sum();
    assert_eq!(
        (server_writes() - w0, restart_writes),
        (0, 0),
        "restarted operators (paged and streamed lists) wrote to converged subscriptions"
    );
    for o in restarted {
        o.stop().await;
    }
    for ns in namespaces {
        ns.delete().await;
    }
}
