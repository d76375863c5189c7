//! The rules of one reconcile, as examples. A small world stands in for the
//! cluster: it carries out each decision on the cached children (as the API
//! server and the caches would), and the status written becomes the next
//! reconcile's old status.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

use super::*;
use crate::controller::drain;
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
    /// PersistentVolumeClaims of each module that are its data.
    data: BTreeMap<String, usize>,
    /// The API server refuses to delete data, with this message.
    data_refused: Option<String>,
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
            data: BTreeMap::new(),
            data_refused: None,
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
        let mut d = decide(&self.sub, &self.catalogue, &self.live, self.now);
        let mut left = Vec::new();
        for w in d.batches.iter().flatten() {
            left.extend(self.carry_out(w));
        }
        settle_data(&mut d.outcome, &left, self.now);
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

    fn carry_out(&mut self, w: &Write) -> Option<DataLeft> {
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
                        let hard = d.body["spec"]["hard"]
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    capacity::Quantity::parse(v.as_str().unwrap()).unwrap(),
                                )
                            })
                            .collect();
                        let facts = Facts {
                            hard: Some(Box::new(hard)),
                            held_until: d.body["metadata"]["annotations"]
                                [crate::render::ANNOTATION_HELD_UNTIL]
                                .as_str()
                                .map(Into::into),
                            ..Default::default()
                        };
                        self.live.quota = Some(Arc::new(Slim::new(meta, Some(d.digest), facts)));
                    }
                    (ChildKind::LimitRange, None) => {
                        self.live.limit_range =
                            Some(Arc::new(Slim::new(meta, Some(d.digest), Facts::default())));
                    }
                    (kind, _) => panic!("{kind} {} in the wrong place", d.name),
                }
            }
            Write::Delete { module, kind, .. } => {
                let l = self.live.modules.get_mut(module).unwrap();
                match kind {
                    ChildKind::Deployment => l.deployment = None,
                    ChildKind::Hpa => l.hpa = None,
                    ChildKind::Service => l.service = None,
                    ChildKind::Quota | ChildKind::LimitRange => {
                        panic!("the quota and the LimitRange are never deleted")
                    }
                }
            }
            Write::DeleteData { module } => {
                let n = self.data.entry(module.clone()).or_default();
                if self.data_refused.is_none() {
                    *n = 0;
                }
                return Some(DataLeft {
                    module: module.clone(),
                    left: Some(*n),
                    error: self.data_refused.clone(),
                });
            }
            Write::Announce(_) => {}
        }
        None
    }

    /// The namespace admin edits a module's Deployment: the fields we
    /// applied no longer hash the same.
    fn tenant_edits_deployment(&mut self, module: &str, edit: impl FnOnce(&mut Facts)) {
        let l = self.live.modules.get_mut(module).unwrap();
        let d = l.deployment.as_ref().unwrap();
        let mut facts = d.facts.clone();
        edit(&mut facts);
        l.deployment = Some(Arc::new(Slim::new(d.metadata.clone(), Some(1), facts)));
    }

    /// The namespace admin edits a module's HPA.
    fn tenant_edits_hpa(&mut self, module: &str, edit: impl FnOnce(&mut Facts)) {
        let l = self.live.modules.get_mut(module).unwrap();
        let h = l.hpa.as_ref().unwrap();
        let mut facts = h.facts.clone();
        edit(&mut facts);
        l.hpa = Some(Arc::new(Slim::new(h.metadata.clone(), Some(2), facts)));
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
        [vec![
            apply(ChildKind::Quota, "acme-capacity"),
            apply(ChildKind::LimitRange, "acme-defaults"),
        ]],
        "the quota and the defaults it relies on, before any pod"
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
            [vec![W::Event("Draining".into())]],
            "{retention}: nothing but the record in status"
        );
        assert_eq!(
            w.module("video").draining_since.as_deref(),
            Some("2026-03-02T10:00:00+00:00")
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
    assert_eq!(shape(&d.batches), [vec![W::Event("Draining".into())]]);
    assert_eq!(w.module("video").state, Some(ModuleState::Draining));
    assert_eq!(w.module("video").max_replicas, Some(10), "recorded");
}

#[test]
fn a_module_switched_on_again_while_draining_is_kept() {
    let mut w = World::converged(BOTH);
    w.edit("{tenantId: acme, modules: [{name: video, concurrency: 400, enabled: false}, {name: im, concurrency: 1000}]}");
    w.reconcile();
    w.later(60);
    w.edit(BOTH);
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(w.module("video").state, Some(ModuleState::Active));
    assert_eq!(
        w.module("video").draining_since,
        None,
        "the record is dropped"
    );
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
fn pause_holds_every_rise_and_lets_reductions_through() {
    let mut w = World::converged(BOTH);
    let before = w.status().clone();
    // A larger concurrency waits; a module switched off drains as usual.
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
    assert_eq!(
        shape(&d.batches),
        [vec![W::Event("Draining".into())]],
        "video's rise is held back; im's switch-off is a reduction"
    );
    // Ready (what a paused subscription asks holds), and reconciling while
    // im drains: health checks read it as in progress until the drain ends.
    assert!(d.outcome.ready);
    assert_eq!(d.outcome.ready_reason.reason, "Paused");
    assert_eq!(
        d.outcome.reconciling.as_ref().map(|r| r.reason.as_str()),
        Some("Draining")
    );
    assert_eq!(d.outcome.stalled, None);
    assert_eq!(
        w.module("video").max_replicas,
        Some(10),
        "the old ceiling, not the paused spec's"
    );
    assert_eq!(w.module("video").ready_replicas, Some(0));
    assert_eq!(w.module("im").state, Some(ModuleState::Draining));
    assert_eq!(w.status().active_windows, before.active_windows);

    // A lower concurrency while paused lowers the ceiling and the quota.
    w.edit("{tenantId: acme, paused: true, modules: [{name: video, concurrency: 200}, {name: im, concurrency: 1000, enabled: false}]}");
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![
            apply(ChildKind::Hpa, "acme-video"),
            apply(ChildKind::Quota, "acme-capacity")
        ]]
    );
    assert_eq!(w.module("video").max_replicas, Some(5));
    // And raising it again, still paused, changes nothing.
    w.edit("{tenantId: acme, paused: true, modules: [{name: video, concurrency: 400}, {name: im, concurrency: 1000, enabled: false}]}");
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(w.module("video").max_replicas, Some(5));
    // Unpaused, the rise goes through.
    w.edit("{tenantId: acme, modules: [{name: video, concurrency: 400}, {name: im, concurrency: 1000, enabled: false}]}");
    let d = w.reconcile();
    assert!(
        shape(&d.batches)
            .concat()
            .contains(&apply(ChildKind::Hpa, "acme-video")),
        "{:?}",
        shape(&d.batches)
    );
    assert_eq!(w.module("video").max_replicas, Some(10));
}

