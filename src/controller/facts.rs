//! What a reconcile knows before it decides: the catalogue objects a
//! subscription names and its children as the caches hold them. Gathered
//! from memory, never from the API server.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{LimitRange, Namespace, Node, ResourceQuota, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
};

use super::placement::{self, Placement, Pods};
use crate::{
    api::TenantSubscription,
    capacity::{self, child_name},
    live::Slim,
    render::{ChildKind, limit_range_name, quota_name},
};

/// The live children of one module, as far as this subscription owns them.
#[derive(Debug, Clone, Default)]
pub struct LiveModule {
    pub deployment: Option<Arc<Slim<Deployment>>>,
    pub hpa: Option<Arc<Slim<HorizontalPodAutoscaler>>>,
    pub service: Option<Arc<Slim<Service>>>,
    /// Where its pods run, and why one cannot (status only).
    pub placement: Placement,
}

impl LiveModule {
    pub fn is_empty(&self) -> bool {
        self.deployment.is_none() && self.hpa.is_none() && self.service.is_none()
    }

    /// The digest of what we applied to the child of `kind`, if it is cached
    /// and we own fields in it; and whether it is cached at all.
    pub fn applied(&self, kind: ChildKind) -> (bool, Option<u64>) {
        fn of<K>(o: &Option<Arc<Slim<K>>>) -> (bool, Option<u64>) {
            (o.is_some(), o.as_ref().and_then(|o| o.applied))
        }
        match kind {
            ChildKind::Deployment => of(&self.deployment),
            ChildKind::Hpa => of(&self.hpa),
            ChildKind::Service => of(&self.service),
            ChildKind::Quota | ChildKind::LimitRange => (false, None),
        }
    }

    pub fn replicas(&self) -> (Option<i32>, Option<i32>) {
        let f = self.deployment.as_ref().map(|d| &d.facts);
        (f.and_then(|f| f.replicas), f.and_then(|f| f.ready_replicas))
    }

    /// Ready pods by zone.
    pub fn ready_by_zone(&self) -> BTreeMap<String, i32> {
        self.placement.ready_by_zone.clone()
    }

    pub fn hpa_desired(&self) -> Option<i32> {
        self.hpa.as_ref().and_then(|h| h.facts.desired_replicas)
    }
}

/// Everything the caches hold of one subscription's children.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Children this subscription owns, by module: every module of its spec
    /// and of its last status (a module removed from the spec may still
    /// have children to drain).
    pub modules: BTreeMap<String, LiveModule>,
    /// The subscription's ResourceQuota, when it owns it.
    pub quota: Option<Arc<Slim<ResourceQuota>>>,
    /// The subscription's LimitRange, when it owns it.
    pub limit_range: Option<Arc<Slim<LimitRange>>>,
    /// Names of its children that objects it does not own already hold.
    pub taken: BTreeSet<(ChildKind, String)>,
    /// Whom the provider assigned the namespace to, and who else subscribes there.
    pub tenancy: Tenancy,
}

/// The namespace's assignment to a tenant, as the provider labelled it, and
/// the subscriptions there that come before this one. The default is a
/// namespace assigned to nobody: nothing may be written in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// The namespace label that assigns it to a tenant (`--tenant-namespace-label`).
    pub label: String,
    /// That label's value on the subscription's namespace, when it is set.
    pub tenant: Option<String>,
    /// The other subscriptions in the namespace that were created earlier
    /// (or at the same second with a name sorting first): the first of them
    /// is the one that acts.
    pub earlier: Vec<String>,
}

impl Live {
    /// The module's children (none when the module is unknown).
    pub fn module(&self, name: &str) -> LiveModule {
        self.modules.get(name).cloned().unwrap_or_default()
    }

    pub fn is_taken(&self, kind: ChildKind, name: &str) -> bool {
        self.taken.contains(&(kind, name.to_string()))
    }
}

