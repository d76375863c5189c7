//! The rules of one reconcile, as examples. A small world stands in for the
//! cluster: it carries out each decision on the cached children (as the API
//! server and the caches would), and the status written becomes the next
//! reconcile's old status.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

use super::*;
use crate::{
    api::{ModuleState, TenantSubscriptionStatus},
    controller::status,
    live::{Facts, Slim},
    render::LABEL_MODULE,
};

const UID: &str = "uid-acme";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn t0() -> Timestamp {
    at("2026-03-02T10:00:00Z")
}

fn catalogue() -> Catalogue {
    let mut c = Catalogue::default();
    c.profiles.insert(
        "video".into(),
        serde_saphyr::from_str(
            r#"
image: video:1
port: 8443
sessionsPerReplica: 40
minReplicas: 1
resources: {requests: {cpu: "1", memory: 1Gi}}
tiers:
  hd: {sessionsPerReplica: 40}
  uhd: {sessionsPerReplica: 15, resources: {requests: {cpu: "2", memory: 2Gi}}}
"#,
        )
        .unwrap(),
    );
    c.profiles.insert(
        "im".into(),
        serde_saphyr::from_str("{image: im:1, sessionsPerReplica: 1000, resources: {requests: {cpu: 500m, memory: 256Mi}}}")
            .unwrap(),
    );
    c.plans.insert(
        "pro".into(),
        serde_saphyr::from_str(
            "{modules: [{name: video, maxConcurrency: 2000, tiers: [hd]}, {name: im, maxConcurrency: 20000}]}",
        )
        .unwrap(),
    );
    c
}

fn subscription(spec: &str) -> TenantSubscription {
    let mut s = TenantSubscription::new("acme", serde_saphyr::from_str(spec).unwrap());
    s.metadata.namespace = Some("tenant-acme".into());
    s.metadata.uid = Some(UID.into());
    s.metadata.generation = Some(1);
    s
}

const BOTH: &str =
    "{tenantId: acme, modules: [{name: video, concurrency: 400}, {name: im, concurrency: 1000}]}";

/// The subscription's namespace, labelled by the provider for `tenant`.
fn assigned_to(tenant: &str) -> Tenancy {
    Tenancy {
        label: TENANT_LABEL.into(),
        tenant: Some(tenant.into()),
        earlier: vec![],
    }
}

const TENANT_LABEL: &str = "capacity.tenancy.dev/tenant";

/// What one decision wrote, in a form a table can state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum W {
    Apply(ChildKind, String),
    MarkDraining(String),
    ClearDraining(String),
    Delete(ChildKind, String),
    DeleteData(String),
    Event(String),
}

fn shape(batches: &[Vec<Write>]) -> Vec<Vec<W>> {
    batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|w| match w {
                    Write::Apply(d) => W::Apply(d.kind, d.name.clone()),
                    Write::MarkDraining { module, .. } => W::MarkDraining(module.clone()),
                    Write::ClearDraining { module, .. } => W::ClearDraining(module.clone()),
                    Write::Delete { kind, object, .. } => {
                        W::Delete(*kind, object.name.clone().unwrap_or_default())
                    }
                    Write::DeleteData { module } => W::DeleteData(module.clone()),
                    Write::Announce(n) => W::Event(n.reason.clone()),
                })
                .collect()
        })
        .collect()
}

fn apply(kind: ChildKind, name: &str) -> W {
    W::Apply(kind, name.into())
}

/// The cluster as the caches see it, and the clock.
struct World {
    sub: TenantSubscription,
    catalogue: Catalogue,
    live: Live,
    now: Timestamp,
    uids: u32,
}

impl World {
    fn new(spec: &str) -> Self {
        Self {
            sub: subscription(spec),
            catalogue: catalogue(),
            live: Live {
                tenancy: assigned_to("acme"),
                ..Live::default()
            },
            now: t0(),
            uids: 0,
        }
    }

    /// A converged world: quota in force, every module's children written and their pods ready.
    fn converged(spec: &str) -> Self {
        let mut w = Self::new(spec);
        w.reconcile();
        w.quota_controller_answers();
        w.reconcile();
        w.pods_ready();
        let d = w.reconcile();
        assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
        assert!(d.outcome.ready, "{:?}", d.outcome.ready_reason);
        w
    }

