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
        core::v1::{LimitRange, ResourceQuota, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

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
        live
    }
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
