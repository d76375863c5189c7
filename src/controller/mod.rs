//! The controller: watches subscriptions, their children and the module
//! catalogue, and runs each subscription through
//! `dereference -> plan -> render -> apply -> drain -> status`.

pub mod apply;
pub mod events;
pub mod slim;
pub mod status;

use std::{collections::BTreeSet, fmt::Debug, sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt, future::BoxFuture};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{PersistentVolumeClaim, ResourceQuota, Service},
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action, Config as ControllerConfig},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{
    api::{
        CapacityCalendar, DataRetention, ModuleProfile, ModuleState, ModuleStatus,
        SubscriptionPlan, TenantSubscription, TenantSubscriptionStatus,
    },
    capacity::{self, CapacityPlan, Footprint, window::format_instant},
    metrics::{Metrics, ModuleLabels, ModulePlan},
    render::{self, ANNOTATION_DRAINING_SINCE, MANAGER, Owner},
    server::Readiness,
};
use events::{EventType, Events};
use slim::{Slim, Slimmable};
use status::LiveModule;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("subscription has no namespace")]
    NoNamespace,
    #[error("{kind} {name} exists and is not owned by this subscription")]
    NotOwned { kind: String, name: String },
}

impl Error {
    /// The API server answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(s)) if s.code == 404)
    }

    pub fn metric_label(&self) -> String {
        match self {
            Self::Kube(kube::Error::Api(s)) => format!("api_{}", s.code),
            Self::Kube(_) => "kube".into(),
            Self::NoNamespace => "no_namespace".into(),
            Self::NotOwned { .. } => "not_owned".into(),
        }
    }
}

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
}

/// How a watch fetches the objects that exist when it (re)starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    /// `stream` when the API server is Kubernetes 1.34 or later, else `paged`.
    #[default]
    Auto,
    /// A watch that first sends every existing object (`sendInitialEvents`,
    /// Kubernetes' WatchList): objects arrive one at a time and are cached
    /// slim as they come, so no whole list is ever held in memory.
    Stream,
    /// A list in pages of `LIST_PAGE_SIZE` objects, then a watch: for API
    /// servers without WatchList (before 1.27, or 1.33 where it is off by default).
    Paged,
}

/// Objects per page of a `paged` initial list.
pub const LIST_PAGE_SIZE: u32 = 100;

impl InitialList {
    /// The strategy for this API server: `Auto` becomes `Stream` from
    /// Kubernetes 1.34 (WatchList on by default), `Paged` before it or when the
    /// version cannot be read.
    pub async fn resolve(self, client: &Client) -> Self {
        if self != Self::Auto {
            return self;
        }
        match client.apiserver_version().await {
            Ok(v) => Self::for_version(&v.major, &v.minor),
            Err(e) => {
                warn!(error = %e, "cannot read the API server's version; listing in pages");
                Self::Paged
            }
        }
    }

    /// `Stream` for Kubernetes 1.34 and later, `Paged` otherwise. Minor
    /// versions may carry a suffix (`"34+"` on some distributions).
    pub fn for_version(major: &str, minor: &str) -> Self {
        let number = |s: &str| {
            s.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse::<u32>()
                .ok()
        };
        match (number(major), number(minor)) {
            (Some(major), Some(minor)) if (major, minor) >= (1, 34) => Self::Stream,
            _ => Self::Paged,
        }
    }

    fn configure(self, config: watcher::Config) -> watcher::Config {
        match self {
            Self::Stream => config.streaming_lists(),
            // The default "any" list semantic (resourceVersion=0) is served whole
            // from the API server's cache whatever the page size; pages need the
            // most recent state.
            Self::Paged | Self::Auto => {
                let mut config = config.page_size(LIST_PAGE_SIZE);
                config.list_semantic = watcher::ListSemantic::MostRecent;
                config
            }
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            resync: Duration::from_secs(300),
            concurrency: 16,
            metering_interval: Duration::from_secs(15),
            initial_list: InitialList::Auto,
        }
    }
}

