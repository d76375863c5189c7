//! Leader election on a coordination.k8s.io Lease, so that several replicas
//! can run and only one writes. A leader that loses its Lease exits at once
//! (its replacement starts clean), as controller-runtime operators do.

use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info};

use crate::{controller, metrics::Metrics, server::Readiness};

#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    pub duration: Duration,
}

fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "tenant-capacity-operator".into());
    format!("{host}-{}", std::process::id())
}

/// Run the controller, behind leader election when `election` is set, until
/// `shutdown` resolves. Errors when leadership is lost.
pub async fn run(
    client: Client,
    settings: controller::Settings,
    metrics: Metrics,
    readiness: Readiness,
    election: Option<Election>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let Some(election) = election else {
        controller::run(client, settings, metrics, readiness, shutdown).await;
        return Ok(());
    };
    let id = identity();
    let secs = election.duration.as_secs();
    let manager = LeaseManagerBuilder::new(client.clone(), &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&id)
        .with_duration(secs)
        .with_grace((secs / 3).max(1))
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leading, task) = manager.watch().await;
    // A standby replica is healthy and ready to take over.
    readiness.set_ready();
    info!(lease = %election.lease, namespace = %election.namespace, identity = %id, "waiting for leadership");
    let mut shutdown = Box::pin(shutdown);
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => changed.context("leader election stopped")?,
            _ = &mut shutdown => {
                drop(leading);
                let _ = task.await;
                return Ok(());
            }
        }
    }
    info!(identity = %id, "leading: starting the controller");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(
        client,
        settings,
        metrics,
        readiness,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let lost = async {
        while *leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                break;
            }
        }
    };
    let result = tokio::select! {
        _ = lost => {
            error!(identity = %id, "lost leadership; exiting so that only the new leader writes");
            controller.abort();
            Err(anyhow::anyhow!("lost leadership of Lease {}/{}", election.namespace, election.lease))
        }
        _ = &mut shutdown => {
            let _ = stop_tx.send(());
            let _ = controller.await;
            Ok(())
        }
    };
    // Closing the channel ends the manager's task; release so a standby takes over at once.
    drop(leading);
    if let Ok(Ok(manager)) = task.await
        && let Err(e) = manager.release().await
    {
        error!(error = %e, "could not release the Lease");
    }
    result
}