    fn edit(&mut self, spec: &str) {
        let status = self.sub.status.take();
        self.sub = subscription(spec);
        self.sub.metadata.generation = Some(2);
        self.sub.status = status;
    }

    fn later(&mut self, seconds: i64) {
        self.now += SignedDuration::from_secs(seconds);
    }

    /// Decide, carry out the writes on the cached children, record the status.
    fn reconcile(&mut self) -> Decision {
        let d = decide(&self.sub, &self.catalogue, &self.live, self.now);
        for w in d.batches.iter().flatten() {
            self.carry_out(w);
        }
        let old = self.sub.status.clone().unwrap_or_default();
        self.sub.status = Some(status::build(&self.sub, &old, &d.outcome, self.now));
        d
    }

    fn meta(&mut self, name: &str) -> ObjectMeta {
        self.uids += 1;
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("tenant-acme".into()),
            uid: Some(format!("child-{}", self.uids)),
            creation_timestamp: Some(Time(self.now)),
            owner_references: Some(vec![OwnerReference {
                uid: UID.into(),
                kind: "TenantSubscription".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn carry_out(&mut self, w: &Write) {
        match w {
            Write::Apply(d) => {
                let module = d.body["metadata"]["labels"][LABEL_MODULE]
                    .as_str()
                    .map(String::from);
                let meta = self.meta(&d.name);
                let slot = module.map(|m| self.live.modules.entry(m).or_default());
                match (d.kind, slot) {
                    (ChildKind::Deployment, Some(l)) => {
                        let facts = l
                            .deployment
                            .as_ref()
                            .map(|o| o.facts.clone())
                            .unwrap_or_default();
                        let resources =
                            d.body["spec"]["template"]["spec"]["containers"][0]["resources"]
                                .to_string();
                        let facts = Facts {
                            resources: Some(resources.into()),
                            ..facts
                        };
                        l.deployment = Some(Arc::new(Slim::new(meta, Some(d.digest), facts)));
                    }
                    (ChildKind::Hpa, Some(l)) => {
                        let mut facts = l.hpa.as_ref().map(|o| o.facts.clone()).unwrap_or_default();
                        facts.min_replicas =
                            d.body["spec"]["minReplicas"].as_i64().map(|n| n as i32);
                        facts.max_replicas =
                            d.body["spec"]["maxReplicas"].as_i64().map(|n| n as i32);
                        l.hpa = Some(Arc::new(Slim::new(meta, Some(d.digest), facts)));
                    }
                    (ChildKind::Service, Some(l)) => {
                        l.service =
                            Some(Arc::new(Slim::new(meta, Some(d.digest), Facts::default())));
                    }
                    // A new quota spec is not in force until the quota controller says so.
                    (ChildKind::Quota, None) => {
                        self.live.quota =
                            Some(Arc::new(Slim::new(meta, Some(d.digest), Facts::default())));
                    }
                    (kind, _) => panic!("{kind} {} in the wrong place", d.name),
                }
            }
            Write::MarkDraining { module, since, .. } => self.edit_deployment(module, |f| {
                f.draining_since = Some(since.to_string().into())
            }),
            Write::ClearDraining { module, .. } => {
                self.edit_deployment(module, |f| f.draining_since = None)
            }
            Write::Delete { module, kind, .. } => {
                let l = self.live.modules.get_mut(module).unwrap();
                match kind {
                    ChildKind::Deployment => l.deployment = None,
                    ChildKind::Hpa => l.hpa = None,
                    ChildKind::Service => l.service = None,
                    ChildKind::Quota => panic!("the quota is never deleted"),
                }
            }
            Write::DeleteData { .. } | Write::Announce(_) => {}
        }
    }

    fn edit_deployment(&mut self, module: &str, edit: impl FnOnce(&mut Facts)) {
        let d = self
            .live
            .modules
            .get_mut(module)
            .unwrap()
            .deployment
            .as_mut()
            .unwrap();
        let mut slim = (**d).clone();
        edit(&mut slim.facts);
        *d = Arc::new(slim);
    }

    fn quota_controller_answers(&mut self) {
        let q = self.live.quota.as_mut().expect("a quota");
        let mut slim = (**q).clone();
        slim.facts.quota_enforced = true;
        *q = Arc::new(slim);
    }

    /// Every Deployment runs as many ready pods as its HPA's floor.
    fn pods_ready(&mut self) {
        for l in self.live.modules.values_mut() {
            let floor = l.hpa.as_ref().and_then(|h| h.facts.min_replicas);
            if let Some(d) = l.deployment.as_mut() {
                let mut slim = (**d).clone();
                slim.facts.spec_replicas = floor;
                slim.facts.replicas = floor;
                slim.facts.ready_replicas = floor;
                *d = Arc::new(slim);
            }
        }
    }

    fn status(&self) -> &TenantSubscriptionStatus {
        self.sub.status.as_ref().unwrap()
    }

    fn module(&self, name: &str) -> &ModuleStatus {
        self.status()
            .modules
            .iter()
            .find(|m| m.name == name)
            .unwrap()
    }

    /// A child name taken by an object some other owner made.
    fn stranger(&mut self, kind: ChildKind, name: &str) {
        self.live.taken.insert((kind, name.into()));
    }
}

#[test]
fn a_new_subscription_writes_its_quota_first_and_its_pods_wait_until_the_quota_is_in_force() {
    let mut w = World::new(BOTH);
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![apply(ChildKind::Quota, "acme-capacity")]]
    );
    assert!(!d.outcome.ready);
    assert_eq!(d.outcome.ready_reason.reason, "Progressing");
    assert!(
        d.outcome
            .ready_reason
            .message
            .contains("video: waiting for ResourceQuota acme-capacity to be in force"),
        "{}",
        d.outcome.ready_reason.message
    );
    assert!(
        d.outcome.awaiting_quota,
        "a status about the wait is held back"
    );
    assert_eq!(d.outcome.requeue, Some(w.now + QUOTA_WAIT_RETRY));

    // The quota controller has not answered yet: nothing to write, still waiting.
    w.later(1);
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert!(d.outcome.awaiting_quota);
    // A wait longer than the quota controller's usual answer is reported.
    w.later(QUOTA_ANSWER_SECONDS);
    assert!(!w.reconcile().outcome.awaiting_quota);

    w.quota_controller_answers();
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![
            apply(ChildKind::Deployment, "acme-video"),
            apply(ChildKind::Hpa, "acme-video"),
            apply(ChildKind::Service, "acme-video"),
            apply(ChildKind::Deployment, "acme-im"),
            apply(ChildKind::Hpa, "acme-im"),
        ]],
        "every module's children together, once the quota is in force"
    );
    assert_eq!(d.outcome.ready_reason.reason, "Progressing");
    assert_eq!(w.module("video").state, Some(ModuleState::Active));
    assert_eq!(w.module("video").max_replicas, Some(10));