#[test]
fn a_window_ending_while_paused_still_lowers_the_ceiling() {
    let spec = |paused: bool| {
        format!(
            "{{tenantId: acme, paused: {paused}, modules: [{{name: video, concurrency: 400}}], seasons: {{timeZone: UTC, windows: [{{name: promo, from: '2026-03-01', to: '2026-03-02', concurrencyPercent: 200, floorPercent: 50}}]}}}}"
        )
    };
    let mut w = World::converged(&spec(false));
    assert_eq!(
        (
            w.module("video").min_replicas,
            w.module("video").max_replicas
        ),
        (Some(10), Some(20))
    );
    w.edit(&spec(true));
    assert!(w.reconcile().batches.is_empty());
    w.later(24 * 3600);
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![
            apply(ChildKind::Hpa, "acme-video"),
            apply(ChildKind::Quota, "acme-capacity")
        ]]
    );
    assert_eq!(
        (
            w.module("video").min_replicas,
            w.module("video").max_replicas
        ),
        (Some(1), Some(10))
    );
    assert_eq!(d.outcome.ready_reason.reason, "Paused");
}

#[test]
fn a_paused_subscription_restores_a_hand_raised_ceiling() {
    let mut w = World::converged(BOTH);
    w.edit("{tenantId: acme, paused: true, modules: [{name: video, concurrency: 400}, {name: im, concurrency: 1000}]}");
    assert!(w.reconcile().batches.is_empty());
    // Someone in the namespace raises the autoscaler's ceiling by hand.
    let l = w.live.modules.get_mut("video").unwrap();
    let hpa = l.hpa.as_ref().unwrap();
    let mut facts = hpa.facts.clone();
    facts.max_replicas = Some(50);
    l.hpa = Some(Arc::new(Slim::new(hpa.metadata.clone(), Some(1), facts)));
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![apply(ChildKind::Hpa, "acme-video")]]
    );
    assert_eq!(
        w.live.module("video").hpa.unwrap().facts.max_replicas,
        Some(10)
    );
}

#[test]
fn a_subscription_paused_before_it_ran_writes_nothing() {
    let mut w =
        World::new("{tenantId: acme, paused: true, modules: [{name: video, concurrency: 400}]}");
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(d.outcome.ready_reason.reason, "Paused");
    assert!(
        d.outcome.ready,
        "nothing is asked of it but to stay as it is"
    );
    assert_eq!(d.outcome.reconciling, None);
}

#[test]
fn a_lower_plan_lowers_ceilings_of_a_subscription_now_over_it() {
    let mut w = World::converged(
        "{tenantId: acme, plan: pro, modules: [{name: video, concurrency: 2000}, {name: im, concurrency: 1000}]}",
    );
    assert_eq!(w.module("video").max_replicas, Some(50));
    // The provider lowers the plan below what the subscription asks for.
    w.catalogue.plans.insert(
        "pro".into(),
        serde_saphyr::from_str(
            "{modules: [{name: video, maxConcurrency: 400, tiers: [hd]}, {name: im, maxConcurrency: 20000}]}",
        )
        .unwrap(),
    );
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![
            apply(ChildKind::Hpa, "acme-video"),
            apply(ChildKind::Quota, "acme-capacity")
        ]]
    );
    assert_eq!(d.outcome.ready_reason.reason, "ExceedsPlan");
    assert_eq!(w.module("video").state, Some(ModuleState::Invalid));
    assert_eq!(w.module("video").max_replicas, Some(10));
    assert!(
        w.module("video")
            .message
            .as_deref()
            .unwrap()
            .contains("maxConcurrency 400"),
        "{:?}",
        w.module("video").message
    );
    // Paused as well: the lower plan still binds.
    w.catalogue.plans.insert(
        "pro".into(),
        serde_saphyr::from_str(
            "{modules: [{name: video, maxConcurrency: 200, tiers: [hd]}, {name: im, maxConcurrency: 20000}]}",
        )
        .unwrap(),
    );
    w.edit("{tenantId: acme, plan: pro, paused: true, modules: [{name: video, concurrency: 2000}, {name: im, concurrency: 1000}]}");
    w.reconcile();
    assert_eq!(w.module("video").max_replicas, Some(5));
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
        "not applied, nothing raised (lower ceilings still apply): video: tier \"sd\" not offered (available: hd, uhd)"
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
        [vec![
            apply(ChildKind::Quota, "acme-capacity"),
            apply(ChildKind::LimitRange, "acme-defaults"),
        ]]
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
fn without_a_plan_nothing_is_written_when_plans_are_required() {
    // A new subscription without a plan: nothing at all.
    let mut w = World::new(BOTH);
    w.catalogue.require_plan = true;
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert!(!d.outcome.ready);
    assert_eq!(d.outcome.ready_reason.reason, "PlanRequired");
    assert!(
        d.outcome
            .ready_reason
            .message
            .contains("spec.plan: required"),
        "{:?}",
        d.outcome.ready_reason
    );
    assert_eq!(d.outcome.requeue, None, "waiting does not add a plan");
    // A running subscription whose plan is dropped keeps what it had.
    let mut w = World::converged(
        "{tenantId: acme, plan: pro, modules: [{name: video, concurrency: 400}, {name: im, concurrency: 1000}]}",
    );
    w.catalogue.require_plan = true;
    let before = w.module("video").clone();
    w.edit("{tenantId: acme, modules: [{name: video, concurrency: 4000}, {name: im, concurrency: 1000}]}");
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(d.outcome.ready_reason.reason, "PlanRequired");
    assert_eq!(*w.module("video"), before);
}

