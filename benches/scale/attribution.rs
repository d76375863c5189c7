//! Where each plan change's time went, from three records on one clock: the
//! API server's audit log (when it received and answered the benchmark's
//! apply and each of the operator's writes), the operator's log of each
//! applied change (`spec change applied`: when its watch delivered the
//! change, how long the change queued, decided and wrote) and the
//! benchmark's own watch (when the result was seen).
//!
//! Per change, in order:
//! - `apply`: the benchmark's apply, sent until the API server answered it;
//! - `watch`: the API server's answer until the operator's watch delivered it;
//! - `queued`: delivered until a reconcile started on it (the controller's
//!   queue and its concurrency);
//! - `operator`: the operator's own work in the reconcile (cache reads,
//!   deciding, building status);
//! - `api_server`: the API server handling the operator's writes for the
//!   change (the union of their received-to-answered spans in the audit log);
//! - `client`: the rest of the write time, waiting in the operator's client
//!   (the request cap, connections, retries) and in transit;
//! - `seen`: the status written until the benchmark's watch saw the result.

use std::{collections::HashMap, str::FromStr, time::Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::support::audit::Mark;
use crate::{Bench, Res, setup};

/// One change as the benchmark sent and saw it.
pub struct Sent {
    pub namespace: String,
    /// The wall clock when the apply was sent.
    pub sent: Timestamp,
    /// Sent until seen applied, as the benchmark measured it.
    pub latency_ms: f64,
}

/// The operator's account of one applied change.
#[derive(Debug, Clone)]
struct Applied {
    seen_at: Timestamp,
    queued_ms: f64,
    decide_ms: f64,
    other_ms: f64,
    children_ms: f64,
    status_ms: f64,
    /// First write sent to last answered (the status goes out with the
    /// children); absent from the logs of operators that wrote one after
    /// the other.
    writing_ms: Option<f64>,
    total_ms: f64,
}

const PARTS: [&str; 7] = [
    "apply",
    "watch",
    "queued",
    "operator",
    "api_server",
    "client",
    "seen",
];

/// The breakdown of every change found in all three records, and a summary
/// of the median change and of the tail.
pub fn attribute(b: &Bench, mark: &Mark, sent: &[Sent], operator_log: &[String]) -> Res<Value> {
    let applied = applied_changes(operator_log);
    let namespaces: HashMap<&str, ()> = sent.iter().map(|s| (s.namespace.as_str(), ())).collect();
    let operator = setup::operator_user();
    let events = b
        .audit
        .events_since(mark, &["tenantsubscriptions", &operator], |e| {
            e["objectRef"]["namespace"]
                .as_str()
                .is_some_and(|ns| namespaces.contains_key(ns))
        })?;
    // Per namespace: the benchmark's apply (answered at), and the
    // operator's writes (received, answered).
    let mut applies: HashMap<String, Timestamp> = HashMap::new();
    let mut writes: HashMap<String, Vec<(Timestamp, Timestamp)>> = HashMap::new();
    for e in &events {
        let (Some(ns), Some(received), Some(answered)) = (
            e["objectRef"]["namespace"].as_str(),
            stamp(&e["requestReceivedTimestamp"]),
            stamp(&e["stageTimestamp"]),
        ) else {
            continue;
        };
        if e["user"]["username"].as_str() == Some(operator.as_str()) {
            writes
                .entry(ns.to_string())
                .or_default()
                .push((received, answered));
        } else if e["objectRef"]["resource"] == "tenantsubscriptions"
            && e["objectRef"]["subresource"].is_null()
            && e["verb"] == "patch"
        {
            applies.insert(ns.to_string(), answered);
        }
    }

    let mut rows = Vec::new();
    for s in sent {
        let (Some(a), Some(answered)) = (applied.get(&s.namespace), applies.get(&s.namespace))
        else {
            continue;
        };
        let reconcile_start = a.seen_at + ms_span(a.queued_ms);
        let reconcile_end = a.seen_at + ms_span(a.total_ms);
        let spans: Vec<(Timestamp, Timestamp)> = writes
            .get(&s.namespace)
            .map(|w| {
                w.iter()
                    .filter(|(r, _)| *r >= reconcile_start && *r <= reconcile_end)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let server = union_ms(spans);
        let write_ms = a.writing_ms.unwrap_or(a.children_ms + a.status_ms);
        let parts = [
            between(s.sent, *answered),
            between(*answered, a.seen_at),
            a.queued_ms,
            a.decide_ms + a.other_ms,
            server.min(write_ms),
            (write_ms - server).max(0.0),
            (s.latency_ms - between(s.sent, reconcile_end)).max(0.0),
        ];
        rows.push((s.namespace.clone(), s.latency_ms, parts));
    }
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    let n = rows.len();
    let mean_of = |slice: &[(String, f64, [f64; 7])]| -> Value {
        let k = slice.len().max(1) as f64;
        let mut out = serde_json::Map::new();
        out.insert(
            "latency_ms".into(),
            json!(round(slice.iter().map(|r| r.1).sum::<f64>() / k)),
        );
        for (i, p) in PARTS.iter().enumerate() {
            out.insert(
                format!("{p}_ms"),
                json!(round(slice.iter().map(|r| r.2[i]).sum::<f64>() / k)),
            );
        }
        out.insert("changes".into(), json!(slice.len()));
        Value::Object(out)
    };
    let from = |q: f64| ((n as f64 * q).floor() as usize).min(n.saturating_sub(1));
    let slowest: Vec<Value> = rows
        .iter()
        .rev()
        .take(5)
        .map(|(ns, l, p)| {
            let mut o = serde_json::Map::new();
            o.insert("namespace".into(), json!(ns));
            o.insert("latency_ms".into(), json!(round(*l)));
            for (i, name) in PARTS.iter().enumerate() {
                o.insert(format!("{name}_ms"), json!(round(p[i])));
            }
            Value::Object(o)
        })
        .collect();
    Ok(json!({
        "attributed": n,
        "median_half": mean_of(&rows[from(0.25)..from(0.75).max(from(0.25))]),
        "slowest_10_percent": mean_of(&rows[from(0.90)..]),
        "slowest_1_percent": mean_of(&rows[from(0.99)..]),
        "slowest": slowest,
    }))
}

/// A one-line account of a summary: `apply 5 · watch 3 · …`.
pub fn line(summary: &Value) -> String {
    PARTS
        .iter()
        .map(|p| format!("{p} {}", summary[format!("{p}_ms")]))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The `spec change applied` lines of the operator's JSON log, by namespace
/// (the last one of each).
fn applied_changes(log: &[String]) -> HashMap<String, Applied> {
    let mut out = HashMap::new();
    for l in log.iter().filter(|l| l.contains("spec change applied")) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let f = &v["fields"];
        let (Some(ns), Some(seen_at)) = (f["namespace"].as_str(), stamp(&f["seen_at"])) else {
            continue;
        };
        let num = |k: &str| f[k].as_f64().unwrap_or(0.0);
        out.insert(
            ns.to_string(),
            Applied {
                seen_at,
                queued_ms: num("queued_ms"),
                decide_ms: num("decide_ms"),
                other_ms: num("other_ms"),
                children_ms: num("children_ms"),
                status_ms: num("status_ms"),
                writing_ms: f["writing_ms"].as_f64(),
                total_ms: num("total_ms"),
            },
        );
    }
    out
}

fn stamp(v: &Value) -> Option<Timestamp> {
    Timestamp::from_str(v.as_str()?).ok()
}

fn ms_span(ms: f64) -> SignedDuration {
    SignedDuration::from_secs_f64(ms / 1000.0)
}

fn between(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64() * 1000.0
}

/// The length of the union of `spans`, in milliseconds.
fn union_ms(mut spans: Vec<(Timestamp, Timestamp)>) -> f64 {
    spans.sort();
    let mut total = 0.0;
    let mut current: Option<(Timestamp, Timestamp)> = None;
    for (a, b) in spans {
        match &mut current {
            Some((_, end)) if a <= *end => *end = (*end).max(b),
            _ => {
                if let Some((s, e)) = current {
                    total += between(s, e);
                }
                current = Some((a, b));
            }
        }
    }
    if let Some((s, e)) = current {
        total += between(s, e);
    }
    total
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The wall clock at `at` (an instant of this process).
pub fn wall(at: Instant) -> Timestamp {
    let (anchor, wall) = *crate::anchor();
    let d = if at >= anchor {
        SignedDuration::try_from(at - anchor).unwrap_or_default()
    } else {
        -SignedDuration::try_from(anchor - at).unwrap_or_default()
    };
    wall + d
}
