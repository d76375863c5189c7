//! Fuzzing the path the operator takes from raw objects to rendered
//! children: raw JSON (the examples' profiles, plans, calendars and
//! subscriptions, mutated: fields dropped, wrong types, odd numbers,
//! strings, dates, time zones, quantities and lists; now and then a value
//! of arbitrary JSON) → deserialisation (`preview::parse`) → the caches
//! and facts of one reconcile (`Caches::catalogue_for`, `Caches::live`) →
//! `decide` (which validates and plans through `capacity::plan`) → the
//! status written (`status::build`) and the children applied; and the
//! offline preview (`preview::render_yaml`) of the same objects. Each case
//! runs two reconciles: the second sees the first one's status and
//! children, and a spec mutated again (modules switched off, removed, a
//! pause, a broken window).
//!
//! Properties: nothing panics; every refusal is a message that names the
//! field or module at fault, with no Debug dump in it; every child that
//! is applied is a valid Kubernetes object (names, labels, replicas,
//! quantities, ports, selectors); the status stays within the CRD's bounds.
//!
//! `TCO_FUZZ_CASES=100000 cargo test --test fuzz -- --nocapture` runs a
//! long run; the default budget keeps CI well under a minute.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    time::Instant,
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{LimitRange, Namespace, ResourceQuota, ResourceRequirements, Service},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{
    Resource, ResourceExt,
    core::{PartialObjectMeta, PartialObjectMetaExt},
    runtime::{
        reflector::{self, Store},
        watcher,
    },
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Value, json};
use tenant_capacity_operator::{
    api::{
        CapacityCalendar, ModuleProfile, SubscriptionPlan, TenantSubscription,
        TenantSubscriptionStatus, bounds,
    },
    capacity::{Quantity, plan},
    controller::{
        decide::{Decision, Write, decide},
        facts::Caches,
        status,
    },
    live::{Slim, slim},
    preview,
};

/// Cases run by `cargo test`: 8 s in a debug build on two cores, 21–26 s
/// while other builds share them (see docs/security.md).
const CI_CASES: u32 = 1000;
const TENANT_LABEL: &str = "capacity.tenancy.dev/tenant";

fn cases() -> u32 {
    std::env::var("TCO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_CASES)
}

// ---------------------------------------------------------------- inputs

/// The examples, plus a profile that sets what they leave out.
fn seeds() -> Vec<Value> {
    let mut out = Vec::new();
    for dir in ["profiles", "plans", "calendars", "subscriptions"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            out.extend(
                preview::documents(&text)
                    .unwrap()
                    .into_iter()
                    .filter(|d| d["kind"] != "Namespace"),
            );
        }
    }
    out.push(json!({
        "apiVersion": "capacity.tenancy.dev/v1alpha1", "kind": "ModuleProfile",
        "metadata": {"name": "voice-call"},
        "spec": {
            "image": "registry.example.com/rtc/voice:1", "port": 5060, "sessionsPerReplica": 300,
            "minReplicas": 2,
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi",
                                       "nvidia.com/gpu": "1", "hugepages-2Mi": "64Mi"},
                          "limits": {"memory": "1Gi", "nvidia.com/gpu": "1", "hugepages-2Mi": "64Mi"}},
            "scaling": {"cpuUtilization": 60, "memoryUtilization": 75,
                        "sessions": {"metric": "rtc_sessions_active", "targetPercent": 85},
                        "scaleDown": {"stabilizationSeconds": 120, "periodSeconds": 30, "maxPercent": 20, "maxPods": 2},
                        "scaleUp": {"stabilizationSeconds": 0, "periodSeconds": 15, "maxPercent": 200, "maxPods": 8}},
            "terminationGracePeriodSeconds": 60,
            "preStop": {"command": ["/bin/drain", "--wait"]},
            "nodeSelector": {"topology.kubernetes.io/zone": "zone-a", "gpu": "true"},
            "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
            "security": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                         "readOnlyRootFilesystem": true, "addCapabilities": ["NET_BIND_SERVICE"],
                         "seccompLocalhostProfile": "profiles/rtc.json"},
            "tiers": {"standard": {"sessionsPerReplica": 300}, "hifi": {"sessionsPerReplica": 100,
                      "image": "registry.example.com/rtc/voice:1-hifi",
                      "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}}
        }
    }));
    out
}

