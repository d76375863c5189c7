//! The cluster around the measurements: CRDs and profiles, enough fake
//! nodes, the operator's own identity, the tenants' namespaces, and what a
//! run leaves behind.

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{Namespace, Node, Pod, ServiceAccount},
    rbac::v1::ClusterRoleBinding,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use std::time::Duration;
use tenant_capacity_operator::{api::ModuleProfile, render};

use crate::{
    Res, log,
    objects::{BENCH_LABEL, profile},
    support::{token_kubeconfig, try_install_crds},
    wait_until,
};

const OPERATOR_NS: &str = "tco-bench-system";
const OPERATOR_SA: &str = "operator";

/// The CRDs and the three module profiles.
pub async fn install(client: &Client) -> Res<()> {
    try_install_crds(client, "bench", Duration::from_secs(60)).await?;
    let profiles: Api<ModuleProfile> = Api::all(client.clone());
    for (name, sessions, port) in [
        ("bench-video", 40, Some(8443)),
        ("bench-voice", 100, Some(5060)),
        ("bench-im", 5000, None),
    ] {
        profiles
            .patch(
                name,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(profile(name, sessions, port)),
            )
            .await?;
    }
    Ok(())
}

/// Enough fake-node pod slots for every tenant's floor pods: adds kwok nodes
/// shaped like the cluster's own when short (removed again at the end).
pub async fn ensure_capacity(client: &Client, n: usize) -> Res<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await?;
    let slots: i64 = list
        .items
        .iter()
        .filter_map(|n| {
            n.status
                .as_ref()?
                .allocatable
                .as_ref()?
                .get("pods")?
                .0
                .parse::<i64>()
                .ok()
        })
        .sum();
    let used = pods
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len() as i64;
    // Floor pods, plus one surge pod each during rollouts, plus slack.
    let need = (3 * n as i64) * 5 / 4 + 50;
    if slots - used >= need {
        log(format!(
            "{} pod slots free on {} node(s); {need} needed",
            slots - used,
            list.items.len()
        ));
        return Ok(());
    }
    let template = list
        .items
        .iter()
        .find(|n| {
            n.annotations()
                .get("kwok.x-k8s.io/node")
                .map(String::as_str)
                == Some("fake")
        })
        .context("no kwok fake node to copy")?;
    let per_node = 1000;
    let extra = ((need - (slots - used)) as usize).div_ceil(per_node);
    log(format!(
        "adding {extra} fake node(s) of {per_node} pods (free {}, need {need})",
        slots - used
    ));
    for k in 0..extra {
        let name = format!("bench-node-{k}");
        let mut v = serde_json::to_value(template)?;
        // In the zones of the cluster's nodes, in turn: the modules' pods
        // spread over zones, so every zone needs room.
        let like = list.items[k % list.items.len()].labels();
        let topology = |key: &str| like.get(key).cloned().unwrap_or_default();
        v["metadata"] = json!({
            "name": name,
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", BENCH_LABEL: "true",
                       "topology.kubernetes.io/region": topology("topology.kubernetes.io/region"),
                       "topology.kubernetes.io/zone": topology("topology.kubernetes.io/zone")},
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0",
                            "metrics.k8s.io/resource-metrics-path": format!("/metrics/nodes/{name}/metrics/resource")},
        });
        v["spec"] = json!({"taints": template.spec.as_ref().and_then(|s| s.taints.clone())});
        let alloc = json!({"cpu": "64", "memory": "512Gi", "pods": per_node.to_string()});
        v["status"] = json!({"allocatable": alloc, "capacity": alloc, "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"}});
        let node: Node = serde_json::from_value(v)?;
        if nodes.get_opt(&name).await?.is_none() {
            nodes.create(&PostParams::default(), &node).await?;
        }
    }
    wait_until(
        "bench nodes Ready and untainted",
        Duration::from_secs(120),
        || async {
            let list = nodes
                .list(&ListParams::default().labels(&format!("{BENCH_LABEL}=true")))
                .await
                .ok()?;
            list.items
                .iter()
                .all(|n| {
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    let tainted =
                        n.spec
                            .as_ref()
                            .and_then(|s| s.taints.as_ref())
                            .is_some_and(|t| {
                                t.iter().any(|t| t.key.starts_with("node.kubernetes.io/"))
                            });
                    ready && !tainted
                })
                .then_some(())
        },
    )
    .await
}

