//! Kubernetes Events about subscriptions (`events.k8s.io/v1`).
//!
//! The same event about the same object again within six minutes becomes a
//! series on the first one (`series.count`, `series.lastObservedTime`), as
//! client-go's recorder does, instead of a new object.
//!
//! To know which event to patch, only a small record per recent event is
//! kept (a hash of what identifies it, its name, its count),
//! and records older than six minutes are dropped by [`Events::forget_old`]
//! even while nothing is published. (kube-runtime's `Recorder` keeps every
//! event it sent, whole, until the next publish: after a cold start over
//! 1,000 tenants that was thousands of events held for as long as the
//! operator stayed idle.)

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::status;
use crate::api::TenantSubscriptionStatus;

/// How long an event can still grow into a series (client-go's value).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// An Event to publish about a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

/// Events on the status transitions a human should hear about: Ready
/// changing its reason, and capacity becoming limited. None while nothing
/// changes.
pub fn announcements(old: &TenantSubscriptionStatus, new: &TenantSubscriptionStatus) -> Vec<Note> {
    let mut notes = Vec::new();
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
        notes.push(Note {
            type_,
            reason: c.reason.clone(),
            message: c.message.clone(),
        });
    }
    let limited = |s: &TenantSubscriptionStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::CAPACITY_LIMITED && c.status == "True")
            .map(|c| c.message.clone())
    };
    if let (None, Some(message)) = (limited(old), limited(new)) {
        notes.push(Note {
            type_: EventType::Warning,
            reason: "CapacityLimited".into(),
            message,
        });
    }
    notes
}

/// What was sent for one recent event: enough to patch its series.
#[derive(Debug)]
struct Sent {
    name: String,
    count: i32,
    last: Timestamp,
}

/// What the next publish of an event does.
#[derive(Debug, PartialEq)]
enum Next {
    Create,
    /// Patch the series of the event `name` (in the object's namespace) to `count`.
    Repeat {
        name: String,
        count: i32,
    },
}

pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<HashMap<u64, Sent>>,
}

impl Events {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            recent: Mutex::default(),
        }
    }

    /// Create the event, or count it into the series of the same event sent
    /// less than [`SERIES_WINDOW`] ago. Returns the verb sent: `create` or
    /// `patch`.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<&'static str, kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let key = key(regarding, type_, reason, action, note);
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        match self.next(key, now) {
            Next::Repeat { name, count } => {
                let patch = json!({
                    "series": {"count": count, "lastObservedTime": MicroTime(now)},
                });
                match events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        self.sent(key, &name, count, now);
                        return Ok("patch");
                    }
                    // Deleted since (events expire): start a new one.
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Next::Create => {}
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note.to_string()),
            type_: Some(type_.as_str().to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        events.create(&PostParams::default(), &event).await?;
        self.sent(key, &name, 1, now);
        Ok("create")
    }

    /// Drop the records of events that can no longer grow into a series.
    pub fn forget_old(&self, now: Timestamp) {
        let mut recent = self.recent.lock().unwrap();
        recent.retain(|_, s| s.last + SERIES_WINDOW > now);
        if recent.capacity() > 64 && recent.len() < recent.capacity() / 4 {
            recent.shrink_to_fit();
        }
    }

    /// Events whose series could still grow.
    pub fn remembered(&self) -> usize {
        self.recent.lock().unwrap().len()
    }

    fn next(&self, key: u64, now: Timestamp) -> Next {
        self.forget_old(now);
        match self.recent.lock().unwrap().get(&key) {
            Some(s) => Next::Repeat {
                name: s.name.clone(),
                count: s.count + 1,
            },
            None => Next::Create,
        }
    }

    fn sent(&self, key: u64, name: &str, count: i32, now: Timestamp) {
        self.recent.lock().unwrap().insert(
            key,
            Sent {
                name: name.to_string(),
                count,
                last: now,
            },
        );
    }
}

/// What makes two events "the same": the object (by uid, so a recreated
/// object starts afresh), type, reason, action and note.
fn key(
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) -> u64 {
    let mut h = DefaultHasher::new();
    (
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
        type_.as_str(),
        reason,
        action,
        note,
    )
        .hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            namespace: Some("t".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    fn events() -> Events {
        // Never contacted: these tests drive only the bookkeeping.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        Events::new(client, "tco", None)
    }

    #[tokio::test]
    async fn repeats_within_the_window_grow_a_series_then_start_again() {
        let e = events();
        let r = reference("acme", "u1");
        let k = key(&r, EventType::Normal, "Available", "Reconcile", "ok");
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(e.next(k, t0), Next::Create);
        e.sent(k, "acme.1", 1, t0);
        let t1 = t0 + SignedDuration::from_mins(5);
        assert_eq!(
            e.next(k, t1),
            Next::Repeat {
                name: "acme.1".into(),
                count: 2
            }
        );
        e.sent(k, "acme.1", 2, t1);
        // The window runs from the last time it was seen.
        let t2 = t1 + SignedDuration::from_mins(5);
        assert!(matches!(e.next(k, t2), Next::Repeat { count: 3, .. }));
        // Quiet for longer than the window: forgotten, a new event.
        assert_eq!(e.next(k, t1 + SERIES_WINDOW), Next::Create);
        assert_eq!(e.remembered(), 0);
    }

    #[tokio::test]
    async fn different_objects_reasons_and_notes_are_different_events() {
        let a = reference("acme", "u1");
        let base = key(&a, EventType::Normal, "Available", "Reconcile", "ok");
        assert_ne!(
            base,
            key(&a, EventType::Warning, "Available", "Reconcile", "ok")
        );
        assert_ne!(
            base,
            key(&a, EventType::Normal, "Progressing", "Reconcile", "ok")
        );
        assert_ne!(
            base,
            key(&a, EventType::Normal, "Available", "Reconcile", "ko")
        );
        // A subscription deleted and created again under the same name.
        let again = reference("acme", "u2");
        assert_ne!(
            base,
            key(&again, EventType::Normal, "Available", "Reconcile", "ok")
        );
        assert_eq!(
            base,
            key(
                &a.clone(),
                EventType::Normal,
                "Available",
                "Reconcile",
                "ok"
            )
        );
    }

    #[tokio::test]
    async fn forgetting_releases_the_records() {
        let e = events();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        for i in 0..1000u64 {
            e.sent(i, &format!("s{i}.1"), 1, t0);
        }
        assert_eq!(e.remembered(), 1000);
        e.forget_old(t0 + SERIES_WINDOW);
        assert_eq!(e.remembered(), 0);
        assert!(e.recent.lock().unwrap().capacity() < 64);
    }
}
