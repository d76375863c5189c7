use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tenant_capacity_operator::{
    api,
    cli::{self, CliError, Connection, Output, Printed, StatusQuery},
    controller, leader,
    metrics::Metrics,
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
    /// Show a subscription's capacity per module: floor, ceiling, replicas,
    /// windows; without a name, every subscription in the namespace.
    Status {
        #[command(flatten)]
        kubectl: KubectlFlags,
        #[command(flatten)]
        args: StatusArgs,
    },
    /// Preview every object the operator would apply for a subscription:
    /// offline with `--profiles`, else with the cluster's catalogue.
    Render {
        #[command(flatten)]
        kubectl: KubectlFlags,
        #[command(flatten)]
        args: RenderArgs,
    },
    /// GET a URL and exit 0 when it answers 200, else print the answer and
    /// exit 1: the chart's `helm test` checks the operator's /readyz with it.
    Probe {
        /// For example http://tco-tenant-capacity-operator-metrics.ops.svc:8081/readyz.
        #[arg(long)]
        url: String,
        /// Seconds the whole exchange may take.
        #[arg(long, default_value_t = 5)]
        timeout_seconds: u64,
    },
}

/// The same binary as the kubectl plugin, when it runs under the name
/// `kubectl-capacity` (a link on PATH): `kubectl capacity status`.
#[derive(Parser)]
#[command(
    name = "kubectl-capacity",
    bin_name = "kubectl capacity",
    version,
    about = "Tenants' capacity: TenantSubscriptions per module, and previews of what the operator applies."
)]
struct Plugin {
    #[command(flatten)]
    kubectl: KubectlFlags,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show a subscription's capacity per module (floor, ceiling, replicas,
    /// windows); without a name, every subscription in the namespace.
    Status(StatusArgs),
    /// Preview every object the operator would apply for the subscriptions
    /// in a file: with the cluster's catalogue, or offline with `--profiles`.
    Render(RenderArgs),
    /// Print the version.
    Version,
}

/// kubectl's flags, anywhere on the command line.
#[derive(Args)]
struct KubectlFlags {
    /// Namespace (default: the kubeconfig context's, else "default").
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config,
    /// then the in-cluster service account).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Output format; the human table when unset.
    #[arg(short = 'o', long, value_enum, global = true)]
    output: Option<Output>,
}

impl KubectlFlags {
    fn connection(&self) -> Connection {
        Connection {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }
}

#[derive(Args)]
struct StatusArgs {
    /// Name of the subscription; without it, every subscription in the namespace.
    name: Option<String>,
    /// Subscriptions in every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

#[derive(Args)]
struct RenderArgs {
    /// File with one or more TenantSubscriptions.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Folder (or file) with the ModuleProfiles (and any SubscriptionPlans and
    /// CapacityCalendars); without it, the cluster's catalogue.
    #[arg(long, visible_alias = "catalogue")]
    profiles: Option<PathBuf>,
    /// Evaluate seasonal windows at this instant (RFC 3339) instead of now.
    #[arg(long)]
    at: Option<jiff::Timestamp>,
}

/// Print what a command printed, or its error as kubectl would; exit 1 on error.
fn report(result: Result<Printed, CliError>) -> ExitCode {
    match result {
        Ok(printed) => {
            print!("{}", printed.stdout);
            eprint!("{}", printed.stderr);
            let _ = std::io::stdout().flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for one command")
        .block_on(f)
}

fn status(kubectl: &KubectlFlags, args: StatusArgs) -> ExitCode {
    let query = StatusQuery {
        name: args.name,
        namespace: kubectl.namespace.clone(),
        all_namespaces: args.all_namespaces,
        output: kubectl.output,
    };
    report(block_on(cli::status(&kubectl.connection(), &query)))
}

fn render(kubectl: &KubectlFlags, args: RenderArgs) -> ExitCode {
    let rendered = block_on(cli::render(
        &kubectl.connection(),
        &args.file,
        args.profiles.as_deref(),
        kubectl.namespace.as_deref(),
        args.at,
        kubectl.output,
    ));
    report(rendered.map(|stdout| Printed {
        stdout,
        stderr: String::new(),
    }))
}

/// Whether the binary runs as `kubectl-capacity` (kubectl runs a plugin
/// with the path it found on PATH as argv[0]).
fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|arg0| Path::new(&arg0).file_stem().map(|name| name == cli::PLUGIN))
        .unwrap_or(false)
}

fn plugin() -> ExitCode {
    let plugin = Plugin::parse();
    match plugin.command {
        PluginCommand::Status(args) => status(&plugin.kubectl, args),
        PluginCommand::Render(args) => render(&plugin.kubectl, args),
        PluginCommand::Version => {
            let version = env!("CARGO_PKG_VERSION");
            let stdout = match plugin.kubectl.output {
                Some(Output::Json) => format!("{{\n  \"version\": \"{version}\"\n}}\n"),
                Some(Output::Yaml) => format!("version: {version}\n"),
                _ => format!("{} {version}\n", cli::PLUGIN),
            };
            report(Ok(Printed {
                stdout,
                stderr: String::new(),
            }))
        }
    }
}

fn probe(url: &str, timeout: Duration) -> ExitCode {
    match block_on(cli::probe::get(url, timeout)) {
        Ok(answer) if answer.ok() => {
            println!("{url}: {} {}", answer.code, answer.body.trim_end());
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!("{url}: {}\n{}", answer.code, answer.body.trim_end());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if invoked_as_plugin() {
        return plugin();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Status { kubectl, args } => status(&kubectl, args),
        Command::Render { kubectl, args } => render(&kubectl, args),
        Command::Probe {
            url,
            timeout_seconds,
        } => probe(&url, Duration::from_secs(timeout_seconds)),
        command => match operator(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:?}");
                ExitCode::FAILURE
            }
        },
    }
}

fn operator(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Crd => {
            print!("{}", api::crds_yaml());
            Ok(())
        }
        Command::Status { .. } | Command::Render { .. } | Command::Probe { .. } => {
            unreachable!("answered in main")
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
