//! The controller: watches subscriptions, their children and the module
//! catalogue, and runs each subscription through the pipeline
//! `facts -> decide -> execute -> status` (see docs/architecture.md).
//!
//! - [`watch`]: caches and the streams that trigger reconciles.
//! - [`facts`]: what the caches hold of one subscription.
//! - [`decide`]: the pure decision of one reconcile.
//! - [`drain`]: the record a draining module is drained from.
//! - [`execute`]: the writes of a decision.
//! - [`status`]: status from an outcome, and when to write it.
//! - [`events`]: Events about subscriptions.
//! - [`reconcile`]: one reconcile, the glue of the above.
//! - [`client`]: the connection to the API server.

mod changes;
mod client;
pub mod decide;
pub mod drain;
pub mod error;
pub mod events;
mod execute;
pub mod facts;
pub mod placement;
mod reconcile;
pub mod status;
pub mod watch;

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{LimitRange, Node, Pod, ResourceQuota, Service},
};
use kube::{
    Api, Client,
    core::PartialObjectMeta,
    runtime::{
        Controller,
        controller::Config as ControllerConfig,
        reflector::{Lookup, Store},
    },
};
use tracing::{debug, info};

pub use client::{Limits, MAX_REQUESTS_IN_FLIGHT, client, client_for};
pub use error::Error;
pub use watch::{InitialList, LIST_PAGE_SIZE, WatchBackoff};