#[test]
fn a_child_the_api_server_refuses_shows_in_status_on_its_module() {
    let mut w = World::new(BOTH);
    w.reconcile();
    w.quota_controller_answers();
    let mut d = w.reconcile();
    assert!(!d.batches.is_empty());
    let rejection = crate::controller::error::Rejection {
        verb: crate::controller::error::Verb::Apply,
        kind: "Deployment".into(),
        name: "acme-video".into(),
        code: 422,
        message: "Deployment.apps \"acme-video\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1".into(),
    };
    d.outcome.child_rejected("acme", &rejection);
    assert!(!d.outcome.ready);
    assert_eq!(d.outcome.ready_reason.reason, "ChildRejected");
    let expected = "apply Deployment acme-video refused by the API server (422): Deployment.apps \"acme-video\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1";
    assert_eq!(d.outcome.ready_reason.message, expected);
    assert_eq!(d.outcome.stalled.as_ref().unwrap().message, expected);
    let video = d
        .outcome
        .modules
        .iter()
        .find(|m| m.name == "video")
        .unwrap();
    assert_eq!(video.message.as_deref(), Some(expected));
    let im = d.outcome.modules.iter().find(|m| m.name == "im").unwrap();
    assert_ne!(
        im.message.as_deref(),
        Some(expected),
        "another module's child"
    );
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
    // The gauges name the module held back, and only it.
    assert!(d.observed["video"].capacity_limited);
    assert!(!d.observed["im"].capacity_limited);
    assert!(!d.observed["video"].pods_refused);
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

impl World {
    /// What the Deployment controller reports changes (not a drift).
    fn set_deployment(&mut self, module: &str, edit: impl FnOnce(&mut Facts)) {
        let l = self.live.modules.get_mut(module).unwrap();
        let d = l.deployment.as_ref().unwrap();
        let mut slim = (**d).clone();
        edit(&mut slim.facts);
        l.deployment = Some(Arc::new(slim));
    }

    fn quota(&self) -> (BTreeMap<String, String>, Option<String>) {
        let q = self.live.quota.as_ref().unwrap();
        let hard = q
            .facts
            .hard
            .as_deref()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        (hard, q.facts.held_until.as_deref().map(String::from))
    }
}

const UHD: &str = "{tenantId: acme, modules: [{name: video, concurrency: 400, tier: uhd}, {name: im, concurrency: 1000}]}";
const HD: &str = "{tenantId: acme, modules: [{name: video, concurrency: 400, tier: hd}, {name: im, concurrency: 1000}]}";

#[test]
fn smaller_pods_keep_the_larger_quota_until_their_rollout_completes() {
    let mut w = World::converged(UHD);
    let (before, held) = w.quota();
    assert_eq!(held, None);
    // uhd: 27 + 7 video pods of 2 CPU; hd: 10 + 3 of 1 CPU.
    w.edit(HD);
    let start = w.now;
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [
            vec![apply(ChildKind::Quota, "acme-capacity")],
            vec![
                apply(ChildKind::Deployment, "acme-video"),
                apply(ChildKind::Hpa, "acme-video"),
            ],
        ],
        "the quota first, still at the old size, then the new pods"
    );
    let hold = SignedDuration::from_secs(capacity::ROLLOUT_HOLD_SECONDS + 30);
    let (during, held) = w.quota();
    assert_eq!(during, before, "every resource stays at the old size");
    assert_eq!(held, Some((start + hold).to_string()));
    assert!(d.outcome.requeue.is_some_and(|r| r <= start + hold));

    // The Deployment controller replaces pods: the quota stays as it is.
    w.set_deployment("video", |f| f.rolling_out = true);
    w.later(60);
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(w.quota().0, before);

    // Every pod is new: the quota comes down to the new size.
    w.set_deployment("video", |f| f.rolling_out = false);
    w.later(60);
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![apply(ChildKind::Quota, "acme-capacity")]]
    );
    let (after, held) = w.quota();
    assert_eq!(held, None);
    assert_eq!(after["pods"], "15", "10 + 3 video and 1 + 1 im");
    assert_eq!(after["requests.cpu"], "14", "13 × 1 + 2 × 500m");
    assert!(w.reconcile().batches.is_empty());
}

