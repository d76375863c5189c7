//! Bounds of the CRD schemas: the figures the schemas, the code and the
//! docs share, and the bounds of embedded Kubernetes types (core/v1
//! `ResourceRequirements` and `Toleration`, meta/v1 `Condition`) that
//! schemars' attributes cannot reach, added to their generated schemas.
//!
//! Every list, map and string of every CRD has a bound (the unit test
//! below walks the generated schemas): the API server refuses an object
//! past one at apply time, naming the field, and CEL rules stay within
//! their cost budget.

use schemars::Schema;
use serde_json::{Value, json};

/// Modules per subscription, and per plan.
pub const MAX_MODULES: usize = 32;
/// Inline windows per subscription.
pub const MAX_WINDOWS: usize = 32;
/// Calendars one subscription names.
pub const MAX_CALENDARS: usize = 16;
/// Windows per calendar.
pub const MAX_CALENDAR_WINDOWS: usize = 64;
/// Windows that can be active at once: every inline window and every
/// window of every calendar (what `status.activeWindows` may list).
pub const MAX_ACTIVE_WINDOWS: usize = MAX_WINDOWS + MAX_CALENDARS * MAX_CALENDAR_WINDOWS;
/// Longest object name (a DNS-1123 subdomain: calendars, plans).
pub const MAX_OBJECT_NAME: usize = 253;
/// Longest DNS label (module, window, tier and tenant names; label values).
pub const MAX_LABEL: usize = 63;
/// Longest active window name in status: `<calendar>/<window>`.
pub const MAX_ACTIVE_WINDOW_NAME: usize = MAX_OBJECT_NAME + 1 + MAX_LABEL;
/// Longest label or annotation key: a DNS subdomain prefix, `/`, a name.
pub const MAX_LABEL_KEY: usize = MAX_OBJECT_NAME + 1 + MAX_LABEL;
/// Entries of a node selector.
pub const MAX_NODE_SELECTOR: usize = 32;
/// Tolerations of a module's pods.
pub const MAX_TOLERATIONS: usize = 32;
/// Regions a subscription, one of its modules or a plan may name.
pub const MAX_REGIONS: usize = 16;
/// Zones a module's status reports ready pods in.
pub const MAX_ZONES: usize = 64;
/// A region or zone: a label value of `topology.kubernetes.io/region`
/// (`eu-west-1`, `westeurope`, `us-central1`), lowercase as every
/// provider writes them.
pub const REGION_PATTERN: &str = r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$";
/// Resource names in one `requests` or `limits` (CPU, memory, ephemeral
/// storage, huge pages, a few extended resources).
pub const MAX_RESOURCES: usize = 16;
/// Longest drain of a switched-off module: a week.
pub const MAX_DRAIN_SECONDS: i64 = 604_800;
/// Longest quantity string (`123456789012345678901234567890m` has 31).
pub const MAX_QUANTITY: usize = 64;
/// Modules in `status.modules`: every module of the spec plus modules
/// removed from it that are still draining.
pub const MAX_STATUS_MODULES: usize = 256;
/// Conditions in status (the operator writes four).
pub const MAX_CONDITIONS: usize = 8;
/// Longest message of a module in status; longer ones are cut.
pub const MAX_MODULE_MESSAGE: usize = 4096;
/// Longest condition message the schema allows (as meta/v1 Condition's
/// own validation); the operator writes at most 1024 characters.
pub const MAX_CONDITION_MESSAGE: usize = 32768;
/// Longest RFC 3339 instant written to status.
pub const MAX_INSTANT: usize = 64;

/// A label value: at most 63 characters, alphanumerics at both ends and
/// `-`, `_`, `.` between.
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// A resource quantity (`500m`, `2`, `1.5Gi`, `1e3`), as Kubernetes parses
/// it, but never negative: a pod's requests and limits cannot be.
pub const QUANTITY_PATTERN: &str = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Edit a generated schema as JSON.
fn edit(schema: &mut Schema, f: impl FnOnce(&mut Value)) {
    let mut value = std::mem::replace(schema, Schema::from(true)).to_value();
    f(&mut value);
    *schema = value.try_into().expect("an object schema stays one");
}

fn set(schema: &mut Value, key: &str, value: Value) {
    if let Some(o) = schema.as_object_mut() {
        o.insert(key.to_string(), value);
    }
}

fn property<'a>(schema: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    schema.get_mut("properties")?.get_mut(name)
}

fn bound_strings(object: &mut Value, lengths: &[(&str, usize)]) {
    for (name, max) in lengths {
        if let Some(p) = property(object, name) {
            set(p, "maxLength", json!(max));
        }
    }
}

