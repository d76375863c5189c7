//! Leader election on a coordination.k8s.io Lease, so that several replicas
//! can run and only one writes. A leader that loses its Lease exits at once
//! (its replacement starts clean), as controller-runtime operators do.
//!
//! Shutdown has a deadline: on SIGTERM the controller stops taking work and
//! in-flight reconciles get `shutdown_timeout` to finish; then the leader
//! releases its Lease and the process exits. A standby watches the Lease and
//! takes it as soon as it is released, instead of waiting for it to expire.

use std::time::Duration;

use anyhow::Context as _;
use futures::{FutureExt as _, Stream, StreamExt as _};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tracing::{debug, error, info, warn};

use crate::{controller, metrics::Metrics, server::Readiness};

/// How long a leader that shuts down tries to release its Lease.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

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
/// `shutdown` resolves; in-flight work then gets `shutdown_timeout` to end.
/// Errors when leadership is lost.
pub async fn run(
    client: Client,
    settings: controller::Settings,
    metrics: Metrics,
    readiness: Readiness,
    election: Option<Election>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    shutdown_timeout: Duration,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let Some(election) = election else {
        // The only instance: it reconciles, as a leader does.
        metrics.leader.set(1);
        let leader = metrics.leader.clone();
        let controller = controller::run(client, settings, metrics, readiness, shutdown.clone());
        finish_within(controller, shutdown, shutdown_timeout).await;
        leader.set(0);
        return Ok(());
    };
    let id = identity();
    // A standby replica is healthy and ready to take over.
    readiness.set_ready();
    info!(lease = %election.lease, namespace = %election.namespace, identity = %id, "waiting for leadership");
    let Some((mut leading, task)) =
        await_leadership(&client, &election, &id, shutdown.clone()).await?
    else {
        return Ok(());
    };
    info!(identity = %id, "leading: starting the controller");
    metrics.leader.set(1);
    let leader = metrics.leader.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stop_rx.await;
    }
    .shared();
    let mut controller = tokio::spawn(controller::run(
        client,
        settings,
        metrics,
        readiness,
        stopped.clone(),
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
        _ = shutdown => {
            let _ = stop_tx.send(());
            // A reconcile that outlives the deadline is cut: its writes are
            // idempotent applies, and the next leader redoes them.
            if finish_within(&mut controller, stopped, shutdown_timeout).await.is_none() {
                controller.abort();
            }
            Ok(())
        }
    };
    // Closing the channel ends the manager's task, which releases the Lease so
    // that a standby takes over at once. Bounded too: an API server that does
    // not answer leaves the Lease to expire.
    drop(leading);
    leader.set(0);
    match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
        Ok(Ok(Ok(_))) => info!(lease = %election.lease, "released the Lease"),
        Ok(Ok(Err(e))) => error!(error = %e, "could not release the Lease"),
        Ok(Err(e)) => error!(error = %e, "leader election task failed"),
        Err(_) => warn!(
            lease = %election.lease,
            "releasing the Lease timed out; a standby takes over when it expires"
        ),
    }
    result
}

type Leadership = (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<kube_lease_manager::Result<LeaseManager>>,
);

/// Waits until this replica holds the Lease, or `shutdown` resolves (None).
///
/// The Lease manager, when another replica holds the Lease, sleeps until the
/// Lease would expire. A holder that shuts down releases it, so the standby
/// also watches the Lease and, when it sees it released, starts a fresh
/// manager, which reads the Lease anew and takes it at once.
async fn await_leadership(
    client: &Client,
    election: &Election,
    id: &str,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Option<Leadership>> {
    let mut released = std::pin::pin!(releases(client, election));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (mut leading, task) = manager(client, election, id).await?.watch().await;
        loop {
            if *leading.borrow_and_update() {
                return Ok(Some((leading, task)));
            }
            tokio::select! {
                changed = leading.changed() => changed.context("leader election stopped")?,
                Some(()) = released.next() => {
                    debug!(lease = %election.lease, "the Lease was released: trying to take it");
                    // Dropped mid-sleep: it holds nothing, or at most the
                    // Lease under our own identity, which the next manager
                    // sees as ours.
                    task.abort();
                    break;
                }
                _ = &mut shutdown => {
                    drop(leading);
                    let _ = task.await;
                    return Ok(None);
                }
            }
        }
    }
}

async fn manager(client: &Client, election: &Election, id: &str) -> anyhow::Result<LeaseManager> {
    let secs = election.duration.as_secs();
    LeaseManagerBuilder::new(client.clone(), &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(id)
        .with_duration(secs)
        .with_grace((secs / 3).max(1))
        .build()
        .await
        .context("setting up leader election")
}

/// Yields each time the Lease is seen without a holder. Without `list` and
/// `watch` on Leases this yields nothing and takeover waits for expiry.
fn releases(client: &Client, election: &Election) -> impl Stream<Item = ()> + use<> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", election.lease));
    let mut warned = false;
    watcher(api, config)
        .default_backoff()
        .applied_objects()
        .filter_map(move |lease| {
            let released = match lease {
                Ok(lease) => lease.spec.is_none_or(|s| s.holder_identity.is_none()),
                Err(e) => {
                    if !std::mem::replace(&mut warned, true) {
                        warn!(error = %e, "cannot watch the leader-election Lease; a standby takes over only when it expires");
                    }
                    false
                }
            };
            std::future::ready(released.then_some(()))
        })
}

/// Runs `work` to its end, but no longer than `timeout` after `stop`
/// resolves. None when the deadline cut it short.
pub async fn finish_within<F: Future>(
    work: F,
    stop: impl Future<Output = ()>,
    timeout: Duration,
) -> Option<F::Output> {
    let deadline = async {
        stop.await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        out = work => Some(out),
        _ = deadline => {
            warn!(timeout_seconds = timeout.as_secs_f64(), "in-flight reconciles did not end within the shutdown deadline; exiting");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_never_ends_is_cut_at_the_deadline() {
        let start = tokio::time::Instant::now();
        let out = finish_within(
            std::future::pending::<()>(),
            tokio::time::sleep(Duration::from_secs(3)),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(out, None);
        assert_eq!(start.elapsed(), Duration::from_secs(13));
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_ends_in_time_is_awaited() {
        let start = tokio::time::Instant::now();
        let work = async {
            tokio::time::sleep(Duration::from_secs(7)).await;
            42
        };
        let out = finish_within(work, std::future::ready(()), Duration::from_secs(10)).await;
        assert_eq!(out, Some(42));
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_before_the_stop() {
        let work = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "done"
        };
        let out = finish_within(work, std::future::pending(), Duration::from_secs(1)).await;
        assert_eq!(out, Some("done"));
    }
}