    w.pods_ready();
    let d = w.reconcile();
    assert!(d.batches.is_empty());
    assert!(d.outcome.ready);
    assert_eq!(d.outcome.ready_reason.reason, "Available");
    assert_eq!(d.outcome.reconciling, None);
}

#[test]
fn a_converged_subscription_writes_nothing() {
    let mut w = World::converged(BOTH);
    for _ in 0..3 {
        w.later(300);
        let d = w.reconcile();
        assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
        assert!(d.outcome.ready);
    }
}

#[test]
fn a_hand_edited_child_is_written_again() {
    let mut w = World::converged(BOTH);
    // Someone else took a field of the HPA: what we applied no longer hashes the same.
    let l = w.live.modules.get_mut("video").unwrap();
    let hpa = l.hpa.as_ref().unwrap();
    l.hpa = Some(Arc::new(Slim::new(
        hpa.metadata.clone(),
        Some(1),
        hpa.facts.clone(),
    )));
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![apply(ChildKind::Hpa, "acme-video")]]
    );
}

#[test]
fn a_new_ceiling_writes_the_autoscaler_and_the_quota_together() {
    // Higher or lower, running pods keep their size: the quota need not go first.
    for (concurrency, ceiling) in [(800, 20), (40, 1)] {
        let mut w = World::converged(BOTH);
        w.edit(&format!(
            "{{tenantId: acme, modules: [{{name: video, concurrency: {concurrency}}}, {{name: im, concurrency: 1000}}]}}"
        ));
        let d = w.reconcile();
        assert_eq!(
            shape(&d.batches),
            [vec![
                apply(ChildKind::Hpa, "acme-video"),
                apply(ChildKind::Quota, "acme-capacity"),
            ]],
            "{concurrency}"
        );
        assert_eq!(w.module("video").max_replicas, Some(ceiling));
        assert!(
            d.outcome.ready,
            "running pods are not held back by the new quota"
        );
    }
}

