//! Watches and caches: every kind the controller reads, kept in memory
//! (children slim), re-established with a short backoff, and turned into
//! the streams that trigger reconciles.

use std::{
    collections::{HashMap, hash_map::Entry},
    fmt::Debug,
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{NamespaceResourceScope, api::core::v1::Namespace};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::facts::{seniority, tenant_label};
use crate::{
    api::TenantSubscription,
    live::{self, Slim, Slimmable},
    server::Readiness,
};

/// Watches are re-established at least this often: a watch that silently
/// stops delivering (seen after API server or etcd restarts) heals by itself.
pub const WATCH_TIMEOUT_SECONDS: u32 = 60;

/// The watch configuration for `initial_list`, shared by every cache.
pub fn config(initial_list: InitialList) -> watcher::Config {
    initial_list.configure(watcher::Config::default().timeout(WATCH_TIMEOUT_SECONDS))
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

pub fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
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

/// Namespaces, metadata only (their labels say which tenant each is
/// assigned to): every namespace, or only `namespace` when one is watched.
pub fn namespaces(
    client: &Client,
    namespace: &Option<String>,
    config: watcher::Config,
) -> (Api<PartialObjectMeta<Namespace>>, watcher::Config) {
    let config = match namespace {
        Some(ns) => config.fields(&format!("metadata.name={ns}")),
        None => config,
    };
    (Api::all(client.clone()), config)
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The watch of `api`, retried with backoff, its errors logged. A watch
/// the API server refuses (RBAC, or the resource type is gone) fails
/// `readiness`, naming the verb and kind, until it works again.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    readiness: Readiness,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let what = format!("list/watch {}", K::kind(&()));
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .inspect(move |r| match r {
            Ok(_) => readiness.allowed(&what),
            Err(e) => match refusal(e) {
                Some(why) => readiness.refused(&what, &why),
                None => {
                    warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying with backoff")
                }
            },
        })
}

/// The API server's reason when it refuses a watch for what the operator
/// may do or what exists (403 Forbidden, 404 Not Found), not for the moment
/// (an outage, a restart, an expired resource version).
pub fn refusal(e: &watcher::Error) -> Option<String> {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::WatchError(s) => s,
        _ => return None,
    };
    match status.code {
        403 => Some(status.message.clone()),
        404 => Some(format!(
            "{} (is its CustomResourceDefinition installed?)",
            status.message
        )),
        _ => None,
    }
}

/// A cache of `api` (managed fields and kubectl's last-applied copy stripped) and the stream of objects it
/// saw change, for the controller's triggers. Watch errors are logged and
/// retried here, and kept out of the controller's trigger stream, whose
/// backoff would pause every other watch too.
pub fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
    readiness: Readiness,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>>,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let cached = store.clone();
    let stream = reflector::reflector(
        writer,
        watch(api, config, readiness).modify(|o| {
            o.managed_fields_mut().clear();
            // `kubectl apply` (client side) keeps a second copy of the
            // whole object here; nothing reads it.
            if let Some(a) = o.meta_mut().annotations.as_mut() {
                a.remove(LAST_APPLIED);
            }
        }),
    )
    .touched_when_cached(cached);
    (store, stream)
}

