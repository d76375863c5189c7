//! Regions and zones, end to end on the local cluster's nodes (two regions,
//! three zones each, labelled as a cloud's nodes are, no taint): a tenant's
//! pods run only in its region, spread over the region's zones; a region
//! move is a rolling update that keeps the floor ready and stays within the
//! quota; a plan refuses a region it does not include and what runs stays
//! where it is; a region where no node can take a pod is reported with the
//! scheduler's own words.

mod support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
};
use kube::{Api, Client, ResourceExt, api::ListParams};
use support::*;
use tenant_capacity_operator::{
    api::{ModuleStatus, TenantSubscription},
    render::{LABEL_MODULE, LABEL_SUBSCRIPTION},
};

const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";

fn module<'a>(s: &'a TenantSubscription, name: &str) -> Option<&'a ModuleStatus> {
    s.status.as_ref()?.modules.iter().find(|m| m.name == name)
}

/// A profile of six replicas at the floor, two per zone of a region.
async fn six_pod_profile(client: &Client, name: &str) {
    apply_yaml(
        client,
        None,
        &profile_yaml(name, "  port: 8443\n  minReplicas: 6"),
    )
    .await;
}

/// The module's running pods (not terminating) by zone and by region.
async fn pods_by_place(
    client: &Client,
    ns: &str,
    sub: &str,
    module: &str,
) -> (BTreeMap<String, i32>, BTreeMap<String, i32>) {
    let nodes: BTreeMap<String, Node> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!(
            "{LABEL_SUBSCRIPTION}={sub},{LABEL_MODULE}={module}"
        )))
        .await
        .unwrap();
    let (mut zones, mut regions) = (BTreeMap::new(), BTreeMap::new());
    for p in pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_ref()) else {
            continue;
        };
        let labels = nodes[node].labels();
        *zones.entry(labels[ZONE].clone()).or_insert(0) += 1;
        *regions.entry(labels[REGION].clone()).or_insert(0) += 1;
    }
    (zones, regions)
}

