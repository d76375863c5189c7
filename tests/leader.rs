//! Two operator processes with leader election: one leads and writes, the
//! other stands by and writes nothing; kill the leader and the other takes
//! over within the lease duration; stop it with SIGTERM and the other takes
//! over at once, long before the lease would expire.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::{autoscaling::v2::HorizontalPodAutoscaler, coordination::v1::Lease};
use kube::Api;
use support::*;

const LEASE_SECONDS: u64 = 6;
const SHUTDOWN_SECONDS: u64 = 10;
const LEADING: &str = "leading: starting the controller";

/// A replica with leader election, its Lease in `ns`, known as `name`;
/// returns once it serves metrics.
fn start_replica(ns: &str, name: &str) -> OperatorProcess {
    start_replica_with_lease(ns, name, LEASE_SECONDS)
}

fn start_replica_with_lease(ns: &str, name: &str, lease_seconds: u64) -> OperatorProcess {
    let op = OperatorProcess::launch()
        .namespace(ns)
        // Its subscriptions name no plan.
        .args(["--require-plan=false"])
        .args(["--leader-elect", "--leader-election-namespace", ns])
        .args([
            "--leader-election-lease-seconds",
            &lease_seconds.to_string(),
        ])
        .args(["--shutdown-timeout-seconds", &SHUTDOWN_SECONDS.to_string()])
        .env("POD_NAME", name)
        .start();
    op.metrics_address();
    op
}

/// Starts two replicas in `ns` and returns them (leader, standby) once one leads.
async fn leader_and_standby(ns: &str, lease_seconds: u64) -> (OperatorProcess, OperatorProcess) {
    let a = start_replica_with_lease(ns, "replica-a", lease_seconds);
    let b = start_replica_with_lease(ns, "replica-b", lease_seconds);
    let first = wait_for("a leader", Duration::from_secs(30), || {
        let r = match (a.logged(LEADING), b.logged(LEADING)) {
            (true, false) => Some('a'),
            (false, true) => Some('b'),
            (true, true) => panic!("both replicas lead"),
            _ => None,
        };
        async move { r }
    })
    .await;
    if first == 'a' { (a, b) } else { (b, a) }
}

