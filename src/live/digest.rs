//! The one digest of a child: what this operator applies to it, hashed so
//! that what the API server normalises (quantities, empty values, key order)
//! does not count. The same hash is taken of the object we would write
//! ([`of_desired`]) and of the live object cut down to the fields our apply
//! entry owns ([`of_live`]): equal digests mean nothing to write.

use std::hash::{Hash, Hasher};

use serde_json::Value;

use crate::capacity::quantity::Quantity;

/// The digest `slim` records for a child once `body` (an apply request's
/// body) is applied: `body` less what identifies it (apiVersion, kind, name,
/// namespace), which no field set holds. `body` is left as it was; it is
/// borrowed mutably only to hash it without a copy.
pub fn of_desired(body: &mut Value) -> u64 {
    let Value::Object(o) = body else {
        return digest(body);
    };
    let type_ = [o.remove("apiVersion"), o.remove("kind")];
    let meta = match o.get_mut("metadata") {
        Some(Value::Object(m)) => [m.remove("name"), m.remove("namespace")],
        _ => [None, None],
    };
    let d = digest(body);
    let Value::Object(o) = body else {
        unreachable!("checked above")
    };
    for (key, value) in ["apiVersion", "kind"].into_iter().zip(type_) {
        if let Some(v) = value {
            o.insert(key.into(), v);
        }
    }
    if let Some(Value::Object(m)) = o.get_mut("metadata") {
        for (key, value) in ["name", "namespace"].into_iter().zip(meta) {
            if let Some(v) = value {
                m.insert(key.into(), v);
            }
        }
    }
    d
}

/// The digest of a live object's fields that one field set (a
/// `managedFields` entry's fieldsV1) holds.
pub fn of_live(live: &Value, fields: &Value) -> u64 {
    digest(&project(live, fields).unwrap_or(Value::Null))
}

