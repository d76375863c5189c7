//! The usual set-up of a cluster test: a namespace of its own, two module
//! profiles, and the operator running in this process watching that
//! namespace.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ResourceQuota, Service},
};
use kube::{Api, Client, Resource};
use tenant_capacity_operator::{
    api::{ModuleState, TenantSubscription},
    controller,
    metrics::Metrics,
    server::Readiness,
};

use super::{
    cluster::{
        Namespaced, TestNamespace, apply_yaml, assign_namespace, client, get_opt, install_crds, is,
        namespace_tenant, profile_yaml, unique,
    },
    process::writes_in,
    tools::kubectl,
    wait::POLL,
};

/// Patience for one step on a shared 2-core machine running several tests at once.
pub const T: Duration = Duration::from_secs(120);

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
        // Settings not named here keep their defaults (whether or not any are left).
        #[allow(clippy::needless_update)]
        let settings = controller::Settings {
            namespace: Some(namespace.to_string()),
            resync,
            concurrency: 8,
            metering_interval: Duration::from_secs(1),
            initial_list,
            // Most tests run subscriptions without a plan; the rule that
            // plans are required has tests of its own.
            require_plan: false,
            ..Default::default()
        };
        Self::start_settings(client, settings)
    }

    /// Started with exactly these settings.
    pub fn start_settings(client: &Client, settings: controller::Settings) -> Self {
        let metrics = Metrics::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
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
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.handle).await;
        self.handle.abort();
    }

    /// Writes the operator made, by its own count.
    pub fn writes(&self) -> u64 {
        writes_in(&self.metrics.encode())
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
                // A minute's scale-down stabilisation and 15 s periods (the
                // default is 5 minutes and 60 s): scale-ins within a test.
                "  port: 8443\n  scaling: {cpuUtilization: 65, scaleDown: {stabilizationSeconds: 60, periodSeconds: 15}}\n  tiers: {sd: {sessionsPerReplica: 60}, uhd: {sessionsPerReplica: 15}}",
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

    /// Stop the fixture's operator and start it again with its settings
    /// changed by `edit` (e.g. `require_plan: true`, the binary's default).
    pub async fn restart_operator(&mut self, edit: impl FnOnce(&mut controller::Settings)) {
        self.operator.halt().await;
        let mut settings = controller::Settings {
            namespace: Some(self.ns.name.clone()),
            concurrency: 8,
            metering_interval: Duration::from_secs(1),
            require_plan: false,
            ..Default::default()
        };
        edit(&mut settings);
        self.operator = Operator::start_settings(&self.client, settings);
    }

    pub fn subs(&self) -> Api<TenantSubscription> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Apply subscription `name` with `spec` (YAML lines under `spec:`). The
    /// test plays the provider: a namespace not yet assigned to a tenant is
    /// first labelled with the spec's tenantId.
    pub async fn apply_sub(&self, name: &str, spec: &str) -> TenantSubscription {
        let yaml = format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        );
        let value: serde_json::Value = serde_saphyr::from_str(&yaml).expect("valid YAML");
        if let Some(tenant) = value["spec"]["tenantId"].as_str()
            && !tenant.is_empty()
            && namespace_tenant(&self.client, &self.ns.name)
                .await
                .is_none()
        {
            assign_namespace(&self.client, &self.ns.name, tenant).await;
        }
        apply_yaml(&self.client, Some(&self.ns.name), &yaml).await;
        self.subs().get(name).await.unwrap()
    }

    pub async fn get<K: Namespaced>(&self, name: &str) -> Option<K> {
        get_opt::<K>(&self.client, &self.ns.name, name).await
    }

    /// Whether a module's Deployment, HPA and Service (all named `child`) are gone.
    pub async fn module_gone(&self, child: &str) -> bool {
        self.get::<Deployment>(child).await.is_none()
            && self.get::<HorizontalPodAutoscaler>(child).await.is_none()
            && self.get::<Service>(child).await.is_none()
    }

    /// The resource versions of a module's Deployment and HPA (named
    /// `child`) and of subscription `sub`'s quota: equal again later, none of
    /// them was written meanwhile.
    pub async fn versions(&self, sub: &str, child: &str) -> (String, String, String) {
        (
            self.version::<Deployment>(child).await,
            self.version::<HorizontalPodAutoscaler>(child).await,
            self.version::<ResourceQuota>(&format!("{sub}-capacity"))
                .await,
        )
    }

    async fn version<K: Namespaced>(&self, name: &str) -> String {
        let o: K = self
            .get(name)
            .await
            .unwrap_or_else(|| panic!("{} {name} missing", K::kind(&())));
        o.meta()
            .resource_version
            .clone()
            .expect("a resource version")
    }

    /// Wait until the subscription is `Ready=True` (`Available`) at its current generation.
    pub async fn wait_available(&self, name: &str) -> TenantSubscription {
        self.wait_status(name, "Ready", |s| is(s, "Ready", "True", "Available"))
            .await
    }

    /// Wait until the subscription is `Ready=False` for `reason` at its current generation.
    pub async fn wait_not_ready(&self, name: &str, reason: &str) -> TenantSubscription {
        self.wait_status(name, reason, |s| is(s, "Ready", "False", reason))
            .await
    }

    /// Wait until the subscription is paused (`Ready=True`, reason `Paused`:
    /// what it asks of its children, to stay, holds) at its current generation.
    pub async fn wait_paused(&self, name: &str) -> TenantSubscription {
        self.wait_status(name, "Ready=True (Paused)", |s| {
            is(s, "Ready", "True", "Paused")
        })
        .await
    }

    /// Wait until the subscription reports `module` as Draining at its current generation.
    pub async fn wait_draining(&self, name: &str, module: &str) -> TenantSubscription {
        self.wait_status(name, &format!("{module} Draining"), |s| {
            s.status.as_ref().is_some_and(|st| {
                st.modules
                    .iter()
                    .any(|m| m.name == module && m.state == Some(ModuleState::Draining))
            })
        })
        .await
    }

    /// Wait (up to [`T`]) until the subscription's status describes its
    /// current generation and `check` holds.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&TenantSubscription) -> bool,
    ) -> TenantSubscription {
        self.wait_status_within(name, what, T, check).await
    }

    /// [`Fixture::wait_status`] with a patience of its own; on timeout it
    /// shows the last status seen and the namespace's events.
    pub async fn wait_status_within(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
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
            if start.elapsed() > timeout {
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
                    "timed out after {timeout:?} waiting for {what} on {}/{name}; last seen {seen}\nevents:\n{events}",
                    self.ns.name
                );
            }
            tokio::time::sleep(POLL).await;
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
