//! Where a subscription's pods run: ready pods per zone, and the
//! scheduler's word on pods no node can take. Read from an index of the
//! modules' pods by namespace (a reconcile looks at its own namespace's few
//! pods, never at every pod of the cluster) and from the nodes' labels.
//!
//! What this says is for people: status only. Quotas, ceilings, drains and
//! metering never read it (a namespace admin can create pods with any
//! labels).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;

use crate::{
    api::TenantSubscription,
    capacity::{REGION_LABEL, ZONE_LABEL},
    render::{LABEL_MODULE, LABEL_SUBSCRIPTION},
};

/// What status needs of one pod of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlace {
    pub subscription: String,
    pub module: String,
    /// The node it is bound to.
    pub node: Option<String>,
    /// Ready, and not on its way out.
    pub ready: bool,
    /// The scheduler's message when no node could take it.
    pub unschedulable: Option<String>,
}

impl PodPlace {
    /// `None` for a pod without the subscription and module labels.
    pub fn of(pod: &Pod) -> Option<Self> {
        let labels = pod.labels();
        let status = pod.status.as_ref();
        let condition = |type_: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        };
        Some(Self {
            subscription: labels.get(LABEL_SUBSCRIPTION)?.clone(),
            module: labels.get(LABEL_MODULE)?.clone(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            ready: pod.metadata.deletion_timestamp.is_none()
                && condition("Ready").is_some_and(|c| c.status == "True"),
            unschedulable: condition("PodScheduled")
                .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
                .map(|c| c.message.clone().unwrap_or_else(|| "no node fits".into()))
                .filter(|_| pod.metadata.deletion_timestamp.is_none()),
        })
    }
}

type ByNamespace = HashMap<String, HashMap<String, PodPlace>>;

#[derive(Default)]
struct Index {
    live: ByNamespace,
    /// A (re)list being received: it replaces `live` when complete.
    listing: Option<ByNamespace>,
}

/// The modules' pods by namespace, as a watch keeps them.
#[derive(Clone)]
pub struct Pods {
    index: Arc<RwLock<Index>>,
    synced: watch::Receiver<bool>,
}

impl Pods {
    /// The index fed by `events`, and the subscriptions to reconcile
    /// because a pod of theirs became unschedulable or stopped being so.
    /// Other changes (a pod ready, gone) also change the Deployment's
    /// status, which brings the reconcile: they trigger nothing here.
    pub fn index(
        events: impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + 'static,
    ) -> (
        Self,
        impl Stream<Item = ObjectRef<TenantSubscription>> + Send + 'static,
    ) {
        let (tx, synced) = watch::channel(false);
        let pods = Self {
            index: Arc::default(),
            synced,
        };
        let index = pods.index.clone();
        let triggers = events.filter_map(move |event| {
            let touched = match event {
                Ok(event) => {
                    let mut index = index.write().expect("pod index lock");
                    let (touched, done) = index.apply(event);
                    if done {
                        let _ = tx.send(true);
                    }
                    touched
                }
                Err(_) => None,
            };
            futures::future::ready(touched)
        });
        (pods, triggers)
    }

    /// Resolves once the first list is complete.
    pub async fn wait_until_ready(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// The pods of one module of a subscription.
    pub fn of(&self, namespace: &str, subscription: &str, module: &str) -> Vec<PodPlace> {
        let index = self.index.read().expect("pod index lock");
        index
            .live
            .get(namespace)
            .into_iter()
            .flat_map(|pods| pods.values())
            .filter(|p| p.subscription == subscription && p.module == module)
            .cloned()
            .collect()
    }
}

impl Index {
    /// Apply one watch event; the subscription to reconcile, if any, and
    /// whether a list just completed.
    fn apply(
        &mut self,
        event: watcher::Event<Pod>,
    ) -> (Option<ObjectRef<TenantSubscription>>, bool) {
        let key = |pod: &Pod| (pod.namespace().unwrap_or_default(), pod.name_any());
        match event {
            watcher::Event::Init => {
                self.listing = Some(ByNamespace::new());
                (None, false)
            }
            watcher::Event::InitApply(pod) => {
                if let (Some(listing), Some(place)) = (self.listing.as_mut(), PodPlace::of(&pod)) {
                    let (ns, name) = key(&pod);
                    listing.entry(ns).or_default().insert(name, place);
                }
                (None, false)
            }
            watcher::Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.live = listing;
                }
                (None, true)
            }
            watcher::Event::Apply(pod) => {
                let (ns, name) = key(&pod);
                let place = PodPlace::of(&pod);
                let pods = self.live.entry(ns.clone()).or_default();
                let before = match &place {
                    Some(p) => pods.insert(name, p.clone()),
                    None => pods.remove(&name),
                };
                (
                    changed_scheduling(&ns, before.as_ref(), place.as_ref()),
                    false,
                )
            }
            watcher::Event::Delete(pod) => {
                let (ns, name) = key(&pod);
                let before = self.live.get_mut(&ns).and_then(|pods| pods.remove(&name));
                if self.live.get(&ns).is_some_and(HashMap::is_empty) {
                    self.live.remove(&ns);
                }
                (changed_scheduling(&ns, before.as_ref(), None), false)
            }
        }
    }
}

