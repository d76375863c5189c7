//! Prometheus metrics of the controller.

use std::sync::{Arc, atomic::AtomicU64};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
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

#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub reconciliations: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub writes: Family<WriteLabels, Counter>,
    pub max_replicas: Family<ModuleLabels, Gauge>,
    pub min_replicas: Family<ModuleLabels, Gauge>,
    pub ceiling_sessions: Family<ModuleLabels, Gauge>,
    pub replica_seconds: Family<ModuleLabels, Counter<f64, AtomicU64>>,
    pub session_capacity_seconds: Family<ModuleLabels, Counter<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tenant_capacity");
        let reconciliations = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        let writes = Family::<WriteLabels, Counter>::default();
        let max_replicas = Family::<ModuleLabels, Gauge>::default();
        let min_replicas = Family::<ModuleLabels, Gauge>::default();
        let ceiling_sessions = Family::<ModuleLabels, Gauge>::default();
        let replica_seconds = Family::<ModuleLabels, Counter<f64, AtomicU64>>::default();
        let session_capacity_seconds = Family::<ModuleLabels, Counter<f64, AtomicU64>>::default();
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
            "api_writes",
            "Writes sent to the API server, by kind and verb",
            writes.clone(),
        );
        registry.register(
            "module_max_replicas",
            "Ceiling in replicas (HPA maxReplicas) per tenant module",
            max_replicas.clone(),
        );
        registry.register(
            "module_min_replicas",
            "Floor in replicas (HPA minReplicas) per tenant module",
            min_replicas.clone(),
        );
        registry.register(
            "module_ceiling_sessions",
            "Concurrent sessions in force per tenant module (bought, scaled by seasons)",
            ceiling_sessions.clone(),
        );
        registry.register(
            "module_replica_seconds",
            "Provisioned replicas integrated over time (replica-seconds) per tenant module",
            replica_seconds.clone(),
        );
        registry.register(
            "module_session_capacity_seconds",
            "Provisioned session capacity (replicas x sessions per replica) integrated over time per tenant module",
            session_capacity_seconds.clone(),
        );
        Self {
            replica_seconds,
            session_capacity_seconds,
            registry: Arc::new(registry),
            reconciliations,
            failures,
            duration,
            writes,
            max_replicas,
            min_replicas,
            ceiling_sessions,
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