/// Odd values: numbers at the edges, strings of every odd kind, empty and
/// nested JSON.
fn odd_value() -> impl Strategy<Value = Value> {
    let numbers = prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(63)),
        Just(json!(100)),
        Just(json!(1000)),
        Just(json!(65536)),
        Just(json!(i32::MAX)),
        Just(json!(i32::MAX as i64 + 1)),
        Just(json!(i32::MIN)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(9_007_199_254_740_993i64)),
        Just(json!(1e30)),
        Just(json!(-0.0)),
        Just(json!(0.5)),
        Just(json!(2.5e-9)),
        any::<i64>().prop_map(|n| json!(n)),
        (-2000i64..200_000).prop_map(|n| json!(n)),
    ];
    let strings = prop_oneof![
        Just(""),
        Just(" "),
        Just("x"),
        Just("video-call"),
        Just("Video_Call"),
        Just("vidéo"),
        Just("视频"),
        Just("a\u{0}b"),
        Just("\u{202e}evil"),
        Just("-lead"),
        Just("trail-"),
        Just("a.b"),
        Just("../etc"),
        Just("hd"),
        Just("UHD"),
        Just("true"),
        Just("Mon"),
        Just("Funday"),
        // Time zones.
        Just("UTC"),
        Just("Asia/Shanghai"),
        Just("Australia/Lord_Howe"),
        Just("Pacific/Chatham"),
        Just("America/Argentina/ComodRivadavia"),
        Just("Etc/GMT+14"),
        Just("Etc/GMT-14"),
        Just("posixrules"),
        Just("UTC0"),
        Just("EST5EDT"),
        Just("+08:00"),
        Just("Local"),
        Just("Asia/Shanghai "),
        Just("Mars/Olympus"),
        Just("/etc/localtime"),
        // Dates and times.
        Just("02-29"),
        Just("02-30"),
        Just("12-31"),
        Just("01-01"),
        Just("13-01"),
        Just("00-00"),
        Just("1-1"),
        Just("2024-02-29"),
        Just("2027-02-29"),
        Just("0000-01-01"),
        Just("9999-12-31"),
        Just("-001-01-01"),
        Just("2026-03-29"),
        Just("24:00"),
        Just("23:59"),
        Just("00:00"),
        Just("02:30"),
        Just("99:99"),
        Just("12:5"),
        Just("12:60"),
        Just("+1:00"),
        // Quantities.
        Just("0"),
        Just("-1"),
        Just("-500m"),
        Just("1e30"),
        Just("1e400"),
        Just("1E3"),
        Just("1e-9"),
        Just("0.000000001"),
        Just("1Ei"),
        Just("8Ei"),
        Just("1Zi"),
        Just("+1"),
        Just(".5"),
        Just("5."),
        Just("1.5Gi"),
        Just("100000000000000000000000000000000000000"),
        Just("9223372036854775807"),
        Just("1 Gi"),
        Just("Infinity"),
        // Names of things.
        Just("NET_RAW"),
        Just("SYS_ADMIN"),
        Just("net_bind_service"),
        Just("Exists"),
        Just("NoExecute"),
        Just("Delete"),
        Just("Shred"),
    ]
    .prop_map(|s| json!(s));
    let generated = prop_oneof![
        "[a-z0-9-]{0,70}".prop_map(|s| json!(s)),
        "\\PC{0,20}".prop_map(|s| json!(s)),
        (1usize..5000).prop_map(|n| json!("a".repeat(n))),
        (1usize..300).prop_map(|n| json!("視".repeat(n))),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        numbers,
        strings,
        generated,
        Just(json!([])),
        Just(json!({})),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names of the four kinds (and of the Kubernetes types in them),
/// to add where they do not belong.
const FIELDS: &[&str] = &[
    "tenantId",
    "plan",
    "paused",
    "modules",
    "name",
    "concurrency",
    "tier",
    "enabled",
    "seasons",
    "calendars",
    "timeZone",
    "windows",
    "from",
    "to",
    "days",
    "start",
    "end",
    "concurrencyPercent",
    "floorPercent",
    "downgrade",
    "drainSeconds",
    "dataRetention",
    "image",
    "port",
    "sessionsPerReplica",
    "minReplicas",
    "resources",
    "requests",
    "limits",
    "claims",
    "cpu",
    "memory",
    "nvidia.com/gpu",
    "hugepages-1Gi",
    "ephemeral-storage",
    "scaling",
    "cpuUtilization",
    "memoryUtilization",
    "sessions",
    "metric",
    "targetPercent",
    "scaleDown",
    "scaleUp",
    "stabilizationSeconds",
    "periodSeconds",
    "maxPercent",
    "maxPods",
    "terminationGracePeriodSeconds",
    "preStop",
    "command",
    "httpGet",
    "path",
    "nodeSelector",
    "tolerations",
    "security",
    "runAsUser",
    "allowRoot",
    "addCapabilities",
    "serviceAccountToken",
    "seccompLocalhostProfile",
    "tiers",
    "maxConcurrency",
    "maxPeakConcurrency",
    "status",
    "metadata",
    "spec",
];

#[derive(Debug, Clone)]
enum Op {
    /// Remove the value (from its object or list).
    Drop,
    /// Put another value in its place.
    Replace(Value),
    /// Add a field (a known name or any) with a value, to an object.
    Insert(String, Value),
    /// Repeat a list's first entry (duplicates, and lists past the bounds).
    Repeat(usize),
    /// Empty a list or an object.
    Empty,
    /// Change a string a little: upper case, a suffix, cut short.
    Twist(u8),
}

#[derive(Debug, Clone)]
struct Mutation {
    /// Which object of the world.
    object: usize,
    /// Into its spec (most of the time), or anywhere in it.
    in_spec: bool,
    /// The path into it: at each level, which child (modulo their number).
    path: Vec<usize>,
    op: Op,
}

impl Mutation {
    fn apply(&self, object: &mut Value) {
        match object.get_mut("spec") {
            Some(spec) if self.in_spec => apply(spec, &self.path, &self.op),
            _ => apply(object, &self.path, &self.op),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Drop),
        6 => odd_value().prop_map(Op::Replace),
        3 => (
            prop_oneof![
                4 => proptest::sample::select(FIELDS).prop_map(String::from),
                1 => "\\PC{0,12}",
            ],
            odd_value()
        )
            .prop_map(|(k, v)| Op::Insert(k, v)),
        2 => prop_oneof![
            8 => 1usize..4,
            2 => Just(40usize),
            2 => Just(1100usize),
            1 => Just(10_000usize)
        ]
        .prop_map(Op::Repeat),
        1 => Just(Op::Empty),
        2 => any::<u8>().prop_map(Op::Twist),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        // The subscription (object 0) is the most interesting.
        prop_oneof![3 => Just(0usize), 2 => 1usize..64],
        proptest::bool::weighted(0.8),
        proptest::collection::vec(any::<usize>(), 1..7),
        op(),
    )
        .prop_map(|(object, in_spec, path, op)| Mutation {
            object,
            in_spec,
            path,
            op,
        })
}

/// One case: the objects of a small cluster, mutated, the clock, and a
/// second reconcile later with the spec mutated again.
#[derive(Debug, Clone)]
struct Case {
    subscription: usize,
    before: Vec<Mutation>,
    after: Vec<Mutation>,
    /// A whole object replaced by arbitrary JSON: (object, value).
    arbitrary: Option<(usize, Value)>,
    require_plan: bool,
    /// The namespace's tenant label: the subscription's tenantId, another
    /// tenant's, or none.
    assignment: u8,
    now: Timestamp,
    later: SignedDuration,
}

fn instant() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        // Around today, by the minute.
        (0i64..(3 * 366 * 24 * 60))
            .prop_map(|m| Timestamp::from_second(1_767_225_600 + m * 60).unwrap()),
        // Any second of three centuries: the operator's clock is the
        // system's, never near jiff's limits (windows' dates may be).
        (-2_208_988_800i64..7_258_118_400).prop_map(|s| Timestamp::from_second(s).unwrap()),
        // DST edges in Europe and New York, 2027.
        Just("2027-03-28T01:00:00Z".parse().unwrap()),
        Just("2027-11-07T06:00:00Z".parse().unwrap()),
    ]
}

