//! The record of a draining module, kept in the subscription's status (which
//! only the operator writes): when its drain began, its deadline, what
//! happens to its data, and the tier, numbers and per-replica resources it
//! ran with. A drain is decided from this record alone: nothing a tenant
//! can edit in its namespace (the module's HPA, Deployment or annotations)
//! moves its deadline, its data's fate or its share of the quota.

use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use k8s_openapi::{
    api::core::v1::ResourceRequirements, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::facts::LiveModule;
use crate::{
    api::{DataRetention, ModuleState, ModuleStatus, TenantSubscription, bounds},
    capacity::{self, Catalogue, Footprint, Numbers, window::format_instant},
};

/// What the operator recorded when a module's drain began.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainRecord {
    pub since: Timestamp,
    /// Children (and, with `Delete`, data) go at this instant.
    pub deadline: Timestamp,
    pub retention: DataRetention,
    pub tier: Option<String>,
    /// Session ceiling it had (what status reported as `concurrency`).
    pub concurrency: i64,
    pub numbers: Numbers,
    /// Per-replica resources; `None` when the module declared none.
    pub resources: Option<ResourceRequirements>,
    /// Regions its pods were held to; a draining module does not move.
    pub regions: Vec<String>,
}

impl DrainRecord {
    /// The record in a module's last status, when it has a whole one.
    pub fn read(st: &ModuleStatus) -> Option<Self> {
        if st.state != Some(ModuleState::Draining) {
            return None;
        }
        let since = st.draining_since.as_deref()?.parse().ok()?;
        let deadline = st.drain_deadline.as_deref()?.parse().ok()?;
        let max = st.max_replicas?;
        let concurrency = st.concurrency.unwrap_or(0);
        Some(Self {
            since,
            deadline,
            retention: st.data_retention?,
            tier: st.tier.clone(),
            concurrency,
            numbers: Numbers {
                ceiling: concurrency,
                max_replicas: max,
                min_replicas: st.min_replicas.unwrap_or(1).clamp(1, max.max(1)),
            },
            resources: st.resources.clone(),
            regions: st.regions.clone(),
        })
    }

    /// The drain of `module` begins `now`: the deadline and data retention
    /// of the subscription's spec now, the numbers the module last had
    /// (from its last status, which the operator wrote), the resources of
    /// its profile at that tier. A status without such numbers (a module
    /// reported invalid) gets the spec's concurrency at 100 %; when the
    /// profile is gone too, the resources are the LimitRange's defaults.
    pub fn begin(
        sub: &TenantSubscription,
        module: &str,
        last: Option<&ModuleStatus>,
        catalogue: &Catalogue,
        now: Timestamp,
    ) -> Self {
        let requested = sub.spec.modules.iter().find(|m| m.name == module);
        let profile = catalogue.profiles.get(module);
        let tier = last
            .filter(|s| s.max_replicas.is_some())
            .and_then(|s| s.tier.clone())
            .or_else(|| requested.and_then(|r| r.tier.clone()));
        let numbers = last
            .and_then(|s| {
                let max = s.max_replicas?;
                Some(Numbers {
                    ceiling: s.concurrency.unwrap_or(0),
                    max_replicas: max,
                    min_replicas: s.min_replicas.unwrap_or(1).clamp(1, max.max(1)),
                })
            })
            .or_else(|| {
                let (r, p) = (requested?, profile?);
                let sessions = tier
                    .as_deref()
                    .and_then(|t| p.tiers.get(t))
                    .and_then(|t| t.sessions_per_replica)
                    .unwrap_or(p.sessions_per_replica);
                capacity::numbers(r.concurrency, sessions, p.min_replicas, 100, 0)
            })
            .unwrap_or(Numbers {
                ceiling: 0,
                max_replicas: profile.map_or(1, |p| p.min_replicas.max(1)),
                min_replicas: 1,
            });
        // Never from the Deployment: a namespace admin can write its
        // resources. Without the profile the share counts at the defaults
        // of the operator's LimitRange (the quota may then be lower than
        // what the module's pods hold; they keep running).
        let resources = profile.and_then(|p| capacity::tier_resources(p, tier.as_deref()));
        // Held to the schema's bounds: an object written under an older
        // CRD may say anything, and the clock must not overflow.
        let drain = SignedDuration::from_secs(
            sub.spec
                .downgrade
                .drain_seconds
                .clamp(0, bounds::MAX_DRAIN_SECONDS),
        );
        Self {
            since: now,
            deadline: ceil_to_second(now + drain),
            retention: sub.spec.downgrade.data_retention,
            tier,
            concurrency: numbers.ceiling,
            numbers,
            resources,
            regions: last.map(|s| s.regions.clone()).unwrap_or_default(),
        }
    }

    /// Its share of the quota until it is removed: the recorded ceiling at
    /// the recorded per-replica size (a size that does not parse counts
    /// pods only; the profile it came from was refused the same way).
    pub fn footprint(&self, module: &str) -> Footprint {
        Footprint::new(module, self.numbers.max_replicas, self.resources.as_ref()).unwrap_or(
            Footprint {
                pods: self.numbers.max_replicas as i64 + capacity::surge(self.numbers.max_replicas),
                ..Default::default()
            },
        )
    }