#[test]
fn a_hold_ends_at_its_deadline_however_long_the_rollout_is_kept_going() {
    let mut w = World::converged(UHD);
    let (before, _) = w.quota();
    w.edit(HD);
    w.reconcile();
    let (_, held) = w.quota();
    let until: Timestamp = held.unwrap().parse().unwrap();
    // Someone in the namespace keeps the rollout from finishing (a failing
    // readiness probe added to the pods, a paused Deployment).
    w.set_deployment("video", |f| f.rolling_out = true);
    w.now = until - SignedDuration::from_secs(1);
    assert!(w.reconcile().batches.is_empty());
    assert_eq!(w.quota().0, before);
    w.now = until;
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![apply(ChildKind::Quota, "acme-capacity")]]
    );
    let (after, held) = w.quota();
    assert_eq!((after["requests.cpu"].as_str(), held), ("14", None));
    // Still "rolling out", but nothing shrinks any more: no new hold.
    w.later(1);
    assert!(w.reconcile().batches.is_empty());
    assert_eq!(w.quota().1, None);
}

#[test]
fn a_rollout_that_grows_the_pods_or_a_lower_ceiling_alone_holds_nothing() {
    // Larger pods: the new quota is larger anyway.
    let mut w = World::converged(HD);
    w.edit(UHD);
    w.reconcile();
    assert_eq!(w.quota().1, None);
    assert_eq!(w.quota().0["requests.cpu"], "69", "34 × 2 + 2 × 500m");
    // A lower ceiling with no rollout: running pods keep their size.
    let mut w = World::converged(HD);
    w.edit("{tenantId: acme, modules: [{name: video, concurrency: 40, tier: hd}, {name: im, concurrency: 1000}]}");
    w.reconcile();
    assert_eq!(w.quota().1, None);
    assert_eq!(w.quota().0["pods"], "4", "1 + 1 video and 1 + 1 im");
}

#[test]
fn pods_refused_at_admission_show_in_status_with_the_api_servers_message() {
    let refusals = [
        "pods \"acme-video-7d9f-x2k4p\" is forbidden: exceeded quota: acme-capacity, requested: requests.cpu=1, used: requests.cpu=13, limited: requests.cpu=13",
        "pods \"acme-video-7d9f-x2k4p\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false",
        "pods \"acme-video-7d9f-x2k4p\" is forbidden: maximum cpu usage per Container is 500m, but limit is 1",
    ];
    for message in refusals {
        let mut w = World::converged(BOTH);
        w.set_deployment("video", |f| f.refused = Some(message.into()));
        let d = w.reconcile();
        assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
        let expected = format!("video: pods refused: {message}");
        assert!(!d.outcome.ready);
        assert_eq!(d.outcome.ready_reason.reason, "PodsRefused");
        assert_eq!(d.outcome.ready_reason.message, expected);
        assert_eq!(
            w.module("video").message.as_deref(),
            Some(expected.as_str())
        );
        assert_eq!(w.module("im").message, None);
        assert!(d.observed["video"].pods_refused);
        assert!(!d.observed["im"].pods_refused);
        // Admitted again: Ready again.
        w.set_deployment("video", |f| f.refused = None);
        let d = w.reconcile();
        assert!(d.outcome.ready, "{:?}", d.outcome.ready_reason);
        assert!(!d.observed["video"].pods_refused);
        assert_eq!(w.module("video").message, None);
    }
}

fn video_off(retention: &str, drain_seconds: i64) -> String {
    format!(
        "{{tenantId: acme, downgrade: {{drainSeconds: {drain_seconds}, dataRetention: {retention}}}, modules: [{{name: video, concurrency: 400, enabled: false}}, {{name: im, concurrency: 1000}}]}}"
    )
}

fn video_on(retention: &str) -> String {
    format!(
        "{{tenantId: acme, downgrade: {{drainSeconds: 300, dataRetention: {retention}}}, modules: [{{name: video, concurrency: 400}}, {{name: im, concurrency: 1000}}]}}"
    )
}

const VIDEO_REMOVED: &str = "{tenantId: acme, modules: [{name: im, concurrency: 1000}]}";

fn quota_digest(w: &World) -> Option<u64> {
    w.live.quota.as_ref().unwrap().applied
}