use crate::{
    api::{CapacityCalendar, ModuleProfile, SubscriptionPlan, TenantSubscription},
    metrics::Metrics,
    render::{LABEL_MANAGED_BY, MANAGER},
    server::Readiness,
};
use events::Events;
use facts::Caches;
use reconcile::{Context, error_policy, reconcile};
use watch::{cache, residents, scoped, slim_cache, users};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Re-check every subscription this often even when nothing changed.
    pub resync: Duration,
    /// Subscriptions reconciled at once.
    pub concurrency: u16,
    /// How often provisioned capacity is metered.
    pub metering_interval: Duration,
    /// How watches fetch the objects that exist when they start.
    pub initial_list: InitialList,
    /// A subscription must name a SubscriptionPlan; one without is not
    /// applied (`Ready=False`, `PlanRequired`).
    pub require_plan: bool,
    /// The namespace label by which the provider assigns a namespace to a
    /// tenant; subscriptions act only in namespaces so assigned to their tenant.
    pub tenant_label: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            resync: Duration::from_secs(300),
            concurrency: 16,
            metering_interval: Duration::from_secs(15),
            initial_list: InitialList::Auto,
            require_plan: true,
            tenant_label: crate::render::LABEL_TENANT.to_string(),
        }
    }
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // A whole list of thousands of Deployments, deserialized at once, was
    // most of the process's peak memory, and the allocator kept that peak
    // (1,000 tenants: 67 MiB resident after a restart with whole lists, 40 MiB
    // streaming them).
    let initial_list = settings.initial_list.resolve(&client).await;
    info!(?initial_list, "initial lists of watches");
    let config = watch::config(initial_list);
    // Children are cached slim (identity, a digest of what we applied and a
    // few status facts) so that status and the "already converged?" check
    // need no API reads and 1,000s of tenants fit in little memory. Every
    // object of these kinds is cached, not only ours: whether a child's name
    // is taken by someone else's object is then known without a read.
    let managed = config.clone();
    let catalogue = config;
    let (deployments, deployment_stream) = slim_cache(
        scoped::<Deployment>(&client, &settings.namespace),
        managed.clone(),
        readiness.clone(),
    );
    let (hpas, hpa_stream) = slim_cache(
        scoped::<HorizontalPodAutoscaler>(&client, &settings.namespace),
        managed.clone(),
        readiness.clone(),
    );
    let (services, service_stream) = slim_cache(
        scoped::<Service>(&client, &settings.namespace),
        managed.clone(),
        readiness.clone(),
    );
    let (quotas, quota_stream) = slim_cache(
        scoped::<ResourceQuota>(&client, &settings.namespace),
        managed.clone(),
        readiness.clone(),
    );
    let (limit_ranges, limit_range_stream) = slim_cache(
        scoped::<LimitRange>(&client, &settings.namespace),
        managed,
        readiness.clone(),
    );
    // The catalogue is cluster-scoped and small: cache it whole.
    let (profiles, profile_stream) = cache(
        Api::<ModuleProfile>::all(client.clone()),
        catalogue.clone(),
        readiness.clone(),
    );
    let (plans, plan_stream) = cache(
        Api::<SubscriptionPlan>::all(client.clone()),
        catalogue.clone(),
        readiness.clone(),
    );
    let (calendars, calendar_stream) = cache(
        Api::<CapacityCalendar>::all(client.clone()),
        catalogue.clone(),
        readiness.clone(),
    );

    // Namespaces, metadata only: their tenant label says which subscription
    // may act there (see `decide::assignment`).
    let (namespace_api, namespace_config) =
        watch::namespaces(&client, &settings.namespace, catalogue.clone());
    let (namespaces, namespace_stream) = cache(namespace_api, namespace_config, readiness.clone());

    // The modules' pods (by the managed-by label their template carries),
    // indexed by namespace, and the nodes' labels: where pods run and why
    // one cannot, for status.
    let pod_config = catalogue
        .clone()
        .labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let (pods, pod_triggers) = placement::Pods::index(watch::watch(
        scoped::<Pod>(&client, &settings.namespace),
        pod_config,
        readiness.clone(),
    ));
    let (nodes, node_stream) = cache(
        Api::<PartialObjectMeta<Node>>::all(client.clone()),
        catalogue.clone(),
        readiness.clone(),
    );
    tokio::spawn(node_stream.for_each(|_| futures::future::ready(())));

    // Subscriptions through the same stripped cache: the controller's own
    // watch would keep every object's managed fields in memory.
    let (subscription_store, subscription_stream) = cache(
        scoped::<TenantSubscription>(&client, &settings.namespace),
        catalogue,
        readiness.clone(),
    );
    // Spec changes are timed from here (see `changes`).
    let spec_changes = Arc::new(changes::SpecChanges::default());
    let seen = spec_changes.clone();
    let subscription_stream = subscription_stream.inspect(move |touched| {
        if let Ok(s) = touched {
            seen.saw(s);
        }
    });
    let subscription_stream =
        watch::with_neighbours(subscription_stream, subscription_store.clone());
    let controller = Controller::for_stream(subscription_stream, subscription_store.clone())
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .trigger_backoff(WatchBackoff::default());

    let events = Events::new(client.clone(), MANAGER, None);
    // A store wakes only one waiter of its first sync (its readiness is a
    // oneshot channel: the last task to poll it holds the only waker). So
    // exactly one task waits on each store and everyone else on this flag.
    // The subscription store is the controller's own: its runner already
    // waits on it before any reconcile starts, and a second waiter there
    // could take the wake-up from it, or lose it (seen at 1,000 tenants:
    // caches never reported synced and no subscription was reconciled).
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    {
        // Every cache but the controller's own, each named once: a listed
        // store not waited for would let the first reconciles read it empty
        // (a namespace store read empty says no namespace is assigned, and
        // a restarted operator would mark every subscription not ready).
        let waits = [
            first_list(plans.clone()),
            first_list(calendars.clone()),
            first_list(profiles.clone()),
            first_list(deployments.clone()),
            first_list(hpas.clone()),
            first_list(services.clone()),
            first_list(quotas.clone()),
            first_list(limit_ranges.clone()),
            first_list(namespaces.clone()),
            first_list(nodes.clone()),
            {
                let pods = pods.clone();
                async move { pods.wait_until_ready().await }.boxed()
            },
        ];
        let readiness = readiness.clone();
        let caches_synced = metrics.caches_synced.clone();
        tokio::spawn(async move {
            futures::future::join_all(waits).await;
            info!("caches synced");
            readiness.set_ready();
            caches_synced.set(1);
            let _ = synced_tx.send(true);
        });
    }
    let ctx = Arc::new(Context {
        client,
        caches: Caches {
            profiles,
            plans,
            calendars,
            deployments,
            hpas,
            services,
            quotas,
            limit_ranges,
            namespaces,
            pods,
            nodes,
            subscriptions: subscription_store.clone(),
            tenant_label: settings.tenant_label.clone(),
        },
        metrics,
        events,
        settings,
        synced,
        readiness,
        status_written: Default::default(),
        status_held: Default::default(),
        spec_changes,
        progressing: Default::default(),
        not_found: Default::default(),
        failed_writes: Default::default(),
        children_written: Default::default(),
        refusals: Default::default(),
    });

    let (namespaces, label) = (
        ctx.caches.namespaces.clone(),
        ctx.settings.tenant_label.clone(),
    );
    let metering_ctx = ctx.clone();
    let housekeeping_subscriptions = subscription_store.clone();
    let metering = tokio::spawn(async move {
        metering_ctx.caches_ready().await;
        let c = &metering_ctx;
        crate::metering::run(
            c.caches.deployments.clone(),
            housekeeping_subscriptions,
            |ns| c.caches.tenant_of(ns),
            c.metrics.clone(),
            c.settings.metering_interval,
            || {
                c.events.forget_old(Timestamp::now());
                give_back_free_memory();
            },
        )
        .await
    });

    controller
        .owns_stream(deployment_stream)
        .owns_stream(hpa_stream)
        .owns_stream(service_stream)
        .owns_stream(quota_stream)
        .owns_stream(limit_range_stream)
        // A pod no node can take (or no longer) shows in its module's status.
        .reconcile_on(pod_triggers)
        // A namespace assigned, reassigned or unassigned re-decides its subscriptions.
        .watches_stream(namespace_stream, residents(subscription_store.clone()))
        // A changed profile, plan or calendar re-plans every subscription
        // that uses it and may act.
        .watches_stream(
            profile_stream,
            users(
                subscription_store.clone(),
                namespaces.clone(),
                label.clone(),
                |s, name| s.spec.modules.iter().any(|m| m.name == name),
            ),
        )
        .watches_stream(
            plan_stream,
            users(
                subscription_store.clone(),
                namespaces.clone(),
                label.clone(),
                |s, name| s.spec.plan.as_deref() == Some(name),
            ),
        )
        .watches_stream(
            calendar_stream,
            users(subscription_store, namespaces, label, |s, name| {
                s.spec
                    .seasons
                    .iter()
                    .any(|se| se.calendars.iter().any(|c| c == name))
            }),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
    metering.abort();
}