/// `live` cut down to the fields of a `managedFields` field set (fieldsV1).
pub fn project(live: &Value, fields: &Value) -> Option<Value> {
    let Value::Object(set) = fields else {
        return Some(live.clone());
    };
    // A leaf (or only ".") owns the whole value.
    if set.keys().all(|k| k == ".") {
        return Some(live.clone());
    }
    match live {
        Value::Object(obj) => {
            let mut out = serde_json::Map::new();
            for (key, sub) in set {
                if let Some(name) = key.strip_prefix("f:")
                    && let Some(v) = obj.get(name)
                    && let Some(p) = project(v, sub)
                {
                    out.insert(name.to_string(), p);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let matched = set.iter().find(|(key, _)| {
                    if let Some(k) = key.strip_prefix("k:") {
                        serde_json::from_str::<serde_json::Map<String, Value>>(k)
                            .is_ok_and(|keys| keys.iter().all(|(f, kv)| item.get(f) == Some(kv)))
                    } else if let Some(v) = key.strip_prefix("v:") {
                        serde_json::from_str::<Value>(v).is_ok_and(|v| &v == item)
                    } else if let Some(n) = key.strip_prefix("i:") {
                        n.parse::<usize>() == Ok(i)
                    } else {
                        false
                    }
                });
                if let Some((_, sub)) = matched
                    && let Some(p) = project(item, sub)
                {
                    out.push(p);
                }
            }
            Some(Value::Array(out))
        }
        scalar => Some(scalar.clone()),
    }
}

/// A hash of `v` that ignores what the server normalises: empty values and
/// their absence are equal, quantities (resources, quota, an HPA's
/// `averageValue`) compare by amount ("1000m" is "1", "4000" is "4k"),
/// numbers by value, object keys in any order.
pub fn digest(v: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    feed(v, false, &mut h);
    h.finish()
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn feed(v: &Value, quantities: bool, h: &mut impl Hasher) {
    match v {
        Value::Object(o) => {
            0u8.hash(h);
            let mut keys: Vec<&String> = o.keys().filter(|k| !is_empty(&o[k.as_str()])).collect();
            keys.sort();
            for k in keys {
                k.hash(h);
                feed(
                    &o[k.as_str()],
                    // Resource amounts, and an HPA's per-pod target (the
                    // API server writes a sessions target of "4000" as "4k").
                    quantities
                        || matches!(k.as_str(), "requests" | "limits" | "hard" | "averageValue"),
                    h,
                );
            }
            1u8.hash(h);
        }
        Value::Array(a) => {
            2u8.hash(h);
            for item in a {
                feed(item, quantities, h);
            }
            3u8.hash(h);
        }
        Value::String(s) if quantities => match Quantity::parse(s) {
            Ok(q) => {
                4u8.hash(h);
                q.0.hash(h);
            }
            Err(_) => s.hash(h),
        },
        Value::String(s) => {
            5u8.hash(h);
            s.hash(h);
        }
        Value::Number(n) => {
            6u8.hash(h);
            n.as_f64().unwrap_or(f64::NAN).to_bits().hash(h);
        }
        Value::Bool(b) => b.hash(h),
        Value::Null => 7u8.hash(h),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn fields() -> Value {
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}, "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}}},
            "f:spec": {
                "f:selector": {},
                "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                    ".": {}, "f:name": {}, "f:image": {},
                    "f:resources": {"f:requests": {"f:cpu": {}}}
                }}}}
            }
        })
    }

    pub(crate) fn desired() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "n", "labels": {"app": "x"},
                         "ownerReferences": [{"uid": "u1", "kind": "TenantSubscription", "apiVersion": "v1", "name": "s"}]},
            "spec": {"selector": {"matchLabels": {"app": "x"}},
                     "template": {"spec": {"containers": [
                        {"name": "app", "image": "img:1", "resources": {"requests": {"cpu": "1000m"}}}]}}}
        })
    }

    pub(crate) fn live() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "n", "uid": "d1", "resourceVersion": "9",
                         "labels": {"app": "x", "other": "y"},
                         "ownerReferences": [{"uid": "u0", "kind": "Other", "apiVersion": "v1", "name": "o"},
                                             {"uid": "u1", "kind": "TenantSubscription", "apiVersion": "v1", "name": "s"}]},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "x"}},
                     "template": {"spec": {"containers": [
                        {"name": "app", "image": "img:1", "imagePullPolicy": "IfNotPresent",
                         "resources": {"requests": {"cpu": "1"}}},
                        {"name": "sidecar", "image": "s"}],
                        "restartPolicy": "Always"}}},
            "status": {"replicas": 3}
        })
    }

    #[test]
    fn a_live_object_hashes_like_what_was_applied() {
        let p = project(&live(), &fields()).unwrap();
        assert_eq!(digest(&p), of_desired(&mut desired()));
    }

    #[test]
    fn a_changed_owned_field_is_drift() {
        let mut l = live();
        l["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:2");
        let p = project(&l, &fields()).unwrap();
        assert_ne!(digest(&p), of_desired(&mut desired()));
    }

    #[test]
    fn a_field_another_manager_took_is_drift() {
        // kubectl edit of the image moves it out of our field set.
        let mut f = fields();
        f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:image");
        let p = project(&live(), &f).unwrap();
        assert_ne!(digest(&p), of_desired(&mut desired()));
    }

    #[test]
    fn a_missing_owner_reference_is_drift() {
        let mut l = live();
        l["metadata"]["ownerReferences"] =
            json!([{"uid": "u0", "kind": "Other", "apiVersion": "v1", "name": "o"}]);
        let p = project(&l, &fields()).unwrap();
        assert_ne!(digest(&p), of_desired(&mut desired()));
    }

    #[test]
    fn quantities_hash_by_amount_only_under_resources() {
        assert_eq!(
            digest(&json!({"limits": {"memory": "1024Mi"}})),
            digest(&json!({"limits": {"memory": "1Gi"}}))
        );
        assert_ne!(
            digest(&json!({"image": "1000m"})),
            digest(&json!({"image": "1"}))
        );
        assert_ne!(
            digest(&json!({"limits": {"memory": "1Gi"}})),
            digest(&json!({"limits": {"memory": "2Gi"}}))
        );
    }

    #[test]
    fn an_hpa_average_value_hashes_by_amount() {
        // A sessions target of 5,000 per replica at 80 %: rendered "4000",
        // served back by the API server as "4k".
        let target = |v: &str| {
            json!({"spec": {"metrics": [{"type": "Pods", "pods": {
                "metric": {"name": "rtc_sessions_active"},
                "target": {"type": "AverageValue", "averageValue": v}}}]}})
        };
        assert_eq!(digest(&target("4000")), digest(&target("4k")));
        assert_eq!(digest(&target("3200m")), digest(&target("3.2")));
        assert_ne!(digest(&target("4000")), digest(&target("4001")));
        // Not every string is a quantity: an env var's value is compared as written.
        assert_ne!(
            digest(&json!({"env": [{"name": "A", "value": "1000m"}]})),
            digest(&json!({"env": [{"name": "A", "value": "1"}]}))
        );
    }

    #[test]
    fn empty_values_equal_absent_ones() {
        assert_eq!(
            digest(&json!({"a": 1, "b": [], "c": {}, "d": null})),
            digest(&json!({"a": 1}))
        );
        assert_eq!(
            digest(&json!({"a": 1, "b": 2})),
            digest(&json!({"b": 2, "a": 1}))
        );
    }

    #[test]
    fn set_and_index_keys_select_items() {
        let f = json!({"f:finalizers": {"v:\"a\"": {}}, "f:args": {"i:1": {}}});
        let l = json!({"finalizers": ["a", "b"], "args": ["x", "y"]});
        assert_eq!(
            project(&l, &f).unwrap(),
            json!({"finalizers": ["a"], "args": ["y"]})
        );
    }

    #[test]
    fn the_desired_digest_leaves_the_body_as_it_was_and_ignores_identity() {
        let mut body = desired();
        let d = of_desired(&mut body);
        assert_eq!(body, desired());
        let mut other = desired();
        other["metadata"]["name"] = json!("b");
        other["kind"] = json!("Other");
        assert_eq!(of_desired(&mut other), d);
    }
}