fn counts(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_in_the_tenants_region_spread_over_its_zones_and_move_with_a_rolling_update() {
    let f = Fixture::new("regions").await;
    let rtc = unique("rtc");
    six_pod_profile(&f.client, &rtc).await;
    let sub = "placed";
    let child = format!("{sub}-{rtc}");
    let spec = |region: &str| {
        format!(
            "  tenantId: placed\n  regions: [{region}]\n  modules:\n    - {{name: {rtc}, concurrency: 400}}\n"
        )
    };
    f.apply_sub(sub, &spec("eu-west-1")).await;
    let s = f
        .wait_status(sub, "two ready pods in each zone of eu-west-1", |s| {
            module(s, &rtc).is_some_and(|m| {
                m.ready_by_zone
                    == counts(&[("eu-west-1a", 2), ("eu-west-1b", 2), ("eu-west-1c", 2)])
            })
        })
        .await;
    assert_eq!(module(&s, &rtc).unwrap().regions, ["eu-west-1"]);
    // The status is the scheduler's doing, as the nodes say.
    let (zones, regions) = pods_by_place(&f.client, &f.ns.name, sub, &rtc).await;
    assert_eq!(regions, counts(&[("eu-west-1", 6)]));
    assert_eq!(
        zones,
        counts(&[("eu-west-1a", 2), ("eu-west-1b", 2), ("eu-west-1c", 2)])
    );
    // Standard scheduling, nothing of the local cluster's own.
    let d: Deployment = f.get(&child).await.unwrap();
    let pod = serde_json::to_value(d.spec.unwrap().template.spec.unwrap()).unwrap();
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"],
        serde_json::json!([{"key": REGION, "operator": "In", "values": ["eu-west-1"]}])
    );
    assert_eq!(pod["topologySpreadConstraints"][0]["topologyKey"], ZONE);
    assert_eq!(
        pod["topologySpreadConstraints"][0]["whenUnsatisfiable"],
        "DoNotSchedule"
    );
    assert!(pod.get("tolerations").is_none(), "{pod}");

    // The move: sampled throughout, the ready pods never fall below the
    // floor and the pods never exceed what the quota allows.
    let quota_pods: i32 = f
        .quota_hard(sub, "pods")
        .await
        .expect("the quota caps pods")
        .parse()
        .unwrap();
    let samples = Arc::new(Mutex::new(Vec::<(i32, i32)>::new()));
    let sampler = {
        let (api, pods, samples, selector) = (
            Api::<Deployment>::namespaced(f.client.clone(), &f.ns.name),
            Api::<Pod>::namespaced(f.client.clone(), &f.ns.name),
            samples.clone(),
            format!("{LABEL_SUBSCRIPTION}={sub},{LABEL_MODULE}={rtc}"),
        );
        let child = child.clone();
        tokio::spawn(async move {
            loop {
                if let (Ok(d), Ok(p)) = (
                    api.get(&child).await,
                    pods.list(&ListParams::default().labels(&selector)).await,
                ) {
                    let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
                    samples
                        .lock()
                        .unwrap()
                        .push((available, p.items.len() as i32));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    f.apply_sub(sub, &spec("us-east-1")).await;
    let s = f
        .wait_status(sub, "two ready pods in each zone of us-east-1", |s| {
            module(s, &rtc).is_some_and(|m| {
                m.ready_by_zone
                    == counts(&[("us-east-1a", 2), ("us-east-1b", 2), ("us-east-1c", 2)])
            }) && is(s, "Ready", "True", "Available")
        })
        .await;
    assert_eq!(module(&s, &rtc).unwrap().regions, ["us-east-1"]);
    wait_for("the old pods gone", Duration::from_secs(60), || async {
        let (_, regions) = pods_by_place(&f.client, &f.ns.name, sub, &rtc).await;
        (regions == counts(&[("us-east-1", 6)])).then_some(())
    })
    .await;
    sampler.abort();
    let samples = samples.lock().unwrap().clone();
    let least_ready = samples.iter().map(|s| s.0).min().unwrap();
    let most_pods = samples.iter().map(|s| s.1).max().unwrap();
    eprintln!(
        "[regions] move: {} samples, least available {least_ready}, most pods {most_pods}, quota {quota_pods}",
        samples.len()
    );
    assert!(samples.len() >= 5, "the move was sampled: {samples:?}");
    assert!(least_ready >= 6, "fell below the floor: {samples:?}");
    assert!(most_pods <= quota_pods, "above the quota: {samples:?}");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_refuses_a_region_it_does_not_include_and_what_runs_stays() {
    let f = Fixture::new("region-plan").await;
    let rtc = unique("rtc");
    six_pod_profile(&f.client, &rtc).await;
    let plan = unique("eu-only");
    apply_yaml(
        &f.client,
        None,
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {{name: {plan}}}\nspec:\n  regions: [eu-west-1]\n  modules:\n    - {{name: {rtc}, maxConcurrency: 1000}}\n"
        ),
    )
    .await;
    let sub = "planned";
    // No region named: served in the plan's.
    f.apply_sub(
        sub,
        &format!("  tenantId: planned\n  plan: {plan}\n  modules:\n    - {{name: {rtc}, concurrency: 400}}\n"),
    )
    .await;
    let s = f
        .wait_status(sub, "six ready pods in eu-west-1", |s| {
            module(s, &rtc).is_some_and(|m| {
                m.ready_by_zone.values().sum::<i32>() == 6 && m.regions == ["eu-west-1"]
            })
        })
        .await;
    assert!(is(&s, "Ready", "True", "Available"));

    // A region the plan does not include: refused, and the pods stay.
    f.apply_sub(
        sub,
        &format!("  tenantId: planned\n  plan: {plan}\n  regions: [us-east-1]\n  modules:\n    - {{name: {rtc}, concurrency: 400}}\n"),
    )
    .await;
    let s = f.wait_not_ready(sub, "ExceedsPlan").await;
    let message = &condition(&s, "Ready").unwrap().message;
    assert!(
        message.contains("region \"us-east-1\" is not in the plan's regions [eu-west-1]"),
        "{message}"
    );
    assert_eq!(module(&s, &rtc).unwrap().regions, ["eu-west-1"]);
    let d: Deployment = f.get(&format!("{sub}-{rtc}")).await.unwrap();
    let pod = serde_json::to_value(d.spec.unwrap().template.spec.unwrap()).unwrap();
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["values"],
        serde_json::json!(["eu-west-1"])
    );
    let (_, regions) = pods_by_place(&f.client, &f.ns.name, sub, &rtc).await;
    assert_eq!(regions, counts(&[("eu-west-1", 6)]));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_where_no_node_can_take_a_pod_is_reported_with_the_schedulers_message() {
    let f = Fixture::new("region-full").await;
    let rtc = unique("rtc");
    six_pod_profile(&f.client, &rtc).await;
    let sub = "nowhere";
    // ap-south-1 has no node in the local cluster.
    f.apply_sub(
        sub,
        &format!("  tenantId: nowhere\n  regions: [ap-south-1]\n  modules:\n    - {{name: {rtc}, concurrency: 400}}\n"),
    )
    .await;
    // Each pod the scheduler turns down wakes the operator: all six counted.
    let s = f
        .wait_status(sub, "Ready=False Unschedulable, 6 pods", |s| {
            is(s, "Ready", "False", "Unschedulable")
                && condition(s, "Ready").is_some_and(|c| c.message.contains(": 6 pods pending"))
        })
        .await;
    let message = &condition(&s, "Ready").unwrap().message;
    eprintln!("[regions] Ready=False: {message}");
    assert!(
        message.contains(&format!(
            "{rtc}: 6 pods pending, no node in region(s) ap-south-1 can take them: 0/"
        )),
        "{message}"
    );
    assert!(message.contains("node affinity/selector"), "{message}");
    let m = module(&s, &rtc).unwrap();
    assert!(m.ready_by_zone.is_empty());
    assert!(
        m.message.as_deref().is_some_and(|t| t.contains("pending")),
        "{m:?}"
    );

    // Room appears (the tenant is moved where there are nodes): the report
    // clears by itself.
    f.apply_sub(
        sub,
        &format!("  tenantId: nowhere\n  regions: [eu-west-1]\n  modules:\n    - {{name: {rtc}, concurrency: 400}}\n"),
    )
    .await;
    f.wait_available(sub).await;
    f.finish().await;
}
