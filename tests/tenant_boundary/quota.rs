//! The quota covers every resource any module asks for, pods that declare
//! nothing are counted at the operator's defaults (its LimitRange), a tier
//! change to smaller pods completes without the quota ever dropping below
//! what running pods hold, and pods the API server refuses show in status.
//! docs/security.md: "Quota covers every resource", "Rollouts and refused pods".

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet},
        core::v1::{Pod, ResourceQuota},
    },
    apimachinery::pkg::api::resource::Quantity as K8sQuantity,
};
use kube::{Api, Client, api::ListParams};
use tenant_capacity_operator::{
    capacity::Quantity,
    render::{ANNOTATION_HELD_UNTIL, LABEL_MODULE},
};

use super::Tenant;
use crate::support::{T, apply_yaml, condition, is, tools::kubectl, unique, wait::POLL, wait_for};

/// A ModuleProfile written by the provider: `spec` is the YAML under `spec:`
/// (indented two spaces), tolerating the fake nodes.
async fn profile(t: &Tenant, name: &str, spec: &str) {
    apply_yaml(
        &t.f.client,
        None,
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: ModuleProfile\nmetadata: {{name: {name}}}\nspec:\n  image: registry.example.com/rtc/{name}:1.0\n{spec}\n"
        ),
    )
    .await;
}

/// A SubscriptionPlan selling `modules` at up to 1000 sessions each.
async fn plan(t: &Tenant, name: &str, modules: &[&str]) {
    let modules: Vec<String> = modules
        .iter()
        .map(|m| format!("{{name: {m}, maxConcurrency: 1000}}"))
        .collect();
    apply_yaml(
        &t.f.client,
        None,
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: SubscriptionPlan\nmetadata: {{name: {name}}}\nspec:\n  modules: [{}]\n",
            modules.join(", ")
        ),
    )
    .await;
}

fn quantities(m: Option<&BTreeMap<String, K8sQuantity>>) -> BTreeMap<String, Quantity> {
    m.into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Quantity::parse(&v.0).expect("a quantity")))
        .collect()
}

/// The subscription's quota: `spec.hard`, `status.hard`, `status.used`.
async fn quota(t: &Tenant, sub: &str) -> Option<(BTreeMap<String, Quantity>, ResourceQuota)> {
    let q: ResourceQuota = t.f.get(&format!("{sub}-capacity")).await?;
    Some((quantities(q.spec.as_ref()?.hard.as_ref()), q))
}

fn used(q: &ResourceQuota) -> BTreeMap<String, Quantity> {
    quantities(q.status.as_ref().and_then(|s| s.used.as_ref()))
}

fn q(s: &str) -> Quantity {
    Quantity::parse(s).unwrap()
}

/// Every resource the quota counts is within its limit.
fn assert_within(q: &ResourceQuota) {
    let hard = quantities(q.spec.as_ref().and_then(|s| s.hard.as_ref()));
    for (k, u) in used(q) {
        let h = hard.get(&k).copied().unwrap_or_default();
        assert!(u <= h, "quota {k}: used {u} over hard {h}");
    }
}

/// The message of a `ReplicaFailure` condition on a ReplicaSet matching `selector`.
async fn replica_failure(client: &Client, ns: &str, selector: &str) -> Option<String> {
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let list = sets
        .list(&ListParams::default().labels(selector))
        .await
        .ok()?;
    list.items.iter().find_map(|rs| {
        rs.status
            .as_ref()?
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?
            .message
            .clone()
    })
}

/// A Deployment of the namespace admin's own, its pods asking for `resources`.
fn own_deployment(name: &str, replicas: i32, resources: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: c, image: registry.example.com/own:1, resources: {resources}}}]\n"
    )
}

async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn container_resources(p: &Pod) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let r = p
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.resources.clone())
        .unwrap_or_default();
    (
        quantities(r.requests.as_ref()),
        quantities(r.limits.as_ref()),
    )
}

fn defaults() -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let m = |l: &[(&str, &str)]| l.iter().map(|(k, v)| (k.to_string(), q(v))).collect();
    (
        m(&tenant_capacity_operator::capacity::DEFAULT_REQUESTS),
        m(&tenant_capacity_operator::capacity::DEFAULT_LIMITS),
    )
}