fn case(subscriptions: usize, objects: usize) -> impl Strategy<Value = Case> {
    (
        0..subscriptions,
        proptest::collection::vec(mutation(), 0..5),
        proptest::collection::vec(mutation(), 0..3),
        proptest::option::weighted(0.05, (0..objects, odd_value())),
        any::<bool>(),
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        instant(),
        prop_oneof![
            Just(SignedDuration::ZERO),
            (0i64..1_000_000).prop_map(SignedDuration::from_secs)
        ],
    )
        .prop_map(
            |(subscription, before, after, arbitrary, require_plan, assignment, now, later)| Case {
                subscription,
                before,
                after,
                arbitrary,
                require_plan,
                assignment,
                now,
                later,
            },
        )
}

fn apply(value: &mut Value, path: &[usize], op: &Op) {
    // Walk down while there is a child to walk into; act on the last one.
    let (first, rest) = (path[0], &path[1..]);
    let keys: Vec<String> = match value {
        Value::Object(o) => o.keys().cloned().collect(),
        Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
        _ => vec![],
    };
    if keys.is_empty() {
        act(value, op);
        return;
    }
    let key = &keys[first % keys.len()];
    let child = match value {
        Value::Object(o) => o.get_mut(key).unwrap(),
        Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
        _ => unreachable!(),
    };
    let leaf = !matches!(child, Value::Object(o) if !o.is_empty())
        && !matches!(child, Value::Array(a) if !a.is_empty());
    if rest.is_empty() || leaf {
        match (op, value) {
            (Op::Drop, Value::Object(o)) => {
                o.remove(key);
            }
            (Op::Drop, Value::Array(a)) => {
                a.remove(key.parse::<usize>().unwrap());
            }
            (op, value) => {
                let child = match value {
                    Value::Object(o) => o.get_mut(key).unwrap(),
                    Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
                    _ => unreachable!(),
                };
                act(child, op)
            }
        }
    } else {
        apply(child, rest, op);
    }
}