#[test]
fn a_draining_modules_quota_share_is_its_recorded_footprint_whatever_its_live_objects_say() {
    type Edit = fn(&mut World);
    let edits: [(&str, Edit, ChildKind); 2] = [
        (
            "HPA maxReplicas raised to 500",
            |w| w.tenant_edits_hpa("video", |f| f.max_replicas = Some(500)),
            ChildKind::Hpa,
        ),
        (
            "Deployment resources raised to 64 CPUs",
            |w| {
                w.tenant_edits_deployment("video", |f| {
                    f.resources = Some(r#"{"requests":{"cpu":"64","memory":"256Gi"}}"#.into())
                })
            },
            ChildKind::Deployment,
        ),
    ];
    let off = video_off("Retain", 300);
    for spec in [off.as_str(), VIDEO_REMOVED] {
        for (what, edit, kind) in edits {
            let mut w = World::converged(&video_on("Retain"));
            let quota = quota_digest(&w);
            w.edit(spec);
            w.reconcile();
            assert_eq!(quota_digest(&w), quota, "{what}: the drain keeps the share");
            w.later(60);
            edit(&mut w);
            let d = w.reconcile();
            assert_eq!(
                shape(&d.batches),
                [vec![apply(kind, "acme-video")]],
                "{what}: the edit is undone, the quota is not rewritten"
            );
            assert_eq!(quota_digest(&w), quota, "{what}");
            let restored = d.batches[0]
                .iter()
                .find_map(|w| match w {
                    Write::Apply(d) => Some(&d.body),
                    _ => None,
                })
                .unwrap();
            if kind == ChildKind::Hpa {
                assert_eq!(restored["spec"]["maxReplicas"], 10, "{what}");
            } else {
                let r = &restored["spec"]["template"]["spec"]["containers"][0]["resources"];
                assert_eq!(r["requests"]["cpu"], "1", "{what}");
            }
            let m = w.module("video");
            assert_eq!(m.state, Some(ModuleState::Draining));
            assert_eq!((m.min_replicas, m.max_replicas), (Some(1), Some(10)));
            // The edit comes back before the deadline: still the recorded share.
            edit(&mut w);
            w.later(60);
            w.reconcile();
            assert_eq!(quota_digest(&w), quota, "{what}");
        }
    }
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
fn a_limit_range_name_taken_by_a_stranger_is_a_conflict_and_no_pod_starts() {
    let mut w = World::new(BOTH);
    w.stranger(ChildKind::LimitRange, "acme-defaults");
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(d.outcome.ready_reason.reason, "ObjectConflict");
    assert_eq!(
        d.outcome.ready_reason.message,
        "LimitRange acme-defaults exists and is not owned by this subscription"
    );
}

#[test]
fn a_drain_is_decided_from_its_record_in_status() {
    // (what, drainSeconds when it began, then, status as an older version left it)
    let cases = [
        (
            "recorded deadline kept when drainSeconds grows",
            300,
            3600,
            false,
        ),
        (
            "recorded deadline kept when drainSeconds shrinks",
            300,
            10,
            false,
        ),
        (
            "an older version's status: the record begins now",
            300,
            300,
            true,
        ),
    ];
    for (what, first, then, older) in cases {
        let mut w = World::converged(&video_on("Retain"));
        w.edit(&video_off("Retain", first));
        let began = w.now;
        w.reconcile();
        let mut deadline = began + SignedDuration::from_secs(first);
        if older {
            // An older version recorded the drain on the Deployment (which a
            // namespace admin can rewrite) and reported only what live
            // objects said: no record in status.
            let st = w.sub.status.as_mut().unwrap();
            let m = st.modules.iter_mut().find(|m| m.name == "video").unwrap();
            (m.draining_since, m.data_retention, m.resources) = (None, None, None);
            w.later(200);
            deadline = w.now + SignedDuration::from_secs(then);
        }
        w.edit(&video_off("Retain", then));
        let d = w.reconcile();
        assert_eq!(d.outcome.requeue, Some(deadline), "{what}");
        assert_eq!(
            w.module("video").drain_deadline.as_deref(),
            Some(format_instant(deadline, &jiff::tz::TimeZone::UTC).as_str()),
            "{what}"
        );
        w.now = deadline - SignedDuration::from_secs(1);
        assert_eq!(
            w.reconcile().batches.len(),
            0,
            "{what}: nothing before the deadline"
        );
        w.now = deadline;
        let d = w.reconcile();
        assert!(
            shape(&d.batches)
                .contains(&vec![W::Delete(ChildKind::Deployment, "acme-video".into())]),
            "{what}: {:?}",
            shape(&d.batches)
        );
        assert!(
            w.status().modules.iter().all(|m| m.name != "video"),
            "{what}"
        );
    }
}

#[test]
fn the_retention_recorded_when_a_drain_began_decides_the_fate_of_its_data() {
    // (retention when the drain began, retention in the spec at the deadline, data deleted)
    let cases = [
        ("Retain", "Retain", false),
        ("Retain", "Delete", false),
        ("Delete", "Retain", true),
        ("Delete", "Delete", true),
    ];
    for (began, later, deleted) in cases {
        let mut w = World::converged(&video_on(began));
        w.edit(&video_off(began, 300));
        w.reconcile();
        assert_eq!(
            w.module("video").data_retention,
            Some(if began == "Delete" {
                DataRetention::Delete
            } else {
                DataRetention::Retain
            })
        );
        w.later(100);
        w.edit(&video_off(later, 300));
        w.reconcile();
        w.later(200);
        let d = w.reconcile();
        assert_eq!(
            shape(&d.batches).contains(&vec![W::DeleteData("video".into())]),
            deleted,
            "began {began}, spec says {later} at the deadline: {:?}",
            shape(&d.batches)
        );
    }

    // The issue's case: video drains under Retain; the spec then switches to
    // Delete to drop messaging with its data. Only messaging's data goes.
    let both_off = "{tenantId: acme, downgrade: {drainSeconds: 300, dataRetention: Delete}, modules: [{name: video, concurrency: 400, enabled: false}, {name: im, concurrency: 1000, enabled: false}]}";
    let mut w = World::converged(&video_on("Retain"));
    w.edit(&video_off("Retain", 300));
    w.reconcile();
    w.later(100);
    w.edit(both_off);
    w.reconcile();
    let mut deleted = Vec::new();
    for _ in 0..4 {
        w.later(100);
        let d = w.reconcile();
        deleted.extend(
            shape(&d.batches)
                .into_iter()
                .flatten()
                .filter(|w| matches!(w, W::DeleteData(_))),
        );
    }
    assert_eq!(deleted, [W::DeleteData("im".into())]);
}

#[test]
fn data_left_behind_keeps_the_module_in_status_and_is_deleted_again_until_gone() {
    let mut w = World::converged(&video_on("Delete"));
    w.data.insert("video".into(), 2);
    w.data_refused = Some("persistentvolumeclaims \"rec-1\" is forbidden: denied by policy".into());
    w.edit(&video_off("Delete", 300));
    w.reconcile();
    w.later(300);
    let d = w.reconcile();
    assert!(shape(&d.batches).contains(&vec![W::DeleteData("video".into())]));
    let m = w.module("video").clone();
    assert_eq!(m.state, Some(ModuleState::Draining));
    assert_eq!(
        m.message.as_deref(),
        Some(
            "video: removed; deleting data: 2 PersistentVolumeClaims left: persistentvolumeclaims \"rec-1\" is forbidden: denied by policy"
        )
    );
    assert_eq!(d.outcome.requeue, Some(w.now + DATA_RETRY));
    assert_eq!(
        d.outcome.reconciling.as_ref().unwrap().reason,
        "DeletingData"
    );

    // Tried again at every look, the record kept, until the data is gone.
    for _ in 0..3 {
        w.later(5);
        let d = w.reconcile();
        assert_eq!(shape(&d.batches), [vec![W::DeleteData("video".into())]]);
        assert_eq!(
            w.module("video").data_retention,
            Some(DataRetention::Delete)
        );
    }
    w.data_refused = None;
    w.later(5);
    w.reconcile();
    assert!(w.status().modules.iter().all(|m| m.name != "video"));
    assert!(w.reconcile().batches.is_empty());
}

#[test]
fn a_drain_begun_without_a_profile_never_takes_its_size_from_the_deployment() {
    let mut w = World::converged(&video_on("Retain"));
    let (before, _) = w.quota();
    // The profile goes, and someone in the namespace makes the module's
    // pods huge, before the module is switched off.
    w.catalogue.profiles.remove("video");
    w.tenant_edits_deployment("video", |f| {
        f.resources = Some(r#"{"requests":{"cpu":"64","memory":"256Gi"}}"#.into())
    });
    w.edit(VIDEO_REMOVED);
    w.reconcile();
    let (during, _) = w.quota();
    let cpu = |m: &BTreeMap<String, String>| {
        crate::capacity::Quantity::parse(&m["requests.cpu"]).unwrap()
    };
    assert!(
        cpu(&during) <= cpu(&before),
        "the drain's share grew from {} to {}",
        before["requests.cpu"],
        during["requests.cpu"]
    );
    let m = w.module("video");
    assert_eq!(m.state, Some(ModuleState::Draining));
    assert_ne!(
        m.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("cpu"))
            .map(|q| q.0.as_str()),
        Some("64"),
        "the record never takes the Deployment's resources"
    );
}

#[test]
fn a_module_whose_profile_is_gone_still_drains_from_its_record() {
    let mut w = World::converged(&video_on("Retain"));
    let quota = quota_digest(&w);
    w.edit(VIDEO_REMOVED);
    w.reconcile();
    w.catalogue.profiles.remove("video");
    w.later(60);
    w.tenant_edits_hpa("video", |f| f.max_replicas = Some(500));
    let d = w.reconcile();
    assert!(
        d.batches.is_empty(),
        "nothing to render it from: {:?}",
        shape(&d.batches)
    );
    assert_eq!(quota_digest(&w), quota, "the recorded share");
    w.later(240);
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches)[0],
        [W::Delete(ChildKind::Hpa, "acme-video".into())]
    );
}