/// Whether an object's owner references name this owner uid.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// The caches a reconcile reads.
pub struct Caches {
    pub profiles: Store<crate::api::ModuleProfile>,
    pub plans: Store<crate::api::SubscriptionPlan>,
    pub calendars: Store<crate::api::CapacityCalendar>,
    pub deployments: Store<Slim<Deployment>>,
    pub hpas: Store<Slim<HorizontalPodAutoscaler>>,
    pub services: Store<Slim<Service>>,
    pub quotas: Store<Slim<ResourceQuota>>,
    pub limit_ranges: Store<Slim<LimitRange>>,
    /// Namespaces, metadata only: their tenant label.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The modules' pods, by namespace.
    pub pods: Pods,
    /// Nodes, metadata only: their zone label.
    pub nodes: Store<PartialObjectMeta<Node>>,
    pub subscriptions: Store<TenantSubscription>,
    /// The namespace label that assigns a namespace to a tenant.
    pub tenant_label: String,
}

impl Caches {
    /// The profiles, plan and calendars a subscription names, and the
    /// profiles of modules its status still reports (a module removed from
    /// the spec drains from its profile too).
    pub fn catalogue_for(&self, sub: &TenantSubscription) -> capacity::Catalogue {
        let mut c = capacity::Catalogue::default();
        let reported = sub.status.iter().flat_map(|s| &s.modules).map(|m| &m.name);
        for name in sub.spec.modules.iter().map(|m| &m.name).chain(reported) {
            if let Some(p) = self.profiles.get(&ObjectRef::new(name)) {
                c.profiles.insert(name.clone(), p.spec.clone());
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

    /// The children of every module the subscription has or had, and the
    /// names someone else's objects hold.
    pub fn live(&self, sub: &TenantSubscription) -> Live {
        let ns = sub.namespace().unwrap_or_default();
        let name = sub.name_any();
        let uid = sub.meta().uid.as_deref().unwrap_or_default();
        let mut live = Live::default();
        let mut known: BTreeSet<&str> = sub.spec.modules.iter().map(|m| m.name.as_str()).collect();
        known.extend(
            sub.status
                .iter()
                .flat_map(|s| &s.modules)
                .map(|m| m.name.as_str()),
        );
        for module in known {
            let child = child_name(&name, module);
            let mut l = LiveModule::default();
            for (kind, taken) in [
                (
                    ChildKind::Deployment,
                    pick(&self.deployments, &ns, &child, uid, &mut l.deployment),
                ),
                (
                    ChildKind::Hpa,
                    pick(&self.hpas, &ns, &child, uid, &mut l.hpa),
                ),
                (
                    ChildKind::Service,
                    pick(&self.services, &ns, &child, uid, &mut l.service),
                ),
            ] {
                if taken {
                    live.taken.insert((kind, child.clone()));
                }
            }
            let pods = self.pods.of(&ns, &name, module);
            l.placement = Placement::of(&pods, |node| placement::zone_of(&self.nodes, node));
            live.modules.insert(module.to_string(), l);
        }
        let quota = quota_name(&name);
        if pick(&self.quotas, &ns, &quota, uid, &mut live.quota) {
            live.taken.insert((ChildKind::Quota, quota));
        }
        let limits = limit_range_name(&name);
        if pick(&self.limit_ranges, &ns, &limits, uid, &mut live.limit_range) {
            live.taken.insert((ChildKind::LimitRange, limits));
        }
        live.tenancy = self.tenancy(sub);
        live
    }

    /// The tenant the provider assigned `namespace` to, if any.
    pub fn tenant_of(&self, namespace: &str) -> Option<String> {
        tenant_label(&self.namespaces, &self.tenant_label, namespace)
    }

    /// The subscription's namespace assignment and its earlier neighbours.
    pub fn tenancy(&self, sub: &TenantSubscription) -> Tenancy {
        let ns = sub.namespace().unwrap_or_default();
        let mine = seniority(sub);
        let mut earlier: Vec<_> = self
            .subscriptions
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(ns.as_str()) && s.name_any() != mine.2)
            .map(|s| seniority(s))
            .filter(|r| *r < mine)
            .collect();
        earlier.sort();
        Tenancy {
            label: self.tenant_label.clone(),
            tenant: self.tenant_of(&ns),
            earlier: earlier.into_iter().map(|r| r.2).collect(),
        }
    }
}

/// Where a subscription stands among those of its namespace: the oldest
/// first, at the same second the name sorting first; one not yet stored
/// (no creation time) after every stored one.
pub fn seniority(s: &TenantSubscription) -> (bool, Option<jiff::Timestamp>, String) {
    let created = s.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (created.is_none(), created, s.name_any())
}

/// The value of `label` on the cached namespace `name`.
pub fn tenant_label(
    namespaces: &Store<PartialObjectMeta<Namespace>>,
    label: &str,
    name: &str,
) -> Option<String> {
    namespaces
        .get(&ObjectRef::new(name))
        .and_then(|n| n.labels().get(label).cloned())
        .filter(|t| !t.is_empty())
}

/// Put the cached object `ns/name` into `slot` when `uid` owns it; true when
/// it exists and `uid` does not own it (its name is taken).
fn pick<K: Resource<DynamicType = ()>>(
    store: &Store<Slim<K>>,
    ns: &str,
    name: &str,
    uid: &str,
    slot: &mut Option<Arc<Slim<K>>>,
) -> bool {
    match store.get(&ObjectRef::new(name).within(ns)) {
        Some(o) if owned_by(&o.metadata, uid) => {
            *slot = Some(o);
            false
        }
        Some(_) => true,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn store<K>(objects: Vec<K>) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let (store, mut writer) = reflector::store::<K>();
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(o));
        }
        store
    }