/// Next to a subscription with a GPU module and a module that declares no
/// resources at all, the namespace admin runs Deployments of its own asking
/// for GPUs and CPU beyond what was bought: the quota refuses their pods.
/// A pod declaring nothing gets the operator's defaults and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_and_cpu_beyond_the_plan_are_refused_and_undeclared_pods_are_counted() {
    let t = Tenant::new("tb-quota").await;
    let ns = t.ns().to_string();
    let client = t.f.client.clone();
    // The quota and the defaults are the operator's: the namespace admin
    // reads them and cannot write them.
    for resource in ["resourcequotas", "limitranges"] {
        assert!(t.admin_can("get", resource), "admin reads {resource}");
        for verb in ["create", "update", "patch", "delete"] {
            assert!(!t.admin_can(verb, resource), "admin may {verb} {resource}");
        }
    }
    let (gpu, bare, sold) = (unique("gpu"), unique("bare"), unique("plan"));
    profile(
        &t,
        &gpu,
        "  sessionsPerReplica: 10\n  resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi, nvidia.com/gpu: \"1\"}}",
    )
    .await;
    profile(&t, &bare, "  sessionsPerReplica: 40").await;
    plan(&t, &sold, &[&gpu, &bare]).await;
    // Each module: 1 replica + 1 surge pod.
    t.f.apply_sub(
        "acme",
        &format!(
            "  tenantId: acme\n  plan: {sold}\n  modules:\n    - {{name: {gpu}, concurrency: 10}}\n    - {{name: {bare}, concurrency: 40}}\n"
        ),
    )
    .await;

    // What was bought: 2 GPUs; CPU and memory of both modules, the bare one
    // at the defaults (the fake nodes offer no GPU, so the GPU pod stays
    // Pending; the quota counts it all the same).
    let (req, lim) = defaults();
    let both = |per_pod_gpu_module: Quantity, per_pod_bare: Quantity| {
        per_pod_gpu_module
            .checked_mul(2)
            .unwrap()
            .checked_add(per_pod_bare.checked_mul(2).unwrap())
            .unwrap()
    };
    let bought: BTreeMap<String, Quantity> = [
        ("pods", q("4")),
        ("requests.nvidia.com/gpu", q("2")),
        ("requests.cpu", both(q("100m"), req["cpu"])),
        ("requests.memory", both(q("64Mi"), req["memory"])),
        ("limits.cpu", both(q("100m"), lim["cpu"])),
        ("limits.memory", both(q("64Mi"), lim["memory"])),
        ("services.loadbalancers", q("0")),
        ("services.nodeports", q("0")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    wait_for(
        "the quota in force, counting both modules' pods",
        T,
        || async {
            let (hard, q) = quota(&t, "acme").await.ok_or("no quota")?;
            let in_force = quantities(q.status.as_ref().and_then(|s| s.hard.as_ref()));
            let u = used(&q);
            (in_force == hard && u.get("pods") == Some(&self::q("2")))
                .then_some(())
                .ok_or(format!("hard {hard:?}, in force {in_force:?}, used {u:?}"))
        },
    )
    .await;
    // The module without resources runs at the defaults, and is counted so.
    let bare_pods = pods(&client, &ns, &format!("{LABEL_MODULE}={bare}")).await;
    assert_eq!(bare_pods.len(), 1);
    assert_eq!(container_resources(&bare_pods[0]), defaults());

    // More GPUs than were bought, in a Deployment of the admin's own.
    t.apply_as_admin(&own_deployment(
        "more-gpus",
        1,
        "{requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi, nvidia.com/gpu: \"2\"}}",
    ))
    .expect("the admin may create Deployments");
    let refused = wait_for("more-gpus refused by the quota", T, || {
        replica_failure(&client, &ns, "app=more-gpus")
    })
    .await;
    assert!(
        refused.contains("exceeded quota: acme-capacity")
            && refused.contains("requests.nvidia.com/gpu"),
        "{refused}"
    );
    // More CPU than was bought.
    t.apply_as_admin(&own_deployment(
        "more-cpu",
        1,
        "{requests: {cpu: \"8\", memory: 64Mi}, limits: {cpu: \"8\", memory: 64Mi}}",
    ))
    .expect("the admin may create Deployments");
    let refused = wait_for("more-cpu refused by the quota", T, || {
        replica_failure(&client, &ns, "app=more-cpu")
    })
    .await;
    assert!(
        refused.contains("exceeded quota: acme-capacity") && refused.contains("requests.cpu"),
        "{refused}"
    );
    for app in ["more-gpus", "more-cpu"] {
        assert!(pods(&client, &ns, &format!("app={app}")).await.is_empty());
    }

    // A pod that declares nothing is admitted at the defaults and counted.
    let (_, before) = quota(&t, "acme").await.unwrap();
    let cpu_before = used(&before)["requests.cpu"];
    t.apply_as_admin(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: undeclared, labels: {app: undeclared}}\nspec:\n  containers: [{name: c, image: registry.example.com/own:1}]\n"
    )
    .expect("a pod without resources is admitted");
    let mine = pods(&client, &ns, "app=undeclared").await;
    assert_eq!(container_resources(&mine[0]), defaults());
    let want = cpu_before.checked_add(req["cpu"]).unwrap();
    wait_for(
        "the undeclared pod counted at the default request",
        T,
        || async {
            let (_, q) = quota(&t, "acme").await?;
            (used(&q)["requests.cpu"] == want).then_some(())
        },
    )
    .await;

    let (hard, q) = quota(&t, "acme").await.unwrap();
    assert_eq!(
        hard, bought,
        "the quota is what was bought, and the attacks moved nothing"
    );
    assert_within(&q);
    t.f.finish().await;
}