fn act(value: &mut Value, op: &Op) {
    match op {
        Op::Drop => *value = Value::Null,
        Op::Replace(v) => *value = v.clone(),
        Op::Insert(k, v) => match value {
            Value::Object(o) => {
                o.insert(k.clone(), v.clone());
            }
            other => *other = v.clone(),
        },
        Op::Repeat(n) => match value {
            Value::Array(a) if !a.is_empty() => {
                let first = a[0].clone();
                a.extend(std::iter::repeat_n(first, *n));
            }
            other => *other = Value::Array(vec![other.clone(); (*n).min(3)]),
        },
        Op::Empty => match value {
            Value::Array(a) => a.clear(),
            Value::Object(o) => o.clear(),
            Value::String(s) => s.clear(),
            other => *other = Value::Null,
        },
        Op::Twist(t) => {
            if let Value::String(s) = value {
                *s = match t % 5 {
                    0 => s.to_uppercase(),
                    1 => format!("{s}-x"),
                    2 => s.chars().take(s.chars().count() / 2).collect(),
                    3 => format!("{s}{}", "z".repeat(60)),
                    _ => format!(" {s}"),
                };
            }
        }
    }
}

// ---------------------------------------------------------------- checks

/// Messages name what is at fault and carry no Rust Debug output.
fn clear(message: &str) -> Result<(), String> {
    if message.trim().is_empty() {
        return Err("empty message".into());
    }
    for dump in ["Some(", "None", "Error {", "Ok(", "Err(", "\\\""] {
        if message.contains(dump) && !quoted_only(message, dump) {
            return Err(format!("message holds {dump:?}: {message}"));
        }
    }
    // A struct's Debug form: `Name { field: ` (a map key written `{` in a
    // field path is the input's, not a dump).
    let words: Vec<&str> = message.split(' ').collect();
    for w in words.windows(3) {
        if w[1] == "{"
            && w[0].starts_with(|c: char| c.is_ascii_uppercase())
            && w[0].chars().all(|c| c.is_ascii_alphanumeric())
            && w[2].ends_with(':')
        {
            return Err(format!("message holds a Debug dump: {message}"));
        }
    }
    Ok(())
}

/// Whether every occurrence of `needle` is inside a "quoted" value (a
/// name or value from the input, shown as written).
fn quoted_only(message: &str, needle: &str) -> bool {
    let mut inside = false;
    let mut escaped = false;
    let mut quoted = String::new();
    let mut outside = String::new();
    for c in message.chars() {
        match c {
            '\\' if inside && !escaped => {
                escaped = true;
                quoted.push(c);
                continue;
            }
            '"' if !escaped => inside = !inside,
            c if inside => quoted.push(c),
            c => outside.push(c),
        }
        escaped = false;
    }
    !outside.contains(needle)
}