#[test]
fn the_first_subscription_of_the_namespace_acts() {
    let mut w = World::new("{tenantId: acme, modules: []}");
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![
            apply(ChildKind::Quota, "acme-capacity"),
            apply(ChildKind::LimitRange, "acme-defaults")
        ]]
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
        [W::Event("Draining".into())],
        "{:?}",
        shape(&d.batches)
    );
}

#[test]
fn a_new_drain_record_is_written_at_once() {
    let mut w = World::converged(&video_on("Retain"));
    let old = w.status().clone();
    w.edit(&video_off("Retain", 300));
    w.reconcile();
    let new = w.status().clone();
    assert!(drain::new_records(&old.modules, &new.modules));
    // Held back neither for a quota's answer nor by the batching of counts.
    assert_eq!(
        status::when_to_write(
            &old,
            &new,
            true,
            status::Recent {
                written: Some(std::time::Duration::ZERO),
                ..Default::default()
            },
            0,
        ),
        status::WriteStatus::Now
    );
    // Once written, the same record is not new.
    assert!(!drain::new_records(&new.modules, &new.modules));
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

#[test]
fn a_drain_time_past_the_schema_bounds_is_held_to_them() {
    // The CRD bounds drainSeconds to 0..=604800; an object written under an
    // older CRD (or none) may hold any i64. The drain neither overflows the
    // clock nor ends before it began.
    for drain in [i64::MAX, 604_801] {
        let mut w = World::converged(&video_on("Retain"));
        w.edit(&video_off("Retain", drain));
        w.reconcile();
        let m = w.module("video");
        assert_eq!(m.state, Some(ModuleState::Draining), "{drain}");
        let deadline: Timestamp = m.drain_deadline.as_deref().unwrap().parse().unwrap();
        let since: Timestamp = m.draining_since.as_deref().unwrap().parse().unwrap();
        assert_eq!(deadline.duration_since(since).as_secs(), 604_800, "{drain}");
    }
    // Below zero: no drain at all, as with 0.
    for drain in [i64::MIN, -1] {
        let mut w = World::converged(&video_on("Retain"));
        w.edit(&video_off("Retain", drain));
        let d = w.reconcile();
        assert!(
            shape(&d.batches)
                .concat()
                .contains(&W::Delete(ChildKind::Deployment, "acme-video".into())),
            "{drain}: {:?}",
            shape(&d.batches)
        );
    }
}

impl World {
    /// The HPA controller runs `pods` pods of `module` (scaling now if that
    /// is a change), and the Deployment follows.
    fn hpa_runs(&mut self, module: &str, pods: i32) {
        let now = self.now.as_second();
        let l = self.live.modules.get_mut(module).unwrap();
        let h = l.hpa.as_ref().unwrap();
        let mut slim = (**h).clone();
        if slim.facts.current_replicas != Some(pods) {
            slim.facts.last_scale = Some(now);
        }
        slim.facts.current_replicas = Some(pods);
        slim.facts.desired_replicas = Some(pods);
        l.hpa = Some(Arc::new(slim));
        self.set_deployment(module, |f| {
            f.spec_replicas = Some(pods);
            f.replicas = Some(pods);
            f.ready_replicas = Some(pods);
        });
    }

    /// Video bought at 2000 sessions (50 replicas), its HPA running
    /// `running` pods, then lowered to 400 (10 replicas) ten minutes later.
    fn video_lowered_while_running(running: i32) -> Self {
        let mut w = World::converged(VIDEO_2000);
        w.hpa_runs("video", running);
        w.later(600);
        w.edit(BOTH);
        w
    }

    fn hpa_max(&self, module: &str) -> i32 {
        self.live.modules[module]
            .hpa
            .as_ref()
            .unwrap()
            .facts
            .max_replicas
            .unwrap()
    }
}

const VIDEO_2000: &str =
    "{tenantId: acme, modules: [{name: video, concurrency: 2000}, {name: im, concurrency: 1000}]}";

#[test]
fn a_lowered_ceiling_comes_down_in_steps_no_faster_than_the_scale_down_pace() {
    let mut w = World::converged(VIDEO_2000);
    assert_eq!(w.hpa_max("video"), 50);
    let cpu = |w: &World| w.quota().0["limits.cpu"].clone();
    let cpu_at_50 = cpu(&w);
    w.hpa_runs("video", 50);
    w.later(600);
    // The season ends (here: the plan is lowered): 2000 → 400 sessions, 50 → 10 replicas.
    w.edit(BOTH);
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![
            apply(ChildKind::Hpa, "acme-video"),
            apply(ChildKind::Quota, "acme-capacity")
        ]],
        "the ceiling and the quota come down together"
    );
    // Default pace: at most max(1 pod, 10 %) per 60 s.
    assert_eq!(w.hpa_max("video"), 45);
    assert_ne!(cpu(&w), cpu_at_50, "the quota follows the stepped ceiling");
    let m = w.module("video").clone();
    assert_eq!(m.max_replicas, Some(45));
    let ramp = m.ramping_down.clone().expect("rampingDown recorded");
    assert_eq!(ramp.to_max_replicas, 10);
    assert_eq!(ramp.last_step.as_deref(), Some("2026-03-02T10:10:00+00:00"));
    assert!(
        m.message
            .as_deref()
            .unwrap()
            .starts_with("video: ramping down to 10 replicas until "),
        "{:?}",
        m.message
    );
    let reconciling = d.outcome.reconciling.clone().unwrap();
    assert_eq!(reconciling.reason, "RampingDown");
    assert!(d.outcome.ready, "ramping down is not a readiness problem");
    assert_eq!(
        d.outcome.requeue,
        Some(w.now + SignedDuration::from_millis(61_500)),
        "the next step is looked at when it is due"
    );
    // Before the period is over nothing moves, whatever wakes the reconcile.
    w.hpa_runs("video", 45);
    w.later(30);
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(w.hpa_max("video"), 45);
    // Step by step to the target, each step within the pace of its period.
    let mut steps = vec![50, 45];
    for _ in 0..40 {
        w.later(61);
        w.reconcile();
        let max = w.hpa_max("video");
        let last = *steps.last().unwrap();
        if max == last {
            continue;
        }
        let allowed = (last * 10 / 100).max(1);
        assert!(
            last - max <= allowed,
            "{last} → {max}: more than {allowed} in one period"
        );
        steps.push(max);
        w.hpa_runs("video", max);
        if max == 10 {
            break;
        }
    }
    assert_eq!(*steps.last().unwrap(), 10, "{steps:?}");
    assert_eq!(
        steps,
        [
            50, 45, 41, 37, 34, 31, 28, 26, 24, 22, 20, 18, 17, 16, 15, 14, 13, 12, 11, 10
        ]
    );
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(w.module("video").ramping_down, None);
    assert_eq!(w.module("video").message, None);
    assert_eq!(d.outcome.reconciling, None);
}