/// Exponential backoff for watches, capped low: after an API server outage
/// the operator is back within seconds. (kube's default grows to 30 s and
/// more, and the controller's merged trigger stream sleeps as a whole, so
/// several failing watches compound into minutes of deafness.)
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// Shared state of all reconciliations.
pub struct Context {
    pub client: Client,
    pub profiles: Store<ModuleProfile>,
    pub plans: Store<SubscriptionPlan>,
    pub calendars: Store<CapacityCalendar>,
    pub deployments: Store<Slim<Deployment>>,
    pub hpas: Store<Slim<HorizontalPodAutoscaler>>,
    pub services: Store<Slim<Service>>,
    pub quotas: Store<Slim<ResourceQuota>>,
    pub metrics: Metrics,
    pub events: Events,
    pub settings: Settings,
    /// Turns true once every cache has its first full list.
    synced: tokio::sync::watch::Receiver<bool>,
    /// When each subscription's status was last written (see `batch_period`).
    status_written: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Consecutive "not found" failures per subscription (see `retry_delay`).
    not_found: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Context {
    /// The profiles, plan and calendars a subscription names, from the caches.
    fn catalogue_for(&self, sub: &TenantSubscription) -> capacity::Catalogue {
        let mut c = capacity::Catalogue::default();
        for m in &sub.spec.modules {
            if let Some(p) = self.profiles.get(&ObjectRef::new(&m.name)) {
                c.profiles.insert(m.name.clone(), p.spec.clone());
            }
        }
        if let Some(name) = &sub.spec.plan
            && let Some(p) = self.plans.get(&ObjectRef::new(name))
        {
            c.plans.insert(name.clone(), p.spec.clone());
        }
        for name in sub.spec.seasons.iter().flat_map(|s| &s.calendars) {
            if let Some(cal) = self.calendars.get(&ObjectRef::new(name)) {
                c.calendars.insert(name.clone(), cal.spec.clone());
            }
        }
        c
    }

    /// For a child we do not own: make sure its name is not taken by an
    /// object someone else made, which we must never take over.
    fn check_free(&self, ns: &str, child: &render::Child, uid: &str) -> Result<(), Error> {
        fn taken<K: Resource<DynamicType = ()>>(
            store: &Store<Slim<K>>,
            ns: &str,
            name: &str,
            uid: &str,
        ) -> bool {
            store
                .get(&ObjectRef::new(name).within(ns))
                .is_some_and(|o| !apply::owned_by(&o.metadata, uid))
        }
        let name = child.name();
        let stranger = match child {
            render::Child::Deployment(_) => taken(&self.deployments, ns, name, uid),
            render::Child::Hpa(_) => taken(&self.hpas, ns, name, uid),
            render::Child::Service(_) => taken(&self.services, ns, name, uid),
            render::Child::Quota(_) => taken(&self.quotas, ns, name, uid),
        };
        if stranger {
            return Err(Error::NotOwned {
                kind: child.kind().to_string(),
                name: name.to_string(),
            });
        }
        Ok(())
    }

    async fn caches_ready(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|synced| *synced).await;
    }
}

fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// API requests in flight at once, across all reconciles. Unbounded, a cold
/// start of 1,000 tenants (64 reconciles, each writing a module's children at
/// once) opened about 300 connections to the API server, each with its TLS
/// and HTTP buffers (about 12 MiB, measured with a heap profiler), memory the
/// allocator kept after the burst; the API server answers no faster for more
/// (a bare apply loop was fastest at 64 in flight of 16, 64 and 256).
pub const MAX_REQUESTS_IN_FLIGHT: usize = 64;