/// Like [`cache`], for children kept slim. A change that leaves the slim
/// form as it was (the HPA's metrics moving, a Deployment's rollout
/// timestamps) is dropped before the cache and the trigger stream, so it
/// costs no reconcile; deletions and relists always pass.
pub fn slim_cache<K>(
    api: Api<K>,
    config: watcher::Config,
    readiness: Readiness,
) -> (
    Store<Slim<K>>,
    impl futures::Stream<Item = Result<Slim<K>, watcher::Error>>,
)
where
    K: Slimmable + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<Slim<K>>();
    let reader = store.clone();
    let cached = store.clone();
    let stream = reflector::reflector(
        writer,
        watch(api, config, readiness)
            .map_ok(|event| match event {
                watcher::Event::Apply(o) => watcher::Event::Apply(live::slim(o)),
                watcher::Event::Delete(o) => watcher::Event::Delete(live::slim(o)),
                watcher::Event::InitApply(o) => watcher::Event::InitApply(live::slim(o)),
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
    .touched_when_cached(cached);
    (store, stream)
}

/// The objects a watch touched, each once the cache holds it, for the
/// controller's triggers (which read a triggered object from the cache and
/// drop the trigger when it is not there). The objects of a (re)list come
/// at its end: the cache takes a list in whole when it is complete, so an
/// object first seen in a relist (a subscription created while its watch
/// was re-established) was not yet cached when its trigger ran, and was
/// never reconciled. Watch errors are left out (they are logged and retried
/// in [`watch`]).
pub trait TouchedWhenCached<K: Resource<DynamicType = ()> + Clone + 'static>:
    futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Sized
{
    fn touched_when_cached(
        self,
        cached: Store<K>,
    ) -> impl futures::Stream<Item = Result<K, watcher::Error>> {
        self.scan(Vec::<ObjectRef<K>>::new(), move |listed, event| {
            let out: Vec<K> = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => vec![o],
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    vec![]
                }
                Ok(watcher::Event::InitApply(o)) => {
                    listed.push(ObjectRef::from_obj(&o));
                    vec![]
                }
                Ok(watcher::Event::InitDone) => std::mem::take(listed)
                    .iter()
                    .filter_map(|r| cached.get(r))
                    .map(|o| o.as_ref().clone())
                    .collect(),
                Err(_) => vec![],
            };
            futures::future::ready(Some(out))
        })
        .flat_map(|out| futures::stream::iter(out.into_iter().map(Ok)))
    }
}

impl<K, S> TouchedWhenCached<K> for S
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
}

/// Maps a namespace to the subscriptions in it: its tenant label decides
/// whether they may act.
pub fn residents(
    subscriptions: Store<TenantSubscription>,
) -> impl Fn(PartialObjectMeta<Namespace>) -> Vec<ObjectRef<TenantSubscription>> + Send + Sync + 'static
{
    move |ns: PartialObjectMeta<Namespace>| {
        let name = ns.name_any();
        subscriptions
            .state()
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(name.as_str()))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect()
    }
}

/// The subscriptions' trigger stream, a subscription followed by the others
/// of its namespace when which of them acts may have changed (see
/// [`moves_the_oldest`]). Only the oldest subscription of a namespace acts,
/// and the others' status names it: nothing else of one subscription
/// changes a neighbour's decision. (Following every change with every
/// neighbour made a namespace of n subscriptions cost n² reconciles.)
pub fn with_neighbours<E>(
    stream: impl futures::Stream<Item = Result<TenantSubscription, E>>,
    subscriptions: Store<TenantSubscription>,
) -> impl futures::Stream<Item = Result<TenantSubscription, E>> {
    stream.flat_map(move |touched| {
        let mut out = Vec::new();
        if let Ok(s) = &touched {
            let (ns, name) = (s.namespace(), s.name_any());
            let neighbours: Vec<_> = subscriptions
                .state()
                .into_iter()
                .filter(|o| o.namespace() == ns && o.name_any() != name)
                .collect();
            let stored = subscriptions.get(&ObjectRef::from_obj(s)).is_some();
            if moves_the_oldest(s, stored, neighbours.iter().map(|o| o.as_ref())) {
                out.extend(neighbours.iter().map(|o| Ok(o.as_ref().clone())));
            }
        }
        out.insert(0, touched);
        futures::stream::iter(out)
    })
}

/// Whether a change of `touched` may change which subscription of its
/// namespace acts: it is older than all its `neighbours` and it is new
/// (never reconciled: no status yet), being deleted, or gone (no longer
/// `stored`).
pub fn moves_the_oldest<'a>(
    touched: &TenantSubscription,
    stored: bool,
    mut neighbours: impl Iterator<Item = &'a TenantSubscription>,
) -> bool {
    let arrives_or_leaves =
        !touched.observed() || touched.metadata.deletion_timestamp.is_some() || !stored;
    let mine = seniority(touched);
    arrives_or_leaves && neighbours.all(|o| mine < seniority(o))
}