    fn sub(ns: &str, name: &str, created: Option<&str>) -> TenantSubscription {
        let mut s = TenantSubscription::new(
            name,
            serde_json::from_value(serde_json::json!({"tenantId": "acme", "modules": []})).unwrap(),
        );
        s.metadata.namespace = Some(ns.into());
        s.metadata.creation_timestamp = created.map(|t| Time(t.parse().unwrap()));
        s
    }

    fn caches(
        namespaces: Vec<PartialObjectMeta<Namespace>>,
        subs: Vec<TenantSubscription>,
    ) -> Caches {
        Caches {
            profiles: store(vec![]),
            plans: store(vec![]),
            calendars: store(vec![]),
            deployments: store(vec![]),
            hpas: store(vec![]),
            services: store(vec![]),
            quotas: store(vec![]),
            limit_ranges: store(vec![]),
            pods: Pods::index(futures::stream::empty()).0,
            nodes: store(vec![]),
            namespaces: store(namespaces),
            subscriptions: store(subs),
            tenant_label: "capacity.tenancy.dev/tenant".into(),
        }
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
        }))
        .unwrap()
    }

    #[test]
    fn the_tenant_is_the_namespace_label_and_the_oldest_subscription_acts() {
        let t = |s| Some(s);
        let subs = vec![
            sub("a", "late", t("2026-03-02T10:00:05Z")),
            sub("a", "zeta", t("2026-03-02T10:00:00Z")),
            sub("a", "alpha", t("2026-03-02T10:00:00Z")),
            sub("b", "elsewhere", t("2026-03-01T00:00:00Z")),
        ];
        let c = caches(
            vec![
                namespace("a", &[("capacity.tenancy.dev/tenant", "acme")]),
                namespace("b", &[("other", "x")]),
            ],
            subs.clone(),
        );
        let tenancy = |s: &TenantSubscription| c.tenancy(s);
        // The oldest; at the same second, the name sorting first.
        assert_eq!(tenancy(&subs[2]).earlier, Vec::<String>::new());
        assert_eq!(tenancy(&subs[1]).earlier, ["alpha"]);
        assert_eq!(tenancy(&subs[0]).earlier, ["alpha", "zeta"]);
        assert_eq!(tenancy(&subs[0]).tenant.as_deref(), Some("acme"));
        // Another namespace's subscriptions do not count; no label, no tenant.
        assert_eq!(
            tenancy(&subs[3]),
            Tenancy {
                label: "capacity.tenancy.dev/tenant".into(),
                tenant: None,
                earlier: vec![],
            }
        );
        // One not stored yet comes after every stored one.
        assert_eq!(
            tenancy(&sub("a", "aaa", None)).earlier,
            ["alpha", "zeta", "late"]
        );
        // An unknown namespace is assigned to nobody.
        assert_eq!(c.tenant_of("gone"), None);
    }
}
