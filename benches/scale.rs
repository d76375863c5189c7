//! Scale benchmark against the real local control plane: N tenants × 3
//! modules, side by side in one run. Prints a table and writes JSON.
//!
//! ```text
//! hack/bench.sh                      # N = 1,000
//! hack/bench.sh --tenants 10000      # needs a bigger cluster: see docs/benchmarks.md
//! ```
//!
//! What it measures, in this order (see docs/benchmarks.md for definitions):
//! 1. the floor: the same child objects written by a bare server-side-apply
//!    loop, at a sweep of concurrencies, until every Deployment is available;
//! 2. the operator's cold convergence (every subscription Ready at its
//!    generation) and its ratio to the best floor;
//! 3. quiet idle: the operator's writes (audit log) after convergence,
//!    across forced resyncs, and 409/429 responses at any time;
//! 4. memory: steady RSS and peak RSS (VmHWM) of the operator process;
//! 5. restart: time until a restarted operator has confirmed every
//!    subscription, and the writes it made meanwhile;
//! 6. change latency at a fixed rate of plan changes;
//! 7. the same tenants as one Helm release each.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{Namespace, Node, Pod, ResourceQuota, Service, ServiceAccount},
    rbac::v1::ClusterRoleBinding,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tenant_capacity_operator::{
    api::{ModuleProfile, TenantSubscription},
    capacity,
    render::{self, Child, Owner},
};

const BENCH_LABEL: &str = "tenant-capacity-operator/bench";
const OPERATOR_NS: &str = "tco-bench-system";
const OPERATOR_SA: &str = "operator";
const MODULES: [(&str, i64); 3] = [
    ("bench-video", 400),
    ("bench-voice", 500),
    ("bench-im", 10_000),
];

#[derive(Parser, Debug)]
#[command(about = "Scale benchmark of the tenant capacity operator")]
struct Args {
    /// Tenants (one TenantSubscription with 3 modules each, one namespace each).
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Concurrencies of the bare server-side-apply loop (the floor).
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 256])]
    sweep: Vec<usize>,
    /// Subscriptions the operator reconciles at once.
    #[arg(long, default_value_t = 64)]
    operator_concurrency: usize,
    /// The operator's forced resync period during the benchmark (seconds).
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// Length of the quiet-idle window after convergence (seconds).
    #[arg(long, default_value_t = 75)]
    idle_seconds: u64,
    /// Plan changes per second in the latency phase.
    #[arg(long, default_value_t = 20.0)]
    change_rate: f64,
    /// Length of the latency phase (seconds).
    #[arg(long, default_value_t = 30)]
    change_seconds: u64,
    /// `helm upgrade --install` processes run at once (as a GitOps pipeline's workers).
    #[arg(long, default_value_t = 8)]
    helm_parallel: usize,
    /// Tenants managed as Helm releases (default: all of them).
    #[arg(long)]
    helm_tenants: Option<usize>,
    /// Skip the Helm comparison.
    #[arg(long)]
    skip_helm: bool,
    /// Skip the floor (no ratios then); for a quick look at the operator alone.
    #[arg(long)]
    skip_floor: bool,
    /// Leave the operator's tenants in place at the end (namespaces bo-*).
    #[arg(long)]
    keep: bool,
    /// kube-apiserver audit log (default: the local cluster's).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Where to write the JSON results (default target/bench/scale-<N>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Operator binary to measure (default: the one built with this
    /// benchmark), e.g. another build of it for a side-by-side comparison.
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

type Res<T> = anyhow::Result<T>;

