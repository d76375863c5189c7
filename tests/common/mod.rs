//! Helpers for tests against the real local control plane (hack/cluster.sh).
#![allow(dead_code)]

use std::{
    fmt::Debug,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::api::{autoscaling::v2::HorizontalPodAutoscaler, core::v1::ResourceQuota};
use k8s_openapi::{
    NamespaceResourceScope, api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
    runtime::wait::{await_condition, conditions},
};
use serde::de::DeserializeOwned;
use tenant_capacity_operator::{
    api, api::TenantSubscription, controller, metrics::Metrics, server::Readiness,
};

pub const TEST_MANAGER: &str = "integration-test";

/// A client for the cluster named by KUBECONFIG, built as the operator binary
/// builds its own (`controller::client`, with its cap on requests in flight),
/// so in-process operators run with the same client. Fails loudly without
/// one: these tests must never pass by skipping.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: start the local cluster with hack/cluster.sh up and eval \"$(hack/cluster.sh env)\" (hack/test.sh does both)"
    );
    controller::client()
        .await
        .expect("connect to the cluster in KUBECONFIG")
}

/// Install (or update) the CRDs and wait until they are served.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .expect("watch CRD");
    }
}

/// A unique, short name for this test run.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000;
    format!("{prefix}-{}-{t}{n}", std::process::id() % 10_000)
}

/// A namespace that lives for one test.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = unique(prefix);
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        // Pods are refused until the namespace's default ServiceAccount exists;
        // a real tenant namespace has it long before a subscription arrives.
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_for(
            "the namespace's default ServiceAccount",
            Duration::from_secs(60),
            || async { sas.get_opt("default").await.ok().flatten().map(|_| ()) },
        )
        .await;
        Self {
            name,
            client: client.clone(),
        }
    }

    pub async fn delete(self) {
        // Subscriptions go first, by a direct delete: a namespace deletion that
        // an API-server restart (tests/faults.rs) interrupts can leave them
        // behind in a namespace that no longer exists, and every operator
        // watching all namespaces (the benchmark's smoke run) would keep
        // reconciling them.
        let subs: Api<TenantSubscription> = Api::namespaced(self.client.clone(), &self.name);
        let _ = subs
            .delete_collection(&DeleteParams::default(), &Default::default())
            .await;
        let api: Api<Namespace> = Api::all(self.client.clone());
        let _ = api.delete(&self.name, &DeleteParams::default()).await;
    }
}

/// The operator, running in this process, watching one namespace.
pub struct Operator {
    pub metrics: Metrics,
    handle: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Operator {
    pub fn start(client: &Client, namespace: &str) -> Self {
        Self::start_with(client, namespace, Duration::from_secs(300))
    }

    pub fn start_with(client: &Client, namespace: &str, resync: Duration) -> Self {
        Self::start_listing(client, namespace, resync, controller::InitialList::Auto)
    }

    /// Started with watches that fetch existing objects as `initial_list` says.
    pub fn start_listing(
        client: &Client,
        namespace: &str,
        resync: Duration,
        initial_list: controller::InitialList,
    ) -> Self {
        let metrics = Metrics::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let settings = controller::Settings {
            namespace: Some(namespace.to_string()),
            resync,
            concurrency: 8,
            metering_interval: Duration::from_secs(1),
            initial_list,
        };
        let fut = controller::run(
            client.clone(),
            settings,
            metrics.clone(),
            Readiness::default(),
            async move {
                let _ = rx.await;
            },
        );
        Self {
            metrics,
            handle: tokio::spawn(fut),
            stop: Some(tx),
        }
    }

    /// Stop gracefully and wait until it has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.handle).await;
        self.handle.abort();
    }