/// A ServiceAccount for the operator, bound to the Helm chart's ClusterRole
/// rules, so the audit log tells its writes from everyone else's.
pub async fn operator_kubeconfig(client: &Client) -> Res<PathBuf> {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.patch(
        OPERATOR_NS,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS, "labels": {BENCH_LABEL: "true"}}})),
    )
    .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), OPERATOR_NS);
    sas.patch(
        OPERATOR_SA,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA}})),
    )
    .await?;
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    crbs.patch(
        "tco-bench-operator",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "tco-bench-operator", "labels": {BENCH_LABEL: "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NS}],
        })),
    )
    .await?;
    let token_request: Value = client
        .request(
            http::Request::post(format!("/api/v1/namespaces/{OPERATOR_NS}/serviceaccounts/{OPERATOR_SA}/token"))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86400}}))?)?,
        )
        .await?;
    let token = token_request["status"]["token"]
        .as_str()
        .context("no token in TokenRequest")?;
    token_kubeconfig("target/bench/operator.kubeconfig".as_ref(), token)
}

/// Who the operator is in the audit log.
pub fn operator_user() -> String {
    format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}")
}

/// `n` fresh namespaces `<prefix>-<i>`, namespace `i` assigned to tenant
/// `tenant-<i>` (the tenant of subscription `i`), each with its default ServiceAccount
/// (pods are refused until it exists, as in any real namespace).
pub async fn namespaces(client: &Client, prefix: &str, n: usize) -> Res<Vec<String>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    stream::iter(names.clone().into_iter().enumerate())
        .map(|(i, name)| {
            let api = api.clone();
            let prefix = prefix.to_string();
            async move {
                // Assigned to its tenant, as the provider does (see objects::subscription).
                let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": {BENCH_LABEL: "true", "tenant-capacity-operator/bench-phase": prefix,
                        render::LABEL_TENANT: format!("tenant-{i}")}}});
                api.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(ns)).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let sas: Api<ServiceAccount> = Api::all(client.clone());
    wait_until(
        &format!("{n} default ServiceAccounts in {prefix}-*"),
        Duration::from_secs(600),
        || async {
            let list = sas
                .list_metadata(&ListParams::default().fields("metadata.name=default"))
                .await
                .ok()?;
            let have = list
                .items
                .iter()
                .filter(|s| {
                    s.namespace()
                        .is_some_and(|ns| ns.starts_with(&format!("{prefix}-")))
                })
                .count();
            (have >= n).then_some(())
        },
    )
    .await?;
    Ok(names)
}

pub async fn delete_namespaces(client: &Client, prefix: &str) -> Res<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let selector = format!("tenant-capacity-operator/bench-phase={prefix}");
    let list = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?;
    let t0 = Instant::now();
    stream::iter(list.items)
        .map(|ns| {
            let api = api.clone();
            async move {
                api.delete(&ns.name_any(), &DeleteParams::background())
                    .await
                    .map(drop)
                    .or_else(ignore_not_found)
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    wait_until(
        &format!("namespaces {prefix}-* gone"),
        Duration::from_secs(1800),
        || async {
            api.list_metadata(&ListParams::default().labels(&selector))
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await?;
    log(format!(
        "namespaces {prefix}-* deleted in {:.1}s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn ignore_not_found(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        e => Err(e),
    }
}

/// Remove everything a previous (possibly interrupted) run left behind.
pub async fn cleanup(client: &Client) -> Res<()> {
    for prefix in ["bf", "bo", "bh"] {
        delete_namespaces(client, prefix).await?;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    for n in nodes
        .list_metadata(&ListParams::default().labels(&format!("{BENCH_LABEL}=true")))
        .await?
        .items
    {
        nodes
            .delete(&n.name_any(), &DeleteParams::default())
            .await
            .map(drop)
            .or_else(ignore_not_found)?;
    }
    Ok(())
}

/// The end state the operator's Ready stands for: every Deployment with an
/// available replica.
pub async fn wait_available(
    client: &Client,
    selector: &str,
    want: usize,
    timeout: Duration,
) -> Res<()> {
    let deployments: Api<Deployment> = Api::all(client.clone());
    wait_until(
        &format!("{want} Deployments available"),
        timeout,
        || async {
            let list = deployments
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            let ok = list
                .items
                .iter()
                .filter(|d| {
                    d.status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0)
                        >= 1
                })
                .count();
            (ok >= want).then_some(())
        },
    )
    .await
}

/// Every HPA has metrics (ScalingActive): the metrics pipeline has caught up
/// with the new pods and the cluster itself is idle.
pub async fn wait_hpas_active(client: &Client, want: usize, timeout: Duration) -> Res<()> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
    let selector = format!("{}={}", render::LABEL_MANAGED_BY, render::MANAGER);
    wait_until(&format!("{want} HPAs ScalingActive"), timeout, || async {
        let list = hpas
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        let active = list
            .items
            .iter()
            .filter(|h| {
                h.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "ScalingActive" && c.status == "True")
                    })
                    && h.status.as_ref().is_some_and(|s| s.desired_replicas >= 1)
            })
            .count();
        (active >= want).then_some(())
    })
    .await
}