/// The subscription whose pod became unschedulable, or stopped being so.
fn changed_scheduling(
    ns: &str,
    before: Option<&PodPlace>,
    after: Option<&PodPlace>,
) -> Option<ObjectRef<TenantSubscription>> {
    let message = |p: Option<&PodPlace>| p.and_then(|p| p.unschedulable.clone());
    if message(before) == message(after) {
        return None;
    }
    let subscription = after.or(before)?.subscription.as_str();
    Some(ObjectRef::new(subscription).within(ns))
}

/// Nodes' region and zone labels, by node name.
pub fn zone_of(nodes: &Store<PartialObjectMeta<Node>>, node: &str) -> Option<String> {
    nodes
        .get(&ObjectRef::new(node))
        .and_then(|n| n.labels().get(ZONE_LABEL).cloned())
}

/// The region of a node, by its label.
pub fn region_of(nodes: &Store<PartialObjectMeta<Node>>, node: &str) -> Option<String> {
    nodes
        .get(&ObjectRef::new(node))
        .and_then(|n| n.labels().get(REGION_LABEL).cloned())
}

/// What status says of a module's pods: ready ones by zone, and the pods
/// no node can take with the scheduler's message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub ready_by_zone: BTreeMap<String, i32>,
    /// Pods pending because no node can take them, and the scheduler's
    /// message for one of them (the first by message).
    pub unschedulable: Option<(usize, String)>,
}

impl Placement {
    pub fn of(pods: &[PodPlace], zone: impl Fn(&str) -> Option<String>) -> Self {
        let mut ready_by_zone = BTreeMap::new();
        for p in pods.iter().filter(|p| p.ready) {
            if let Some(z) = p.node.as_deref().and_then(&zone) {
                *ready_by_zone.entry(z).or_insert(0) += 1;
            }
        }
        let mut stuck: Vec<&str> = pods
            .iter()
            .filter(|p| p.node.is_none())
            .filter_map(|p| p.unschedulable.as_deref())
            .collect();
        stuck.sort();
        Self {
            ready_by_zone,
            unschedulable: stuck.first().map(|m| (stuck.len(), m.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, ready: bool, unschedulable: Option<&str>) -> Pod {
        let mut conditions = vec![serde_json::json!({
            "type": "Ready", "status": if ready { "True" } else { "False" },
        })];
        if let Some(m) = unschedulable {
            conditions.push(serde_json::json!({
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": m,
            }));
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "ns",
                "labels": {LABEL_SUBSCRIPTION: "acme", LABEL_MODULE: "video"},
            },
            "spec": {"containers": [], "nodeName": node},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn ready_pods_count_in_their_node_zone_and_the_scheduler_message_is_kept() {
        let pods: Vec<PodPlace> = [
            pod("a", Some("n1"), true, None),
            pod("b", Some("n2"), true, None),
            pod("c", Some("n3"), true, None),
            pod("d", Some("n1"), false, None),
            pod(
                "e",
                None,
                false,
                Some(
                    "0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector.",
                ),
            ),
            pod(
                "f",
                None,
                false,
                Some(
                    "0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector.",
                ),
            ),
            pod("g", Some("unlabelled"), true, None),
        ]
        .iter()
        .map(|p| PodPlace::of(p).unwrap())
        .collect();
        let zone = |n: &str| match n {
            "n1" | "n2" => Some("eu-west-1a".to_string()),
            "n3" => Some("eu-west-1b".to_string()),
            _ => None,
        };
        let p = Placement::of(&pods, zone);
        assert_eq!(
            p.ready_by_zone,
            BTreeMap::from([("eu-west-1a".to_string(), 2), ("eu-west-1b".to_string(), 1)])
        );
        let (n, message) = p.unschedulable.unwrap();
        assert_eq!(n, 2);
        assert!(message.contains("node affinity"), "{message}");
    }

    #[test]
    fn the_index_replaces_on_relist_and_triggers_only_on_scheduling_changes() {
        let mut index = Index::default();
        let trigger = |r: (Option<ObjectRef<TenantSubscription>>, bool)| r.0.map(|o| o.name);
        assert_eq!(trigger(index.apply(watcher::Event::Init)), None);
        assert_eq!(
            trigger(index.apply(watcher::Event::InitApply(pod("a", Some("n1"), true, None)))),
            None
        );
        assert_eq!(index.apply(watcher::Event::InitDone), (None, true));
        assert_eq!(index.live["ns"].len(), 1);
        // A new pod the scheduler cannot place: its subscription is woken.
        let stuck = pod("b", None, false, Some("no room"));
        assert_eq!(
            trigger(index.apply(watcher::Event::Apply(stuck.clone()))),
            Some("acme".into())
        );
        // The same message again: nothing new.
        assert_eq!(trigger(index.apply(watcher::Event::Apply(stuck))), None);
        // Scheduled at last, then ready: only the first is news here.
        assert_eq!(
            trigger(index.apply(watcher::Event::Apply(pod("b", Some("n2"), false, None)))),
            Some("acme".into())
        );
        assert_eq!(
            trigger(index.apply(watcher::Event::Apply(pod("b", Some("n2"), true, None)))),
            None
        );
        // A relist drops what it no longer holds.
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitApply(pod("b", Some("n2"), true, None)));
        index.apply(watcher::Event::InitDone);
        assert_eq!(
            index.live["ns"].keys().collect::<Vec<_>>(),
            vec![&"b".to_string()]
        );
        index.apply(watcher::Event::Delete(pod("b", Some("n2"), true, None)));
        assert!(index.live.is_empty());
    }
}
