use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tenant_capacity_operator::{
    api, controller, leader,
    metrics::Metrics,
    preview,
    server::{
        self, MetricsServing, Readiness,
        access::{ApiReviews, MetricsAccess},
        tls::ServingCert,
    },
    telemetry::{self, LogFormat},
};
use tracing::{error, info, warn};

/// Elastic per-tenant capacity for real-time communications products.
#[derive(Parser)]
#[command(name = "tenant-capacity-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (kubeconfig from in-cluster or KUBECONFIG/~/.kube/config).
    Run {
        /// Address of the Prometheus /metrics endpoint; port 0 picks a free port.
        #[arg(long, default_value = ":8443", value_parser = server::parse_bind_address)]
        metrics_bind_address: SocketAddr,
        /// Serve /metrics over HTTPS to callers whose bearer token the API
        /// server accepts (TokenReview) and who may `get` the non-resource URL
        /// /metrics (SubjectAccessReview). `--metrics-secure=false` serves plain
        /// HTTP to anyone: for development, on a loopback address only.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        metrics_secure: bool,
        /// Directory with tls.crt and tls.key (a mounted kubernetes.io/tls
        /// Secret, from cert-manager say) for /metrics, re-read when they
        /// change; without it a self-signed certificate is made at start.
        #[arg(long)]
        metrics_cert_dir: Option<PathBuf>,
        /// Address of /healthz and /readyz; port 0 picks a free port.
        #[arg(long, default_value = ":8081", value_parser = server::parse_bind_address)]
        health_probe_bind_address: SocketAddr,
        /// Watch only this namespace (all namespaces when unset).
        #[arg(long, env = "WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Re-check every subscription this often (seconds) even when nothing changed.
        #[arg(long, default_value_t = 300)]
        resync_seconds: u64,
        /// Subscriptions reconciled at once.
        #[arg(long, default_value_t = 16)]
        concurrency: u16,
        #[arg(long, value_enum, default_value = "text", env = "LOG_FORMAT")]
        log_format: LogFormat,
        /// Only the holder of a coordination.k8s.io Lease reconciles; others stand by.
        #[arg(long)]
        leader_elect: bool,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        leader_election_namespace: String,
        /// Name of the leader-election Lease.
        #[arg(long, default_value = "tenant-capacity-operator")]
        leader_election_id: String,
        /// Seconds a leader holds the Lease without renewing it.
        #[arg(long, default_value_t = 15)]
        leader_election_lease_seconds: u64,
        /// After SIGTERM, seconds in-flight reconciles get to finish before the
        /// process releases its Lease and exits; keep it below the pod's
        /// terminationGracePeriodSeconds.
        #[arg(long, default_value_t = 20)]
        shutdown_timeout_seconds: u64,
        /// How watches fetch existing objects: `stream` (WatchList, least memory),
        /// `paged` (list in pages), or `auto` (`stream` from Kubernetes 1.34).
        #[arg(long, value_enum, default_value = "auto", env = "INITIAL_LIST")]
        initial_list: controller::InitialList,
        /// Apply only subscriptions that name a SubscriptionPlan; others get
        /// Ready=False (PlanRequired). `--require-plan=false` turns it off.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        require_plan: bool,
        /// The namespace label by which the provider assigns a namespace to a
        /// tenant: a subscription acts only in a namespace labelled with its
        /// `tenantId`, and metering bills that label's tenant.
        #[arg(long, default_value = tenant_capacity_operator::render::LABEL_TENANT, env = "TENANT_NAMESPACE_LABEL")]
        tenant_namespace_label: String,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Show a subscription's capacity per module: floor, ceiling, replicas, windows.
    Status {
        /// Namespace of the subscription.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Name of the subscription.
        name: String,
    },
    /// Preview, offline, every object the operator would apply for a subscription.
    Render {
        /// File with one or more TenantSubscriptions.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Folder (or file) with the ModuleProfiles (and any SubscriptionPlans and CapacityCalendars).
        #[arg(long, visible_alias = "catalogue")]
        profiles: PathBuf,
        /// Evaluate seasonal windows at this instant (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<jiff::Timestamp>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", api::crds_yaml());
            Ok(())
        }
        Command::Status { namespace, name } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                // The operator's client: its requests are bounded in time too.
                let client = controller::client()
                    .await
                    .context("connecting to Kubernetes")?;
                let api: kube::Api<api::TenantSubscription> =
                    kube::Api::namespaced(client, &namespace);
                let sub = api
                    .get(&name)
                    .await
                    .with_context(|| format!("reading TenantSubscription {namespace}/{name}"))?;
                print!("{}", preview::status_table(&sub));
                Ok(())
            })
        }
        Command::Render { file, profiles, at } => {
            let catalogue = preview::load_catalogue(&profiles)?;
            let at = at.unwrap_or_else(jiff::Timestamp::now);
            for sub in preview::load_subscriptions(&file)? {
                print!("{}", preview::render_yaml(&sub, &catalogue, at)?);
            }
            Ok(())
        }
        Command::Run {
            metrics_bind_address,
            metrics_secure,
            metrics_cert_dir,
            health_probe_bind_address,
            namespace,
            resync_seconds,
            concurrency,
            log_format,
            leader_elect,
            leader_election_namespace,
            leader_election_id,
            leader_election_lease_seconds,
            shutdown_timeout_seconds,
            initial_list,
            require_plan,
            tenant_namespace_label,
        } => {
            telemetry::init(log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let client = controller::client().await.context("connecting to Kubernetes")?;
                let metrics = Metrics::default();
                let readiness = Readiness::default();
                let serving = if metrics_secure {
                    let cert = match &metrics_cert_dir {
                        Some(dir) => ServingCert::from_dir(dir),
                        None => ServingCert::self_signed(),
                    }
                    .context("the metrics endpoint's certificate")?;
                    // Its own client: callers of /metrics never wait for the
                    // controller's slots of requests in flight, nor it for theirs.
                    let reviews = controller::client().await.context("connecting to Kubernetes")?;
                    MetricsServing::Secure {
                        cert: Arc::new(cert),
                        access: MetricsAccess::new(ApiReviews::new(reviews)),
                    }
                } else {
                    if !metrics_bind_address.ip().is_loopback() {
                        warn!(address = %metrics_bind_address, "serving /metrics over plain HTTP to anyone who can connect; --metrics-secure=false is meant for a loopback address");
                    }
                    MetricsServing::Plain
                };
                let (ma, ha, serve) =
                    server::bind(metrics_bind_address, health_probe_bind_address, metrics.clone(), readiness.clone(), serving)
                        .await
                        .context("binding the metrics and health endpoints")?;
                let certificate = match (metrics_secure, &metrics_cert_dir) {
                    (false, _) => "none (plain HTTP)".to_string(),
                    (true, Some(dir)) => dir.display().to_string(),
                    (true, None) => "self-signed".to_string(),
                };
                info!(metrics = %ma, health = %ha, metrics_secure, certificate, "serving metrics and health probes");
                let settings = controller::Settings {
                    namespace,
                    resync: Duration::from_secs(resync_seconds.max(1)),
                    concurrency: concurrency.max(1),
                    initial_list,
                    require_plan,
                    tenant_label: tenant_namespace_label,
                    ..Default::default()
                };
                let shutdown = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                let term = async {
                    #[cfg(unix)]
                    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                        s.recv().await;
                        return;
                    }
                    std::future::pending::<()>().await
                };
                let stop = async move {
                    tokio::select! { _ = shutdown => {}, _ = term => {} }
                    info!("shutting down");
                };
                let election = leader_elect.then(|| leader::Election {
                    namespace: leader_election_namespace,
                    lease: leader_election_id,
                    duration: Duration::from_secs(leader_election_lease_seconds.max(2)),
                });
                tokio::select! {
                    r = leader::run(client, settings, metrics, readiness, election, stop, Duration::from_secs(shutdown_timeout_seconds)) => r?,
                    r = serve => if let Err(e) = r { error!(error = %e, "HTTP server failed"); return Err(e.into()); }
                }
                Ok(())
            })
        }
    }
}
