//! One subscription's reconcile: gather the facts from the caches, decide,
//! carry out the writes and write the status when it changed, together.
//! Thin on purpose: the rules are in `decide` and `status`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, reflector::ObjectRef},
};
use serde_json::json;
use tracing::warn;

use super::{
    Settings,
    changes::{SpecChanges, Timings},
    decide::{self, Observed, Outcome, Write, assignment, decide},
    drain,
    error::{Error, Result, Verb, api_error},
    events::{self, Events},
    execute::Writer,
    facts::Caches,
    facts::Tenancy,
    status::{self, PROGRESS_BATCH, PROGRESS_WRITES_PER_SECOND, WriteStatus},
};
use crate::{
    api::{ModuleState, TenantSubscription, TenantSubscriptionStatus},
    metrics::{ErrorLabels, Metrics, ModuleGauges, ModuleLabels},
    render::{ChildKind, MANAGER},
    server::Readiness,
};

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub caches: Caches,
    pub metrics: Metrics,
    pub events: Events,
    pub settings: Settings,
    /// Turns true once every cache has its first full list.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// Fails while the API server refuses the operator a write.
    pub readiness: Readiness,
    /// The status this process last wrote for each subscription, and when
    /// (see `status::when_to_write` and [`Context::with_own_status`]).
    pub status_written: Mutex<HashMap<String, Written>>,
    /// Each subscription's status change held back (see
    /// `status::when_to_write`); gone once written or undone.
    pub status_held: Mutex<HashMap<String, Held>>,
    /// Subscriptions that act and are not Ready (pods starting): how many
    /// share the progress-only status writes (see `status::when_to_write`).
    pub progressing: Mutex<Progressing>,
    /// Spec changes seen and not yet applied, timed.
    pub spec_changes: Arc<SpecChanges>,
    /// Consecutive "not found" failures per subscription (see `retry_delay`).
    pub not_found: Mutex<HashMap<String, u32>>,
    /// The children this process applied lately (see [`Context::unseen`]).
    pub children_written: Mutex<HashMap<(ChildKind, String, String), Applied>>,
    /// Subscriptions whose last reconcile failed: their next one writes the
    /// children first and the status after, not together (see
    /// `reconcile_subscription`), so that a write failing again and again
    /// does not make the status say a change was applied and take it back
    /// at every retry.
    pub failed_writes: Mutex<HashSet<String>>,
    /// Status writes of subscriptions that may not act (see [`Refusals`]).
    pub refusals: Refusals,
}

/// Status writes that tell a subscription it may not act in its namespace
/// (not assigned, another tenant's, not the oldest there), written off the
/// reconcile slots, at most `REFUSAL_WRITES` at once. A flood of thousands
/// of such subscriptions then waits for the API server in its own lane,
/// while the reconciles of subscriptions that act go on: each reconcile of
/// a refused one takes a slot for microseconds instead of a status write's
/// round trip (measured in tests/flood.rs: a tenant's change otherwise
/// queued for minutes behind a flood's first status writes).
pub struct Refusals {
    lane: Arc<tokio::sync::Semaphore>,
    /// Subscriptions with a write waiting or under way: one each.
    pending: Arc<Mutex<HashSet<String>>>,
}

/// Refusal status writes in flight at once.
pub const REFUSAL_WRITES: usize = 8;

impl Default for Refusals {
    fn default() -> Self {
        Self {
            lane: Arc::new(tokio::sync::Semaphore::new(REFUSAL_WRITES)),
            pending: Default::default(),
        }
    }
}

/// Subscriptions progressing, and when deleted ones were last dropped.
#[derive(Default)]
pub struct Progressing {
    keys: HashSet<String>,
    tidied: Option<Instant>,
}

/// A status change held back: since when, and since when as it is.
pub struct Held {
    since: Instant,
    changed: Instant,
    status: TenantSubscriptionStatus,
}

