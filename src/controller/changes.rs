//! How long a spec change takes inside the operator. A subscription whose
//! watch delivers a generation its status does not report yet is a change
//! waiting; from that moment the change is timed until a reconcile starts
//! on it (queued) and until the status reporting its generation is written
//! (applied). Each applied change is logged (`spec change applied`, with
//! where its time went) and observed in two histograms, so a slow plan
//! change can be told apart from a slow API server.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use kube::ResourceExt;

use crate::api::TenantSubscription;

/// Changes seen and not yet applied, by `namespace/name`.
#[derive(Default)]
pub struct SpecChanges {
    waiting: Mutex<HashMap<String, Seen>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    pub generation: i64,
    /// When the watch delivered it.
    pub at: Instant,
    /// The same moment on the wall clock (for joining with the API server's
    /// audit log).
    pub wall: Timestamp,
}

/// Entries older than this are dropped when the map grows: a subscription
/// deleted before it was applied would otherwise stay.
const FORGET_AFTER: Duration = Duration::from_secs(600);
const TIDY_ABOVE: usize = 1024;

impl SpecChanges {
    /// A subscription as its watch delivered it.
    pub fn saw(&self, sub: &TenantSubscription) {
        let generation = sub.metadata.generation.unwrap_or(0);
        let observed = sub
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0);
        if generation <= observed || sub.metadata.deletion_timestamp.is_some() {
            return;
        }
        let key = key(sub);
        let mut waiting = self.waiting.lock().unwrap();
        if waiting.len() > TIDY_ABOVE {
            waiting.retain(|_, s| s.at.elapsed() < FORGET_AFTER);
        }
        let seen = Seen {
            generation,
            at: Instant::now(),
            wall: Timestamp::now(),
        };
        waiting
            .entry(key)
            .and_modify(|s| {
                if s.generation != generation {
                    *s = seen;
                }
            })
            .or_insert(seen);
    }

    /// `sub`'s status now reports `generation`: a change up to it is
    /// applied, and no longer waiting. Returns the change of exactly that
    /// generation, if one was timed.
    pub fn applied(&self, sub: &TenantSubscription, generation: i64) -> Option<Seen> {
        let mut waiting = self.waiting.lock().unwrap();
        let key = key(sub);
        let seen = waiting.get(&key).copied()?;
        if seen.generation > generation {
            return None;
        }
        waiting.remove(&key);
        (seen.generation == generation).then_some(seen)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().unwrap().len()
    }
}

fn key(sub: &TenantSubscription) -> String {
    format!("{}/{}", sub.namespace().unwrap_or_default(), sub.name_any())
}

/// Where one reconcile's time went, for the log of an applied change.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// The reconcile's start.
    pub started: Instant,
    /// Reading the caches and deciding.
    pub decide: Duration,
    /// The children's writes, batch after batch (the API server's answers
    /// included).
    pub children: Duration,
    /// The status write.
    pub status: Duration,
    /// All the writes, from the first sent to the last answered: the
    /// status goes out together with the children (see `reconcile`), so
    /// this is at most `children` and `status` added up.
    pub writing: Duration,
    /// Writes sent (children and status).
    pub writes: usize,
}

impl Timings {
    /// A reconcile that started at `started` and decided in `decide`.
    pub fn new(started: Instant, decide: Duration) -> Self {
        Self {
            started,
            decide,
            children: Duration::ZERO,
            status: Duration::ZERO,
            writing: Duration::ZERO,
            writes: 0,
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

impl Timings {
    /// Log the change `seen` as applied now, and observe its times.
    pub fn report(&self, sub: &TenantSubscription, seen: &Seen, metrics: &crate::metrics::Metrics) {
        let queued = self.started.saturating_duration_since(seen.at);
        let total = seen.at.elapsed();
        let reconcile = self.started.elapsed();
        // What the reconcile spent neither deciding nor waiting for the API
        // server (cache reads before deciding, status building, locks).
        let other = reconcile.saturating_sub(self.decide + self.writing);
        metrics.change_queued.observe(queued.as_secs_f64());
        metrics.change_applied.observe(total.as_secs_f64());
        tracing::info!(
            namespace = %sub.namespace().unwrap_or_default(),
            subscription = %sub.name_any(),
            generation = seen.generation,
            seen_at = %seen.wall,
            total_ms = ms(total),
            queued_ms = ms(queued),
            decide_ms = ms(self.decide),
            children_ms = ms(self.children),
            status_ms = ms(self.status),
            writing_ms = ms(self.writing),
            other_ms = ms(other),
            writes = self.writes,
            "spec change applied"
        );
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;
    use crate::api::{TenantSubscriptionSpec, TenantSubscriptionStatus};

    fn sub(generation: i64, observed: Option<i64>) -> TenantSubscription {
        let mut s = TenantSubscription::new(
            "acme",
            serde_json::from_value::<TenantSubscriptionSpec>(
                serde_json::json!({"tenantId": "acme", "modules": []}),
            )
            .unwrap(),
        );
        s.metadata = ObjectMeta {
            name: Some("acme".into()),
            namespace: Some("t-acme".into()),
            generation: Some(generation),
            ..Default::default()
        };
        s.status = observed.map(|g| TenantSubscriptionStatus {
            observed_generation: Some(g),
            ..Default::default()
        });
        s
    }

    #[test]
    fn a_change_waits_from_its_first_sighting_until_applied() {
        let changes = SpecChanges::default();
        changes.saw(&sub(2, Some(1)));
        let first = changes.waiting.lock().unwrap()["t-acme/acme"];
        assert_eq!(first.generation, 2);
        // Seen again (a status write, a resync): still timed from the first.
        changes.saw(&sub(2, Some(1)));
        assert_eq!(changes.applied(&sub(2, Some(1)), 2), Some(first));
        assert_eq!(changes.len(), 0);
        // A newer generation restarts the clock.
        changes.saw(&sub(2, Some(1)));
        changes.saw(&sub(3, Some(1)));
        let newer = changes.waiting.lock().unwrap()["t-acme/acme"];
        assert_eq!(newer.generation, 3);
        assert!(newer.at >= first.at);
        // Applying an older generation leaves the newer waiting.
        assert_eq!(changes.applied(&sub(3, Some(1)), 2), None);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes.applied(&sub(3, Some(1)), 3), Some(newer));
        assert_eq!(changes.len(), 0);
        // A status reporting a later generation than the one timed ends it, unreported.
        changes.saw(&sub(4, Some(3)));
        assert_eq!(changes.applied(&sub(5, Some(3)), 5), None);
        assert_eq!(changes.len(), 0);
    }

    #[test]
    fn reported_and_deleted_generations_are_not_changes() {
        let changes = SpecChanges::default();
        changes.saw(&sub(4, Some(4)));
        let mut deleted = sub(5, Some(4));
        deleted.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        changes.saw(&deleted);
        assert_eq!(changes.len(), 0);
        // A new subscription (no status yet) is one.
        changes.saw(&sub(1, None));
        assert_eq!(changes.len(), 1);
    }
}
