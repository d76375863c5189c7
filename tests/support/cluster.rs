//! The local cluster through its API: a client, the CRDs, namespaces that
//! live for one test, server-side apply of YAML, and reading subscriptions.

use std::{
    fmt::Debug,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Namespace, ServiceAccount},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
    runtime::wait::{await_condition, conditions},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tenant_capacity_operator::{api, api::TenantSubscription, controller};

use super::{
    tools::{kubectl, run, try_kubectl},
    wait::{wait_blocking, wait_for},
};

pub const TEST_MANAGER: &str = "integration-test";

/// The namespace label by which the provider assigns a namespace to a
/// tenant (the operator's default `--tenant-namespace-label`).
pub const TENANT_LABEL: &str = "capacity.tenancy.dev/tenant";

/// Assign namespace `ns` to `tenant`, as the provider does: label it.
pub async fn assign_namespace(client: &Client, ns: &str, tenant: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        ns,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {TENANT_LABEL: tenant}}})),
    )
    .await
    .expect("label the namespace with its tenant");
}

/// The tenant namespace `ns` is assigned to, if any.
pub async fn namespace_tenant(client: &Client, ns: &str) -> Option<String> {
    let api: Api<Namespace> = Api::all(client.clone());
    let n = api.get(ns).await.expect("read the namespace");
    n.metadata.labels?.get(TENANT_LABEL).cloned()
}

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
    try_install_crds(client, TEST_MANAGER, Duration::from_secs(30))
        .await
        .expect("CRDs applied and established in time");
}

/// Apply the CRDs as `manager` and wait up to `timeout` for each to be established.
pub async fn try_install_crds(
    client: &Client,
    manager: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&crd),
        )
        .await?;
        tokio::time::timeout(
            timeout,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("CRD {name} not established after {timeout:?}"))??;
    }
    Ok(())
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

/// A namespace that lives for one test, with its default ServiceAccount
/// (pods are refused until it exists; a real tenant namespace has it long
/// before a subscription arrives).
pub struct TestNamespace {
    pub name: String,
    /// Made through the API (deleted by [`TestNamespace::delete`]), or
    /// through kubectl (deleted when dropped, also when the test fails).
    client: Option<Client>,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        Self::create(client, prefix, json!({})).await
    }

    /// A namespace the provider has assigned to `tenant` (labelled so).
    pub async fn for_tenant(client: &Client, prefix: &str, tenant: &str) -> Self {
        Self::create(client, prefix, json!({TENANT_LABEL: tenant})).await
    }

    async fn create(client: &Client, prefix: &str, labels: serde_json::Value) -> Self {
        let name = namespace_name(prefix);
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(
            "the namespace's default ServiceAccount",
            Duration::from_secs(60),
            || async { sas.get_opt("default").await.ok().flatten().map(|_| ()) },
        )
        .await;
        Self {
            name,
            client: Some(client.clone()),
        }
    }

    /// Through kubectl, for tests that drive the cluster with its
    /// command-line tools alone.
    pub fn with_kubectl(prefix: &str) -> Self {
        super::tools::require_cluster();
        let name = namespace_name(prefix);
        kubectl(&["create", "namespace", &name]);
        Self::await_service_account(name)
    }

    /// Through kubectl, assigned to `tenant` (labelled so).
    pub fn with_kubectl_for(prefix: &str, tenant: &str) -> Self {
        super::tools::require_cluster();
        let name = namespace_name(prefix);
        kubectl(&["create", "namespace", &name]);
        kubectl(&[
            "label",
            "namespace",
            &name,
            &format!("{TENANT_LABEL}={tenant}"),
        ]);
        Self::await_service_account(name)
    }

    fn await_service_account(name: String) -> Self {
        wait_blocking(
            "the namespace's default ServiceAccount",
            Duration::from_secs(120),
            || try_kubectl(&["get", "serviceaccount", "default", "-n", &name]).map(|_| ()),
        );
        Self { name, client: None }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn delete(self) {
        let client = self
            .client
            .clone()
            .expect("a namespace made through the API");
        // Subscriptions go first, by a direct delete: a namespace deletion that
        // an API-server restart (tests/faults.rs) interrupts can leave them
        // behind in a namespace that no longer exists, and every operator
        // watching all namespaces (the benchmark's smoke run) would keep
        // reconciling them.
        let subs: Api<TenantSubscription> = Api::namespaced(client.clone(), &self.name);
        let _ = subs
            .delete_collection(&DeleteParams::default(), &Default::default())
            .await;
        let api: Api<Namespace> = Api::all(client);
        let _ = api.delete(&self.name, &DeleteParams::default()).await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.client.is_some() {
            return;
        }
        let out = run(
            "kubectl",
            &[
                "--request-timeout=20s",
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
        if !out.status.success() {
            eprintln!(
                "warning: could not delete namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn namespace_name(prefix: &str) -> String {
    let name = unique(prefix);
    assert!(name.len() <= 63, "namespace name too long: {name}");
    name
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

/// A namespaced kind with a static type, as `Api::namespaced` takes it.
pub trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
{
}

pub async fn get_opt<K: Namespaced>(client: &Client, ns: &str, name: &str) -> Option<K> {
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get")
}

/// A ModuleProfile with a unique name.
pub fn profile_yaml(name: &str, extra: &str) -> String {
    profile_yaml_serving(name, 40, extra)
}

/// A ModuleProfile serving `sessions_per_replica` a pod; `extra` adds keys
/// under `spec` (2 spaces in).
pub fn profile_yaml_serving(name: &str, sessions_per_replica: u32, extra: &str) -> String {
    format!(
        r#"
apiVersion: capacity.tenancy.dev/v1alpha1
kind: ModuleProfile
metadata: {{name: {name}}}
spec:
  image: registry.example.com/rtc/{name}:1.0
  sessionsPerReplica: {sessions_per_replica}
  resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{cpu: 200m, memory: 128Mi}}}}
{extra}
"#
    )
}

pub fn condition<'a>(s: &'a TenantSubscription, type_: &str) -> Option<&'a Condition> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn is(s: &TenantSubscription, type_: &str, status: &str, reason: &str) -> bool {
    condition(s, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

/// `Ready=True` (whatever the reason) in a status of the current generation.
pub fn is_ready(s: &TenantSubscription) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.observed_generation == s.metadata.generation
            && st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Subscriptions in `subs` that are Ready at their current generation (0 when
/// the list fails, so callers simply wait on).
pub async fn ready_count(subs: &Api<TenantSubscription>) -> usize {
    let Ok(list) = subs.list(&Default::default()).await else {
        return 0;
    };
    list.items.iter().filter(|s| is_ready(s)).count()
}

/// Write a kubeconfig to `path` that authenticates with `token` against the
/// API server (and its CA) of the KUBECONFIG in use; returns its full path.
pub fn token_kubeconfig(path: &Path, token: &str) -> anyhow::Result<PathBuf> {
    let admin = kube::config::Kubeconfig::read()?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| anyhow::anyhow!("no cluster in KUBECONFIG"))?;
    let server = cluster.server.clone().unwrap_or_default();
    anyhow::ensure!(
        server.starts_with("https://")
            && (cluster.certificate_authority_data.is_some()
                || cluster.certificate_authority.is_some()),
        "admin kubeconfig lacks server/CA: {server:?}"
    );
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": {"server": server, "certificate-authority-data": cluster.certificate_authority_data,
                       "certificate-authority": cluster.certificate_authority}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "cluster", "user": "operator"}}],
        "current-context": "operator",
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&config)?)?;
    Ok(std::fs::canonicalize(path)?)
}