/// A refusal to deserialise names the field: `spec.modules[0].concurrency:
/// invalid type: ...` or a missing field in backquotes.
fn names_a_field(message: &str) -> Result<(), String> {
    clear(message)?;
    let path = message.split(": ").next().unwrap_or_default();
    // A path from the object's top (map keys in it as written, spaces too).
    let is_path = path != message
        && ["apiVersion", "kind", "metadata", "spec", "status"]
            .iter()
            .any(|top| {
                path == *top
                    || path.starts_with(&format!("{top}."))
                    || path.starts_with(&format!("{top}["))
            });
    // A value that is not even an object of the kind says which kind.
    if is_path
        || message.contains('`')
        || message.contains("expected struct")
        || message.starts_with("the object is")
    {
        Ok(())
    } else {
        Err(format!("names no field: {message}"))
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_1035(s: &str) -> bool {
    dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn label_value(s: &str) -> bool {
    s.len() <= 63
        && (s.is_empty()
            || (s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()))
}

fn quantity(s: &str) -> Result<Quantity, String> {
    match Quantity::parse(s) {
        Ok(q) if q.0 >= 0 => Ok(q),
        _ => Err(format!("{s:?} is not a non-negative quantity")),
    }
}

fn meta(m: &ObjectMeta, kind: &str, errors: &mut Vec<String>) {
    let name = m.name.as_deref().unwrap_or_default();
    // Module children are named for Services: DNS-1035 labels.
    if !dns_1035(name) {
        errors.push(format!("{kind} name {name:?} is not a DNS-1035 label"));
    }
    if m.namespace.as_deref().is_none_or(str::is_empty) {
        errors.push(format!("{kind} {name} has no namespace"));
    }
    for (k, v) in m.labels.iter().flatten() {
        if !label_value(v) {
            errors.push(format!(
                "{kind} {name}: label {k}={v:?} is not a label value"
            ));
        }
    }
}

fn resources(r: &ResourceRequirements, at: &str, errors: &mut Vec<String>) {
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (k, v) in map.iter().flatten() {
            if let Err(e) = quantity(&v.0) {
                errors.push(format!("{at} {kind}.{k}: {e}"));
            }
        }
    }
    // A request above its limit is left to the API server, whose refusal
    // shows in status (`ChildRejected`, tests/tenant_boundary/admission.rs).
    if r.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        errors.push(format!("{at}: claims name no pod resource claim"));
    }
}

/// What the API server would refuse in a child the operator applies.
fn child(body: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let kind = body["kind"].as_str().unwrap_or_default();
    match kind {
        "Deployment" => {
            let d: Deployment = serde_json::from_value(body.clone()).unwrap();
            meta(&d.metadata, kind, &mut errors);
            let spec = d.spec.unwrap();
            let template = spec.template;
            let pod_labels = template.metadata.unwrap().labels.unwrap_or_default();
            for (k, v) in spec.selector.match_labels.iter().flatten() {
                if pod_labels.get(k) != Some(v) {
                    errors.push(format!("selector {k}={v} does not select the pods"));
                }
            }
            let pod = template.spec.unwrap();
            if pod.termination_grace_period_seconds.is_some_and(|s| s < 0) {
                errors.push("negative terminationGracePeriodSeconds".into());
            }
            for (k, v) in pod.node_selector.iter().flatten() {
                if k.is_empty() || k.len() > bounds::MAX_LABEL_KEY || !label_value(v) {
                    errors.push(format!("nodeSelector {k:?}={v:?} is not a label"));
                }
            }
            if let Some(sc) = &pod.security_context {
                for (f, v) in [
                    ("runAsUser", sc.run_as_user),
                    ("runAsGroup", sc.run_as_group),
                    ("fsGroup", sc.fs_group),
                ] {
                    if v.is_some_and(|v| !(0..=i32::MAX as i64).contains(&v)) {
                        errors.push(format!("{f} {v:?} out of range"));
                    }
                }
                if let Some(p) = &sc.seccomp_profile
                    && p.type_ == "Localhost"
                    && p.localhost_profile.as_deref().is_none_or(str::is_empty)
                {
                    errors.push("Localhost seccomp profile without a path".into());
                }
            }
            for c in &pod.containers {
                if !dns_label(&c.name) {
                    errors.push(format!("container name {:?}", c.name));
                }
                let image = c.image.as_deref().unwrap_or_default();
                if image.is_empty() || image.trim() != image {
                    errors.push(format!("image {image:?}"));
                }
                for p in c.ports.iter().flatten() {
                    if !(1..=65535).contains(&p.container_port) {
                        errors.push(format!("containerPort {}", p.container_port));
                    }
                }
                if let Some(r) = &c.resources {
                    resources(r, "container resources", &mut errors);
                }
                for cap in c
                    .security_context
                    .iter()
                    .flat_map(|s| s.capabilities.iter())
                    .flat_map(|c| c.add.iter().flatten())
                {
                    if cap.is_empty() || !cap.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                        errors.push(format!("capability {cap:?}"));
                    }
                }
            }
            let sessions = d
                .metadata
                .annotations
                .unwrap_or_default()
                .get("capacity.tenancy.dev/sessions-per-replica")
                .and_then(|s| s.parse::<i64>().ok());
            if sessions.is_none_or(|s| s < 1) {
                errors.push(format!("sessions-per-replica annotation {sessions:?}"));
            }
        }
        "HorizontalPodAutoscaler" => {
            let h: HorizontalPodAutoscaler = serde_json::from_value(body.clone()).unwrap();
            meta(&h.metadata, kind, &mut errors);
            let min = h.spec.min_replicas.unwrap_or(1);
            let max = h.spec.max_replicas;
            if min < 1 || max < 1 || min > max {
                errors.push(format!("replicas min {min} max {max}"));
            }
            if h.spec.scale_target_ref.name != h.metadata.name.clone().unwrap_or_default() {
                errors.push("scales another object".into());
            }
            let metrics = h.spec.metrics.clone().unwrap_or_default();
            if metrics.is_empty() {
                errors.push("no metric".into());
            }
            for m in &metrics {
                match (&m.resource, &m.pods) {
                    (Some(r), None) => {
                        let u = r.target.average_utilization;
                        if u.is_none_or(|u| u < 1) {
                            errors.push(format!("utilization target {u:?}"));
                        }
                    }
                    (None, Some(p)) => {
                        let v = p.target.average_value.as_ref().map(|q| q.0.clone());
                        let positive = v.as_deref().is_some_and(|v| {
                            tenant_capacity_operator::capacity::Quantity::parse(v)
                                .is_ok_and(|q| q.0 > 0)
                        });
                        if !positive || p.metric.name.is_empty() {
                            errors.push(format!("pods metric {:?} target {v:?}", p.metric.name));
                        }
                    }
                    _ => errors.push(format!("metric of type {}", m.type_)),
                }
            }
            // Every HPA has a bounded scale-down.
            let down = h.spec.behavior.as_ref().and_then(|b| b.scale_down.as_ref());
            let bounded = down.is_some_and(|d| {
                let policies = d.policies.clone().unwrap_or_default();
                !policies.is_empty()
                    && d.select_policy.as_deref() != Some("Disabled")
                    && policies.iter().all(|p| {
                        p.value >= 1
                            && p.period_seconds >= 1
                            && (p.type_ != "Percent" || p.value <= 100)
                    })
            });
            if !bounded {
                errors.push(format!("scale-down not bounded: {down:?}"));
            }
        }
        "Service" => {
            let s: Service = serde_json::from_value(body.clone()).unwrap();
            meta(&s.metadata, kind, &mut errors);
            for p in s.spec.unwrap().ports.iter().flatten() {
                if !(1..=65535).contains(&p.port) {
                    errors.push(format!("service port {}", p.port));
                }
            }
        }
        "ResourceQuota" => {
            let q: ResourceQuota = serde_json::from_value(body.clone()).unwrap();
            meta(&q.metadata, kind, &mut errors);
            for (k, v) in q.spec.unwrap().hard.iter().flatten() {
                if let Err(e) = quantity(&v.0) {
                    errors.push(format!("quota {k}: {e}"));
                }
            }
        }
        "LimitRange" => {
            let l: LimitRange = serde_json::from_value(body.clone()).unwrap();
            meta(&l.metadata, kind, &mut errors);
        }
        other => errors.push(format!("unexpected kind {other:?}")),
    }
    errors
}