/// Samples a module's pods and the quota while it rolls out: the quota's
/// requests.cpu must never be below what the pods not being deleted hold.
struct Sampler {
    stop: Arc<AtomicBool>,
    below: Arc<Mutex<Vec<String>>>,
    largest: Arc<Mutex<Quantity>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(client: &Client, ns: &str, module: &str, quota: &str) -> Self {
        let (stop, below, largest) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Quantity(0))),
        );
        let (client, ns, selector, quota) = (
            client.clone(),
            ns.to_string(),
            format!("{LABEL_MODULE}={module}"),
            quota.to_string(),
        );
        let (s, b, l) = (stop.clone(), below.clone(), largest.clone());
        let task = tokio::spawn(async move {
            let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
            while !s.load(Ordering::Relaxed) {
                let running = pods(&client, &ns, &selector).await;
                let Ok(q) = quotas.get(&quota).await else {
                    continue;
                };
                let hard = quantities(q.spec.as_ref().and_then(|s| s.hard.as_ref()))
                    .get("requests.cpu")
                    .copied()
                    .unwrap_or_default();
                let held: Quantity = running
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter_map(|p| container_resources(p).0.get("cpu").copied())
                    .fold(Quantity(0), |a, b| a.checked_add(b).unwrap());
                if hard < held {
                    b.lock().unwrap().push(format!(
                        "requests.cpu hard {hard} below {held} held by {} pods",
                        running.len()
                    ));
                }
                {
                    let mut max = l.lock().unwrap();
                    *max = (*max).max(hard);
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Self {
            stop,
            below,
            largest,
            task,
        }
    }

    async fn finish(self) -> (Vec<String>, Quantity) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let below = self.below.lock().unwrap().clone();
        let largest = *self.largest.lock().unwrap();
        (below, largest)
    }
}

/// A tier change to smaller pods, with every replica in use (floor =
/// ceiling) and rolling updates that never take a serving pod away: the new
/// pods are admitted while the old ones still hold their share, the rollout
/// completes, and only then does the quota come down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_change_to_smaller_pods_completes_and_the_quota_never_drops_below_running_pods() {
    let t = Tenant::new("tb-shrink").await;
    let ns = t.ns().to_string();
    let (module, sold) = (unique("shrink"), unique("plan"));
    profile(
        &t,
        &module,
        "  sessionsPerReplica: 10\n  minReplicas: 3\n  resources: {requests: {cpu: 400m, memory: 64Mi}, limits: {cpu: 400m, memory: 64Mi}}\n  tiers: {small: {resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi}}}}",
    )
    .await;
    plan(&t, &sold, &[&module]).await;
    let spec = |tier: &str| {
        format!(
            "  tenantId: acme\n  plan: {sold}\n  modules:\n    - {{name: {module}, concurrency: 30{tier}}}\n"
        )
    };
    // 3 replicas (floor = ceiling) + 1 surge pod of 400m.
    t.f.apply_sub("acme", &spec("")).await;
    t.f.wait_available("acme").await;
    assert_eq!(
        t.f.quota_hard("acme", "requests.cpu").await.as_deref(),
        Some("1600m")
    );
    let child = format!("acme-{module}");

    let sampler = Sampler::start(&t.f.client, &ns, &module, "acme-capacity");
    t.f.apply_sub("acme", &spec(", tier: small")).await;
    wait_for("the rollout to 100m pods completes", T, || async {
        let d: Deployment = t.f.get(&child).await.ok_or("no Deployment")?;
        let st = d.status.clone().unwrap_or_default();
        let all = pods(&t.f.client, &ns, &format!("{LABEL_MODULE}={module}")).await;
        let small = all
            .iter()
            .filter(|p| container_resources(p).0.get("cpu") == Some(&q("100m")))
            .count();
        let done = st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(3)
            && st.replicas == Some(3)
            && st.available_replicas == Some(3)
            && all.len() == 3
            && small == 3;
        let refused = replica_failure(&t.f.client, &ns, &format!("{LABEL_MODULE}={module}"))
            .await
            .unwrap_or_default();
        done.then_some(()).ok_or(format!(
            "status {st:?}, {} pods, {small} at 100m; refused: {refused}",
            all.len()
        ))
    })
    .await;
    // Then the quota comes down to the new size: (3 + 1) × 100m.
    wait_for("the quota at the new size, no longer held", T, || async {
        let (hard, q) = quota(&t, "acme").await.ok_or("no quota")?;
        let held = q
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_HELD_UNTIL));
        (hard["requests.cpu"] == self::q("400m") && !held)
            .then_some(())
            .ok_or(format!("hard {hard:?}, held {held}"))
    })
    .await;
    let (below, largest) = sampler.finish().await;
    assert!(below.is_empty(), "{below:?}");
    assert_eq!(largest, q("1600m"), "the quota held the old size meanwhile");
    let s = t.f.wait_available("acme").await;
    assert!(is(&s, "Ready", "True", "Available"));
    // No pod was refused for CPU, the resource that shrank. (A new pod may
    // be refused for a moment for `pods` while an old one is still
    // terminating: the Deployment does not count it against its surge, the
    // quota does. The ReplicaSet tries again once it is gone.)
    let failed = kubectl(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "reason=FailedCreate",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        failed.lines().all(|m| !m.contains("cpu=")),
        "pods were refused for CPU: {failed}"
    );
    let (_, q) = quota(&t, "acme").await.unwrap();
    assert_within(&q);
    t.f.finish().await;
}

