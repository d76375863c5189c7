use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tenant_capacity_operator::{
    api, controller,
    metrics::Metrics,
    preview,
    server::{self, Readiness},
    telemetry::{self, LogFormat},
};
use tracing::{error, info};

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
        #[arg(long, default_value = ":8080", value_parser = server::parse_bind_address)]
        metrics_bind_address: SocketAddr,
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
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
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
        Command::Render { file, profiles, at } => {
            let catalogue = preview::load_catalogue(&profiles)?;
            let at = at.unwrap_or_else(jiff::Timestamp::now);
            for sub in preview::load_subscriptions(&file)? {
                print!("{}", preview::render_yaml(&sub, &catalogue, at)?);
            }
            Ok(())
        }
        Command::Run { metrics_bind_address, health_probe_bind_address, namespace, resync_seconds, concurrency, log_format } => {
            telemetry::init(log_format);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async move {
                let client = kube::Client::try_default().await.context("connecting to Kubernetes")?;
                let metrics = Metrics::default();
                let readiness = Readiness::default();
                let (ma, ha, serve) =
                    server::bind(metrics_bind_address, health_probe_bind_address, metrics.clone(), readiness.clone())
                        .await
                        .context("binding the metrics and health endpoints")?;
                info!(metrics = %ma, health = %ha, "serving metrics and health probes");
                let settings = controller::Settings {
                    namespace,
                    resync: Duration::from_secs(resync_seconds.max(1)),
                    concurrency: concurrency.max(1),
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
                tokio::select! {
                    _ = controller::run(client, settings, metrics, readiness, stop) => {}
                    r = serve => if let Err(e) = r { error!(error = %e, "HTTP server failed"); return Err(e.into()); }
                }
                Ok(())
            })
        }
    }
}
