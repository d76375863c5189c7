//! Writing children: server-side apply under one field manager, skipped when
//! the live object already says what we would write.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::Error;
use crate::{
    capacity::quantity::same_quantity,
    metrics::Metrics,
    render::{ANNOTATION_HASH, Child, MANAGER},
};

/// Whether every field of `desired` is present in `live` with the same value.
/// Fields the server or other managers added are ignored; quantities compare
/// by amount ("1000m" equals "1"), as the server rewrites them canonically.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    subset(desired, live, false)
}

fn subset(desired: &Value, live: &Value, quantities: bool) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => subset(
                dv,
                lv,
                quantities || matches!(k.as_str(), "requests" | "limits" | "hard"),
            ),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => {
            d.iter().zip(l).all(|(dv, lv)| subset(dv, lv, quantities))
        }
        // Others may have added entries (e.g. another owner reference).
        (Value::Array(d), Value::Array(l)) => d
            .iter()
            .all(|dv| l.iter().any(|lv| subset(dv, lv, quantities))),
        (Value::String(d), Value::String(l)) if quantities => same_quantity(d, l),
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether the live object needs writing to match the desired one.
pub fn needs_apply(desired: &Value, live: &Value) -> bool {
    let hash = |v: &Value| {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(ANNOTATION_HASH))
            .cloned()
    };
    hash(desired) != hash(live) || !is_subset(desired, live)
}

/// Whether an object's owner references name this owner uid.
pub fn owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

fn params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

async fn apply_typed<K>(client: &Client, ns: &str, name: &str, body: &Value) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(name, &params(), &Patch::Apply(body)).await?;
    Ok(())
}

async fn check_free_typed<K>(client: &Client, ns: &str, name: &str, uid: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(existing) if !owned_by(existing.meta(), uid) => Err(Error::NotOwned {
            kind: K::kind(&()).to_string(),
            name: name.to_string(),
        }),
        _ => Ok(()),
    }
}

/// For a child missing from our cache: make sure the name is not taken by an
/// object someone else made, which we must never take over.
pub async fn check_free(client: &Client, ns: &str, child: &Child, uid: &str) -> Result<(), Error> {
    use k8s_openapi::api::{
        apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1,
    };
    let name = child.name();
    match child {
        Child::Deployment(_) => check_free_typed::<Deployment>(client, ns, name, uid).await,
        Child::Hpa(_) => check_free_typed::<HorizontalPodAutoscaler>(client, ns, name, uid).await,
        Child::Service(_) => check_free_typed::<v1::Service>(client, ns, name, uid).await,
        Child::Quota(_) => check_free_typed::<v1::ResourceQuota>(client, ns, name, uid).await,
    }
}

/// Apply `child` unless `live` (our cached copy, owned by us) already
/// matches. A child with no cached copy must have passed [`check_free`].
/// Returns whether a write was made.
pub async fn ensure(
    client: &Client,
    metrics: &Metrics,
    ns: &str,
    child: &Child,
    live: Option<Value>,
) -> Result<bool, Error> {
    use k8s_openapi::api::{
        apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1,
    };
    let desired = child.to_value();
    if let Some(live) = &live
        && !needs_apply(&desired, live)
    {
        return Ok(false);
    }
    let name = child.name();
    match child {
        Child::Deployment(_) => apply_typed::<Deployment>(client, ns, name, &desired).await?,
        Child::Hpa(_) => apply_typed::<HorizontalPodAutoscaler>(client, ns, name, &desired).await?,
        Child::Service(_) => apply_typed::<v1::Service>(client, ns, name, &desired).await?,
        Child::Quota(_) => apply_typed::<v1::ResourceQuota>(client, ns, name, &desired).await?,
    }
    metrics.write(child.kind(), "apply");
    Ok(true)
}

/// Delete an object we own, guarded by its uid so a same-named replacement survives.
pub async fn delete_owned<K>(client: &Client, metrics: &Metrics, obj: &K) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let ns = obj.meta().namespace.as_deref().unwrap_or_default();
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.meta().uid.clone(),
            resource_version: None,
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    metrics.write(K::kind(&()).as_ref(), "delete");
    Ok(())
}

/// Set or clear one annotation with a merge patch, leaving every other field alone.
pub async fn annotate<K>(
    client: &Client,
    metrics: &Metrics,
    obj: &K,
    key: &str,
    value: Option<&str>,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let ns = obj.meta().namespace.as_deref().unwrap_or_default();
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let body = serde_json::json!({"metadata": {"annotations": {key: value}}});
    let pp = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..Default::default()
    };
    api.patch(name, &pp, &Patch::Merge(&body)).await?;
    metrics.write(K::kind(&()).as_ref(), "patch");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_added_fields_are_not_drift() {
        let desired = json!({"spec": {"maxReplicas": 5, "metrics": [{"type": "Resource"}]}});
        let live = json!({"spec": {"maxReplicas": 5, "minReplicas": 1, "metrics": [{"type": "Resource", "x": 1}]}, "status": {}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn changed_or_missing_fields_are_drift() {
        let desired = json!({"spec": {"maxReplicas": 5, "image": "a"}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"maxReplicas": 6, "image": "a"}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {"image": "a"}})));
    }

    #[test]
    fn quantities_compare_by_amount_only_under_resources() {
        let desired = json!({"resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}}, "image": "1000m"});
        let live =
            json!({"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}, "image": "1000m"});
        assert!(is_subset(&desired, &live));
        let live = json!({"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}, "image": "1"});
        assert!(!is_subset(&desired, &live));
    }

    #[test]
    fn extra_list_entries_from_others_are_tolerated() {
        let desired = json!({"ownerReferences": [{"uid": "a"}]});
        let live = json!({"ownerReferences": [{"uid": "b"}, {"uid": "a", "controller": true}]});
        assert!(is_subset(&desired, &live));
        assert!(!is_subset(
            &desired,
            &json!({"ownerReferences": [{"uid": "b"}, {"uid": "c"}]})
        ));
    }

    #[test]
    fn a_new_hash_means_apply_even_when_fields_match() {
        let desired =
            json!({"metadata": {"annotations": {ANNOTATION_HASH: "2"}}, "spec": {"a": 1}});
        let live = json!({"metadata": {"annotations": {ANNOTATION_HASH: "1"}}, "spec": {"a": 1}});
        assert!(needs_apply(&desired, &live));
        let live =
            json!({"metadata": {"annotations": {ANNOTATION_HASH: "2"}}, "spec": {"a": 1, "b": 2}});
        assert!(!needs_apply(&desired, &live));
    }
}
