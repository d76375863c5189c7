//! Watches and caches: every kind the controller reads, kept in memory
//! (children slim), re-established with a short backoff, and turned into
//! the streams that trigger reconciles.

use std::{fmt::Debug, time::Duration};

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
    .touched_objects()
    .filter_map(|r| futures::future::ready(r.ok().map(Ok)));
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
    .touched_objects()
    .filter_map(|r| futures::future::ready(r.ok().map(Ok)));
    (store, stream)
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

/// The subscriptions' trigger stream, each subscription followed by the
/// others of its namespace: which one of them acts depends on all of them
/// (when the first is deleted, the next takes over). A namespace with one
/// subscription, the usual case, adds nothing.
pub fn with_neighbours<E>(
    stream: impl futures::Stream<Item = Result<TenantSubscription, E>>,
    subscriptions: Store<TenantSubscription>,
) -> impl futures::Stream<Item = Result<TenantSubscription, E>> {
    stream.flat_map(move |touched| {
        let mut out = Vec::new();
        if let Ok(s) = &touched {
            let (ns, name) = (s.namespace(), s.name_any());
            out.extend(
                subscriptions
                    .state()
                    .iter()
                    .filter(|o| o.namespace() == ns && o.name_any() != name)
                    .map(|o| Ok(o.as_ref().clone())),
            );
        }
        out.insert(0, touched);
        futures::stream::iter(out)
    })
}

/// Maps a catalogue object to the subscriptions that refer to it.
pub fn users<K: Resource>(
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

#[cfg(test)]
mod tests {
    use super::*;

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