/// A status write of this process.
pub struct Written {
    at: Instant,
    /// The status as the API server answered it, until the cache shows it.
    status: Option<Arc<TenantSubscriptionStatus>>,
}

/// A child this process changed: what it applied, over what the cache
/// showed then, when.
pub struct Applied {
    digest: u64,
    over: u64,
    at: Instant,
}

/// How long a written status stands in for the cached one at most: longer
/// than any lag of the subscription watch short of an outage (whose relist
/// brings the truth back anyway).
const OWN_STATUS_FOR: Duration = Duration::from_secs(30);

/// Longer than any status change is held back (the progress period with
/// 10,000 subscriptions starting at once is 2,000 s).
const HELD_KEPT: Duration = Duration::from_secs(3600);

impl Context {
    pub async fn caches_ready(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// `sub` as its cache holds it, or with the status this process wrote
    /// last when the cache does not show that write yet. A reconcile soon
    /// after a status write (brought by the children the same reconcile
    /// wrote, whose events can arrive before the subscription's own) would
    /// otherwise compare with the status before the write and write the same
    /// status again: measured at 300 tenants, 1.6 status writes per plan
    /// change and one extra per tenant on a cold start.
    fn with_own_status(&self, sub: &Arc<TenantSubscription>) -> Arc<TenantSubscription> {
        let mut written = self.status_written.lock().unwrap();
        let Some(w) = written.get_mut(&key(sub)) else {
            return Arc::clone(sub);
        };
        let Some(own) = &w.status else {
            return Arc::clone(sub);
        };
        if sub.status.as_ref() == Some(own.as_ref()) || w.at.elapsed() >= OWN_STATUS_FOR {
            w.status = None;
            return Arc::clone(sub);
        }
        let mut latest = (**sub).clone();
        latest.status = Some((**own).clone());
        Arc::new(latest)
    }

    /// How long `status`, to be written for `key`, has been held back and
    /// how long it has been as it is now (recorded from now on, for the
    /// next look, in case it is held back again).
    fn held(&self, key: &str, status: &TenantSubscriptionStatus) -> status::Recent {
        let mut map = self.status_held.lock().unwrap();
        if map.len() > 256 && !map.contains_key(key) {
            // Deleted subscriptions leave theirs behind.
            map.retain(|_, h| h.since.elapsed() < HELD_KEPT);
        }
        let now = Instant::now();
        let h = map.entry(key.to_string()).or_insert_with(|| Held {
            since: now,
            changed: now,
            status: status.clone(),
        });
        if h.status != *status {
            h.changed = now;
            h.status = status.clone();
        }
        status::Recent {
            written: None,
            held: Some(h.since.elapsed()),
            unchanged: Some(h.changed.elapsed()),
        }
    }

    /// Record whether `key` is progressing; returns how many are.
    fn progressing(&self, key: &str, progressing: bool) -> usize {
        let mut guard = self.progressing.lock().unwrap();
        let Progressing { keys: set, tidied } = &mut *guard;
        if progressing {
            if !set.contains(key) {
                set.insert(key.to_string());
            }
        } else {
            set.remove(key);
        }
        // Subscriptions deleted while progressing leave their key behind:
        // dropped (every 10 s at most) once there are enough to lengthen
        // anyone's period.
        let matters = (PROGRESS_WRITES_PER_SECOND as usize) * PROGRESS_BATCH.as_secs() as usize;
        if set.len() > matters && tidied.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *tidied = Some(Instant::now());
            let subscriptions = &self.caches.subscriptions;
            set.retain(|key| {
                let (ns, name) = key.split_once('/').unwrap_or_default();
                subscriptions
                    .get(&ObjectRef::new(name).within(ns))
                    .is_some()
            });
        }
        set.len()
    }