#[test]
fn pods_that_change_size_wait_for_the_quota_written_before_them() {
    let mut w = World::converged(BOTH);
    w.edit("{tenantId: acme, modules: [{name: video, concurrency: 400, tier: uhd}, {name: im, concurrency: 1000}]}");
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [
            vec![apply(ChildKind::Quota, "acme-capacity")],
            vec![
                apply(ChildKind::Deployment, "acme-video"),
                apply(ChildKind::Hpa, "acme-video"),
            ],
        ]
    );
}

#[test]
fn a_switched_off_module_drains_keeps_its_quota_share_and_is_removed_at_the_deadline() {
    let spec = |enabled: bool, retention: &str| {
        format!(
            "{{tenantId: acme, downgrade: {{drainSeconds: 300, dataRetention: {retention}}}, modules: [{{name: video, concurrency: 400, enabled: {enabled}}}, {{name: im, concurrency: 1000}}]}}"
        )
    };
    for retention in ["Retain", "Delete"] {
        let mut w = World::converged(&spec(true, retention));
        let quota_before = w.live.quota.as_ref().unwrap().applied;
        w.edit(&spec(false, retention));
        let start = w.now;
        let d = w.reconcile();
        assert_eq!(
            shape(&d.batches),
            [
                vec![W::MarkDraining("video".into())],
                vec![W::Event("Draining".into())],
            ],
            "{retention}"
        );
        assert_eq!(
            w.live.quota.as_ref().unwrap().applied,
            quota_before,
            "the quota still covers the draining module"
        );
        assert_eq!(w.module("video").state, Some(ModuleState::Draining));
        assert_eq!(d.outcome.reconciling.as_ref().unwrap().reason, "Draining");
        assert_eq!(d.outcome.ready_reason.reason, "Progressing");
        let deadline = start + SignedDuration::from_secs(300);
        assert_eq!(d.outcome.requeue, Some(deadline));

        // Still draining a moment before the deadline: nothing written.
        w.now = deadline - SignedDuration::from_secs(1);
        let d = w.reconcile();
        assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
        assert_eq!(w.module("video").state, Some(ModuleState::Draining));

        w.now = deadline;
        let d = w.reconcile();
        let mut removal = vec![
            vec![W::Delete(ChildKind::Hpa, "acme-video".into())],
            vec![W::Delete(ChildKind::Service, "acme-video".into())],
            vec![W::Delete(ChildKind::Deployment, "acme-video".into())],
        ];
        if retention == "Delete" {
            removal.push(vec![W::DeleteData("video".into())]);
        }
        removal.push(vec![W::Event("ModuleRemoved".into())]);
        removal.push(vec![apply(ChildKind::Quota, "acme-capacity")]);
        assert_eq!(shape(&d.batches), removal, "{retention}");
        assert!(d.outcome.ready);
        assert!(w.status().modules.iter().all(|m| m.name != "video"));
        assert!(w.reconcile().batches.is_empty(), "removed once");
    }
}

#[test]
fn a_module_removed_from_the_spec_drains_like_a_switched_off_one() {
    let mut w = World::converged(BOTH);
    w.edit("{tenantId: acme, modules: [{name: im, concurrency: 1000}]}");
    let d = w.reconcile();
    assert_eq!(shape(&d.batches)[0], [W::MarkDraining("video".into())]);
    assert_eq!(w.module("video").state, Some(ModuleState::Draining));
}

#[test]
fn a_module_switched_on_again_while_draining_is_kept() {
    let mut w = World::converged(BOTH);
    w.edit("{tenantId: acme, modules: [{name: video, concurrency: 400, enabled: false}, {name: im, concurrency: 1000}]}");
    w.reconcile();
    w.later(60);
    w.edit(BOTH);
    let d = w.reconcile();
    assert_eq!(shape(&d.batches), [vec![W::ClearDraining("video".into())]]);
    assert_eq!(w.module("video").state, Some(ModuleState::Active));
    assert!(d.outcome.ready);
    assert!(w.reconcile().batches.is_empty());
}

