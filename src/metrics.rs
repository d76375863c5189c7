//! Prometheus metrics of the controller.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: String,
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    pub namespace: String,
    pub subscription: String,
    pub tenant: String,
    pub module: String,
}

/// What the plan gives one active module and what it has (the `module_*`
/// gauges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModuleGauges {
    pub max_replicas: i64,
    pub min_replicas: i64,
    pub ceiling_sessions: i64,
    /// Pods the HPA runs (its `status.currentReplicas`), once it reports them.
    pub replicas: Option<i64>,
    /// Live sessions, known only while the ceiling holds the HPA back.
    pub sessions: Option<i64>,
    /// The module is one the CapacityLimited condition names.
    pub capacity_limited: bool,
    /// The API server refuses the module's pods (Ready's `PodsRefused`).
    pub pods_refused: bool,
}

/// Everything exported about one tenant module.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ModuleValues {
    /// `None` while the module is not active (switched off, draining,
    /// refused): no gauges are exported for it then.
    pub gauges: Option<ModuleGauges>,
    pub replica_seconds: f64,
    pub session_capacity_seconds: f64,
}

/// The per-module series: one entry (one label set) per tenant module
/// holding all its values, instead of one label set in each family (at
/// 1,000 tenants x 3 modules, five families were 15,000 label sets).
#[derive(Debug, Default)]
pub struct ModuleMetrics {
    series: Mutex<HashMap<ModuleLabels, ModuleValues>>,
}

impl ModuleMetrics {
    fn update(&self, labels: &ModuleLabels, f: impl FnOnce(&mut ModuleValues)) {
        let mut series = self.series.lock().unwrap();
        match series.get_mut(labels) {
            Some(v) => f(v),
            None => f(series.entry(labels.clone()).or_default()),
        }
    }

    /// Set (or with `None` withdraw) the gauges of one module.
    pub fn set_gauges(&self, labels: &ModuleLabels, gauges: Option<ModuleGauges>) {
        if gauges.is_none() {
            // Withdrawing from a module never seen creates nothing.
            if let Some(v) = self.series.lock().unwrap().get_mut(labels) {
                v.gauges = None;
            }
            return;
        }
        self.update(labels, |v| v.gauges = gauges);
    }

    /// Add provisioned replica-seconds and session-capacity-seconds.
    pub fn meter(&self, labels: &ModuleLabels, replica_seconds: f64, session_seconds: f64) {
        self.update(labels, |v| {
            v.replica_seconds += replica_seconds;
            v.session_capacity_seconds += session_seconds;
        });
    }

    pub fn get(&self, labels: &ModuleLabels) -> Option<ModuleValues> {
        self.series.lock().unwrap().get(labels).copied()
    }