    /// `batches` less the applies this process made in the last
    /// `OWN_STATUS_FOR` of exactly the same child over exactly what the
    /// cache still shows of it: written, and not yet seen by the watch.
    /// Without this, a reconcile brought by the events of the writes of the
    /// one before (the status, written together with the children, is
    /// often seen first) wrote them again: at 1,000 tenants, half the plan
    /// changes wrote their HPA or quota twice. A child that changed since
    /// (another writer) shows another digest and is written; one changed
    /// back to what it was before within that time is written when it has
    /// passed (the second value: look again by then).
    fn unseen(&self, ns: &str, batches: Vec<Vec<Write>>) -> (Vec<Vec<Write>>, bool) {
        let applied = self.children_written.lock().unwrap();
        if applied.is_empty() {
            return (batches, false);
        }
        let before: usize = batches.iter().map(Vec::len).sum();
        let left = without_unseen(&applied, ns, batches);
        let skipped = left.iter().map(Vec::len).sum::<usize>() < before;
        (left, skipped)
    }

    /// Remember the applies of `batches`, all written, that changed a
    /// cached child (the only ones `unseen` may skip: creations are not
    /// kept, so a cold start adds nothing here).
    fn wrote_children(&self, ns: &str, batches: &[Vec<Write>]) {
        let mut applied = self.children_written.lock().unwrap();
        if applied.len() > 256 {
            applied.retain(|_, a| a.at.elapsed() < OWN_STATUS_FOR);
        }
        let now = Instant::now();
        for w in batches.iter().flatten() {
            if let Write::Apply(d) = w
                && let Some(over) = d.applied
            {
                applied.insert(
                    (d.kind, ns.to_string(), d.name.clone()),
                    Applied {
                        digest: d.digest,
                        over,
                        at: now,
                    },
                );
            }
        }
    }

    /// Remember a status written for `key` (as the API server answered it).
    /// Once there are many, when each was written is kept for as long as
    /// a count-only write may be held back (the progress period grows with
    /// the subscriptions starting at once: forgetting sooner would let
    /// their next count-only change be written at once), and the status
    /// itself only for `OWN_STATUS_FOR`.
    fn wrote_status(&self, key: String, status: TenantSubscriptionStatus) {
        let progressing = self.progressing.lock().unwrap().keys.len();
        let keep = status::progress_period(progressing).max(OWN_STATUS_FOR);
        let mut written = self.status_written.lock().unwrap();
        if written.len() > 256 {
            written.retain(|_, w| w.at.elapsed() < keep);
            for w in written.values_mut() {
                if w.at.elapsed() >= OWN_STATUS_FOR {
                    w.status = None;
                }
            }
        }
        written.insert(
            key,
            Written {
                at: Instant::now(),
                status: Some(Arc::new(status)),
            },
        );
    }
}

/// `namespace/name`: the key of a subscription in the per-subscription maps
/// of the context.
fn key(sub: &TenantSubscription) -> String {
    format!("{}/{}", sub.namespace().unwrap_or_default(), sub.name_any())
}

