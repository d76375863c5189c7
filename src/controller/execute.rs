//! Carrying out a decision: its batches in order, the writes of a batch
//! together. Children are written with server-side apply under one field
//! manager; deletes are guarded by uid; Events are published last in their
//! place and never fail a reconcile.

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::PersistentVolumeClaim},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{
        DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
        PropagationPolicy,
    },
    core::ApiResource,
};
use tracing::{debug, info, warn};

use super::{
    decide::{Desired, Write},
    error::{Result, Verb, api_error},
    events::{Events, Note},
};
use crate::{
    api::TenantSubscription,
    metrics::Metrics,
    render::{ANNOTATION_DRAINING_SINCE, LABEL_MODULE, LABEL_SUBSCRIPTION, MANAGER},
};

/// What the writes of one subscription need.
pub struct Writer<'a> {
    pub client: &'a Client,
    pub metrics: &'a Metrics,
    pub events: &'a Events,
    pub sub: &'a TenantSubscription,
}

impl Writer<'_> {
    fn namespace(&self) -> String {
        self.sub.namespace().unwrap_or_default()
    }

    /// Every batch in order; the first failure ends the reconcile.
    pub async fn execute(&self, batches: &[Vec<Write>]) -> Result<()> {
        for batch in batches {
            futures::future::try_join_all(batch.iter().map(|w| self.write(w))).await?;
        }
        Ok(())
    }

    async fn write(&self, write: &Write) -> Result<()> {
        let sub = self.sub.name_any();
        let ns = self.namespace();
        match write {
            Write::Apply(d) => self.apply(d).await,
            Write::MarkDraining {
                module,
                deployment,
                since,
            } => {
                self.annotate_draining(deployment, Some(&since.to_string()))
                    .await?;
                info!(subscription = %sub, namespace = %ns, module = %module, "module switched off; draining");
                Ok(())
            }
            Write::ClearDraining { module, deployment } => {
                self.annotate_draining(deployment, None).await?;
                info!(subscription = %sub, namespace = %ns, module = %module, "module re-enabled; drain cancelled");
                Ok(())
            }
            Write::Delete {
                module,
                kind,
                object,
            } => {
                self.delete(&kind.api_resource(), object).await?;
                info!(subscription = %sub, namespace = %ns, module = %module, kind = %kind, "drain finished; child removed");
                Ok(())
            }
            Write::DeleteData { module } => self.delete_data(module).await,
            Write::Announce(note) => {
                self.announce(note).await;
                Ok(())
            }
        }
    }

    fn api(&self, resource: &ApiResource, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, resource)
    }

    async fn apply(&self, d: &Desired) -> Result<()> {
        let ns = self.namespace();
        if d.applied.is_some() {
            debug!(namespace = %ns, kind = %d.kind, name = %d.name, "child differs from what was applied; applying again");
        }
        self.api(&d.kind.api_resource(), &ns)
            .patch(
                &d.name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&d.body),
            )
            .await
            .map_err(api_error(Verb::Apply, d.kind.as_str(), &ns, &d.name))?;
        self.metrics.write(d.kind.as_str(), "apply");
        Ok(())
    }

    /// Delete an object we own, guarded by its uid so a same-named replacement survives.
    async fn delete(&self, resource: &ApiResource, meta: &ObjectMeta) -> Result<()> {
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: meta.uid.clone(),
                resource_version: None,
            }),
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match self.api(resource, ns).delete(name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(api_error(Verb::Delete, &resource.kind, ns, name)(e)),
        }
        self.metrics.write(&resource.kind, "delete");
        Ok(())
    }

    /// Set or clear the draining-since annotation of a Deployment with a
    /// merge patch, leaving every other field alone.
    async fn annotate_draining(&self, meta: &ObjectMeta, value: Option<&str>) -> Result<()> {
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        let kind = Deployment::kind(&());
        let body =
            serde_json::json!({"metadata": {"annotations": {ANNOTATION_DRAINING_SINCE: value}}});
        let pp = PatchParams {
            field_manager: Some(MANAGER.to_string()),
            ..Default::default()
        };
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch(name, &pp, &Patch::Merge(&body))
            .await
            .map_err(api_error(Verb::Annotate, &kind, ns, name))?;
        self.metrics.write(&kind, "patch");
        Ok(())
    }

    /// The retention policy says Delete: remove the module's PersistentVolumeClaims.
    async fn delete_data(&self, module: &str) -> Result<()> {
        let ns = self.namespace();
        let sub = self.sub.name_any();
        let resource = ApiResource::erase::<PersistentVolumeClaim>(&());
        let selector = format!("{LABEL_SUBSCRIPTION}={sub},{LABEL_MODULE}={module}");
        let claims = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_error(Verb::List, &resource.kind, &ns, &selector))?;
        for pvc in claims {
            self.delete(&resource, &pvc.metadata).await?;
            info!(namespace = %ns, subscription = %sub, module, claim = %pvc.name_any(), "data deleted (dataRetention: Delete)");
        }
        Ok(())
    }

    /// Publish an Event about the subscription; a failure is logged, not returned.
    pub async fn announce(&self, note: &Note) {
        let message: String = note.message.chars().take(1000).collect();
        let regarding = self.sub.object_ref(&());
        match self
            .events
            .publish(&regarding, note.type_, &note.reason, "Reconcile", &message)
            .await
        {
            Ok(verb) => self.metrics.write("Event", verb),
            Err(e) => warn!(error = %e, "could not publish event"),
        }
    }
}