    /// Keep the series for which `keep` says so; `keep` may also withdraw
    /// the gauges of those it keeps.
    pub fn retain(&self, mut keep: impl FnMut(&ModuleLabels, &mut ModuleValues) -> bool) {
        let mut series = self.series.lock().unwrap();
        series.retain(|k, v| keep(k, v));
        if series.capacity() > 64 && series.len() < series.capacity() / 4 {
            series.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.series.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Collector for ModuleMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series = self.series.lock().unwrap();
        // `None`: not exported for that module (a value not known yet).
        type Value = fn(&ModuleGauges) -> Option<i64>;
        let gauges: [(&str, &str, Value); 7] = [
            (
                "module_max_replicas",
                "Ceiling in replicas (HPA maxReplicas) per tenant module",
                |g| Some(g.max_replicas),
            ),
            (
                "module_min_replicas",
                "Floor in replicas (HPA minReplicas) per tenant module",
                |g| Some(g.min_replicas),
            ),
            (
                "module_ceiling_sessions",
                "Concurrent sessions in force per tenant module (bought, scaled by seasons)",
                |g| Some(g.ceiling_sessions),
            ),
            (
                "module_replicas",
                "Pods the HPA runs per tenant module (its status.currentReplicas)",
                |g| g.replicas,
            ),
            (
                "module_sessions",
                "Live sessions per tenant module (the HPA's sessions metric times its pods), exported only while the ceiling holds the HPA back",
                |g| g.sessions,
            ),
            (
                "module_capacity_limited",
                "1 while the subscription's CapacityLimited condition names the tenant module (demand above its ceiling or the quota), else 0",
                |g| Some(g.capacity_limited.into()),
            ),
            (
                "module_pods_refused",
                "1 while the API server refuses the tenant module's pods (Ready=False, PodsRefused), else 0",
                |g| Some(g.pods_refused.into()),
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, v) in series.iter() {
                if let Some(x) = v.gauges.as_ref().and_then(value) {
                    ConstGauge::new(x).encode(family.encode_family(labels)?)?;
                }
            }
        }
        type Total = fn(&ModuleValues) -> f64;
        let counters: [(&str, &str, Total); 2] = [
            (
                "module_replica_seconds",
                "Provisioned replicas integrated over time (replica-seconds) per tenant module",
                |v| v.replica_seconds,
            ),
            (
                "module_session_capacity_seconds",
                "Provisioned session capacity (replicas x sessions per replica) integrated over time per tenant module",
                |v| v.session_capacity_seconds,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, v) in series.iter() {
                ConstCounter::new(value(v)).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub reconciliations: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    /// The part of a reconcile spent on the CPU alone: reading the caches
    /// and deciding, without any call to the API server.
    pub decision: Histogram,
    /// From a spec change seen by the watch to the start of its reconcile.
    pub change_queued: Histogram,
    /// From a spec change seen by the watch to its status written.
    pub change_applied: Histogram,
    pub writes: Family<WriteLabels, Counter>,
    pub modules: Arc<ModuleMetrics>,
    /// 1 while this instance reconciles: it holds the leader-election
    /// Lease, or runs without leader election.
    pub leader: Gauge,
    /// 1 once every cache of the controller has its first full list.
    pub caches_synced: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tenant_capacity");
        let reconciliations = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        let decision = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 5.0,
        ]);
        let change_queued = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let change_applied =
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        let writes = Family::<WriteLabels, Counter>::default();
        let modules = Arc::new(ModuleMetrics::default());
        let leader = Gauge::default();
        let caches_synced = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        registry.register(
            "decision_duration_seconds",
            "Time spent deciding one reconciliation from the caches (no API calls)",
            decision.clone(),
        );
        registry.register(
            "spec_change_queued_seconds",
            "From a subscription's spec change seen to the start of the reconcile that applies it",
            change_queued.clone(),
        );
        registry.register(
            "spec_change_applied_seconds",
            "From a subscription's spec change seen to its status reporting the new generation",
            change_applied.clone(),
        );
        registry.register(
            "api_writes",
            "Writes sent to the API server, by kind and verb",
            writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance reconciles (holds the leader-election Lease, or runs without leader election), else 0",
            leader.clone(),
        );
        registry.register(
            "caches_synced",
            "1 once every cache of the controller has its first full list, else 0 (a standby never syncs)",
            caches_synced.clone(),
        );
        registry.register_collector(Box::new(modules.clone()));
        Self {
            registry: Arc::new(registry),
            reconciliations,
            failures,
            duration,
            decision,
            change_queued,
            change_applied,
            writes,
            modules,
            leader,
            caches_synced,
        }
    }
}

impl Metrics {
    pub fn write(&self, kind: &str, verb: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.to_string(),
                verb: verb.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(sub: &str, module: &str) -> ModuleLabels {
        ModuleLabels {
            namespace: "t".into(),
            subscription: sub.into(),
            tenant: sub.into(),
            module: module.into(),
        }
    }

    const PLAN: ModuleGauges = ModuleGauges {
        max_replicas: 8,
        min_replicas: 2,
        ceiling_sessions: 400,
        replicas: None,
        sessions: None,
        capacity_limited: false,
        pods_refused: false,
    };

    #[test]
    fn one_module_is_exported_in_its_families() {
        let m = Metrics::default();
        m.modules.set_gauges(&labels("acme", "video"), Some(PLAN));
        m.modules.meter(&labels("acme", "video"), 30.0, 1200.0);
        let text = m.encode();
        let l = r#"{namespace="t",subscription="acme",tenant="acme",module="video"}"#;
        for line in [
            format!("tenant_capacity_module_max_replicas{l} 8"),
            format!("tenant_capacity_module_min_replicas{l} 2"),
            format!("tenant_capacity_module_ceiling_sessions{l} 400"),
            format!("tenant_capacity_module_capacity_limited{l} 0"),
            format!("tenant_capacity_module_pods_refused{l} 0"),
            format!("tenant_capacity_module_replica_seconds_total{l} 30.0"),
            format!("tenant_capacity_module_session_capacity_seconds_total{l} 1200.0"),
        ] {
            assert!(text.lines().any(|x| x == line), "{line} missing in\n{text}");
        }
        assert!(
            text.contains("# TYPE tenant_capacity_module_max_replicas gauge"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tenant_capacity_module_replica_seconds counter"),
            "{text}"
        );
        assert_eq!(m.modules.len(), 1);
    }

    #[test]
    fn a_module_without_plan_exports_only_its_counters() {
        let m = Metrics::default();
        let video = labels("acme", "video");
        m.modules.set_gauges(&video, Some(PLAN));
        m.modules.meter(&video, 30.0, 1200.0);
        m.modules.set_gauges(&video, None);
        let text = m.encode();
        for gauge in ["max_replicas", "capacity_limited", "pods_refused"] {
            assert!(!text.contains(&format!("module_{gauge}{{")), "{text}");
        }
        assert!(text.contains("module_replica_seconds_total{"), "{text}");
        // Withdrawing a plan never seen creates nothing.
        m.modules.set_gauges(&labels("acme", "voice"), None);
        assert_eq!(m.modules.len(), 1);
        m.modules.retain(|_, v| v.gauges.is_some());
        assert!(m.modules.is_empty());
        assert!(!m.encode().contains("module_replica_seconds_total{"));
    }

    #[test]
    fn replicas_and_sessions_are_exported_once_known_and_flags_as_0_or_1() {
        let m = Metrics::default();
        let video = labels("acme", "video");
        m.modules.set_gauges(&video, Some(PLAN));
        let text = m.encode();
        assert!(!text.contains("module_replicas{"), "not known yet: {text}");
        assert!(!text.contains("module_sessions{"), "not known yet: {text}");
        m.modules.set_gauges(
            &video,
            Some(ModuleGauges {
                replicas: Some(8),
                sessions: Some(1240),
                capacity_limited: true,
                pods_refused: true,
                ..PLAN
            }),
        );
        let text = m.encode();
        let l = r#"{namespace="t",subscription="acme",tenant="acme",module="video"}"#;
        for line in [
            format!("tenant_capacity_module_replicas{l} 8"),
            format!("tenant_capacity_module_sessions{l} 1240"),
            format!("tenant_capacity_module_capacity_limited{l} 1"),
            format!("tenant_capacity_module_pods_refused{l} 1"),
        ] {
            assert!(text.lines().any(|x| x == line), "{line} missing in\n{text}");
        }
        // Held back no more: the flags go back to 0, the sessions (read only
        // while held back) go.
        m.modules.set_gauges(
            &video,
            Some(ModuleGauges {
                replicas: Some(8),
                ..PLAN
            }),
        );
        let text = m.encode();
        assert!(text.contains(&format!("tenant_capacity_module_capacity_limited{l} 0")));
        assert!(!text.contains("module_sessions{"), "{text}");
    }

    #[test]
    fn leader_and_caches_synced_start_at_0() {
        let m = Metrics::default();
        let text = m.encode();
        assert!(
            text.lines().any(|x| x == "tenant_capacity_leader 0"),
            "{text}"
        );
        assert!(
            text.lines().any(|x| x == "tenant_capacity_caches_synced 0"),
            "{text}"
        );
        m.leader.set(1);
        m.caches_synced.set(1);
        let text = m.encode();
        assert!(
            text.lines().any(|x| x == "tenant_capacity_leader 1"),
            "{text}"
        );
        assert!(
            text.lines().any(|x| x == "tenant_capacity_caches_synced 1"),
            "{text}"
        );
    }
}