    /// Writes the operator made, by its own count.
    pub fn writes(&self) -> u64 {
        let text = self.metrics.encode();
        text.lines()
            .filter(|l| l.starts_with("tenant_capacity_api_writes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub fn reconciliations(&self) -> u64 {
        self.metrics.reconciliations.get()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Poll `check` until it returns `Some`, failing with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Server-side apply a YAML document (any kind) as the test's own field manager.
pub async fn apply_yaml(client: &Client, namespace: Option<&str>, yaml: &str) -> DynamicObject {
    let value: serde_json::Value = serde_saphyr::from_str(yaml).expect("valid YAML");
    try_apply(client, namespace, &value).await.expect("apply")
}

pub async fn try_apply(
    client: &Client,
    namespace: Option<&str>,
    value: &serde_json::Value,
) -> Result<DynamicObject, kube::Error> {
    let api_version = value["apiVersion"].as_str().expect("apiVersion");
    let kind = value["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match (caps.scope, namespace) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        _ => Api::all_with(client.clone(), &ar),
    };
    let name = value["metadata"]["name"].as_str().expect("metadata.name");
    api.patch(
        name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
}

pub fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub async fn get_opt<K>(client: &Client, ns: &str, name: &str) -> Option<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get")
}

/// Run kubectl (on PATH from `hack/cluster.sh env`) and return stdout.
pub fn kubectl(args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .output()
        .expect("run kubectl (is it on PATH?)");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A ModuleProfile with a unique name, tolerating the fake nodes' taint.
pub fn profile_yaml(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: capacity.tenancy.dev/v1alpha1
kind: ModuleProfile
metadata: {{name: {name}}}
spec:
  image: registry.example.com/rtc/{name}:1.0
  sessionsPerReplica: 40
  resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{cpu: 200m, memory: 128Mi}}}}
  tolerations: [{{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}]
{extra}
"#
    )
}

/// Patience for one step on a shared 2-core machine running several tests at once.
pub const T: Duration = Duration::from_secs(120);

pub struct Fixture {
    pub client: Client,
    pub ns: TestNamespace,
    pub video: String,
    pub im: String,
    pub operator: Operator,
}

impl Fixture {
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        install_crds(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        let video = unique("video");
        let im = unique("im");
        apply_yaml(
            &client,
            None,
            &profile_yaml(
                &video,
                "  port: 8443\n  scaling: {cpuUtilization: 65}\n  tiers: {sd: {sessionsPerReplica: 60}, uhd: {sessionsPerReplica: 15}}",
            ),
        )
        .await;
        apply_yaml(&client, None, &profile_yaml(&im, "  minReplicas: 2")).await;
        let operator = Operator::start(&client, &ns.name);
        Self {
            client,
            ns,
            video,
            im,
            operator,
        }
    }

    pub fn subs(&self) -> Api<TenantSubscription> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub async fn apply_sub(&self, name: &str, spec: &str) -> TenantSubscription {
        let yaml = format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        );
        apply_yaml(&self.client, Some(&self.ns.name), &yaml).await;
        self.subs().get(name).await.unwrap()
    }

    pub async fn get<K>(&self, name: &str) -> Option<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        get_opt::<K>(&self.client, &self.ns.name, name).await
    }

    /// Wait until the subscription is `Ready=True` (`Available`) at its current generation.
    pub async fn wait_available(&self, name: &str) -> TenantSubscription {
        self.wait_status(name, "Ready", |s| is(s, "Ready", "True", "Available"))
            .await
    }

    /// Wait until the subscription's status describes its current generation
    /// and `check` holds.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&TenantSubscription) -> bool,
    ) -> TenantSubscription {
        let start = Instant::now();
        loop {
            let last = self.subs().get(name).await;
            if let Ok(s) = &last
                && let Some(st) = s.status.as_ref()
                && st.observed_generation == s.metadata.generation
                && check(s)
            {
                return last.unwrap();
            }
            if start.elapsed() > T {
                let seen = match &last {
                    Ok(s) => format!(
                        "generation {:?}, status {}",
                        s.metadata.generation,
                        serde_json::to_string_pretty(&s.status).unwrap_or_default()
                    ),
                    Err(e) => format!("error {e}"),
                };
                let events = kubectl(&[
                    "get",
                    "events",
                    "-n",
                    &self.ns.name,
                    "--sort-by=.lastTimestamp",
                ]);
                panic!(
                    "timed out after {T:?} waiting for {what} on {}/{name}; last seen {seen}\nevents:\n{events}",
                    self.ns.name
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn hpa_numbers(&self, name: &str) -> Option<(i32, i32)> {
        let h: HorizontalPodAutoscaler = self.get(name).await?;
        Some((h.spec.min_replicas.unwrap_or(1), h.spec.max_replicas))
    }

    pub async fn quota_hard(&self, sub: &str, key: &str) -> Option<String> {
        let q: ResourceQuota = self.get(&format!("{sub}-capacity")).await?;
        q.spec?.hard?.get(key).map(|v| v.0.clone())
    }

    pub async fn finish(self) {
        self.operator.stop().await;
        self.ns.delete().await;
    }
}

pub fn condition<'a>(
    s: &'a TenantSubscription,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Subscriptions in `subs` that are Ready at their current generation (0 when
/// the list fails, so callers simply wait on).
pub async fn ready_count(subs: &Api<TenantSubscription>) -> usize {
    let Ok(list) = subs.list(&Default::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|s| {
            s.status.as_ref().is_some_and(|st| {
                st.observed_generation == s.metadata.generation
                    && st
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count()
}

pub fn is(s: &TenantSubscription, type_: &str, status: &str, reason: &str) -> bool {
    condition(s, type_).is_some_and(|c| c.status == status && c.reason == reason)
}