/// Return the allocator's free pages to the system. glibc keeps memory a
/// busy period freed (a cold start over 1,000 tenants, a relist) inside its
/// per-thread arenas, counted in the process's RSS for as long as it runs;
/// `malloc_trim` releases the free pages of every arena. Measured side by
/// side at 1,000 tenants after a cold start: 3 to 4 MiB less RSS. Called on
/// the metering beat (every 15 s); a few milliseconds each. Other C
/// libraries (musl in the container image) return memory by themselves.
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only walks glibc's own heap, under its locks.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Resolves when `store` has its first complete list (or its writer is gone).
fn first_list<K>(store: Store<K>) -> BoxFuture<'static, ()>
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    async move {
        let _ = store.wait_until_ready().await;
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_required_unless_turned_off() {
        assert!(Settings::default().require_plan);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        fn rss_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
        // 48 MiB in small blocks, then all freed but the last one, which
        // keeps the heap from shrinking by itself.
        std::thread::spawn(|| {
            let mut blocks: Vec<Box<[u8]>> = (0..48 * 1024)
                .map(|i| vec![i as u8; 1024].into_boxed_slice())
                .collect();
            let pin = blocks.pop();
            drop(blocks);
            let before = rss_kib();
            give_back_free_memory();
            let after = rss_kib();
            assert!(
                before - after.min(before) > 32 * 1024,
                "RSS {before} KiB -> {after} KiB"
            );
            drop(pin);
        })
        .join()
        .unwrap();
    }
}
