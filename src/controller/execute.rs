//! Carrying out a decision: its batches in order, the writes of a batch
//! together. Children are written with server-side apply under one field
//! manager; deletes are guarded by uid; Events are published last in their
//! place and never fail a reconcile.

use k8s_openapi::{
    api::core::v1::PersistentVolumeClaim, apimachinery::pkg::apis::meta::v1::ObjectMeta,
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
    decide::{DataLeft, Desired, Write},
    drain::claim_is_ours,
    error::{Result, Verb, api_error},
    events::{EventType, Events, Note},
};
use crate::{
    api::TenantSubscription,
    metrics::Metrics,
    render::{LABEL_MODULE, LABEL_SUBSCRIPTION, MANAGER},
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

    /// Every batch in order; the first failure ends the reconcile. Data
    /// deletes do not fail it: what they left is returned, for status.
    pub async fn execute(&self, batches: &[Vec<Write>]) -> Result<Vec<DataLeft>> {
        let mut left = Vec::new();
        for batch in batches {
            let done = futures::future::try_join_all(batch.iter().map(|w| self.write(w))).await?;
            left.extend(done.into_iter().flatten());
        }
        Ok(left)
    }

    async fn write(&self, write: &Write) -> Result<Option<DataLeft>> {
        let sub = self.sub.name_any();
        let ns = self.namespace();
        match write {
            Write::Apply(d) => self.apply(d).await?,
            Write::Delete {
                module,
                kind,
                object,
            } => {
                self.delete(&kind.api_resource(), object).await?;
                info!(subscription = %sub, namespace = %ns, module = %module, kind = %kind, "drain finished; child removed");
            }
            Write::DeleteData { module } => return Ok(Some(self.delete_data(module).await)),
            Write::Announce(note) => self.announce(note).await,
        }
        Ok(None)
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

    /// The recorded retention says Delete: remove the module's
    /// PersistentVolumeClaims (both labels, no other owner; see
    /// `drain::claim_is_ours`), each guarded by its uid. Claims still
    /// there afterwards (a finalizer, a pod using them, a refused delete)
    /// are counted, with the API server's message of the last refusal.
    async fn delete_data(&self, module: &str) -> DataLeft {
        let ns = self.namespace();
        let sub = self.sub.name_any();
        let uid = self.sub.uid().unwrap_or_default();
        let kind = PersistentVolumeClaim::kind(&());
        let selector = format!("{LABEL_SUBSCRIPTION}={sub},{LABEL_MODULE}={module}");
        let api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns);
        let mut report = DataLeft {
            module: module.to_string(),
            left: None,
            error: None,
        };
        let claims = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(l) => l.items,
            Err(e) => {
                warn!(namespace = %ns, subscription = %sub, module, error = %e, "could not list the module's data");
                report.error = Some(api_message(&e));
                return report;
            }
        };
        let mut left = 0;
        let mut kept = Vec::new();
        for pvc in claims {
            let name = pvc.name_any();
            if !claim_is_ours(&pvc.metadata, &uid) {
                kept.push(name);
                continue;
            }
            if pvc.metadata.deletion_timestamp.is_some() {
                left += 1;
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pvc.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(gone) => {
                    self.metrics.write(&kind, "delete");
                    info!(namespace = %ns, subscription = %sub, module, claim = %name, "data deleted (dataRetention: Delete)");
                    if gone.is_left() {
                        // Deleted, still held (pvc-protection while a pod uses it).
                        left += 1;
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    warn!(namespace = %ns, subscription = %sub, module, claim = %name, error = %e, "could not delete the module's data");
                    left += 1;
                    report.error = Some(format!(
                        "delete PersistentVolumeClaim {name}: {}",
                        api_message(&e)
                    ));
                }
            }
        }
        report.left = Some(left);
        if left == 0 && !kept.is_empty() {
            self.announce(&Note {
                type_: EventType::Normal,
                reason: "DataKept".into(),
                message: format!(
                    "{module}: kept PersistentVolumeClaim(s) {} owned by another object",
                    kept.join(", ")
                ),
            })
            .await;
        }
        report
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

/// What the API server said, without the client's wrapping.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}
