//! Two operator processes with leader election: one leads and writes, the
//! other stands by and writes nothing; kill the leader and the other takes
//! over within the lease duration.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::{autoscaling::v2::HorizontalPodAutoscaler, coordination::v1::Lease};
use kube::Api;
use support::*;

const LEASE_SECONDS: u64 = 6;
const LEADING: &str = "leading: starting the controller";

/// A replica with leader election, its Lease in `ns`, known as `name`;
/// returns once it serves metrics.
fn start_replica(ns: &str, name: &str) -> OperatorProcess {
    let op = OperatorProcess::launch()
        .namespace(ns)
        // Its subscriptions name no plan.
        .args(["--require-plan=false"])
        .args(["--leader-elect", "--leader-election-namespace", ns])
        .args([
            "--leader-election-lease-seconds",
            &LEASE_SECONDS.to_string(),
        ])
        .env("POD_NAME", name)
        .start();
    op.metrics_address();
    op
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