#[test]
fn a_switched_off_module_without_a_deployment_is_removed_at_once() {
    let mut w = World::converged(BOTH);
    w.live.modules.get_mut("video").unwrap().deployment = None;
    w.edit("{tenantId: acme, modules: [{name: video, concurrency: 400, enabled: false}, {name: im, concurrency: 1000}]}");
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches)[..3],
        [
            vec![W::Delete(ChildKind::Hpa, "acme-video".into())],
            vec![W::Delete(ChildKind::Service, "acme-video".into())],
            vec![W::Event("ModuleRemoved".into())],
        ]
    );
}

#[test]
fn a_name_taken_by_a_stranger_is_a_conflict_and_that_module_is_not_written() {
    let mut w = World::new(BOTH);
    w.stranger(ChildKind::Service, "acme-video");
    w.reconcile();
    w.quota_controller_answers();
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![
            apply(ChildKind::Deployment, "acme-im"),
            apply(ChildKind::Hpa, "acme-im"),
        ]],
        "the other module is applied; none of the conflicting one"
    );
    assert!(!d.outcome.ready);
    assert_eq!(d.outcome.ready_reason.reason, "ObjectConflict");
    let message = "video: Service acme-video exists and is not owned by this subscription";
    assert_eq!(d.outcome.ready_reason.message, message);
    assert_eq!(d.outcome.stalled.as_ref().unwrap().message, message);
    assert_eq!(w.module("video").state, Some(ModuleState::Invalid));
    assert_eq!(w.module("video").message.as_deref(), Some(message));
}

#[test]
fn a_quota_name_taken_by_a_stranger_keeps_new_modules_waiting() {
    let mut w = World::new(BOTH);
    w.stranger(ChildKind::Quota, "acme-capacity");
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(d.outcome.ready_reason.reason, "ObjectConflict");
    assert_eq!(
        d.outcome.stalled.unwrap().message,
        "ResourceQuota acme-capacity exists and is not owned by this subscription"
    );
    assert_eq!(
        d.outcome.reconciling.unwrap().reason,
        "Progressing",
        "modules still wait for a quota in force"
    );
}

#[test]
fn pause_writes_nothing_and_keeps_what_status_said() {
    let mut w = World::converged(BOTH);
    let before = w.status().clone();
    w.edit("{tenantId: acme, paused: true, modules: [{name: video, concurrency: 2000}, {name: im, concurrency: 1000, enabled: false}]}");
    // Pods come and go while paused: status follows the counts, not the spec.
    let l = w.live.modules.get_mut("video").unwrap();
    let dep = l.deployment.as_ref().unwrap();
    let mut facts = dep.facts.clone();
    facts.ready_replicas = Some(0);
    l.deployment = Some(Arc::new(Slim::new(
        dep.metadata.clone(),
        dep.applied,
        facts,
    )));
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert!(!d.outcome.ready);
    assert_eq!(d.outcome.ready_reason.reason, "Paused");
    assert_eq!(d.outcome.stalled, None);
    assert_eq!(
        w.module("video").max_replicas,
        Some(10),
        "the old ceiling, not the paused spec's"
    );
    assert_eq!(w.module("video").ready_replicas, Some(0));
    assert_eq!(w.module("im").state, Some(ModuleState::Active));
    assert_eq!(w.status().active_windows, before.active_windows);
}

#[test]
fn a_spec_that_cannot_be_applied_writes_nothing_and_names_the_module() {
    let mut w = World::converged(BOTH);
    let im_before = w.module("im").clone();
    w.edit("{tenantId: acme, modules: [{name: video, concurrency: 4000, tier: sd}, {name: im, concurrency: 1000}]}");
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert!(!d.outcome.ready);
    assert_eq!(d.outcome.ready_reason.reason, "TierNotFound");
    assert_eq!(
        d.outcome.ready_reason.message,
        "not applied, existing objects left as they are: video: tier \"sd\" not offered (available: hd, uhd)"
    );
    assert_eq!(d.outcome.stalled.as_ref().unwrap().reason, "TierNotFound");
    assert_eq!(w.module("video").state, Some(ModuleState::Invalid));
    assert_eq!(
        *w.module("im"),
        im_before,
        "a module without errors is reported as it was"
    );
    assert_eq!(d.outcome.requeue, None, "waiting does not mend a bad tier");
}