/// A client for the cluster of the kubeconfig or the in-cluster service
/// account, with at most `MAX_REQUESTS_IN_FLIGHT` requests in flight (the rest
/// wait their turn).
pub async fn client() -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(
            MAX_REQUESTS_IN_FLIGHT,
        ))
        .build())
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Watches are re-established at least this often: a watch that silently
    // stops delivering (seen after API server or etcd restarts) heals by itself.
    const WATCH_TIMEOUT_SECONDS: u32 = 60;
    // A whole list of thousands of Deployments, deserialized at once, was
    // most of the process's peak memory, and the allocator kept that peak
    // (1,000 tenants: 67 MiB resident after a restart with whole lists, 40 MiB
    // streaming them).
    let initial_list = settings.initial_list.resolve(&client).await;
    info!(?initial_list, "initial lists of watches");
    let config = initial_list.configure(watcher::Config::default().timeout(WATCH_TIMEOUT_SECONDS));
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
    );
    let (hpas, hpa_stream) = slim_cache(
        scoped::<HorizontalPodAutoscaler>(&client, &settings.namespace),
        managed.clone(),
    );
    let (services, service_stream) = slim_cache(
        scoped::<Service>(&client, &settings.namespace),
        managed.clone(),
    );
    let (quotas, quota_stream) = slim_cache(
        scoped::<ResourceQuota>(&client, &settings.namespace),
        managed,
    );
    // The catalogue is cluster-scoped and small: cache it whole.
    let (profiles, profile_stream) =
        cache(Api::<ModuleProfile>::all(client.clone()), catalogue.clone());
    let (plans, plan_stream) = cache(
        Api::<SubscriptionPlan>::all(client.clone()),
        catalogue.clone(),
    );
    let (calendars, calendar_stream) = cache(
        Api::<CapacityCalendar>::all(client.clone()),
        catalogue.clone(),
    );

    // Subscriptions through the same stripped cache: the controller's own
    // watch would keep every object's managed fields in memory.
    let (subscription_store, subscription_stream) = cache(
        scoped::<TenantSubscription>(&client, &settings.namespace),
        catalogue,
    );
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
        let stores = (
            plans.clone(),
            calendars.clone(),
            profiles.clone(),
            deployments.clone(),
            hpas.clone(),
            services.clone(),
            quotas.clone(),
        );
        tokio::spawn(async move {
            let _ = tokio::join!(
                stores.0.wait_until_ready(),
                stores.1.wait_until_ready(),
                stores.2.wait_until_ready(),
                stores.3.wait_until_ready(),
                stores.4.wait_until_ready(),
                stores.5.wait_until_ready(),
                stores.6.wait_until_ready(),
            );
            info!("caches synced");
            readiness.set_ready();
            let _ = synced_tx.send(true);
        });
    }
    let ctx = Arc::new(Context {
        client,
        profiles: profiles.clone(),
        plans: plans.clone(),
        calendars: calendars.clone(),
        deployments: deployments.clone(),
        hpas: hpas.clone(),
        services: services.clone(),
        quotas: quotas.clone(),
        metrics,
        events,
        settings,
        synced,
        status_written: Default::default(),
        not_found: Default::default(),
    });

    let metering_ctx = ctx.clone();
    let housekeeping_subscriptions = subscription_store.clone();
    let metering = tokio::spawn(async move {
        metering_ctx.caches_ready().await;
        let c = &metering_ctx;
        crate::metering::run(
            c.deployments.clone(),
            housekeeping_subscriptions,
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
        // A changed profile, plan or calendar re-plans every subscription that uses it.
        .watches_stream(
            profile_stream,
            users(subscription_store.clone(), |s, name| {
                s.spec.modules.iter().any(|m| m.name == name)
            }),
        )
        .watches_stream(
            plan_stream,
            users(subscription_store.clone(), |s, name| {
                s.spec.plan.as_deref() == Some(name)
            }),
        )
        .watches_stream(
            calendar_stream,
            users(subscription_store, |s, name| {
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

/// How long a new quota's wait for the quota controller goes unreported.
const QUOTA_ANSWER_SECONDS: i64 = 10;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The watch of `api`, retried with backoff, its errors logged.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .inspect_err(
            |e| warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying with backoff"),
        )
}

/// A cache of `api` (managed fields and kubectl's last-applied copy stripped) and the stream of objects it
/// saw change, for the controller's triggers. Watch errors are logged and
/// retried here, and kept out of the controller's trigger stream, whose
/// backoff would pause every other watch too.
fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>>,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector::reflector(
        writer,
        watch(api, config).modify(|o| {
            o.managed_fields_mut().clear();
            // `kubectl apply` (client side) keeps a second copy of the
            // whole object here; nothing reads it.
            if let Some(a) = o.meta_mut().annotations.as_mut() {
                a.remove(LAST_APPLIED);
            }
        }),
    )
    .touched_objects()
    .filter_map(|r| futures::future::ready(r.ok().map(Ok)));
    (store, stream)
}

/// Like [`cache`], for children kept slim. A change that leaves the slim
/// form as it was (the HPA's metrics moving, a Deployment's rollout
/// timestamps) is dropped before the cache and the trigger stream, so it
/// costs no reconcile; deletions and relists always pass.
fn slim_cache<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<Slim<K>>,
    impl futures::Stream<Item = Result<Slim<K>, watcher::Error>>,
)
where
    K: Slimmable + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<Slim<K>>();
    let reader = store.clone();
    let stream = reflector::reflector(
        writer,
        watch(api, config)
            .map_ok(|event| match event {
                watcher::Event::Apply(o) => watcher::Event::Apply(slim::slim(o)),
                watcher::Event::Delete(o) => watcher::Event::Delete(slim::slim(o)),
                watcher::Event::InitApply(o) => watcher::Event::InitApply(slim::slim(o)),
                watcher::Event::Init => watcher::Event::Init,
                watcher::Event::InitDone => watcher::Event::InitDone,
            })
            .try_filter(move |event| {
                let unchanged = match event {
                    watcher::Event::Apply(o) => reader
                        .get(&ObjectRef::from_obj(o))
                        .is_some_and(|cached| cached.as_ref() == o),
                    _ => false,
                };
                futures::future::ready(!unchanged)
            }),
    )
    .touched_objects()
    .filter_map(|r| futures::future::ready(r.ok().map(Ok)));
    (store, stream)
}

/// Maps a catalogue object to the subscriptions that refer to it.
fn users<K: Resource>(
    subscriptions: Store<TenantSubscription>,
    uses: fn(&TenantSubscription, &str) -> bool,
) -> impl Fn(K) -> Vec<ObjectRef<TenantSubscription>> + Send + Sync + 'static {
    move |obj: K| {
        let name = obj.meta().name.clone().unwrap_or_default();
        subscriptions
            .state()
            .into_iter()
            .filter(|s| uses(s, &name))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect()
    }
}

fn error_policy(sub: Arc<TenantSubscription>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&crate::metrics::ErrorLabels {
            error: err.metric_label(),
        })
        .inc();
    let key = key(&sub);
    let not_found = {
        let mut counts = ctx.not_found.lock().unwrap();
        if err.is_not_found() {
            let n = counts.entry(key).or_default();
            *n += 1;
            *n
        } else {
            counts.remove(&key);
            0
        }
    };
    let delay = retry_delay(not_found);
    warn!(subscription = %sub.name_any(), namespace = ?sub.namespace(), error = %err, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// `namespace/name`: the key of a subscription in the per-subscription maps
/// of the context.
fn key(sub: &TenantSubscription) -> String {
    format!("{}/{}", sub.namespace().unwrap_or_default(), sub.name_any())
}

/// When a failed reconcile is tried again: in 5 s (an outage, a conflict, a
/// refused write: the next try may well work), except after "not found"
/// answers, which last (a subscription left behind in a namespace that is
/// gone): 5 s doubled per consecutive one, at most 5 min.
fn retry_delay(consecutive_not_found: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(5);
    const MOST: Duration = Duration::from_secs(300);
    let doublings = consecutive_not_found.saturating_sub(1).min(10);
    FIRST.saturating_mul(1 << doublings).min(MOST)
}

async fn reconcile(sub: Arc<TenantSubscription>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciliations.inc();
    let started = std::time::Instant::now();
    // Deciding from half-filled caches would rewrite children that exist.
    ctx.caches_ready().await;
    let result = reconcile_subscription(&sub, &ctx).await;
    if result.is_ok() {
        let mut counts = ctx.not_found.lock().unwrap();
        if !counts.is_empty() {
            counts.remove(&key(&sub));
        }
    }
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    result
}

/// What one reconcile found and did, turned into status at the end.
struct Outcome {
    modules: Vec<ModuleStatus>,
    ready: (bool, String, String),
    reconciling: Option<(String, String)>,
    stalled: Option<(String, String)>,
    limited: Vec<String>,
    active_windows: Vec<String>,
    next_transition: Option<String>,
    requeue: Option<Timestamp>,
    /// Every module waits for a quota written moments ago: the quota
    /// controller's answer brings the next reconcile, so a status saying
    /// "waiting for the quota" is not written (unless the wait outlasts
    /// `QUOTA_ANSWER_SECONDS`).
    awaiting_quota: bool,
}

fn live_module(ctx: &Context, ns: &str, sub: &str, module: &str, uid: &str) -> LiveModule {
    let name = render::child_name(sub, module);
    let owned =
        |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| apply::owned_by(m, uid);
    LiveModule {
        deployment: ctx
            .deployments
            .get(&ObjectRef::new(&name).within(ns))
            .filter(|o| owned(&o.metadata)),
        hpa: ctx
            .hpas
            .get(&ObjectRef::new(&name).within(ns))
            .filter(|o| owned(&o.metadata)),
        service: ctx
            .services
            .get(&ObjectRef::new(&name).within(ns))
            .filter(|o| owned(&o.metadata)),
    }
}

/// The digest of what we applied to a cached child, if it is cached and we own fields in it.
fn applied<K>(o: &Option<Arc<Slim<K>>>) -> Option<u64> {
    o.as_ref().and_then(|o| o.applied)
}

async fn reconcile_subscription(sub: &TenantSubscription, ctx: &Context) -> Result<Action, Error> {
    let ns = sub.namespace().ok_or(Error::NoNamespace)?;
    let name = sub.name_any();
    if sub.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    let uid = sub.metadata.uid.clone().unwrap_or_default();
    let now = Timestamp::now();
    let old_status = sub.status.clone().unwrap_or_default();
    let owner = Owner {
        name: name.clone(),
        namespace: ns.clone(),
        tenant_id: sub.spec.tenant_id.clone(),
        reference: sub.controller_owner_ref(&()),
    };

    // Modules that may have children: those in the spec and those we reported before.
    let mut known: BTreeSet<String> = sub.spec.modules.iter().map(|m| m.name.clone()).collect();
    known.extend(old_status.modules.iter().map(|m| m.name.clone()));
    let live = |m: &str| live_module(ctx, &ns, &name, m, &uid);

    let outcome = if sub.spec.paused {
        paused(sub, &known, &live)
    } else {
        let catalogue = ctx.catalogue_for(sub);
        match capacity::plan(&name, &sub.spec, &catalogue, now) {
            Err(errors) => {
                let mut o = invalid(sub, &errors, &known, &live);
                // A reference that may appear any moment (the profile, plan or
                // calendar applied together with the subscription, its watch event
                // possibly handled first): look again soon, not only at resync.
                if errors.iter().any(|e| {
                    matches!(
                        e,
                        capacity::InvalidSpec::ProfileNotFound { .. }
                            | capacity::InvalidSpec::PlanNotFound { .. }
                            | capacity::InvalidSpec::CalendarNotFound { .. }
                    )
                }) {
                    o.requeue = Some(now + SignedDuration::from_secs(10));
                }
                o
            }
            Ok(plan) => converge(sub, ctx, &owner, &uid, &plan, &known, &live, now).await?,
        }
    };

    publish_metrics(ctx, sub, &outcome);
    let new_status = build_status(sub, &old_status, &outcome, now);
    let key = key(sub);
    let mut batch_until = None;
    if new_status != old_status && outcome.awaiting_quota {
        batch_until = Some(now + SignedDuration::try_from(STATUS_BATCH).unwrap_or_default());
    } else if new_status != old_status && only_counts_changed(&old_status, &new_status) {
        // Replica counts moving while nothing else changes (pods starting,
        // the HPA scaling) are written at most once per batch period.
        let period = batch_period(&new_status);
        let last = ctx.status_written.lock().unwrap().get(&key).copied();
        if let Some(last) = last
            && last.elapsed() < period
        {
            batch_until =
                Some(now + SignedDuration::try_from(period - last.elapsed()).unwrap_or_default());
        }
    }
    if new_status != old_status && batch_until.is_none() {
        let api: Api<TenantSubscription> = Api::namespaced(ctx.client.clone(), &ns);
        let body = json!({
            "apiVersion": "capacity.tenancy.dev/v1alpha1",
            "kind": "TenantSubscription",
            "status": new_status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        ctx.metrics.write("TenantSubscription", "apply-status");
        {
            let mut written = ctx.status_written.lock().unwrap();
            if written.len() > 256 {
                written.retain(|_, t| t.elapsed() < PROGRESS_BATCH);
            }
            written.insert(key, std::time::Instant::now());
        }
        announce(ctx, sub, &old_status, &new_status).await;
    }

    let mut next = now
        + SignedDuration::try_from(jittered(ctx.settings.resync))
            .unwrap_or(SignedDuration::from_secs(300));
    for t in outcome.requeue.into_iter().chain(batch_until) {
        next = next.min(t);
    }
    let wait = next
        .duration_since(now)
        .unsigned_abs()
        .max(Duration::from_millis(200));
    Ok(Action::requeue(wait))
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

/// The resync period less up to a tenth, drawn at random each time:
/// subscriptions reconciled together (all of them after a restart) come back
/// spread over that tenth instead of in one burst, which would queue a plan
/// change arriving at that moment behind every one of them.
fn jittered(resync: Duration) -> Duration {
    use std::hash::BuildHasher;
    let draw = std::collections::hash_map::RandomState::new().hash_one(0u8) % 1_000;
    resync.mul_f64(1.0 - draw as f64 / 10_000.0)
}

fn paused(
    sub: &TenantSubscription,
    known: &BTreeSet<String>,
    live: &(dyn Fn(&str) -> LiveModule + Sync),
) -> Outcome {
    let old = sub.status.clone().unwrap_or_default();
    let modules = known
        .iter()
        .filter_map(|m| {
            let l = live(m);
            if l.is_empty() {
                return None;
            }
            let mut st = old
                .modules
                .iter()
                .find(|s| &s.name == m)
                .cloned()
                .unwrap_or(ModuleStatus {
                    name: m.clone(),
                    ..Default::default()
                });
            let dep = l.deployment.as_ref().map(|d| &d.facts);
            st.replicas = dep.and_then(|f| f.replicas);
            st.ready_replicas = dep.and_then(|f| f.ready_replicas);
            Some(st)
        })
        .collect();
    Outcome {
        modules,
        ready: (
            false,
            "Paused".into(),
            "reconciliation is paused (spec.paused); children are left as they are".into(),
        ),
        reconciling: None,
        stalled: None,
        limited: vec![],
        active_windows: old.active_windows.clone(),
        next_transition: None,
        requeue: None,
        awaiting_quota: false,
    }
}

fn invalid(
    sub: &TenantSubscription,
    errors: &[capacity::InvalidSpec],
    known: &BTreeSet<String>,
    live: &(dyn Fn(&str) -> LiveModule + Sync),
) -> Outcome {
    let reason = errors[0].reason().to_string();
    let message = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let old = sub.status.clone().unwrap_or_default();
    let modules = known
        .iter()
        .filter_map(|m| {
            let l = live(m);
            let own: Vec<String> = errors
                .iter()
                .filter(|e| e.to_string().starts_with(&format!("{m}:")))
                .map(|e| e.to_string())
                .collect();
            if own.is_empty() && l.is_empty() {
                return None;
            }
            if own.is_empty() {
                // Untouched, as it was.
                return old.modules.iter().find(|s| &s.name == m).cloned();
            }
            Some(status::invalid_module(m, &l, own.join("; ")))
        })
        .collect();
    Outcome {
        modules,
        ready: (
            false,
            reason.clone(),
            format!("not applied, existing objects left as they are: {message}"),
        ),
        reconciling: None,
        stalled: Some((reason, message)),
        limited: vec![],
        active_windows: old.active_windows.clone(),
        next_transition: old.next_transition.clone(),
        requeue: None,
        awaiting_quota: false,
    }
}

#[allow(clippy::too_many_arguments)]
async fn converge(
    sub: &TenantSubscription,
    ctx: &Context,
    owner: &Owner,
    uid: &str,
    plan: &CapacityPlan,
    known: &BTreeSet<String>,
    live: &(dyn Fn(&str) -> LiveModule + Sync),
    now: Timestamp,
) -> Result<Outcome, Error> {
    let ns = owner.namespace.as_str();
    let mut modules = Vec::new();
    let mut progress = Vec::new();
    let mut conflicts = Vec::new();
    let mut limited = Vec::new();
    let mut requeue = plan
        .next_transition
        .map(|t| t + SignedDuration::from_millis(500));

    let mut drained_status = Vec::new();
    // Modules with children but no longer enabled: drain, then remove.
    let enabled: BTreeSet<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
    let mut drain_footprints = Vec::new();
    let mut draining = Vec::new();
    for m in known.iter().filter(|m| !enabled.contains(m.as_str())) {
        let l = live(m);
        if l.is_empty() {
            continue;
        }
        let since = l
            .deployment
            .as_ref()
            .and_then(|d| d.facts.draining_since.as_deref())
            .and_then(|s| s.parse::<Timestamp>().ok());
        let since = match (since, &l.deployment) {
            (Some(t), _) => t,
            (None, Some(d)) => {
                apply::annotate::<Deployment>(
                    &ctx.client,
                    &ctx.metrics,
                    &d.metadata,
                    ANNOTATION_DRAINING_SINCE,
                    Some(&now.to_string()),
                )
                .await?;
                info!(subscription = %owner.name, namespace = ns, module = %m, "module switched off; draining");
                publish(
                    ctx,
                    sub,
                    EventType::Normal,
                    "Draining",
                    &format!(
                        "{m}: draining for {}s before removal",
                        sub.spec.downgrade.drain_seconds
                    ),
                )
                .await;
                now
            }
            // Without a Deployment nothing serves: remove the rest now.
            (None, None) => now - SignedDuration::from_secs(sub.spec.downgrade.drain_seconds + 1),
        };
        let deadline = since + SignedDuration::from_secs(sub.spec.downgrade.drain_seconds);
        if now >= deadline {
            if let Some(o) = &l.hpa {
                apply::delete_owned::<HorizontalPodAutoscaler>(
                    &ctx.client,
                    &ctx.metrics,
                    &o.metadata,
                )
                .await?;
            }
            if let Some(o) = &l.service {
                apply::delete_owned::<Service>(&ctx.client, &ctx.metrics, &o.metadata).await?;
            }
            if let Some(o) = &l.deployment {
                apply::delete_owned::<Deployment>(&ctx.client, &ctx.metrics, &o.metadata).await?;
            }
            if sub.spec.downgrade.data_retention == DataRetention::Delete {
                delete_module_data(ctx, ns, &owner.name, m).await?;
            }
            info!(subscription = %owner.name, namespace = ns, module = %m, "drain finished; module removed");
            publish(
                ctx,
                sub,
                EventType::Normal,
                "ModuleRemoved",
                &format!("{m}: drained and removed"),
            )
            .await;
            continue;
        }
        requeue = Some(requeue.map_or(deadline, |r| r.min(deadline)));
        drain_footprints.push(footprint_of_live(m, &l));
        let shown = format_instant(deadline, &plan.time_zone);
        drained_status.push(status::draining_module(m, &l, &shown));
        draining.push(format!("{m} until {shown}"));
    }

    // The quota covers what is enabled plus what is still draining. It goes
    // first when pods may start or change size (a new module, a changed
    // Deployment): no tenant pod may start before the cap is in force.
    // Otherwise (a new HPA ceiling) it is written together with the rest.
    let mut quota_in_force = false;
    let mut quota_new = false;
    let mut quota_write = None;
    if let Some(q) = render::quota_child(owner, plan, &drain_footprints) {
        let current = ctx
            .quotas
            .get(&ObjectRef::new(q.name()).within(ns))
            .filter(|o| apply::owned_by(&o.metadata, uid));
        let free = match &current {
            Some(_) => Ok(()),
            None => ctx.check_free(ns, &q, uid),
        };
        match free {
            Ok(()) => {
                let digest = applied(&current);
                // Written just now, or so recently that the quota
                // controller's answer is still on its way.
                quota_new = current.as_ref().is_none_or(|q| {
                    q.metadata.creation_timestamp.as_ref().is_none_or(|t| {
                        now.duration_since(t.0) < SignedDuration::from_secs(QUOTA_ANSWER_SECONDS)
                    })
                });
                if apply::needs_apply(&q, digest) {
                    quota_write = Some((q, digest));
                    quota_new = true;
                } else {
                    quota_in_force = current.is_some_and(|q| q.facts.quota_enforced);
                }
            }
            Err(Error::NotOwned { kind, name }) => conflicts.push(format!(
                "{kind} {name} exists and is not owned by this subscription"
            )),
            Err(e) => return Err(e),
        }
    }

    let mut writes = Vec::new();
    for m in &plan.modules {
        let l = live(&m.name);
        if l.deployment.is_none() && !quota_in_force {
            // A new module waits until the quota controller has taken up the
            // quota (its status event brings us back here).
            progress.push(format!(
                "{}: waiting for ResourceQuota {} to be in force",
                m.name,
                render::quota_name(&owner.name)
            ));
            requeue = Some(requeue.map_or(now + SignedDuration::from_secs(2), |r| {
                r.min(now + SignedDuration::from_secs(2))
            }));
            continue;
        }
        // Each child with whether it is cached and the digest of what we applied to it.
        let children: Vec<(render::Child, bool, Option<u64>)> = render::module_children(owner, m)
            .into_iter()
            .map(|child| {
                let (cached, digest) = match &child {
                    render::Child::Deployment(_) => {
                        (l.deployment.is_some(), applied(&l.deployment))
                    }
                    render::Child::Hpa(_) => (l.hpa.is_some(), applied(&l.hpa)),
                    render::Child::Service(_) => (l.service.is_some(), applied(&l.service)),
                    render::Child::Quota(_) => (false, None),
                };
                (child, cached, digest)
            })
            .collect();
        // Check every name before writing any, so a module is applied whole or not at all.
        let mut conflict = None;
        for (child, cached, _) in &children {
            if !cached {
                match ctx.check_free(ns, child, uid) {
                    Ok(()) => {}
                    Err(Error::NotOwned { kind, name }) => {
                        conflict = Some(format!(
                            "{}: {kind} {name} exists and is not owned by this subscription",
                            m.name
                        ));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if conflict.is_none() {
            writes.extend(
                children
                    .into_iter()
                    .map(|(child, _, digest)| (child, digest)),
            );
        }
        if let Some(msg) = conflict {
            conflicts.push(msg.clone());
            modules.push(status::invalid_module(&m.name, &l, msg));
            continue;
        }
        if let Some(d) = &l.deployment
            && d.facts.draining_since.is_some()
        {
            apply::annotate::<Deployment>(
                &ctx.client,
                &ctx.metrics,
                &d.metadata,
                ANNOTATION_DRAINING_SINCE,
                None,
            )
            .await?;
            info!(subscription = %owner.name, namespace = ns, module = %m.name, "module re-enabled; drain cancelled");
        }
        let st = status::active_module(m, &l);
        if let Some(msg) = status::capacity_limit(m, &l) {
            limited.push(msg);
        }
        if let Some(msg) = status::progress(m, &l) {
            progress.push(msg);
        }
        modules.push(st);
    }

    // Children of different modules are independent: write them at once.
    writes.retain(|(child, digest)| apply::needs_apply(child, *digest));
    if let Some(q) = quota_write {
        if writes
            .iter()
            .any(|(c, _)| matches!(c, render::Child::Deployment(_)))
        {
            apply::apply_child(&ctx.client, &ctx.metrics, ns, &q.0, q.1).await?;
        } else {
            writes.push(q);
        }
    }
    futures::future::try_join_all(
        writes.iter().map(|(child, digest)| {
            apply::apply_child(&ctx.client, &ctx.metrics, ns, child, *digest)
        }),
    )
    .await?;

    let awaiting_quota = quota_new
        && modules.is_empty()
        && drained_status.is_empty()
        && conflicts.is_empty()
        && !plan.modules.is_empty();
    modules.extend(drained_status);

    let ready = if !conflicts.is_empty() {
        (false, "ObjectConflict".to_string(), conflicts.join("; "))
    } else if !progress.is_empty() || !draining.is_empty() {
        let mut msg = progress.clone();
        msg.extend(draining.iter().map(|d| format!("draining {d}")));
        (false, "Progressing".to_string(), msg.join("; "))
    } else {
        (
            true,
            "Available".to_string(),
            format!("{} module(s) at or above their floor", plan.modules.len()),
        )
    };
    let reconciling = if !draining.is_empty() {
        Some((
            "Draining".to_string(),
            draining
                .iter()
                .map(|d| format!("draining {d}"))
                .collect::<Vec<_>>()
                .join("; "),
        ))
    } else if !progress.is_empty() {
        Some(("Progressing".to_string(), progress.join("; ")))
    } else {
        None
    };
    let stalled =
        (!conflicts.is_empty()).then(|| ("ObjectConflict".to_string(), conflicts.join("; ")));
    Ok(Outcome {
        modules,
        ready,
        reconciling,
        stalled,
        limited,
        active_windows: plan.active_windows.clone(),
        next_transition: plan
            .next_transition
            .map(|t| format_instant(t, &plan.time_zone)),
        requeue,
        awaiting_quota,
    })
}

/// The retention policy says Delete: remove the module's PersistentVolumeClaims.
async fn delete_module_data(ctx: &Context, ns: &str, sub: &str, module: &str) -> Result<(), Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!(
        "{}={sub},{}={module}",
        render::LABEL_SUBSCRIPTION,
        render::LABEL_MODULE
    );
    for pvc in api.list(&ListParams::default().labels(&selector)).await? {
        apply::delete_owned::<PersistentVolumeClaim>(&ctx.client, &ctx.metrics, &pvc.metadata)
            .await?;
        info!(namespace = ns, subscription = sub, module, claim = %pvc.name_any(), "data deleted (dataRetention: Delete)");
    }
    Ok(())
}

/// Whether the quota controller has taken up the quota's current spec.
/// What a draining module may still occupy, read from its live objects.
fn footprint_of_live(module: &str, l: &LiveModule) -> Footprint {
    let max = l
        .hpa
        .as_ref()
        .and_then(|h| h.facts.max_replicas)
        .or_else(|| l.deployment.as_ref().and_then(|d| d.facts.spec_replicas))
        .unwrap_or(1);
    let resources = l.deployment.as_ref().and_then(|d| d.facts.resources());
    Footprint::new(module, max, resources.as_ref()).unwrap_or(Footprint {
        pods: max as i64 + capacity::surge(max),
        ..Default::default()
    })
}

fn build_status(
    sub: &TenantSubscription,
    old: &TenantSubscriptionStatus,
    o: &Outcome,
    now: Timestamp,
) -> TenantSubscriptionStatus {
    let generation = sub.metadata.generation;
    let c = &old.conditions;
    let (ready, ready_reason, ready_msg) = &o.ready;
    let mut conditions = vec![status::condition(
        c,
        status::READY,
        *ready,
        ready_reason,
        ready_msg,
        generation,
        now,
    )];
    conditions.push(match &o.reconciling {
        Some((reason, msg)) => {
            status::condition(c, status::RECONCILING, true, reason, msg, generation, now)
        }
        None => status::condition(
            c,
            status::RECONCILING,
            false,
            "Reconciled",
            "",
            generation,
            now,
        ),
    });
    conditions.push(match &o.stalled {
        Some((reason, msg)) => {
            status::condition(c, status::STALLED, true, reason, msg, generation, now)
        }
        None => status::condition(c, status::STALLED, false, "Reconciled", "", generation, now),
    });
    conditions.push(if o.limited.is_empty() {
        status::condition(
            c,
            status::CAPACITY_LIMITED,
            false,
            "WithinCeiling",
            "",
            generation,
            now,
        )
    } else {
        status::condition(
            c,
            status::CAPACITY_LIMITED,
            true,
            "CeilingReached",
            &o.limited.join("; "),
            generation,
            now,
        )
    });
    TenantSubscriptionStatus {
        observed_generation: generation,
        conditions,
        active_windows: o.active_windows.clone(),
        next_transition: o.next_transition.clone(),
        modules: o.modules.clone(),
    }
}

/// Status writes that only move replica counts are batched to one per this
/// long while the subscription is Ready (the HPA scaling)...
const STATUS_BATCH: Duration = Duration::from_secs(2);
/// ...and to one per this long while it is not (pods of a new or changed
/// plan starting: Ready itself is written the moment it comes, so this only
/// thins the "2/3 replicas ready" steps, the bulk of a cold start's writes).
const PROGRESS_BATCH: Duration = Duration::from_secs(10);

/// How long count-only status changes of `status` wait for the next write.
fn batch_period(status: &TenantSubscriptionStatus) -> Duration {
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == status::READY && c.status == "True");
    if ready { STATUS_BATCH } else { PROGRESS_BATCH }
}

/// Whether `new` differs from `old` only in what pods and autoscalers do
/// (replica counts and the progress wording), not in any condition's state,
/// the generation, the plan's numbers or the windows.
fn only_counts_changed(old: &TenantSubscriptionStatus, new: &TenantSubscriptionStatus) -> bool {
    let conditions = |s: &TenantSubscriptionStatus| {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect::<Vec<_>>()
    };
    let plan = |s: &TenantSubscriptionStatus| {
        s.modules
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    m.state,
                    m.tier.clone(),
                    m.min_replicas,
                    m.max_replicas,
                    m.concurrency,
                    m.drain_deadline.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    old.observed_generation == new.observed_generation
        && conditions(old) == conditions(new)
        && plan(old) == plan(new)
        && old.active_windows == new.active_windows
        && old.next_transition == new.next_transition
}

fn publish_metrics(ctx: &Context, sub: &TenantSubscription, o: &Outcome) {
    let ns = sub.namespace().unwrap_or_default();
    for m in &o.modules {
        let labels = ModuleLabels {
            namespace: ns.clone(),
            subscription: sub.name_any(),
            tenant: sub.spec.tenant_id.clone(),
            module: m.name.clone(),
        };
        let plan = (m.state == Some(ModuleState::Active)).then(|| ModulePlan {
            max_replicas: m.max_replicas.unwrap_or(0) as i64,
            min_replicas: m.min_replicas.unwrap_or(0) as i64,
            ceiling_sessions: m.concurrency.unwrap_or(0),
        });
        ctx.metrics.modules.set_plan(&labels, plan);
    }
}

/// Events on the transitions a human should hear about; none while nothing changes.
async fn announce(
    ctx: &Context,
    sub: &TenantSubscription,
    old: &TenantSubscriptionStatus,
    new: &TenantSubscriptionStatus,
) {
    let before = status::reason_of(&old.conditions, status::READY);
    let after = status::reason_of(&new.conditions, status::READY);
    // A new subscription starts Progressing: its creator knows, and the
    // event that matters (Available, or what stops it) follows. Skipping
    // that one is a write less per tenant on a cold start.
    let first_progress = before.is_none() && after == Some("Progressing");
    if before != after
        && !first_progress
        && let Some(c) = new.conditions.iter().find(|c| c.type_ == status::READY)
    {
        let type_ = match c.reason.as_str() {
            "Available" | "Progressing" | "Paused" => EventType::Normal,
            _ => EventType::Warning,
        };
        publish(ctx, sub, type_, &c.reason, &c.message).await;
    }
    let limited = |s: &TenantSubscriptionStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::CAPACITY_LIMITED && c.status == "True")
            .map(|c| c.message.clone())
    };
    if let (None, Some(msg)) = (limited(old), limited(new)) {
        publish(ctx, sub, EventType::Warning, "CapacityLimited", &msg).await;
    }
}

fn publish<'a>(
    ctx: &'a Context,
    sub: &'a TenantSubscription,
    type_: EventType,
    reason: &'a str,
    note: &'a str,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let note: String = note.chars().take(1000).collect();
        let regarding = sub.object_ref(&());
        match ctx
            .events
            .publish(&regarding, type_, reason, "Reconcile", &note)
            .await
        {
            Ok(verb) => ctx.metrics.write("Event", verb),
            Err(e) => warn!(error = %e, "could not publish event"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn resync_is_spread_over_its_last_tenth() {
        let resync = Duration::from_secs(300);
        let draws: BTreeSet<Duration> = (0..200).map(|_| jittered(resync)).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d <= resync && *d >= resync.mul_f64(0.9))
        );
        // 200 draws from 1,000 values: a constant (or nearly) would fail.
        assert!(
            draws.len() > 100,
            "only {} distinct resync delays",
            draws.len()
        );
        let spread = *draws.last().unwrap() - *draws.first().unwrap();
        assert!(spread > Duration::from_secs(20), "spread {spread:?}");
    }

    #[test]
    fn not_found_failures_back_off_to_five_minutes() {
        let secs = |n| retry_delay(n).as_secs();
        assert_eq!(
            (0..=8).map(secs).collect::<Vec<_>>(),
            [5, 5, 10, 20, 40, 80, 160, 300, 300]
        );
        assert_eq!(secs(u32::MAX), 300);
    }

    #[test]
    fn initial_list_streams_from_kubernetes_1_34() {
        for (major, minor, want) in [
            ("1", "36", InitialList::Stream),
            ("1", "34", InitialList::Stream),
            ("1", "34+", InitialList::Stream),
            ("2", "0", InitialList::Stream),
            ("1", "33", InitialList::Paged),
            ("1", "26", InitialList::Paged),
            ("1", "", InitialList::Paged),
            ("", "x", InitialList::Paged),
        ] {
            assert_eq!(
                InitialList::for_version(major, minor),
                want,
                "{major}.{minor}"
            );
        }
    }

    #[test]
    fn paged_lists_ask_for_pages_of_the_current_state() {
        let paged = InitialList::Paged.configure(watcher::Config::default());
        assert_eq!(paged.page_size, Some(LIST_PAGE_SIZE));
        assert_eq!(paged.list_semantic, watcher::ListSemantic::MostRecent);
        let stream = InitialList::Stream.configure(watcher::Config::default());
        assert_eq!(
            stream.initial_list_strategy,
            watcher::InitialListStrategy::StreamingList
        );
    }
}