fn main() -> Res<()> {
    // `cargo bench` passes --bench. Anything else (`cargo test --all-targets`)
    // gets a smoke run: three tenants through every phase, so the harness is
    // known to work without spending minutes on figures.
    let args = if std::env::args().any(|a| a == "--bench") {
        Args::parse()
    } else {
        Args::parse_from([
            "scale",
            "--tenants",
            "3",
            "--sweep",
            "8",
            "--idle-seconds",
            "5",
            "--change-seconds",
            "1",
            "--helm-parallel",
            "3",
        ])
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// A time limit of `secs` per 1,000 tenants (at least `secs`): what is
/// generous at 1,000 would cut a 10,000-tenant run short.
fn per_thousand(n: usize, secs: u64) -> Duration {
    Duration::from_secs(secs * (n as u64).div_ceil(1000).max(1))
}

fn log(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {:>7.1}s] {}",
        started().elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

fn started() -> &'static Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now)
}

async fn run(args: Args) -> Res<()> {
    started();
    let client = Client::try_default()
        .await
        .context("no cluster: run hack/cluster.sh up (or hack/bench.sh)")?;
    let n = args.tenants;
    let audit = Audit::new(args.audit_log.clone().unwrap_or_else(default_audit_log))?;
    let machine = machine();
    log(format!("{n} tenants × 3 modules on {machine}"));

    cleanup(&client).await?;
    install(&client).await?;
    ensure_capacity(&client, n).await?;
    let catalogue = catalogue(&client).await?;
    let kubeconfig = operator_kubeconfig(&client).await?;
    let mut results = BTreeMap::<&str, Value>::new();
    results.insert(
        "machine",
        json!({"description": machine, "cores": num_cpus(), "memory_gib": mem_gib(), "date": jiff::Timestamp::now().to_string()}),
    );
    results.insert("tenants", json!(n));
    if let Some(bin) = &args.operator_bin {
        results.insert("operator_bin", json!(bin));
    }
    results.insert(
        "objects_per_tenant",
        json!(desired(&catalogue, "x", 0).len()),
    );

    // 1. The floor: a bare SSA loop over the same objects.
    let mut floor = Vec::new();
    for &c in args.sweep.iter().filter(|_| !args.skip_floor) {
        let ns = namespaces(&client, "bf", n).await?;
        let children: Vec<(String, Child)> = ns
            .iter()
            .enumerate()
            .flat_map(|(i, ns)| {
                desired(&catalogue, ns, i)
                    .into_iter()
                    .map(move |c| (ns.clone(), c))
            })
            .collect();
        let total = children.len();
        let t0 = Instant::now();
        stream::iter(children)
            .map(|(ns, child)| {
                let client = client.clone();
                async move { ssa(&client, &ns, &child, "bench-floor").await }
            })
            .buffer_unordered(c)
            .try_collect::<Vec<_>>()
            .await?;
        let written = t0.elapsed();
        let selector = format!("{}={}", render::LABEL_MANAGED_BY, render::MANAGER);
        wait_available(&client, &selector, 3 * n, Duration::from_secs(1800)).await?;
        let available = t0.elapsed();
        log(format!(
            "floor c={c}: {total} objects written in {:.1}s, all Deployments available after {:.1}s",
            written.as_secs_f64(),
            available.as_secs_f64()
        ));
        floor.push(json!({"concurrency": c, "objects": total, "written_s": secs(written), "available_s": secs(available)}));
        delete_namespaces(&client, "bf").await?;
    }
    let best = |key: &str| {
        floor
            .iter()
            .filter_map(|f| f[key].as_f64())
            .fold(f64::INFINITY, f64::min)
    };
    let (floor_written, floor_available) = (best("written_s"), best("available_s"));
    results.insert("floor", json!({"sweep": floor, "best_written_s": floor_written, "best_available_s": floor_available}));

    // 2. Cold convergence of the operator.
    let ns = namespaces(&client, "bo", n).await?;
    stream::iter(ns.iter().enumerate())
        .map(|(i, ns)| {
            let client = client.clone();
            async move { apply_subscription(&client, ns, i, MODULES[0].1).await }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    let tracker = Tracker::start(&client).await;
    let audit_start = audit.mark()?;
    let t0 = Instant::now();
    let mut op = Operator::start(&kubeconfig, &args, "cold")?;
    tracker.wait_ready(n, per_thousand(n, 1800)).await?;
    let cold = t0.elapsed();
    let cold_hwm = op.memory().1;
    log(format!(
        "operator cold convergence: {:.1}s ({:.2}× the floor)",
        cold.as_secs_f64(),
        secs(cold) / floor_available
    ));
    let cold_writes = audit.writes_since(&audit_start, &operator_user())?;
    results.insert(
        "cold_convergence",
        json!({
            "seconds": secs(cold),
            "ratio_to_floor_available": secs(cold) / floor_available,
            "ratio_to_floor_written": secs(cold) / floor_written,
            "operator_writes": cold_writes.total(),
            "operator_writes_by_verb_resource_code": cold_writes.by_key(),
        }),
    );

    // 3 + 4. Quiet idle across forced resyncs; steady memory. The window
    // opens once the metrics pipeline has caught up (every HPA active): the
    // status writes before that follow the HPAs' first real numbers.
    let settle_start = audit.mark()?;
    let t_settle = Instant::now();
    wait_hpas_active(&client, 3 * n, per_thousand(n, 900)).await?;
    // Then until the operator has caught up with what the HPAs reported: a
    // stretch with no operator write longer than its 2 s status batching.
    let t_quiet = Instant::now();
    loop {
        let mark = audit.mark()?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        if audit.writes_since(&mark, &operator_user())?.total() == 0
            || t_quiet.elapsed() > Duration::from_secs(300)
        {
            break;
        }
    }
    let settle = audit.writes_since(&settle_start, &operator_user())?;
    log(format!(
        "every HPA active {:.1}s after convergence; {} operator writes meanwhile",
        t_settle.elapsed().as_secs_f64(),
        settle.total()
    ));
    results.insert(
        "settling",
        json!({"seconds": secs(t_settle.elapsed()), "operator_writes": settle.total(), "operator_writes_by_verb_resource_code": settle.by_key()}),
    );
    let idle_start = audit.mark()?;
    let resyncs_before = op.metric("tenant_capacity_reconciliations_total").await?;
    let mut rss_samples = Vec::new();
    let t_idle = Instant::now();
    while t_idle.elapsed() < Duration::from_secs(args.idle_seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_samples.push(op.memory().0);
    }
    let reconciles_idle =
        op.metric("tenant_capacity_reconciliations_total").await? - resyncs_before;
    let idle = audit.writes_since(&idle_start, &operator_user())?;
    let (steady_rss, _) = op.memory();
    log(format!(
        "quiet idle {}s: {} reconciles, {} writes by the operator; steady RSS {:.1} MiB",
        args.idle_seconds,
        reconciles_idle,
        idle.total(),
        mib(steady_rss)
    ));
    results.insert(
        "quiet_idle",
        json!({
            "seconds": args.idle_seconds,
            "resync_seconds": args.resync_seconds,
            "reconciles": reconciles_idle,
            "forced_resync_rounds": reconciles_idle as f64 / n as f64,
            "operator_writes": idle.total(),
            "operator_writes_by_verb_resource_code": idle.by_key(),
        }),
    );

    // 5. Restart: a new process confirms every subscription, writing nothing.
    op.stop().await?;
    let restart_start = audit.mark()?;
    let t0 = Instant::now();
    let mut op = Operator::start(&kubeconfig, &args, "restart")?;
    let confirmed = loop {
        let subs = op.confirmed_subscriptions().await.unwrap_or(0);
        if subs >= n {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("restarted operator confirmed only {subs} of {n} subscriptions in 600s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let restart_hwm = op.memory().1;
    let restart_writes = audit.writes_since(&restart_start, &operator_user())?;
    log(format!(
        "restart: all {n} confirmed after {:.2}s, {} writes, peak RSS {:.1} MiB",
        confirmed.as_secs_f64(),
        restart_writes.total(),
        mib(restart_hwm)
    ));
    results.insert(
        "restart",
        json!({"seconds": secs(confirmed), "operator_writes": restart_writes.total(), "operator_writes_by_verb_resource_code": restart_writes.by_key()}),
    );
    results.insert(
        "memory",
        json!({
            "steady_rss_mib": mib(steady_rss),
            "idle_rss_max_mib": mib(rss_samples.iter().copied().max().unwrap_or(0)),
            "peak_rss_cold_start_mib": mib(cold_hwm),
            "peak_rss_restart_relist_mib": mib(restart_hwm),
            "peak_over_steady": restart_hwm as f64 / steady_rss as f64,
        }),
    );

    // 6. Change latency at a fixed rate.
    let latency = change_latency(&client, &tracker, &ns, &catalogue, &args).await?;
    results.insert("change_latency", latency.clone());
    let after = audit.writes_since(&audit_start, &operator_user())?;
    let (steady_rss_after, _) = op.memory();
    results.insert(
        "conflicts_and_throttling",
        json!({"operator_409": after.code(409), "operator_429": after.code(429), "all_operator_writes": after.total()}),
    );
    results.get_mut("memory").unwrap()["rss_after_changes_mib"] = json!(mib(steady_rss_after));
    op.stop().await?;
    drop(tracker);
    if args.keep {
        log("--keep: leaving namespaces bo-* and their subscriptions");
    } else {
        delete_namespaces(&client, "bo").await?;
    }

    // 7. One Helm release per tenant.
    if !args.skip_helm {
        let h = args.helm_tenants.unwrap_or(n).min(n);
        let helm = helm_comparison(&client, &catalogue, h, &args).await?;
        let op_change_p50 = latency["p50_ms"].as_f64().unwrap_or(f64::NAN);
        let mut helm = helm;
        helm["converge_ratio_to_operator"] =
            json!(helm["converge_s"].as_f64().unwrap() / secs(cold) * (n as f64 / h as f64));
        helm["change_ratio_to_operator_p50"] =
            json!(helm["change_ms"].as_f64().unwrap() / op_change_p50);
        results.insert("helm_per_tenant", helm);
        delete_namespaces(&client, "bh").await?;
    }

    if !args.keep {
        cleanup(&client).await?;
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/scale-{n}.json")));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(&out, &json)?;
    println!("{}", table(&results));
    log(format!("results written to {}", out.display()));
    Ok(())
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1048576.0 * 10.0).round() / 10.0
}

// ---------------------------------------------------------------- objects

fn profile(name: &str, sessions: i32, port: Option<i32>) -> Value {
    let mut spec = json!({
        "image": format!("registry.example.com/rtc/{name}:1.0"),
        "sessionsPerReplica": sessions,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}},
        "scaling": {"cpuUtilization": 70},
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
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

async fn apply_subscription(
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

async fn catalogue(client: &Client) -> Res<capacity::Catalogue> {
    let api: Api<ModuleProfile> = Api::all(client.clone());
    let mut c = capacity::Catalogue::default();
    for (m, _) in MODULES {
        c.profiles.insert(m.to_string(), api.get(m).await?.spec);
    }
    Ok(c)
}

/// The objects the operator would apply for tenant `i` (no owner: the floor
/// and Helm have no subscription to point at).
fn desired(catalogue: &capacity::Catalogue, ns: &str, i: usize) -> Vec<Child> {
    desired_with(catalogue, ns, i, MODULES[0].1)
}

fn desired_with(catalogue: &capacity::Catalogue, ns: &str, i: usize, video: i64) -> Vec<Child> {
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

async fn ssa(client: &Client, ns: &str, child: &Child, manager: &str) -> Res<()> {
    let pp = PatchParams::apply(manager).force();
    let body = Patch::Apply(child.to_value());
    let name = child.name();
    match child {
        Child::Deployment(_) => drop(
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(name, &pp, &body)
                .await?,
        ),
        Child::Hpa(_) => drop(
            Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
                .patch(name, &pp, &body)
                .await?,
        ),
        Child::Service(_) => drop(
            Api::<Service>::namespaced(client.clone(), ns)
                .patch(name, &pp, &body)
                .await?,
        ),
        Child::Quota(_) => drop(
            Api::<ResourceQuota>::namespaced(client.clone(), ns)
                .patch(name, &pp, &body)
                .await?,
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------- cluster set-up

async fn install(client: &Client) -> Res<()> {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/crds.yaml"))?;
    for doc in tenant_capacity_operator::preview::documents(&text)? {
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        crds.patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&doc),
        )
        .await?;
    }
    for name in [
        "tenantsubscriptions",
        "moduleprofiles",
        "subscriptionplans",
        "capacitycalendars",
    ] {
        let full = format!("{name}.capacity.tenancy.dev");
        wait_until(
            &format!("CRD {full} established"),
            Duration::from_secs(60),
            || async {
                let c = crds.get(&full).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await?;
    }
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
async fn ensure_capacity(client: &Client, n: usize) -> Res<()> {
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
        v["metadata"] = json!({
            "name": name,
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", BENCH_LABEL: "true"},
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
async fn operator_kubeconfig(client: &Client) -> Res<PathBuf> {
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
    let kubeconfig = kube::config::Kubeconfig::read().context("read KUBECONFIG")?;
    let cluster = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("no cluster in KUBECONFIG")?;
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {"server": cluster.server, "certificate-authority-data": cluster.certificate_authority_data,
                       "certificate-authority": cluster.certificate_authority}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "operator"}}],
        "current-context": "bench",
    });
    let path = PathBuf::from("target/bench/operator.kubeconfig");
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(std::fs::canonicalize(path)?)
}

fn operator_user() -> String {
    format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}")
}

/// `n` fresh namespaces `<prefix>-<i>`, each with its default ServiceAccount
/// (pods are refused until it exists, as in any real namespace).
async fn namespaces(client: &Client, prefix: &str, n: usize) -> Res<Vec<String>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    stream::iter(names.clone())
        .map(|name| {
            let api = api.clone();
            let prefix = prefix.to_string();
            async move {
                let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": {BENCH_LABEL: "true", "tenant-capacity-operator/bench-phase": prefix}}});
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

async fn delete_namespaces(client: &Client, prefix: &str) -> Res<()> {
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
async fn cleanup(client: &Client) -> Res<()> {
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
async fn wait_available(
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
async fn wait_hpas_active(client: &Client, want: usize, timeout: Duration) -> Res<()> {
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

async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if t0.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------- watching subscriptions and HPAs

/// Watches the bench's subscriptions and HPAs and records when each reached
/// a state, as seen by a watching client.
struct Tracker {
    state: Arc<Mutex<TrackerState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct TrackerState {
    /// namespace → (generation, Ready at that generation, when first seen so)
    subs: HashMap<String, (i64, bool, Instant)>,
    /// namespace → (video HPA maxReplicas, when first seen)
    hpas: HashMap<String, (i32, Instant)>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Tracker {
    async fn start(client: &Client) -> Self {
        let state = Arc::new(Mutex::new(TrackerState::default()));
        let subs: Api<TenantSubscription> = Api::all(client.clone());
        let s = state.clone();
        let t1 = tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(&format!("{BENCH_LABEL}=true"));
            let mut w = std::pin::pin!(watcher(subs, cfg).default_backoff().applied_objects());
            while let Some(Ok(sub)) = w.next().await {
                let generation = sub.metadata.generation.unwrap_or(0);
                let ready = sub.status.as_ref().is_some_and(|st| {
                    st.observed_generation == Some(generation)
                        && st
                            .conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                let key = sub.namespace().unwrap_or_default();
                let mut st = s.lock().unwrap();
                let entry = st
                    .subs
                    .entry(key)
                    .or_insert((generation, ready, Instant::now()));
                if entry.0 != generation || entry.1 != ready {
                    *entry = (generation, ready, Instant::now());
                }
            }
        });
        let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
        let s = state.clone();
        let t2 = tokio::spawn(async move {
            let cfg =
                watcher::Config::default().labels(&format!("{}=bench-video", render::LABEL_MODULE));
            let mut w = std::pin::pin!(watcher(hpas, cfg).default_backoff().applied_objects());
            while let Some(Ok(h)) = w.next().await {
                let key = h.namespace().unwrap_or_default();
                let max = h.spec.max_replicas;
                let mut st = s.lock().unwrap();
                let entry = st.hpas.entry(key).or_insert((max, Instant::now()));
                if entry.0 != max {
                    *entry = (max, Instant::now());
                }
            }
        });
        Self {
            state,
            tasks: vec![t1, t2],
        }
    }

    async fn wait_ready(&self, n: usize, timeout: Duration) -> Res<()> {
        let t0 = Instant::now();
        let mut last_log = Instant::now();
        loop {
            let ready = self
                .state
                .lock()
                .unwrap()
                .subs
                .values()
                .filter(|(_, r, _)| *r)
                .count();
            if ready >= n {
                return Ok(());
            }
            if last_log.elapsed() > Duration::from_secs(15) {
                log(format!("{ready}/{n} subscriptions Ready"));
                last_log = Instant::now();
            }
            if t0.elapsed() > timeout {
                bail!("only {ready} of {n} subscriptions Ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn change_latency(
    client: &Client,
    tracker: &Tracker,
    namespaces: &[String],
    catalogue: &capacity::Catalogue,
    args: &Args,
) -> Res<Value> {
    let count = ((args.change_rate * args.change_seconds as f64) as usize).min(namespaces.len());
    let interval = Duration::from_secs_f64(1.0 / args.change_rate);
    log(format!(
        "change latency: {count} plan changes at {}/s",
        args.change_rate
    ));
    // Each change raises one tenant's video concurrency: a new HPA ceiling and quota.
    let new_video = MODULES[0].1 + 80;
    let expect_max = desired_with(catalogue, "x", 0, new_video)
        .iter()
        .find_map(|c| match c {
            Child::Hpa(h) if h.metadata.name.as_deref() == Some("capacity-bench-video") => {
                Some(h.spec.max_replicas)
            }
            _ => None,
        })
        .context("bench-video HPA")?;
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = Vec::new();
    for (i, ns) in namespaces.iter().take(count).enumerate() {
        tick.tick().await;
        let client = client.clone();
        let ns = ns.clone();
        pending.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let s = apply_subscription(&client, &ns, i, new_video).await?;
            Ok::<_, anyhow::Error>((ns, s.metadata.generation.unwrap_or(0), t0))
        }));
    }
    for p in pending {
        sent.push(p.await??);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut latencies = Vec::new();
    loop {
        latencies.clear();
        {
            let st = tracker.state.lock().unwrap();
            for (ns, generation, t0) in &sent {
                let sub = st
                    .subs
                    .get(ns)
                    .filter(|(g, ready, _)| g == generation && *ready)
                    .map(|(_, _, t)| *t);
                let hpa = st
                    .hpas
                    .get(ns)
                    .filter(|(m, _)| *m == expect_max)
                    .map(|(_, t)| *t);
                if let (Some(a), Some(b)) = (sub, hpa) {
                    latencies.push(a.max(b).saturating_duration_since(*t0).as_secs_f64() * 1000.0);
                }
            }
        }
        if latencies.len() == sent.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let r = json!({
        "changes": sent.len(),
        "completed": latencies.len(),
        "rate_per_s": args.change_rate,
        "p50_ms": (q(0.50) * 10.0).round() / 10.0,
        "p90_ms": (q(0.90) * 10.0).round() / 10.0,
        "p99_ms": (q(0.99) * 10.0).round() / 10.0,
        "max_ms": (q(1.0) * 10.0).round() / 10.0,
    });
    log(format!("change latency: {r}"));
    Ok(r)
}

// ---------------------------------------------------------------- the operator process

struct Operator {
    child: tokio::process::Child,
    metrics: u16,
}

impl Operator {
    fn start(kubeconfig: &Path, args: &Args, tag: &str) -> Res<Self> {
        let metrics = free_port()?;
        let health = free_port()?;
        let log_path = PathBuf::from(format!("target/bench/operator-{tag}.log"));
        let log_file = std::fs::File::create(&log_path)?;
        let bin = args
            .operator_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tenant-capacity-operator")));
        let child = tokio::process::Command::new(bin)
            .args([
                "run",
                "--metrics-bind-address",
                &format!("127.0.0.1:{metrics}"),
                "--health-probe-bind-address",
                &format!("127.0.0.1:{health}"),
                "--resync-seconds",
                &args.resync_seconds.to_string(),
                "--concurrency",
                &args.operator_concurrency.to_string(),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("start the operator binary")?;
        Ok(Self { child, metrics })
    }

    /// (current RSS, peak RSS) in bytes, from /proc.
    fn memory(&self) -> (u64, u64) {
        let Some(pid) = self.child.id() else {
            return (0, 0);
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    async fn scrape(&self) -> Res<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics)).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok(body)
    }

    async fn metric(&self, name: &str) -> Res<u64> {
        let text = self.scrape().await?;
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .with_context(|| format!("metric {name} not exported"))
    }

    /// Subscriptions the process has reconciled to an outcome since it started
    /// (each publishes its modules' ceilings).
    async fn confirmed_subscriptions(&self) -> Res<usize> {
        let text = self.scrape().await?;
        let mut subs = std::collections::HashSet::new();
        for l in text
            .lines()
            .filter(|l| l.starts_with("tenant_capacity_module_max_replicas{"))
        {
            if let Some(ns) = l
                .split("namespace=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                && ns.starts_with("bo-")
            {
                subs.insert(ns.to_string());
            }
        }
        Ok(subs.len())
    }

    async fn stop(&mut self) -> Res<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("operator did not stop on SIGTERM")??;
        Ok(())
    }
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// ---------------------------------------------------------------- audit log

/// The API server's audit log: who wrote what, with which response.
struct Audit {
    path: PathBuf,
}

struct Mark {
    offset: u64,
}

#[derive(Default)]
struct Writes {
    counts: BTreeMap<String, u64>,
    codes: BTreeMap<u16, u64>,
}

impl Writes {
    fn total(&self) -> u64 {
        self.counts.values().sum()
    }
    fn code(&self, code: u16) -> u64 {
        self.codes.get(&code).copied().unwrap_or(0)
    }
    fn by_key(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }
}

impl Audit {
    fn new(path: PathBuf) -> Res<Self> {
        if !path.exists() {
            bail!(
                "no audit log at {} (hack/cluster.sh up writes one; pass --audit-log)",
                path.display()
            );
        }
        Ok(Self { path })
    }

    fn mark(&self) -> Res<Mark> {
        Ok(Mark {
            offset: std::fs::metadata(&self.path)?.len(),
        })
    }

    fn writes_since(&self, mark: &Mark, user: &str) -> Res<Writes> {
        let mut f = std::fs::File::open(&self.path)?;
        let len = f.metadata()?.len();
        // The log rotated: read from the start of the new file.
        f.seek(SeekFrom::Start(if len < mark.offset {
            0
        } else {
            mark.offset
        }))?;
        let mut w = Writes::default();
        for line in std::io::BufReader::new(f).lines() {
            let Ok(e) = serde_json::from_str::<Value>(&line?) else {
                continue;
            };
            if e["user"]["username"].as_str() != Some(user)
                || e["stage"].as_str() != Some("ResponseComplete")
            {
                continue;
            }
            let code = e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16;
            let resource = match e["objectRef"]["subresource"].as_str() {
                Some(sub) => format!(
                    "{}/{sub}",
                    e["objectRef"]["resource"].as_str().unwrap_or("?")
                ),
                None => e["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            };
            *w.counts
                .entry(format!(
                    "{} {resource} {code}",
                    e["verb"].as_str().unwrap_or("?")
                ))
                .or_default() += 1;
            *w.codes.entry(code).or_default() += 1;
        }
        Ok(w)
    }
}

fn default_audit_log() -> PathBuf {
    let state = std::env::var("TCO_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".local/state/tenant-capacity-operator/cluster")
        });
    state.join("logs/audit.log")
}

// ---------------------------------------------------------------- Helm

async fn helm_comparison(
    client: &Client,
    catalogue: &capacity::Catalogue,
    h: usize,
    args: &Args,
) -> Res<Value> {
    let chart = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/hack/bench/tenant-chart"
    ));
    let dir = PathBuf::from("target/bench/helm-values");
    std::fs::create_dir_all(&dir)?;
    let ns = namespaces(client, "bh", h).await?;
    let values = |i: usize, ns: &str, video: i64| -> Res<PathBuf> {
        let path = dir.join(format!("{ns}-{video}.json"));
        std::fs::write(
            &path,
            serde_json::to_string(&helm_values(catalogue, ns, i, video))?,
        )?;
        Ok(path)
    };
    let install = |i: usize, ns: String, video: i64| {
        let file = values(i, &ns, video);
        let chart = chart.clone();
        async move {
            let out = tokio::process::Command::new("helm")
                .args([
                    "upgrade",
                    "--install",
                    "tenant",
                    chart.to_str().unwrap(),
                    "-n",
                    &ns,
                    "-f",
                ])
                .arg(file?)
                .output()
                .await
                .context("run helm (is it on PATH? eval \"$(hack/cluster.sh env)\")")?;
            if !out.status.success() {
                bail!(
                    "helm upgrade --install in {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        }
    };
    log(format!(
        "helm: {h} releases, {} at once",
        args.helm_parallel
    ));
    let t0 = Instant::now();
    stream::iter(ns.iter().cloned().enumerate())
        .map(|(i, ns)| install(i, ns, MODULES[0].1))
        .buffer_unordered(args.helm_parallel)
        .try_collect::<Vec<_>>()
        .await?;
    let installed = t0.elapsed();
    // Helm-managed objects carry managed-by: Helm.
    wait_available(
        client,
        "app.kubernetes.io/managed-by=Helm,capacity.tenancy.dev/tenant",
        3 * h,
        Duration::from_secs(1800),
    )
    .await?;
    let converged = t0.elapsed();
    log(format!(
        "helm: {h} releases installed in {:.1}s, available after {:.1}s",
        installed.as_secs_f64(),
        converged.as_secs_f64()
    ));

    // One plan change: a tenant's video concurrency rises.
    let new_video = MODULES[0].1 + 80;
    let expect = helm_values(catalogue, &ns[0], 0, new_video)["modules"][0]["maxReplicas"]
        .as_i64()
        .unwrap() as i32;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns[0]);
    let t0 = Instant::now();
    install(0, ns[0].clone(), new_video).await?;
    wait_until(
        "Helm plan change on the HPA",
        Duration::from_secs(120),
        || async {
            (hpas
                .get("capacity-bench-video")
                .await
                .ok()?
                .spec
                .max_replicas
                == expect)
                .then_some(())
        },
    )
    .await?;
    let change = t0.elapsed();
    log(format!(
        "helm: one plan change applied in {:.0} ms",
        change.as_secs_f64() * 1000.0
    ));
    Ok(json!({
        "tenants": h,
        "parallel": args.helm_parallel,
        "installed_s": secs(installed),
        "converge_s": secs(converged),
        "change_ms": (change.as_secs_f64() * 1000.0).round(),
    }))
}

/// The numbers a pipeline would compute and hand to the chart, taken from the
/// same rendering as the operator's.
fn helm_values(catalogue: &capacity::Catalogue, ns: &str, i: usize, video: i64) -> Value {
    let children = desired_with(catalogue, ns, i, video);
    let mut modules = Vec::new();
    let mut quota = json!({});
    for (m, _) in MODULES {
        let name = render::child_name("capacity", m);
        let d = children.iter().find_map(|c| match c {
            Child::Deployment(d) if d.metadata.name.as_deref() == Some(&name) => Some(d),
            _ => None,
        });
        let h = children.iter().find_map(|c| match c {
            Child::Hpa(h) if h.metadata.name.as_deref() == Some(&name) => Some(h),
            _ => None,
        });
        let (Some(d), Some(h)) = (d, h) else { continue };
        let container = &d
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        let hs = &h.spec;
        let profile = &catalogue.profiles[m];
        modules.push(json!({
            "name": m,
            "image": container.image,
            "port": profile.port,
            "minReplicas": hs.min_replicas.unwrap_or(1),
            "maxReplicas": hs.max_replicas,
            "cpuUtilization": profile.scaling.cpu_utilization,
            "sessionsPerReplica": profile.sessions_per_replica,
            "resources": container.resources,
        }));
    }
    for c in &children {
        if let Child::Quota(q) = c {
            quota = json!(q.spec.as_ref().and_then(|s| s.hard.clone()));
        }
    }
    json!({
        "tenant": format!("tenant-{i}"),
        "subscription": "capacity",
        "modules": modules,
        "quota": quota,
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
    })
}

// ---------------------------------------------------------------- report

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{} core(s), {:.0} GiB, {cpu}", num_cpus(), mem_gib())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn mem_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / 1048576.0)
        .unwrap_or(0.0)
}

fn table(r: &BTreeMap<&str, Value>) -> String {
    let g = |path: &str| -> String {
        let mut v = &Value::Null;
        for (i, part) in path.split('.').enumerate() {
            v = if i == 0 {
                r.get(part).unwrap_or(&Value::Null)
            } else {
                &v[part]
            };
        }
        match v {
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(0.0);
                if n.is_f64() {
                    format!("{f:.2}")
                } else {
                    n.to_string()
                }
            }
            Value::Null => "-".into(),
            v => v.to_string(),
        }
    };
    let rows: Vec<(String, String, String)> = vec![
        ("machine".into(), g("machine.description"), String::new()),
        (
            "tenants × modules".into(),
            format!("{} × 3", g("tenants")),
            String::new(),
        ),
        (
            "floor: bare SSA, all objects written (best of sweep)".into(),
            format!("{} s", g("floor.best_written_s")),
            String::new(),
        ),
        (
            "floor: bare SSA, all Deployments available".into(),
            format!("{} s", g("floor.best_available_s")),
            String::new(),
        ),
        (
            "1. cold convergence (all Ready)".into(),
            format!("{} s", g("cold_convergence.seconds")),
            format!(
                "{}× floor (target ≤ 1.15)",
                g("cold_convergence.ratio_to_floor_available")
            ),
        ),
        (
            "   settling: HPAs get metrics, status catches up".into(),
            format!("{} s", g("settling.seconds")),
            format!(
                "{} status writes following the HPAs",
                g("settling.operator_writes")
            ),
        ),
        (
            "2. quiet idle: operator writes".into(),
            format!(
                "{} in {} s",
                g("quiet_idle.operator_writes"),
                g("quiet_idle.seconds")
            ),
            format!(
                "{} resync rounds (target 0 writes)",
                g("quiet_idle.forced_resync_rounds")
            ),
        ),
        (
            "2. 409 / 429 responses to the operator".into(),
            format!(
                "{} / {}",
                g("conflicts_and_throttling.operator_409"),
                g("conflicts_and_throttling.operator_429")
            ),
            "target 0 / 0".into(),
        ),
        (
            "3. steady RSS".into(),
            format!("{} MiB", g("memory.steady_rss_mib")),
            "target < 48 MiB at N = 1,000".into(),
        ),
        (
            "3. peak RSS during relist (restart)".into(),
            format!("{} MiB", g("memory.peak_rss_restart_relist_mib")),
            format!("{}× steady (target < 1.5)", g("memory.peak_over_steady")),
        ),
        (
            "4. change latency p50 / p99".into(),
            format!(
                "{} / {} ms",
                g("change_latency.p50_ms"),
                g("change_latency.p99_ms")
            ),
            format!(
                "{} changes at {}/s (target p99 < 250 ms)",
                g("change_latency.changes"),
                g("change_latency.rate_per_s")
            ),
        ),
        (
            "5. restart: all confirmed".into(),
            format!("{} s", g("restart.seconds")),
            format!(
                "{} writes (target < 10 s, 0 writes)",
                g("restart.operator_writes")
            ),
        ),
        (
            "6. Helm per tenant: converge".into(),
            format!(
                "{} s for {} tenants",
                g("helm_per_tenant.converge_s"),
                g("helm_per_tenant.tenants")
            ),
            format!(
                "{}× the operator (scaled to N)",
                g("helm_per_tenant.converge_ratio_to_operator")
            ),
        ),
        (
            "6. Helm per tenant: one plan change".into(),
            format!("{} ms", g("helm_per_tenant.change_ms")),
            format!(
                "{}× the operator's p50",
                g("helm_per_tenant.change_ratio_to_operator_p50")
            ),
        ),
    ];
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (a, b, c) in rows {
        out.push_str(&format!("{a:<w0$}  {b:<w1$}  {c}\n", w0 = w0, w1 = w1));
    }
    out
}