#[test]
fn a_missing_profile_is_looked_for_again_soon() {
    let mut w = World::new("{tenantId: acme, modules: [{name: chat, concurrency: 10}]}");
    let d = w.reconcile();
    assert!(d.batches.is_empty());
    assert_eq!(d.outcome.ready_reason.reason, "ProfileNotFound");
    assert_eq!(d.outcome.requeue, Some(w.now + MISSING_REFERENCE_RETRY));
    w.catalogue
        .profiles
        .insert("chat".into(), w.catalogue.profiles["im"].clone());
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![apply(ChildKind::Quota, "acme-capacity")]]
    );
}

#[test]
fn more_than_the_plan_sells_is_refused_and_running_children_stay() {
    let cases = [
        (
            "{tenantId: acme, plan: pro, modules: [{name: video, concurrency: 2001}, {name: im, concurrency: 1000}]}",
            "ExceedsPlan",
            "video: exceeds plan \"pro\": concurrency 2001 is over the plan's maxConcurrency 2000",
        ),
        (
            "{tenantId: acme, plan: pro, modules: [{name: video, concurrency: 400, tier: uhd}, {name: im, concurrency: 1000}]}",
            "ExceedsPlan",
            "video: exceeds plan \"pro\": tier \"uhd\" is not in the plan's tiers [hd]",
        ),
        (
            "{tenantId: acme, plan: basic, modules: [{name: video, concurrency: 400}, {name: im, concurrency: 1000}]}",
            "PlanNotFound",
            "spec.plan: SubscriptionPlan \"basic\" not found",
        ),
    ];
    for (spec, reason, message) in cases {
        let mut w = World::converged(
            "{tenantId: acme, plan: pro, modules: [{name: video, concurrency: 400}, {name: im, concurrency: 1000}]}",
        );
        let before = w.module("video").clone();
        w.edit(spec);
        let d = w.reconcile();
        assert!(d.batches.is_empty(), "{spec}: {:?}", shape(&d.batches));
        assert_eq!(d.outcome.ready_reason.reason, reason, "{spec}");
        assert!(
            d.outcome
                .stalled
                .as_ref()
                .unwrap()
                .message
                .contains(message),
            "{spec}: {:?}",
            d.outcome.stalled
        );
        if reason == "PlanNotFound" {
            assert_eq!(*w.module("video"), before, "no module is at fault");
        } else {
            assert_eq!(w.module("video").state, Some(ModuleState::Invalid));
        }
    }
    let mut w = World::new(
        "{tenantId: acme, plan: pro, modules: [{name: video, concurrency: 400}, {name: chat, concurrency: 1}]}",
    );
    w.catalogue
        .profiles
        .insert("chat".into(), w.catalogue.profiles["im"].clone());
    let d = w.reconcile();
    assert!(d.batches.is_empty());
    assert_eq!(d.outcome.ready_reason.reason, "ModuleNotInPlan");
}

#[test]
fn an_autoscaler_held_at_its_ceiling_is_capacity_limited() {
    let mut w = World::converged(BOTH);
    let l = w.live.modules.get_mut("video").unwrap();
    let hpa = l.hpa.as_ref().unwrap();
    let mut facts = hpa.facts.clone();
    facts.unbounded_want = Some(14);
    l.hpa = Some(Arc::new(Slim::new(
        hpa.metadata.clone(),
        hpa.applied,
        facts,
    )));
    let d = w.reconcile();
    assert!(d.batches.is_empty());
    assert_eq!(
        d.outcome.limited,
        ["video: HPA wants 14 replicas, ceiling is 10"]
    );
    assert!(d.outcome.ready, "limited is not unavailable");
}

#[test]
fn a_window_edge_brings_the_next_reconcile() {
    let mut w = World::converged(
        "{tenantId: acme, seasons: {timeZone: UTC, windows: [{name: evening, start: '18:00', end: '22:00', floorPercent: 50}]}, modules: [{name: video, concurrency: 400}]}",
    );
    let d = w.reconcile();
    assert_eq!(d.outcome.requeue, Some(at("2026-03-02T18:00:00.5Z")));
    w.now = at("2026-03-02T18:00:01Z");
    let d = w.reconcile();
    assert_eq!(d.outcome.active_windows, ["evening"]);
    assert_eq!(
        shape(&d.batches),
        [vec![apply(ChildKind::Hpa, "acme-video")]]
    );
    assert_eq!(w.module("video").min_replicas, Some(5));
}

