//! The benchmark's tenants: three module profiles, one subscription per
//! tenant, and the child objects the operator would write for it.

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};
use tenant_capacity_operator::{
    api::{ModuleProfile, TenantSubscription},
    capacity,
    render::{self, Child, Owner},
};

use crate::Res;

pub const BENCH_LABEL: &str = "tenant-capacity-operator/bench";
/// Each tenant's modules and their concurrency; the first (video) is the one
/// plan changes raise.
pub const MODULES: [(&str, i64); 3] = [
    ("bench-video", 400),
    ("bench-voice", 500),
    ("bench-im", 10_000),
];

pub fn profile(name: &str, sessions: i32, port: Option<i32>) -> Value {
    let mut spec = json!({
        "image": format!("registry.example.com/rtc/{name}:1.0"),
        "sessionsPerReplica": sessions,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}},
        "scaling": {"cpuUtilization": 70},
    });
    if let Some(p) = port {
        spec["port"] = json!(p);
    }
    json!({"apiVersion": "capacity.tenancy.dev/v1alpha1", "kind": "ModuleProfile",
           "metadata": {"name": name, "labels": {BENCH_LABEL: "true"}}, "spec": spec})
}

fn subscription(ns: &str, i: usize, video: i64) -> TenantSubscription {
    let modules: Vec<Value> = MODULES
        .iter()
        .map(|(m, c)| json!({"name": m, "concurrency": if *m == "bench-video" { video } else { *c }}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "capacity.tenancy.dev/v1alpha1", "kind": "TenantSubscription",
        "metadata": {"name": "capacity", "namespace": ns, "labels": {BENCH_LABEL: "true"}},
        "spec": {"tenantId": format!("tenant-{i}"), "modules": modules},
    }))
    .expect("valid subscription")
}

pub async fn apply_subscription(
    client: &Client,
    ns: &str,
    i: usize,
    video: i64,
) -> Res<TenantSubscription> {
    let api: Api<TenantSubscription> = Api::namespaced(client.clone(), ns);
    let s = subscription(ns, i, video);
    Ok(api
        .patch(
            "capacity",
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&s),
        )
        .await?)
}

pub async fn catalogue(client: &Client) -> Res<capacity::Catalogue> {
    let api: Api<ModuleProfile> = Api::all(client.clone());
    let mut c = capacity::Catalogue::default();
    for (m, _) in MODULES {
        c.profiles.insert(m.to_string(), api.get(m).await?.spec);
    }
    Ok(c)
}

/// The objects the operator would apply for tenant `i` (no owner: the floor
/// and Helm have no subscription to point at).
pub fn desired(catalogue: &capacity::Catalogue, ns: &str, i: usize) -> Vec<Child> {
    desired_with(catalogue, ns, i, MODULES[0].1)
}

pub fn desired_with(catalogue: &capacity::Catalogue, ns: &str, i: usize, video: i64) -> Vec<Child> {
    let sub = subscription(ns, i, video);
    let plan = capacity::plan("capacity", &sub.spec, catalogue, jiff::Timestamp::now())
        .expect("bench subscriptions are valid");
    let owner = Owner {
        name: "capacity".into(),
        namespace: ns.into(),
        tenant_id: sub.spec.tenant_id.clone(),
        reference: None,
    };
    render::all_children(&owner, &plan)
}

/// The video HPA's ceiling in `children`.
pub fn video_ceiling(children: &[Child]) -> Option<i32> {
    children.iter().find_map(|c| match c {
        Child::Hpa(h) if h.metadata.name.as_deref() == Some("capacity-bench-video") => {
            Some(h.spec.max_replicas)
        }
        _ => None,
    })
}

/// Server-side apply one child as `manager` (as the operator writes it:
/// any kind through `ChildKind::api_resource`).
pub async fn ssa(client: &Client, ns: &str, child: &Child, manager: &str) -> Res<()> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &child.kind().api_resource())
        .patch(
            child.name(),
            &PatchParams::apply(manager).force(),
            &Patch::Apply(child.to_value()),
        )
        .await?;
    Ok(())
}