/// Maps a catalogue object to the subscriptions that refer to it and may
/// act: in a namespace assigned to their tenant (by `label`), and the
/// oldest there. The others' decision does not read the catalogue (see
/// `decide::assignment`), so a change of it need not wake them: with
/// thousands of subscriptions that may not act, each change of a profile
/// would otherwise queue all of them ahead of everyone else's.
pub fn users<K: Resource>(
    subscriptions: Store<TenantSubscription>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    label: String,
    uses: fn(&TenantSubscription, &str) -> bool,
) -> impl Fn(K) -> Vec<ObjectRef<TenantSubscription>> + Send + Sync + 'static {
    move |obj: K| {
        let name = obj.meta().name.clone().unwrap_or_default();
        let all = subscriptions.state();
        let mut oldest: HashMap<String, (bool, Option<jiff::Timestamp>, String)> = HashMap::new();
        for s in &all {
            let rank = seniority(s);
            match oldest.entry(s.namespace().unwrap_or_default()) {
                Entry::Occupied(mut e) if rank < *e.get() => {
                    e.insert(rank);
                }
                Entry::Occupied(_) => {}
                Entry::Vacant(e) => {
                    e.insert(rank);
                }
            }
        }
        all.into_iter()
            .filter(|s| uses(s, &name))
            .filter(|s| {
                let ns = s.namespace().unwrap_or_default();
                oldest.get(&ns).is_some_and(|o| o.2 == s.name_any())
                    && tenant_label(&namespaces, &label, &ns).as_deref()
                        == Some(s.spec.tenant_id.as_str())
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::api::TenantSubscriptionStatus;

    fn sub(ns: &str, name: &str, tenant: &str, created: &str) -> TenantSubscription {
        let mut s = TenantSubscription::new(
            name,
            serde_json::from_value(serde_json::json!({
                "tenantId": tenant, "modules": [{"name": "video", "concurrency": 10}],
            }))
            .unwrap(),
        );
        s.metadata.namespace = Some(ns.into());
        s.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        s.status = Some(TenantSubscriptionStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        s
    }

    fn store<K>(objects: Vec<K>) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (store, mut writer) = reflector::store::<K>();
        for o in objects {
            writer.apply_watcher_event(&Event::Apply(o));
        }
        store
    }

    #[tokio::test]
    async fn objects_of_a_relist_are_triggered_once_cached() {
        let a = sub("n", "a", "t", "2026-03-02T10:00:00Z");
        let b = sub("n", "b", "t", "2026-03-02T10:00:05Z");
        let (store, writer) = reflector::store::<TenantSubscription>();
        let events = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(a.clone())),
            Ok(Event::InitDone),
            Ok(Event::Apply(a.clone())),
            // A relist that brings a subscription never seen before.
            Ok(Event::Init),
            Ok(Event::InitApply(a.clone())),
            Ok(Event::InitApply(b.clone())),
            Ok(Event::InitDone),
        ];
        let reader = store.clone();
        let seen: Vec<(String, bool)> = reflector::reflector(writer, futures::stream::iter(events))
            .touched_when_cached(store)
            .map(|o| {
                let o = o.unwrap();
                // What the controller does with a trigger: read it from the cache.
                let cached = reader.get(&ObjectRef::from_obj(&o)).is_some();
                (o.name_any(), cached)
            })
            .collect()
            .await;
        let want = [("a", true), ("a", true), ("a", true), ("b", true)];
        assert_eq!(
            seen,
            want.map(|(n, c)| (n.to_string(), c)).to_vec(),
            "every trigger finds its object cached"
        );
    }

    #[test]
    fn neighbours_are_woken_only_when_the_oldest_arrives_or_leaves() {
        let a = sub("n", "a", "t", "2026-03-02T10:00:00Z");
        let b = sub("n", "b", "t", "2026-03-02T10:00:05Z");
        let c = sub("n", "c", "t", "2026-03-02T10:00:09Z");
        let wakes = |s: &TenantSubscription, stored: bool, others: &[&TenantSubscription]| {
            moves_the_oldest(s, stored, others.iter().copied())
        };
        // A new subscription after others: nobody else's decision changes.
        let mut new_c = c.clone();
        // As the API server serves it: the schema's default status.
        new_c.status = Some(TenantSubscriptionStatus {
            observed_generation: Some(0),
            ..Default::default()
        });
        assert!(!wakes(&new_c, true, &[&a, &b]));
        // Status written, spec changed: nothing moves.
        assert!(!wakes(&a, true, &[&b, &c]));
        assert!(!wakes(&c, true, &[&a, &b]));
        // The oldest deleted (gone, or with a deletion timestamp): the next acts.
        assert!(wakes(&a, false, &[&b, &c]));
        let mut deleting = a.clone();
        deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
        assert!(wakes(&deleting, true, &[&b, &c]));
        // Another one deleted: the oldest still acts, the message names it still.
        assert!(!wakes(&b, false, &[&a, &c]));
        // A new one older than all (the same second, a name sorting first).
        let mut first = sub("n", "0", "t", "2026-03-02T10:00:00Z");
        first.status = None;
        assert!(wakes(&first, true, &[&a, &b, &c]));
        // Alone in its namespace.
        assert!(wakes(&first, true, &[]));
    }

    #[test]
    fn a_catalogue_change_wakes_only_subscriptions_that_may_act() {
        let label = "capacity.tenancy.dev/tenant";
        let namespace = |name: &str, tenant: Option<&str>| -> PartialObjectMeta<Namespace> {
            let labels: std::collections::BTreeMap<&str, &str> =
                tenant.map(|t| (label, t)).into_iter().collect();
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels},
            }))
            .unwrap()
        };
        let subs = store(vec![
            sub("acme", "second", "acme", "2026-03-02T10:00:05Z"),
            sub("acme", "first", "acme", "2026-03-02T10:00:00Z"),
            sub("beta", "only", "beta", "2026-03-01T00:00:00Z"),
            sub("unassigned", "x", "x", "2026-03-01T00:00:00Z"),
            sub("gamma", "impostor", "acme", "2026-03-01T00:00:00Z"),
        ]);
        let namespaces = store(vec![
            namespace("acme", Some("acme")),
            namespace("beta", Some("beta")),
            namespace("unassigned", None),
            namespace("gamma", Some("gamma")),
        ]);
        let map = users::<crate::api::ModuleProfile>(subs, namespaces, label.into(), |s, name| {
            s.spec.modules.iter().any(|m| m.name == name)
        });
        let profile = |name: &str| {
            crate::api::ModuleProfile::new(
                name,
                serde_json::from_value(serde_json::json!({"image": "x", "sessionsPerReplica": 1}))
                    .unwrap(),
            )
        };
        let mut woken: Vec<String> = map(profile("video"))
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap(), r.name))
            .collect();
        woken.sort();
        assert_eq!(woken, ["acme/first", "beta/only"]);
        assert!(map(profile("voice")).is_empty());
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
    fn refused_watches_are_told_from_passing_failures() {
        let api = |code: u16, message: &str| {
            kube::Error::Api(
                kube::core::Status::failure(message, "")
                    .with_code(code)
                    .boxed(),
            )
        };
        let forbidden = "limitranges is forbidden: User \"system:serviceaccount:x:y\" cannot list resource \"limitranges\"";
        for e in [
            watcher::Error::InitialListFailed(api(403, forbidden)),
            watcher::Error::WatchStartFailed(api(403, forbidden)),
            watcher::Error::WatchFailed(api(403, forbidden)),
        ] {
            assert_eq!(refusal(&e).as_deref(), Some(forbidden), "{e}");
        }
        let gone = watcher::Error::WatchStartFailed(api(
            404,
            "the server could not find the requested resource",
        ));
        assert_eq!(
            refusal(&gone).as_deref(),
            Some(
                "the server could not find the requested resource (is its CustomResourceDefinition installed?)"
            )
        );
        for e in [
            watcher::Error::InitialListFailed(api(503, "unavailable")),
            watcher::Error::WatchFailed(api(410, "too old resource version")),
            watcher::Error::WatchError(
                kube::core::Status::failure("expired", "Expired")
                    .with_code(410)
                    .boxed(),
            ),
            watcher::Error::NoResourceVersion,
        ] {
            assert_eq!(refusal(&e), None, "{e}");
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