#[test]
fn children_carry_the_subscription_as_owner() {
    let mut w = World::new(BOTH);
    let d = w.reconcile();
    let Write::Apply(q) = &d.batches[0][0] else {
        panic!("the quota first")
    };
    let owner = &q.body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], UID);
    assert_eq!(owner["kind"], "TenantSubscription");
    assert_eq!(owner["controller"], true);
    assert_eq!(
        q.body["metadata"]["labels"][crate::render::LABEL_SUBSCRIPTION],
        "acme"
    );
}

#[test]
fn a_subscription_acts_only_in_a_namespace_assigned_to_its_tenant_and_only_the_first() {
    let unassigned = Tenancy {
        label: TENANT_LABEL.into(),
        ..Default::default()
    };
    let duplicate = Tenancy {
        earlier: vec!["first".into(), "second".into()],
        ..assigned_to("acme")
    };
    // `modules: []` too: in a namespace not its own it must not write a
    // quota of `pods: 0`.
    for spec in [BOTH, "{tenantId: acme, modules: []}"] {
        for (tenancy, reason, says) in [
            (
                unassigned.clone(),
                "NamespaceNotAssigned",
                "namespace tenant-acme is not assigned to a tenant (it has no label capacity.tenancy.dev/tenant)",
            ),
            (
                assigned_to("globex"),
                "TenantMismatch",
                "spec.tenantId is \"acme\" but namespace tenant-acme is assigned to tenant \"globex\" (label capacity.tenancy.dev/tenant=globex)",
            ),
            (
                duplicate.clone(),
                "DuplicateSubscription",
                "namespace tenant-acme already has subscription first for tenant acme",
            ),
        ] {
            let mut w = World::new(spec);
            w.live.tenancy = tenancy;
            let d = w.reconcile();
            assert!(d.batches.is_empty(), "{reason}: {:?}", shape(&d.batches));
            assert!(!d.outcome.ready);
            assert_eq!(d.outcome.ready_reason.reason, reason);
            assert!(
                d.outcome.ready_reason.message.contains(says),
                "{}",
                d.outcome.ready_reason.message
            );
            assert!(
                d.outcome
                    .ready_reason
                    .message
                    .contains("nothing is written")
            );
            assert_eq!(
                d.outcome.stalled.as_ref().map(|r| r.reason.as_str()),
                Some(reason)
            );
            assert_eq!(
                d.outcome.requeue, None,
                "the namespace's watch brings it back"
            );
        }
    }
}

#[test]
fn the_first_subscription_of_the_namespace_acts() {
    let mut w = World::new("{tenantId: acme, modules: []}");
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![apply(ChildKind::Quota, "acme-capacity")]]
    );
}

#[test]
fn a_namespace_taken_from_the_tenant_keeps_what_runs_and_writes_nothing() {
    let mut w = World::converged(BOTH);
    let before = w.status().modules.clone();
    w.live.tenancy.tenant = None;
    // Even a module switched off is not drained or removed.
    w.edit("{tenantId: acme, modules: [{name: im, concurrency: 1000}]}");
    w.later(3600);
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(d.outcome.ready_reason.reason, "NamespaceNotAssigned");
    assert_eq!(w.status().modules, before, "status keeps what it said");
    assert!(w.live.module("video").deployment.is_some());

    // Assigned again, it carries on where it was.
    w.live.tenancy = assigned_to("acme");
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches)[0],
        [W::MarkDraining("video".into())],
        "{:?}",
        shape(&d.batches)
    );
}

#[test]
fn children_are_labelled_with_the_namespace_tenant() {
    let mut w = World::new(BOTH);
    let d = w.reconcile();
    let Write::Apply(q) = &d.batches[0][0] else {
        panic!("{:?}", shape(&d.batches))
    };
    assert_eq!(
        q.body["metadata"]["labels"][crate::render::LABEL_TENANT],
        "acme"
    );
}