/// core/v1 `ResourceRequirements` of a module: at most
/// [`MAX_RESOURCES`] requests and limits, each a well-formed quantity; no
/// `claims` (they name pod-level resource claims, which the operator does
/// not render, so a pod with one would be refused).
pub fn resources(schema: &mut Schema) {
    edit(schema, |schema| {
        for kind in ["requests", "limits"] {
            if let Some(map) = property(schema, kind) {
                set(map, "maxProperties", json!(MAX_RESOURCES));
                if let Some(q) = map.get_mut("additionalProperties") {
                    set(q, "pattern", json!(QUANTITY_PATTERN));
                    set(q, "maxLength", json!(MAX_QUANTITY));
                    set(q, "description", json!("A quantity: 500m, 2, 1.5Gi, 1e3."));
                }
            }
        }
        if let Some(claims) = property(schema, "claims") {
            set(claims, "maxItems", json!(0));
            set(
                claims,
                "description",
                json!("Not supported: the operator declares no pod-level resource claims."),
            );
            if let Some(item) = claims.get_mut("items") {
                bound_strings(item, &[("name", MAX_LABEL), ("request", MAX_LABEL)]);
            }
        }
    });
}

/// core/v1 `Toleration`s of a module's pods.
pub fn tolerations(schema: &mut Schema) {
    edit(schema, |schema| {
        set(schema, "maxItems", json!(MAX_TOLERATIONS));
        if let Some(item) = schema.get_mut("items") {
            bound_strings(
                item,
                &[
                    ("key", MAX_LABEL_KEY),
                    ("operator", 16),
                    ("effect", 32),
                    ("value", MAX_LABEL),
                ],
            );
        }
    });
}

/// A node selector: at most [`MAX_NODE_SELECTOR`] entries whose values are
/// label values (keys are checked by a CEL rule on the field).
pub fn node_selector(schema: &mut Schema) {
    edit(schema, |schema| {
        set(schema, "maxProperties", json!(MAX_NODE_SELECTOR));
        if let Some(v) = schema.get_mut("additionalProperties") {
            set(v, "maxLength", json!(MAX_LABEL));
            set(v, "pattern", json!(LABEL_VALUE_PATTERN));
        }
    });
}

/// meta/v1 `Condition`s, bounded as Kubernetes' own validation of them.
pub fn conditions(schema: &mut Schema) {
    edit(schema, |schema| {
        set(schema, "maxItems", json!(MAX_CONDITIONS));
        if let Some(item) = schema.get_mut("items") {
            bound_strings(
                item,
                &[
                    ("type", 316),
                    ("reason", 1024),
                    ("message", MAX_CONDITION_MESSAGE),
                ],
            );
            if let Some(status) = property(item, "status") {
                set(status, "enum", json!(["True", "False", "Unknown"]));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::api::crds;

    /// Every unbounded list, map and string under `schema`, by path.
    fn unbounded(path: &str, schema: &Value, out: &mut Vec<String>) {
        let has = |k: &str| schema.get(k).is_some();
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, s) in props {
                unbounded(&format!("{path}.{name}"), s, out);
            }
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| **v != false) {
            if !has("maxProperties") {
                out.push(format!("{path}: map without maxProperties"));
            }
            unbounded(&format!("{path}{{}}"), values, out);
        }
        if let Some(items) = schema.get("items") {
            unbounded(&format!("{path}[]"), items, out);
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("array") if !has("maxItems") => {
                out.push(format!("{path}: array without maxItems"))
            }
            Some("string")
                if !["maxLength", "enum", "format", "pattern"]
                    .iter()
                    .any(|k| has(k)) =>
            {
                out.push(format!(
                    "{path}: string without maxLength, enum, format or pattern"
                ))
            }
            // A quantity: an integer or a string, which the pattern bounds.
            None if has("x-kubernetes-int-or-string") && !has("pattern") => {
                out.push(format!("{path}: int-or-string without pattern"))
            }
            _ => {}
        }
    }

    #[test]
    fn every_list_map_and_string_of_every_crd_is_bounded() {
        let mut out = Vec::new();
        for crd in crds() {
            let kind = &crd.spec.names.kind;
            for v in &crd.spec.versions {
                let schema = serde_json::to_value(&v.schema).unwrap();
                let root = &schema["openAPIV3Schema"];
                assert!(root.is_object(), "{kind} has a schema");
                unbounded(kind, root, &mut out);
            }
        }
        assert!(
            out.is_empty(),
            "unbounded in the CRD schemas:\n{}",
            out.join("\n")
        );
    }

    #[test]
    fn the_walk_finds_what_is_unbounded() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "a": {"type": "array", "items": {"type": "string", "maxLength": 3}},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "q": {"x-kubernetes-int-or-string": true},
            "ok": {"type": "string", "enum": ["x"]},
        }});
        let mut out = Vec::new();
        unbounded("T", &schema, &mut out);
        assert_eq!(
            out,
            [
                "T.a: array without maxItems",
                "T.m: map without maxProperties",
                "T.m{}: string without maxLength, enum, format or pattern",
                "T.q: int-or-string without pattern",
            ]
        );
    }
}