pub async fn reconcile(sub: Arc<TenantSubscription>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciliations.inc();
    let started = Instant::now();
    // Deciding from half-filled caches would rewrite children that exist.
    ctx.caches_ready().await;
    let result = reconcile_subscription(&sub, &ctx, started).await;
    match &result {
        Ok(_) => {
            {
                let mut counts = ctx.not_found.lock().unwrap();
                if !counts.is_empty() {
                    counts.remove(&key(&sub));
                }
            }
            {
                let mut failed = ctx.failed_writes.lock().unwrap();
                if !failed.is_empty() {
                    failed.remove(&key(&sub));
                }
            }
            // Every write of this namespace went through: a refusal of one
            // (a permission now restored) is over.
            let ns = sub.namespace().unwrap_or_default();
            ctx.readiness.allowed_where(|what| {
                what.strip_suffix(ns.as_str())
                    .is_some_and(|w| w.ends_with(" in namespace "))
            });
        }
        Err(e) => {
            ctx.failed_writes.lock().unwrap().insert(key(&sub));
            if let Some((what, why)) = e.permission_refused() {
                ctx.readiness.refused(&what, &why);
            }
        }
    }
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_subscription(
    sub: &Arc<TenantSubscription>,
    ctx: &Arc<Context>,
    started: Instant,
) -> Result<Action> {
    let ns = sub.namespace().ok_or(Error::NoNamespace)?;
    let sub = &ctx.with_own_status(sub);
    if sub.metadata.deletion_timestamp.is_some() {
        ctx.progressing(&key(sub), false);
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let deciding = Instant::now();
    let live = ctx.caches.live(sub);
    // A subscription that may not act decides without the catalogue: no
    // copy of its profiles and calendars (thousands of such subscriptions
    // are cheap to re-decide).
    let acting = assignment(sub, &live.tenancy).is_ok();
    let mut catalogue = if acting {
        ctx.caches.catalogue_for(sub)
    } else {
        Default::default()
    };
    catalogue.require_plan = ctx.settings.require_plan;
    // Deciding is CPU alone, tens of milliseconds for the largest specs
    // (1,000 seasonal windows): on the blocking pool, so that the async
    // workers keep answering the API server, the probes and /metrics
    // meanwhile (with as many workers as cores, a few such decisions at once
    // held them all).
    let (decision, live) = {
        let sub = Arc::clone(sub);
        match tokio::task::spawn_blocking(move || {
            let decision = decide(&sub, &catalogue, &live, now);
            (decision, live)
        })
        .await
        {
            Ok(decided) => decided,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => return Ok(Action::await_change()),
        }
    };
    let mut timings = Timings::new(started, deciding.elapsed());
    ctx.metrics.decision.observe(timings.decide.as_secs_f64());
    let writer = Writer {
        client: &ctx.client,
        metrics: &ctx.metrics,
        events: &ctx.events,
        sub,
    };
    let key = key(sub);
    let mut old = sub.status.clone().unwrap_or_default();
    let mut outcome = decision.outcome;
    // A drain begun in this decision is recorded before anything is
    // written: the record is what the drain is decided from, and a write
    // failing below must not lose it (nor restart the drain later).
    let recorded = status::build(sub, &old, &outcome, now);
    if drain::new_records(&old.modules, &recorded.modules) {
        let answered = write_status(&ctx.client, &ns, &sub.name_any(), &recorded).await?;
        ctx.metrics.write("TenantSubscription", "apply-status");
        ctx.wrote_status(key.clone(), answered);
        for note in events::announcements(&old, &recorded) {
            writer.announce(&note).await;
        }
        old = recorded;
    }
    let (batches, skipped) = ctx.unseen(&ns, decision.batches);
    timings.writes = batches.iter().map(Vec::len).sum();
    // The status goes out together with the children (one round trip to the
    // API server per change, not two one after the other), except when what
    // the children's writes leave decides the status (data deletes), when
    // the last reconcile failed, and when a child is created: the status's
    // watch event, often seen before the children's, brings the next
    // reconcile, which would write again a child it does not see yet (a
    // cold start of 1,000 tenants re-applied 224 Services so).
    let together = !batches.is_empty()
        && !ctx.failed_writes.lock().unwrap().contains(&key)
        && batches.iter().flatten().all(|w| match w {
            Write::Apply(d) => d.applied.is_some(),
            Write::DeleteData { .. } => false,
            Write::Delete { .. } | Write::Announce(_) => true,
        });
    // A child the API server refuses shows in status, then the reconcile
    // fails as any other (counted, retried).
    let mut refused = None;
    if !together {
        let writing = Instant::now();
        let executed = writer.execute(&batches).await;
        timings.children = writing.elapsed();
        timings.writing = timings.children;
        match settle(executed, &mut outcome, sub, now) {
            Children::Written => ctx.wrote_children(&ns, &batches),
            Children::Refused(e) => refused = Some(e),
            Children::Failed(e) => return Err(e),
        }
    }
    let mut step = status_step(ctx, sub, &key, &old, &outcome, acting, now);
    // The status was written together with the children.
    let mut written = false;
    if together {
        let send = step.when == WriteStatus::Now && acting;
        let writing = Instant::now();
        let children = async {
            let executed = writer.execute(&batches).await;
            (executed, writing.elapsed())
        };
        let status = async {
            if !send {
                return None;
            }
            let answered = write_status(&ctx.client, &ns, &sub.name_any(), &step.new).await;
            Some((answered, writing.elapsed()))
        };
        let ((executed, children_took), status) = tokio::join!(children, status);
        timings.children = children_took;
        timings.writing = writing.elapsed();
        let status = match status {
            Some((answered, took)) => {
                timings.status = took;
                Some(answered)
            }
            None => None,
        };
        match settle(executed, &mut outcome, sub, now) {
            Children::Written => ctx.wrote_children(&ns, &batches),
            Children::Refused(e) => refused = Some(e),
            Children::Failed(e) => {
                // The status written with them says the children were
                // written: the one before goes back (the retry writes it
                // again once they are).
                if let Some(Ok(_)) = status {
                    put_back(ctx, sub, key, &old).await;
                }
                return Err(e);
            }
        }
        match status {
            Some(Ok(answered)) => {
                timings.writes += 1;
                ctx.metrics.write("TenantSubscription", "apply-status");
                ctx.wrote_status(key.clone(), answered);
                written = refused.is_none();
            }
            Some(Err(e)) if refused.is_none() => return Err(e),
            // The refusal's status below replaces it.
            Some(Err(_)) | None => {}
        }
        if refused.is_some() {
            step = status_step(ctx, sub, &key, &old, &outcome, acting, now);
        }
    }
    publish_metrics(
        &ctx.metrics,
        sub,
        &live.tenancy,
        &outcome,
        &decision.observed,
    );
    let StatusStep { new, when } = step;
    let mut batch_until = None;
    match (when, written) {
        (_, true) => wrote(ctx, sub, &writer, &old, &new, &mut timings).await,
        (WriteStatus::Unchanged, false) => {}
        (WriteStatus::Later(wait), false) => {
            batch_until = Some(now + SignedDuration::try_from(wait).unwrap_or_default());
        }
        (WriteStatus::Now, false) if !acting => refuse(ctx, sub, key, old, new),
        (WriteStatus::Now, false) => {
            let writing = Instant::now();
            let answered = write_status(&ctx.client, &ns, &sub.name_any(), &new).await?;
            timings.status = writing.elapsed();
            timings.writing += timings.status;
            timings.writes += 1;
            ctx.metrics.write("TenantSubscription", "apply-status");
            ctx.wrote_status(key, answered);
            wrote(ctx, sub, &writer, &old, &new, &mut timings).await;
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    let next = next_look(&outcome, batch_until, ctx.settings.resync, now);
    Ok(Action::requeue(if skipped {
        next.min(OWN_STATUS_FOR)
    } else {
        next
    }))
}

/// What the children's writes came to.
enum Children {
    Written,
    /// The API server refused one: the status says so, then the reconcile
    /// fails with this.
    Refused(Error),
    /// Any other failure, which ends the reconcile.
    Failed(Error),
}

/// Settle the outcome once the children's writes are known: what data
/// deletes left, or the child the API server refused.
fn settle(
    executed: Result<Vec<decide::DataLeft>>,
    outcome: &mut Outcome,
    sub: &TenantSubscription,
    now: Timestamp,
) -> Children {
    match executed {
        Ok(data_left) => {
            decide::settle_data(outcome, &data_left, now);
            Children::Written
        }
        Err(e) => match e.rejection() {
            Some(rejection) => {
                outcome.child_rejected(&sub.name_any(), &rejection);
                Children::Refused(e)
            }
            None => Children::Failed(e),
        },
    }
}

/// The status an outcome makes, and when it is written.
struct StatusStep {
    new: TenantSubscriptionStatus,
    when: WriteStatus,
}

/// Build the status of `outcome` over `old` and decide when it is written
/// (see `status::when_to_write`), recording what that needs remembering:
/// whether the subscription is progressing, and since when a change is held
/// back (forgotten once it is not).
fn status_step(
    ctx: &Context,
    sub: &TenantSubscription,
    key: &str,
    old: &TenantSubscriptionStatus,
    outcome: &Outcome,
    acting: bool,
    now: Timestamp,
) -> StatusStep {
    let new = status::build(sub, old, outcome, now);
    let held = if new == *old {
        status::Recent::default()
    } else {
        ctx.held(key, &new)
    };
    let recent = status::Recent {
        written: ctx
            .status_written
            .lock()
            .unwrap()
            .get(key)
            .map(|w| w.at.elapsed()),
        ..held
    };
    let progressing = ctx.progressing(key, acting && !outcome.ready);
    let when = status::when_to_write(old, &new, outcome.awaiting_quota, recent, progressing);
    if !matches!(when, WriteStatus::Later(_)) {
        ctx.status_held.lock().unwrap().remove(key);
    }
    StatusStep { new, when }
}

/// `new` was written over `old`: the spec change it applies is logged with
/// its timings, and what changed is announced.
async fn wrote(
    ctx: &Context,
    sub: &TenantSubscription,
    writer: &Writer<'_>,
    old: &TenantSubscriptionStatus,
    new: &TenantSubscriptionStatus,
    timings: &mut Timings,
) {
    if let Some(generation) = new.observed_generation
        && old.observed_generation != Some(generation)
        && let Some(seen) = ctx.spec_changes.applied(sub, generation)
    {
        timings.report(sub, &seen, &ctx.metrics);
    }
    for note in events::announcements(old, new) {
        writer.announce(&note).await;
    }
}

/// Write `old` back over a status written together with children whose
/// writes then failed (it said they were written). When that fails too,
/// the retry's reconcile, which sees the status written, writes the truth.
async fn put_back(
    ctx: &Context,
    sub: &TenantSubscription,
    key: String,
    old: &TenantSubscriptionStatus,
) {
    let ns = sub.namespace().unwrap_or_default();
    match write_status(&ctx.client, &ns, &sub.name_any(), old).await {
        Ok(answered) => {
            ctx.metrics.write("TenantSubscription", "apply-status");
            ctx.wrote_status(key, answered);
        }
        Err(e) => {
            warn!(subscription = %sub.name_any(), namespace = %ns, error = %e, "could not put back the status written with children whose writes failed")
        }
    }
}

/// `batches` less the applies in `applied` (see [`Context::unseen`]) that
/// changed a cached child; batches left empty go. A child the cache does
/// not hold is always written: not yet seen after its creation, or deleted
/// since, there is no telling.
fn without_unseen(
    applied: &HashMap<(ChildKind, String, String), Applied>,
    ns: &str,
    batches: Vec<Vec<Write>>,
) -> Vec<Vec<Write>> {
    batches
        .into_iter()
        .map(|batch| {
            batch
                .into_iter()
                .filter(|w| {
                    let Write::Apply(d) = w else {
                        return true;
                    };
                    let key = (d.kind, ns.to_string(), d.name.clone());
                    !applied.get(&key).is_some_and(|a| {
                        a.digest == d.digest
                            && d.applied == Some(a.over)
                            && a.at.elapsed() < OWN_STATUS_FOR
                    })
                })
                .collect::<Vec<_>>()
        })
        .filter(|batch| !batch.is_empty())
        .collect()
}

/// Write the status of a subscription that may not act in the refusal
/// lane (see [`Refusals`]); nothing when one is already waiting for it. A
/// write that fails is logged and tried again at the next reconcile.
fn refuse(
    ctx: &Arc<Context>,
    sub: &Arc<TenantSubscription>,
    key: String,
    old: TenantSubscriptionStatus,
    new: TenantSubscriptionStatus,
) {
    if !ctx.refusals.pending.lock().unwrap().insert(key.clone()) {
        return;
    }
    let (ctx, sub) = (Arc::clone(ctx), Arc::clone(sub));
    tokio::spawn(async move {
        let lane = Arc::clone(&ctx.refusals.lane);
        let _permit = lane.acquire().await;
        let ns = sub.namespace().unwrap_or_default();
        match write_status(&ctx.client, &ns, &sub.name_any(), &new).await {
            Ok(_) => {
                ctx.metrics.write("TenantSubscription", "apply-status");
                let writer = Writer {
                    client: &ctx.client,
                    metrics: &ctx.metrics,
                    events: &ctx.events,
                    sub: &sub,
                };
                for note in events::announcements(&old, &new) {
                    writer.announce(&note).await;
                }
            }
            Err(e) => {
                warn!(subscription = %sub.name_any(), namespace = %ns, error = %e, "could not write the status of a subscription that may not act")
            }
        }
        ctx.refusals.pending.lock().unwrap().remove(&key);
    });
}

/// Write `status`; returns it as the API server answered it.
async fn write_status(
    client: &Client,
    ns: &str,
    name: &str,
    status: &TenantSubscriptionStatus,
) -> Result<TenantSubscriptionStatus> {
    let body = json!({
        "apiVersion": "capacity.tenancy.dev/v1alpha1",
        "kind": "TenantSubscription",
        "status": status,
    });
    let answered = Api::<TenantSubscription>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(api_error(Verb::ApplyStatus, "TenantSubscription", ns, name))?;
    Ok(answered.status.unwrap_or_default())
}

/// When to look at the subscription again: at the resync (spread), or
/// sooner when the outcome or a held-back status write asks for it.
fn next_look(
    outcome: &Outcome,
    batch_until: Option<Timestamp>,
    resync: Duration,
    now: Timestamp,
) -> Duration {
    let mut next =
        now + SignedDuration::try_from(jittered(resync)).unwrap_or(SignedDuration::from_secs(300));
    for t in outcome.requeue.into_iter().chain(batch_until) {
        next = next.min(t);
    }
    next.duration_since(now)
        .unsigned_abs()
        .max(Duration::from_millis(200))
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

/// The gauges of the subscription's modules, labelled with the tenant the
/// namespace is assigned to (never `spec.tenantId`); none for a subscription
/// that may not act in its namespace.
fn publish_metrics(
    metrics: &Metrics,
    sub: &TenantSubscription,
    tenancy: &Tenancy,
    o: &Outcome,
    observed: &BTreeMap<String, Observed>,
) {
    let ns = sub.namespace().unwrap_or_default();
    let acting = assignment(sub, tenancy).is_ok();
    for m in &o.modules {
        let labels = ModuleLabels {
            namespace: ns.clone(),
            subscription: sub.name_any(),
            tenant: tenancy.tenant.clone().unwrap_or_default(),
            module: m.name.clone(),
        };
        let seen = observed.get(&m.name).copied().unwrap_or_default();
        let gauges = (acting && m.state == Some(ModuleState::Active)).then(|| ModuleGauges {
            max_replicas: m.max_replicas.unwrap_or(0) as i64,
            min_replicas: m.min_replicas.unwrap_or(0) as i64,
            ceiling_sessions: m.concurrency.unwrap_or(0),
            replicas: seen.replicas.map(i64::from),
            sessions: seen.sessions,
            capacity_limited: seen.capacity_limited,
            pods_refused: seen.pods_refused,
        });
        metrics.modules.set_gauges(&labels, gauges);
    }
}

pub fn error_policy(sub: Arc<TenantSubscription>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&ErrorLabels {
            error: err.metric_label(),
        })
        .inc();
    let key = key(&sub);
    let not_found = {
        let mut counts = ctx.not_found.lock().unwrap();
        if err.is_not_found() || err.rejection().is_some() {
            let n = counts.entry(key).or_default();
            *n += 1;
            *n
        } else {
            counts.remove(&key);
            0
        }
    };
    let mut delay = retry_delay(not_found);
    if err.permission_refused().is_some() {
        // The operator's own permission: back as soon as a rule is mended,
        // so asked again at least every minute.
        delay = delay.min(PERMISSION_RETRY);
    }
    warn!(subscription = %sub.name_any(), namespace = ?sub.namespace(), error = %err, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The longest wait before a write the operator was not permitted is tried again.
const PERMISSION_RETRY: Duration = Duration::from_secs(60);

/// When a failed reconcile is tried again: in 5 s (an outage, a conflict, a
/// throttled write: the next try may well work), except after "not found"
/// answers and child writes the API server refuses, which last (a
/// subscription left behind in a namespace that is gone, a child the API
/// server finds invalid until the provider mends the profile): 5 s doubled
/// per consecutive one, at most 5 min.
fn retry_delay(consecutive_not_found: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(5);
    const MOST: Duration = Duration::from_secs(300);
    let doublings = consecutive_not_found.saturating_sub(1).min(10);
    FIRST.saturating_mul(1 << doublings).min(MOST)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

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
    fn applies_written_and_not_yet_seen_are_not_written_again() {
        use crate::render::ChildKind::{Hpa, Quota};
        let apply = |kind, name: &str, digest, over| {
            Write::Apply(decide::Desired {
                kind,
                name: name.into(),
                body: serde_json::Value::Null,
                digest,
                applied: over,
            })
        };
        let at = |ago: u64| {
            Instant::now()
                .checked_sub(Duration::from_secs(ago))
                .unwrap()
        };
        let mut applied = HashMap::new();
        // The HPA was changed to 2 over 1, the quota to 7 over 6.
        applied.insert(
            (Hpa, "ns".to_string(), "t-video".to_string()),
            Applied {
                digest: 2,
                over: 1,
                at: at(1),
            },
        );
        applied.insert(
            (Quota, "ns".to_string(), "t-capacity".to_string()),
            Applied {
                digest: 7,
                over: 6,
                at: at(1),
            },
        );
        let names = |batches: Vec<Vec<Write>>| -> Vec<Vec<String>> {
            batches
                .iter()
                .map(|b| {
                    b.iter()
                        .map(|w| match w {
                            Write::Apply(d) => format!("{}={}", d.name, d.digest),
                            _ => "other".into(),
                        })
                        .collect()
                })
                .collect()
        };
        // The cache still shows what was there before: the HPA goes, and
        // its batch with it. The quota it does not hold is written (not
        // seen since it was created, or deleted since).
        let again = vec![
            vec![apply(Hpa, "t-video", 2, Some(1))],
            vec![apply(Quota, "t-capacity", 7, None)],
        ];
        assert_eq!(
            names(without_unseen(&applied, "ns", again)),
            [["t-capacity=7"]]
        );
        // Another namespace, another wish, a cache that moved on (another
        // writer): written.
        let others = vec![vec![
            apply(Hpa, "t-video", 2, Some(1)),
            apply(Quota, "t-capacity", 8, None),
            apply(Hpa, "t-video", 2, Some(5)),
        ]];
        assert_eq!(
            names(without_unseen(&applied, "other-ns", others)),
            [["t-video=2", "t-capacity=8", "t-video=2"]]
        );
        let moved = vec![vec![
            apply(Quota, "t-capacity", 8, None),
            apply(Hpa, "t-video", 2, Some(5)),
        ]];
        assert_eq!(
            names(without_unseen(&applied, "ns", moved)),
            [["t-capacity=8", "t-video=2"]]
        );
        // Long enough ago, the watch is taken to have missed it: written.
        applied
            .get_mut(&(Hpa, "ns".to_string(), "t-video".to_string()))
            .unwrap()
            .at = at(OWN_STATUS_FOR.as_secs() + 1);
        let late = vec![vec![apply(Hpa, "t-video", 2, Some(1))]];
        assert_eq!(names(without_unseen(&applied, "ns", late)), [["t-video=2"]]);
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
}