/// The namespace admin's own pods take the room a module would scale into;
/// when the module's floor rises, the API server refuses its new pod, and
/// status says so in the API server's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_up_the_quota_refuses_shows_the_api_servers_message_in_status() {
    let t = Tenant::new("tb-refused").await;
    let (module, sold) = (unique("scale"), unique("plan"));
    let profile_spec = |min: i32| {
        format!(
            "  sessionsPerReplica: 10\n  minReplicas: {min}\n  resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{cpu: 100m, memory: 64Mi}}}}"
        )
    };
    profile(&t, &module, &profile_spec(1)).await;
    plan(&t, &sold, &[&module]).await;
    // Ceiling 2 replicas + 1 surge: 3 pods, 300m; 1 replica runs.
    t.f.apply_sub(
        "acme",
        &format!("  tenantId: acme\n  plan: {sold}\n  modules:\n    - {{name: {module}, concurrency: 20}}\n"),
    )
    .await;
    t.f.wait_available("acme").await;
    // The admin's own pods fill the rest of the quota.
    t.apply_as_admin(&own_deployment(
        "filler",
        2,
        "{requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi}}",
    ))
    .expect("the admin may create Deployments");
    wait_for("the quota full", T, || async {
        let (hard, q) = quota(&t, "acme").await?;
        (used(&q).get("pods") == hard.get("pods")).then_some(())
    })
    .await;

    // The provider raises the module's floor: its HPA asks for a second pod.
    profile(&t, &module, &profile_spec(2)).await;
    let s = t.f.wait_not_ready("acme", "PodsRefused").await;
    let ready = condition(&s, "Ready").unwrap();
    assert!(
        ready
            .message
            .starts_with(&format!("{module}: pods refused: pods \""))
            && ready
                .message
                .contains("is forbidden: exceeded quota: acme-capacity"),
        "{}",
        ready.message
    );
    let m = s
        .status
        .as_ref()
        .unwrap()
        .modules
        .iter()
        .find(|m| m.name == module)
        .unwrap();
    assert_eq!(m.message.as_deref(), Some(ready.message.as_str()));
    let (hard, q) = quota(&t, "acme").await.unwrap();
    assert_eq!(hard["pods"], self::q("3"), "the quota did not move");
    assert_within(&q);

    // Room again: the pod is admitted and status recovers.
    t.as_admin(&["delete", "deployment", "filler"]).unwrap();
    t.f.wait_available("acme").await;
    t.f.finish().await;
}
