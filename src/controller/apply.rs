//! Writing children: server-side apply under one field manager, skipped when
//! the live object already says what we would write.

use std::fmt::Debug;

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{Error, slim::desired_digest};
use crate::{
    metrics::Metrics,
    render::{Child, MANAGER},
};

/// Whether `child` needs writing: it is not cached, we own none of its
/// fields, or what we applied (its digest) differs from what we would write.
pub fn needs_apply(child: &Child, applied: Option<u64>) -> bool {
    applied != Some(desired_digest(&child.to_value()))
}

/// Whether an object's owner references name this owner uid.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
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

/// Apply `child`, which [`needs_apply`] said differs from what we applied
/// (`applied`: the digest of our cached copy, if any). A child with no
/// cached copy must have passed the check that its name is free.
pub async fn apply_child(
    client: &Client,
    metrics: &Metrics,
    ns: &str,
    child: &Child,
    applied: Option<u64>,
) -> Result<(), Error> {
    use k8s_openapi::api::{
        apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1,
    };
    let desired = child.to_value();
    let name = child.name();
    if applied.is_some() {
        tracing::debug!(
            namespace = ns,
            kind = child.kind(),
            name,
            "child differs from what was applied; applying again"
        );
    }
    match child {
        Child::Deployment(_) => apply_typed::<Deployment>(client, ns, name, &desired).await?,
        Child::Hpa(_) => apply_typed::<HorizontalPodAutoscaler>(client, ns, name, &desired).await?,
        Child::Service(_) => apply_typed::<v1::Service>(client, ns, name, &desired).await?,
        Child::Quota(_) => apply_typed::<v1::ResourceQuota>(client, ns, name, &desired).await?,
    }
    metrics.write(child.kind(), "apply");
    Ok(())
}

/// Delete an object we own, guarded by its uid so a same-named replacement survives.
pub async fn delete_owned<K>(
    client: &Client,
    metrics: &Metrics,
    meta: &ObjectMeta,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let ns = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
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
    meta: &ObjectMeta,
    key: &str,
    value: Option<&str>,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let ns = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
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