/// (`tenant_capacity_leader`, `tenant_capacity_caches_synced`) of a replica.
fn gauges(op: &OperatorProcess) -> (Option<f64>, Option<f64>) {
    let text = op.metrics().unwrap_or_default();
    (
        support::process::metric_value(&text, "tenant_capacity_leader"),
        support::process::metric_value(&text, "tenant_capacity_caches_synced"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_at_once() {
    // Long enough that waiting for expiry would be plain to see.
    const LONG_LEASE: u64 = 60;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::for_tenant(&client, "handover", "h").await;
    let module = unique("im");
    apply_yaml(&client, None, &profile_yaml(&module, "")).await;
    let sub = |c: i64| {
        format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: h}}\nspec: {{tenantId: h, modules: [{{name: {module}, concurrency: {c}}}]}}"
        )
    };
    apply_yaml(&client, Some(&ns.name), &sub(100)).await;
    let (mut leader, standby) = leader_and_standby(&ns.name, LONG_LEASE).await;
    let hpa = format!("h-{module}");
    wait_for("HPA from the leader", T, || async {
        get_opt::<HorizontalPodAutoscaler>(&client, &ns.name, &hpa).await
    })
    .await;
    // Its gauges say which one leads and has synced (what the alerts read).
    assert_eq!(gauges(&leader), (Some(1.0), Some(1.0)));
    assert_eq!(gauges(&standby), (Some(0.0), Some(0.0)));

    let stopped = Instant::now();
    let status = leader
        .stop_within(Duration::from_secs(SHUTDOWN_SECONDS + 10))
        .unwrap_or_else(|| {
            panic!(
                "the leader did not exit within its shutdown deadline\n{}",
                leader.tail(30)
            )
        });
    let exited = stopped.elapsed();
    assert!(
        status.success(),
        "the leader exited with {status}\n{}",
        leader.tail(30)
    );
    assert!(leader.logged("released the Lease"), "{}", leader.tail(30));
    let line = standby.wait_line(LEADING, Duration::from_secs(LONG_LEASE * 2));
    let took = stopped.elapsed();
    assert!(
        line.is_some(),
        "the standby did not take over\n{}",
        standby.tail(30)
    );
    println!(
        "leader exited {exited:?} after SIGTERM; standby led {took:?} after it (lease {LONG_LEASE}s)"
    );
    assert!(
        took < Duration::from_secs(10),
        "the standby took {took:?} to lead: it waited for the lease to expire"
    );

    wait_for("the new leader's gauges", T, || {
        let g = gauges(&standby);
        async move { (g == (Some(1.0), Some(1.0))).then_some(()) }
    })
    .await;

    // The new leader reconciles changes.
    apply_yaml(&client, Some(&ns.name), &sub(400)).await;
    wait_for("new leader applies the change", T, || async {
        let h = get_opt::<HorizontalPodAutoscaler>(&client, &ns.name, &hpa).await?;
        (h.spec.max_replicas == 10).then_some(())
    })
    .await;
    drop(standby);
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::for_tenant(&client, "leader", "l").await;
    let module = unique("im");
    apply_yaml(&client, None, &profile_yaml(&module, "")).await;
    let sub = |c: i64| {
        format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: l}}\nspec: {{tenantId: l, modules: [{{name: {module}, concurrency: {c}}}]}}"
        )
    };
    apply_yaml(&client, Some(&ns.name), &sub(100)).await;

    let mut a = start_replica(&ns.name, "replica-a");
    let mut b = start_replica(&ns.name, "replica-b");
    // Exactly one leads.
    let first = wait_for("a leader", Duration::from_secs(30), || {
        let r = match (a.logged(LEADING), b.logged(LEADING)) {
            (true, false) => Some('a'),
            (false, true) => Some('b'),
            (true, true) => panic!("both replicas lead"),
            _ => None,
        };
        async move { r }
    })
    .await;
    let (leader, standby) = if first == 'a' {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let hpa = format!("l-{module}");
    wait_for("HPA from the leader", T, || async {
        get_opt::<HorizontalPodAutoscaler>(&client, &ns.name, &hpa).await
    })
    .await;
    assert!(leader.writes() > 0);
    assert_eq!(standby.writes(), 0, "the standby wrote");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let lease = leases.get("tenant-capacity-operator").await.unwrap();
    let holder = lease.spec.unwrap().holder_identity.unwrap();
    assert!(
        holder.starts_with(if first == 'a' {
            "replica-a"
        } else {
            "replica-b"
        }),
        "{holder}"
    );

    // SIGKILL the leader: no release, the lease must expire.
    let killed = Instant::now();
    leader.kill();
    let line = standby.wait_line(LEADING, Duration::from_secs(LEASE_SECONDS * 4));
    let took = killed.elapsed();
    assert!(line.is_some(), "the standby did not take over");
    println!("takeover after {took:?} (lease {LEASE_SECONDS}s)");
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS * 2 + 2),
        "takeover took {took:?}"
    );

    wait_for("the new leader's gauges", T, || {
        let g = gauges(standby);
        async move { (g == (Some(1.0), Some(1.0))).then_some(()) }
    })
    .await;

    // The new leader reconciles changes.
    apply_yaml(&client, Some(&ns.name), &sub(400)).await;
    wait_for("new leader applies the change", T, || async {
        let h = get_opt::<HorizontalPodAutoscaler>(&client, &ns.name, &hpa).await?;
        (h.spec.max_replicas == 10).then_some(())
    })
    .await;
    assert!(standby.writes() > 0);
    drop(a);
    drop(b);
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_a_reconcile_that_hangs_at_the_deadline() {
    const DEADLINE: u64 = 3;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::for_tenant(&client, "deadline", "d").await;
    let module = unique("im");
    apply_yaml(&client, None, &profile_yaml(&module, "")).await;
    let sub = |c: i64| {
        format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: d}}\nspec: {{tenantId: d, modules: [{{name: {module}, concurrency: {c}}}]}}"
        )
    };
    apply_yaml(&client, Some(&ns.name), &sub(100)).await;
    let proxy = StallingProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut op = OperatorProcess::launch()
        .namespace(&ns.name)
        .args(["--require-plan=false"])
        .args(["--leader-elect", "--leader-election-namespace", &ns.name])
        .args(["--leader-election-lease-seconds", "60"])
        .args(["--shutdown-timeout-seconds", &DEADLINE.to_string()])
        .kubeconfig(&proxy.kubeconfig(&dir.path().join("kubeconfig")))
        .start();
    let hpa = format!("d-{module}");
    wait_for("HPA", T, || async {
        get_opt::<HorizontalPodAutoscaler>(&client, &ns.name, &hpa).await
    })
    .await;

    // The API server stops answering the operator mid-reconcile: the watch
    // brings the change, the apply hangs (the client's own timeout is 30 s).
    proxy.stall();
    apply_yaml(&client, Some(&ns.name), &sub(400)).await;
    wait_for("the operator's apply waiting at the proxy", T, || {
        let held = proxy.held();
        async move { (held > 0).then_some(()) }
    })
    .await;

    let stopped = Instant::now();
    let status = op
        .stop_within(Duration::from_secs(DEADLINE + 15))
        .unwrap_or_else(|| panic!("no exit within its deadline\n{}", op.tail(30)));
    let took = stopped.elapsed();
    println!("exited {took:?} after SIGTERM with a hanging reconcile (deadline {DEADLINE}s)");
    assert!(status.success(), "exited with {status}\n{}", op.tail(30));
    assert!(
        op.logged("did not end within the shutdown deadline"),
        "{}",
        op.tail(30)
    );
    // The deadline, then at most the bounded Lease release.
    assert!(
        took < Duration::from_secs(DEADLINE)
            + tenant_capacity_operator::leader::RELEASE_TIMEOUT
            + Duration::from_secs(3),
        "exit took {took:?}"
    );
    proxy.resume();
    ns.delete().await;
}