#[test]
fn a_raise_during_a_ramp_applies_at_once() {
    let mut w = World::video_lowered_while_running(50);
    w.reconcile();
    assert_eq!(w.hpa_max("video"), 45);
    w.edit(VIDEO_2000);
    let d = w.reconcile();
    assert_eq!(w.hpa_max("video"), 50);
    assert_eq!(w.module("video").ramping_down, None);
    assert_eq!(d.outcome.reconciling, None);
}

#[test]
fn a_lowering_no_running_pod_is_above_applies_at_once() {
    let mut w = World::video_lowered_while_running(8);
    w.reconcile();
    assert_eq!(w.hpa_max("video"), 10);
    assert_eq!(w.module("video").ramping_down, None);
}

#[test]
fn a_ramp_goes_on_when_the_lower_plan_makes_the_spec_invalid() {
    let mut w = World::converged(
        "{tenantId: acme, plan: pro, modules: [{name: video, concurrency: 2000}, {name: im, concurrency: 1000}]}",
    );
    w.hpa_runs("video", 50);
    w.later(600);
    w.catalogue.plans.insert(
        "pro".into(),
        serde_saphyr::from_str(
            "{modules: [{name: video, maxConcurrency: 400, tiers: [hd]}, {name: im, maxConcurrency: 20000}]}",
        )
        .unwrap(),
    );
    let d = w.reconcile();
    assert_eq!(d.outcome.ready_reason.reason, "ExceedsPlan");
    assert_eq!(w.hpa_max("video"), 45);
    w.hpa_runs("video", 45);
    w.later(61);
    w.reconcile();
    assert_eq!(w.hpa_max("video"), 41, "the next step, not the whole drop");
}

#[test]
fn a_profile_sets_its_own_pace() {
    let mut w = World::converged(VIDEO_2000);
    let video = w.catalogue.profiles.get_mut("video").unwrap();
    video.scaling.scale_down = Some(crate::api::ScaleRate {
        period_seconds: Some(15),
        max_percent: Some(50),
        max_pods: Some(2),
        ..Default::default()
    });
    w.hpa_runs("video", 50);
    w.later(600);
    w.edit(BOTH);
    let d = w.reconcile();
    assert_eq!(w.hpa_max("video"), 25);
    assert_eq!(
        d.outcome.requeue,
        Some(w.now + SignedDuration::from_millis(16_500))
    );
}