    /// The module as it ran when its drain began, rendered from its profile
    /// with the recorded tier, numbers and resources; `None` without a profile.
    pub fn plan(&self, module: &str, catalogue: &Catalogue) -> Option<capacity::ModulePlan> {
        let profile = catalogue.profiles.get(module)?;
        // A profile its pods cannot be rendered from (changed since the
        // drain began) leaves the children as they are.
        if !capacity::check_profile(module, profile, self.tier.as_deref()).is_empty() {
            return None;
        }
        Some(capacity::draining_plan(
            module,
            profile,
            self.tier.as_deref(),
            self.concurrency,
            self.numbers,
            self.resources.clone(),
            self.regions.clone(),
        ))
    }

    /// The module's status: the record, the replica counts of today, and `message`.
    pub fn status(
        &self,
        module: &str,
        live: &LiveModule,
        time_zone: &TimeZone,
        message: String,
    ) -> ModuleStatus {
        let (replicas, ready) = live.replicas();
        ModuleStatus {
            name: module.to_string(),
            state: Some(ModuleState::Draining),
            tier: self.tier.clone(),
            min_replicas: Some(self.numbers.min_replicas),
            max_replicas: Some(self.numbers.max_replicas),
            desired_replicas: live.hpa_desired(),
            replicas,
            ready_replicas: ready,
            concurrency: Some(self.concurrency),
            drain_deadline: Some(self.shown_deadline(time_zone)),
            draining_since: Some(format_instant(self.since, time_zone)),
            data_retention: Some(self.retention),
            resources: self.resources.clone(),
            regions: self.regions.clone(),
            ready_by_zone: live.ready_by_zone(),
            ramping_down: None,
            message: Some(message),
        }
    }

    pub fn shown_deadline(&self, time_zone: &TimeZone) -> String {
        format_instant(self.deadline, time_zone)
    }
}

/// Status shows instants to the second: a deadline rounded up reads back as
/// itself, never earlier than the drain it ends.
fn ceil_to_second(t: Timestamp) -> Timestamp {
    let down = Timestamp::from_second(t.as_second()).unwrap_or(t);
    if down == t {
        t
    } else {
        down + SignedDuration::from_secs(1)
    }
}

/// Whether `new` holds a drain record that `old` does not hold as it is:
/// such a status is written before anything else, so the record cannot be
/// lost to a failed write or held back by batching.
pub fn new_records(old: &[ModuleStatus], new: &[ModuleStatus]) -> bool {
    let key = |s: &ModuleStatus| {
        (
            s.draining_since.clone(),
            s.drain_deadline.clone(),
            s.data_retention,
            s.tier.clone(),
            s.max_replicas,
            s.min_replicas,
            s.resources.clone(),
        )
    };
    new.iter()
        .filter(|n| n.draining_since.is_some())
        .any(|n| !old.iter().any(|o| o.name == n.name && key(o) == key(n)))
}

/// Whether a PersistentVolumeClaim carrying a drained module's labels is the
/// operator's to delete: it is, unless another object owns it. Any owner
/// reference to something other than the subscription (a StatefulSet, a
/// Pod, another operator's resource, whatever its kind) makes it someone
/// else's: that owner decides its fate, and garbage collection removes it
/// with its owner. A claim with no owner, or owned only by the subscription,
/// is the module's data.
pub fn claim_is_ours(meta: &ObjectMeta, subscription_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .all(|r| r.uid == subscription_uid)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn owned(owners: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            owner_references: (!owners.is_empty()).then(|| {
                owners
                    .iter()
                    .map(|(kind, uid)| OwnerReference {
                        kind: kind.to_string(),
                        uid: uid.to_string(),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_claim_owned_by_another_object_is_not_the_modules_data() {
        let cases = [
            (vec![], true),
            (vec![("TenantSubscription", "sub")], true),
            (vec![("StatefulSet", "sts")], false),
            (vec![("TenantSubscription", "sub"), ("Pod", "p")], false),
            // Another subscription's claim, even with our labels.
            (vec![("TenantSubscription", "other")], false),
        ];
        for (owners, ours) in cases {
            assert_eq!(claim_is_ours(&owned(&owners), "sub"), ours, "{owners:?}");
        }
    }

    #[test]
    fn a_deadline_reads_back_as_itself_and_never_early() {
        let t: Timestamp = "2026-03-02T10:00:00.4Z".parse().unwrap();
        let d = ceil_to_second(t);
        assert_eq!(d, "2026-03-02T10:00:01Z".parse::<Timestamp>().unwrap());
        let shown = format_instant(d, &TimeZone::get("Asia/Shanghai").unwrap());
        assert_eq!(shown, "2026-03-02T18:00:01+08:00");
        assert_eq!(shown.parse::<Timestamp>().unwrap(), d);
        assert_eq!(ceil_to_second(d), d);
    }
}