/// Every child is valid, and no two share a kind and name.
fn children<'a>(bodies: impl Iterator<Item = &'a Value>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    for b in bodies {
        let id = format!("{} {}", b["kind"], b["metadata"]["name"]);
        if !seen.insert(id.clone()) {
            errors.push(format!("{id} rendered twice"));
        }
        errors.extend(child(b).into_iter().map(|e| format!("{id}: {e}")));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// The status stays within the bounds the CRD sets on it, and what it
/// says is clear.
fn within_bounds(st: &TenantSubscriptionStatus) -> Result<(), String> {
    let mut errors = Vec::new();
    if st.conditions.len() > bounds::MAX_CONDITIONS {
        errors.push("too many conditions".to_string());
    }
    for c in &st.conditions {
        if c.message.len() > bounds::MAX_CONDITION_MESSAGE || c.reason.len() > 1024 {
            errors.push(format!("condition {} too long", c.type_));
        }
        if c.reason.is_empty() || !c.reason.bytes().all(|b| b.is_ascii_alphanumeric()) {
            errors.push(format!("condition {} reason {:?}", c.type_, c.reason));
        }
        if c.status == "False" && c.type_ == "Ready" {
            clear(&c.message)
                .map_err(|e| errors.push(format!("Ready: {e}")))
                .ok();
        }
    }
    if st.active_windows.len() > bounds::MAX_ACTIVE_WINDOWS
        || st
            .active_windows
            .iter()
            .any(|w| w.len() > bounds::MAX_ACTIVE_WINDOW_NAME)
    {
        errors.push("active windows past their bounds".into());
    }
    if st.modules.len() > bounds::MAX_STATUS_MODULES {
        errors.push("too many modules".into());
    }
    for m in &st.modules {
        if m.name.len() > bounds::MAX_LABEL
            || m.tier.as_ref().is_some_and(|t| t.len() > 32)
            || m.message
                .as_ref()
                .is_some_and(|t| t.len() > bounds::MAX_MODULE_MESSAGE)
        {
            errors.push(format!("module {} past its bounds", m.name));
        }
        if let Some(msg) = &m.message {
            clear(msg)
                .map_err(|e| errors.push(format!("module {}: {e}", m.name)))
                .ok();
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

// ---------------------------------------------------------------- the run

fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (reader, mut writer) = reflector::store();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    reader
}

/// The caches of a cluster holding these objects and children.
struct World {
    profiles: Vec<ModuleProfile>,
    plans: Vec<SubscriptionPlan>,
    calendars: Vec<CapacityCalendar>,
    sub: TenantSubscription,
    tenant: Option<String>,
    children: Vec<Value>,
}

fn typed<K: serde::de::DeserializeOwned>(body: &Value, uid: &str) -> K {
    let mut body = body.clone();
    body["metadata"]["uid"] = json!(format!("{uid}-{}", body["metadata"]["name"]));
    body["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    serde_json::from_value(body).unwrap()
}

impl World {
    fn caches(&self) -> Caches {
        let of = |kind: &str| {
            self.children
                .iter()
                .filter(move |c| c["kind"] == kind)
                .cloned()
                .collect::<Vec<_>>()
        };
        let uid = self.sub.uid().unwrap_or_default();
        let ns = self.sub.namespace().unwrap_or_default();
        let mut labels = BTreeMap::new();
        if let Some(t) = &self.tenant {
            labels.insert(TENANT_LABEL.to_string(), t.clone());
        }
        let namespace: PartialObjectMeta<Namespace> = ObjectMeta {
            name: Some(ns),
            labels: Some(labels),
            ..Default::default()
        }
        .into_response_partial();
        Caches {
            profiles: store(self.profiles.clone()),
            plans: store(self.plans.clone()),
            calendars: store(self.calendars.clone()),
            deployments: store(
                of("Deployment")
                    .iter()
                    .map(|b| slim(typed::<Deployment>(b, &uid)))
                    .collect::<Vec<Slim<Deployment>>>(),
            ),
            hpas: store(
                of("HorizontalPodAutoscaler")
                    .iter()
                    .map(|b| slim(typed::<HorizontalPodAutoscaler>(b, &uid)))
                    .collect(),
            ),
            services: store(
                of("Service")
                    .iter()
                    .map(|b| slim(typed::<Service>(b, &uid)))
                    .collect(),
            ),
            quotas: store(
                of("ResourceQuota")
                    .iter()
                    .map(|b| slim(typed::<ResourceQuota>(b, &uid)))
                    .collect(),
            ),
            limit_ranges: store(
                of("LimitRange")
                    .iter()
                    .map(|b| slim(typed::<LimitRange>(b, &uid)))
                    .collect(),
            ),
            namespaces: store(vec![namespace]),
            pods: tenant_capacity_operator::controller::placement::Pods::index(
                futures::stream::empty(),
            )
            .0,
            nodes: store(vec![]),
            subscriptions: store(vec![self.sub.clone()]),
            tenant_label: TENANT_LABEL.into(),
        }
    }
}

/// Deserialise the objects as the operator does; a refusal must name the
/// field. `None` when the subscription itself is refused.
type Parsed = (
    Vec<ModuleProfile>,
    Vec<SubscriptionPlan>,
    Vec<CapacityCalendar>,
    TenantSubscription,
);

fn parse(objects: &[Value], subscription: &Value) -> Result<Option<Parsed>, String> {
    let mut profiles = Vec::new();
    let mut plans = Vec::new();
    let mut calendars = Vec::new();
    fn check<K>(r: anyhow::Result<K>) -> Result<Option<K>, String> {
        match r {
            Ok(k) => Ok(Some(k)),
            Err(e) => names_a_field(&e.to_string()).map(|_| None),
        }
    }
    for o in objects {
        // The API server names every object it stores.
        if o["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            continue;
        }
        match o["kind"].as_str() {
            Some("ModuleProfile") => profiles.extend(check(preview::parse(o.clone()))?),
            Some("SubscriptionPlan") => plans.extend(check(preview::parse(o.clone()))?),
            Some("CapacityCalendar") => calendars.extend(check(preview::parse(o.clone()))?),
            _ => {}
        }
    }
    let Some(mut sub) = check::<TenantSubscription>(preview::parse(subscription.clone()))? else {
        return Ok(None);
    };
    sub.metadata.namespace = Some("tenant".into());
    sub.metadata.uid = Some("uid-1".into());
    sub.metadata.generation = Some(1);
    sub.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
    Ok(Some((profiles, plans, calendars, sub)))
}

/// One reconcile: caches → decide → status; checks its refusals, its
/// children and its status. Returns the status written and the children.
fn reconcile(
    world: &World,
    require_plan: bool,
    now: Timestamp,
) -> Result<(TenantSubscriptionStatus, Vec<Value>), String> {
    let caches = world.caches();
    let sub = &world.sub;
    let mut catalogue = caches.catalogue_for(sub);
    catalogue.require_plan = require_plan;
    let live = caches.live(sub);
    // The validation decide runs: every refusal names its module or field.
    if let Err(errors) = plan(&sub.name_any(), &sub.spec, &catalogue, now) {
        if errors.is_empty() {
            return Err("refused without a reason".into());
        }
        for e in &errors {
            let text = e.to_string();
            clear(&text)?;
            let named = match e.module() {
                Some(m) => text.starts_with(&format!("{m}: ")),
                None => text.starts_with("spec.") || text.starts_with("metadata."),
            };
            if !named {
                return Err(format!(
                    "{} does not lead with its module or field: {text}",
                    e.reason()
                ));
            }
        }
    }
    let Decision {
        batches, outcome, ..
    } = decide(sub, &catalogue, &live, now);
    let applied: Vec<Value> = batches
        .iter()
        .flatten()
        .filter_map(|w| match w {
            Write::Apply(d) => Some(d.body.clone()),
            _ => None,
        })
        .collect();
    children(applied.iter())?;
    let old = sub.status.clone().unwrap_or_default();
    let st = status::build(sub, &old, &outcome, now);
    // The status in the cluster is within the CRD's bounds (the API server
    // refuses any other): the operator never takes it past them.
    if within_bounds(&old).is_ok() {
        within_bounds(&st)?;
    }
    // What stays of the children: those applied now and those not deleted.
    let deleted: BTreeSet<String> = batches
        .iter()
        .flatten()
        .filter_map(|w| match w {
            Write::Delete { object, .. } => object.name.clone(),
            _ => None,
        })
        .collect();
    let mut kept: BTreeMap<String, Value> = world
        .children
        .iter()
        .filter(|c| !deleted.contains(c["metadata"]["name"].as_str().unwrap_or_default()))
        .map(|c| {
            (
                format!("{} {}", c["kind"], c["metadata"]["name"]),
                c.clone(),
            )
        })
        .collect();
    for c in applied {
        kept.insert(format!("{} {}", c["kind"], c["metadata"]["name"]), c);
    }
    Ok((st, kept.into_values().collect()))
}

/// The offline preview of the same objects: valid children, or a refusal
/// that names every module or field at fault.
fn preview(world: &World, now: Timestamp) -> Result<(), String> {
    let mut catalogue = tenant_capacity_operator::capacity::Catalogue::default();
    for p in &world.profiles {
        catalogue.profiles.insert(p.name_any(), p.spec.clone());
    }
    for p in &world.plans {
        catalogue.plans.insert(p.name_any(), p.spec.clone());
    }
    for c in &world.calendars {
        catalogue.calendars.insert(c.name_any(), c.spec.clone());
    }
    match preview::render_yaml(&world.sub, &catalogue, now) {
        Ok(yaml) => {
            let docs = preview::documents(&yaml).map_err(|e| format!("preview YAML: {e}"))?;
            children(docs.iter())
        }
        Err(e) => {
            let text = e.to_string();
            clear(&text)?;
            for line in text.lines().skip(1) {
                let line = line.trim();
                let field = line.split(": ").next().unwrap_or_default();
                if field.is_empty() || field == line {
                    return Err(format!("preview refusal names nothing: {line}"));
                }
            }
            Ok(())
        }
    }
}

fn run(case: &Case, seeds: &[Value], subscriptions: &[usize]) -> Result<(), String> {
    let mut objects: Vec<Value> = seeds.to_vec();
    // Object 0 is the subscription of this case.
    let sub_index = subscriptions[case.subscription];
    objects.swap(0, sub_index);
    let n = objects.len();
    for m in &case.before {
        m.apply(&mut objects[m.object % n]);
    }
    if let Some((i, v)) = &case.arbitrary {
        objects[i % n] = v.clone();
    }
    let Some((profiles, plans, calendars, sub)) = parse(&objects, &objects[0].clone())? else {
        return Ok(());
    };
    let tenant = match case.assignment {
        0 => Some(sub.spec.tenant_id.clone()).filter(|t| label_value(t) && !t.is_empty()),
        1 => Some("someone-else".into()),
        _ => None,
    };
    let mut world = World {
        profiles,
        plans,
        calendars,
        sub,
        tenant,
        children: vec![],
    };
    preview(&world, case.now)?;
    if world.sub.metadata.name.as_deref().is_none_or(str::is_empty) {
        // Only the offline preview sees a subscription without a name.
        return Ok(());
    }
    let (st, kids) = reconcile(&world, case.require_plan, case.now)?;

    // The second reconcile: the status and children of the first, the
    // spec mutated again, the clock moved on.
    let mut raw = serde_json::to_value(&world.sub).unwrap();
    raw["status"] = serde_json::to_value(&st).unwrap();
    for m in &case.after {
        // Mostly the spec; now and then the status record.
        let part = if m.object % 4 == 0 { "status" } else { "spec" };
        apply(&mut raw[part], &m.path, &m.op);
    }
    let Some(mut next) = parse(&[], &raw)?.map(|(_, _, _, s)| s) else {
        return Ok(());
    };
    next.metadata.generation = Some(2);
    world.sub = next;
    world.children = kids;
    let later = case.now.checked_add(case.later).unwrap_or(case.now);
    reconcile(&world, case.require_plan, later)?;
    Ok(())
}

#[test]
fn arbitrary_objects_are_refused_clearly_or_render_valid_children() {
    let seeds = seeds();
    let subscriptions: Vec<usize> = seeds
        .iter()
        .enumerate()
        .filter(|(_, s)| s["kind"] == "TenantSubscription")
        .map(|(i, _)| i)
        .collect();
    let seeds = Arc::new(seeds);
    let budget = cases();
    let started = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases: budget,
        failure_persistence: None,
        ..Config::default()
    });
    let slowest = std::sync::Mutex::new((std::time::Duration::ZERO, String::new()));
    let ran = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&case(subscriptions.len(), seeds.len()), |c| {
        ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        let r = run(&c, &seeds, &subscriptions).map_err(TestCaseError::fail);
        let mut s = slowest.lock().unwrap();
        if t.elapsed() > s.0 {
            *s = (t.elapsed(), format!("{c:?}"));
        }
        r
    });
    if std::env::var("TCO_FUZZ_SLOWEST").is_ok() {
        let s = slowest.lock().unwrap();
        eprintln!("slowest case: {:?}\n{}", s.0, &s.1[..s.1.len().min(3000)]);
    }
    // Cases run, shrinking steps after a failure included.
    eprintln!(
        "fuzz: {} cases run (budget {budget}) in {:.1} s",
        ran.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