#[test]
fn capacity_limited_speaks_in_sessions_when_the_metric_is_known() {
    let mut w = World::new(BOTH);
    let video = w.catalogue.profiles.get_mut("video").unwrap();
    video.scaling.sessions = Some(crate::api::SessionsMetric {
        metric: "rtc_sessions_active".into(),
        target_percent: 80,
    });
    w.reconcile();
    w.quota_controller_answers();
    w.reconcile();
    w.pods_ready();
    w.reconcile();
    let l = w.live.modules.get_mut("video").unwrap();
    let hpa = l.hpa.as_ref().unwrap();
    let mut facts = hpa.facts.clone();
    facts.unbounded_want = Some(16);
    facts.limited_sessions = Some(1240);
    l.hpa = Some(Arc::new(Slim::new(
        hpa.metadata.clone(),
        hpa.applied,
        facts,
    )));
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(
        d.outcome.limited,
        ["video: 1,240 sessions live, ceiling 400 (HPA wants 16 replicas, ceiling 10)"]
    );
    assert_eq!(d.observed["video"].sessions, Some(1240));
    assert!(d.observed["video"].capacity_limited);
    assert_eq!(
        w.module("video").message.as_deref(),
        Some("video: 1,240 sessions live, ceiling 400 (HPA wants 16 replicas, ceiling 10)")
    );
}

#[test]
fn counts_read_with_thousands_separated() {
    assert_eq!(status::thousands(0), "0");
    assert_eq!(status::thousands(999), "999");
    assert_eq!(status::thousands(1240), "1,240");
    assert_eq!(status::thousands(-1_000_000), "-1,000,000");
}

#[test]
fn a_step_whose_status_is_not_cached_yet_is_not_taken_twice() {
    let mut w = World::video_lowered_while_running(50);
    let before = w.sub.status.clone();
    w.reconcile();
    assert_eq!(w.hpa_max("video"), 45);
    // The HPA's cache has the step, the subscription's cache not yet its
    // status (the HPA's update event comes first).
    w.sub.status = before;
    w.later(1);
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(w.hpa_max("video"), 45, "one step per period");
    assert_eq!(w.module("video").max_replicas, Some(45));
    // That reconcile's status (written over the step's) keeps the step's
    // time: the HPA has not scaled yet, and still no second step.
    w.later(5);
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(w.hpa_max("video"), 45);
}

#[test]
fn the_namespace_cannot_hold_a_ramp_by_making_the_hpa_scale() {
    // The tenant's admin scales the Deployment up by hand every 10 s; the
    // HPA scales it back to its ceiling each time, so its last scale is
    // always seconds ago while it runs as many pods as before.
    let mut w = World::video_lowered_while_running(50);
    w.reconcile();
    assert_eq!(w.hpa_max("video"), 45);
    let mut last_change = w.now;
    let mut steps = 0;
    for _ in 0..120 {
        w.later(10);
        let max = w.hpa_max("video");
        w.hpa_runs("video", max);
        let now = w.now.as_second();
        let l = w.live.modules.get_mut("video").unwrap();
        let mut hpa = (**l.hpa.as_ref().unwrap()).clone();
        hpa.facts.last_scale = Some(now - 1);
        l.hpa = Some(Arc::new(hpa));
        w.reconcile();
        if w.hpa_max("video") < max {
            let gap = w.now.duration_since(last_change).as_secs();
            assert!(gap <= 2 * 61 + 10, "a step held {gap}s");
            last_change = w.now;
            steps += 1;
        }
    }
    assert!(steps >= 9, "{steps} steps in 20 minutes");
}

#[test]
fn a_region_move_rolls_the_pods_and_a_held_spec_keeps_them_where_they_are() {
    let mut w = World::converged(
        "{tenantId: acme, regions: [eu-west-1], modules: [{name: video, concurrency: 400}]}",
    );
    assert_eq!(w.module("video").regions, ["eu-west-1"]);
    // A move: a new pod template (the Deployment's rolling update does the
    // rest), nothing else.
    w.edit("{tenantId: acme, regions: [us-east-1], modules: [{name: video, concurrency: 400}]}");
    let d = w.reconcile();
    assert_eq!(
        shape(&d.batches),
        [vec![apply(ChildKind::Deployment, "acme-video")]]
    );
    assert_eq!(w.module("video").regions, ["us-east-1"]);
    // Paused, a move waits; so does one the plan does not sell.
    w.edit("{tenantId: acme, paused: true, regions: [eu-west-1], modules: [{name: video, concurrency: 400}]}");
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(w.module("video").regions, ["us-east-1"]);
    w.catalogue.plans.insert(
        "pro".into(),
        serde_saphyr::from_str(
            "{regions: [us-east-1], modules: [{name: video, maxConcurrency: 1000}]}",
        )
        .unwrap(),
    );
    w.edit("{tenantId: acme, plan: pro, regions: [eu-west-1], modules: [{name: video, concurrency: 400}]}");
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert_eq!(d.outcome.ready_reason.reason, "ExceedsPlan");
    assert_eq!(w.module("video").regions, ["us-east-1"]);
    // Named nowhere, on that plan: its regions, which is where it runs.
    w.edit("{tenantId: acme, plan: pro, modules: [{name: video, concurrency: 400}]}");
    let d = w.reconcile();
    assert!(d.batches.is_empty(), "{:?}", shape(&d.batches));
    assert!(d.outcome.ready, "{:?}", d.outcome.ready_reason);
}
