//! Scale benchmark against the real local control plane: N tenants × 3
//! modules, side by side in one run. Prints a table and writes JSON.
//!
//! ```text
//! hack/bench.sh                      # N = 1,000
//! hack/bench.sh --tenants 10000      # needs a bigger cluster: see docs/benchmarks.md
//! ```
//!
//! What it measures, in this order (see docs/benchmarks.md for definitions),
//! one file a phase:
//! 1. the floor ([`floor`]): the same child objects written by a bare
//!    server-side-apply loop, at a sweep of concurrencies, until every
//!    Deployment is available;
//! 2. the operator's cold convergence ([`cold`]): every subscription Ready
//!    at its generation, and its ratio to the best floor;
//! 3. quiet idle ([`idle`]): the operator's writes (audit log) after
//!    convergence, across forced resyncs, and 409/429 responses at any time;
//! 4. memory: steady RSS ([`idle`]) and peak RSS (VmHWM) of the operator
//!    process ([`cold`], [`restart`]);
//! 5. restart ([`restart`]): time until a restarted operator has confirmed
//!    every subscription, and the writes it made meanwhile;
//! 6. change latency at a fixed rate of plan changes ([`change`]);
//! 7. the same tenants as one Helm release each ([`helm`]).
//!
//! [`report`] prints the table and writes the JSON; [`setup`] prepares the
//! cluster, [`objects`] the tenants, [`operator`] runs the operator binary and
//! [`tracker`] watches what it does. The operator process, the audit log and
//! waiting come from the tests' support module (tests/support).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use kube::Client;
use serde_json::{Value, json};

#[path = "../../tests/support/mod.rs"]
mod support;

mod attribution;
mod change;
mod cold;
mod floor;
mod helm;
mod idle;
mod objects;
mod operator;
mod report;
mod restart;
mod setup;
mod tracker;

use support::{Audit, wait::poll};

#[derive(Parser, Debug)]
#[command(about = "Scale benchmark of the tenant capacity operator")]
pub struct Args {
    /// Tenants (one TenantSubscription with 3 modules each, one namespace each).
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Concurrencies of the bare server-side-apply loop (the floor).
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 256])]
    sweep: Vec<usize>,
    /// Subscriptions the operator reconciles at once.
    #[arg(long, default_value_t = 64)]
    operator_concurrency: usize,
    /// The operator's forced resync period during the benchmark (seconds).
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// Length of the quiet-idle window after convergence (seconds).
    #[arg(long, default_value_t = 75)]
    idle_seconds: u64,
    /// Plan changes per second in the latency phase.
    #[arg(long, default_value_t = 20.0)]
    change_rate: f64,
    /// Length of the latency phase (seconds).
    #[arg(long, default_value_t = 30)]
    change_seconds: u64,
    /// `helm upgrade --install` processes run at once (as a GitOps pipeline's workers).
    #[arg(long, default_value_t = 8)]
    helm_parallel: usize,
    /// Tenants managed as Helm releases (default: all of them).
    #[arg(long)]
    helm_tenants: Option<usize>,
    /// Skip the Helm comparison.
    #[arg(long)]
    skip_helm: bool,
    /// Skip the floor (no ratios then); for a quick look at the operator alone.
    #[arg(long)]
    skip_floor: bool,
    /// Leave the operator's tenants in place at the end (namespaces bo-*).
    #[arg(long)]
    keep: bool,
    /// kube-apiserver audit log (default: the local cluster's).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Where to write the JSON results (default target/bench/scale-<N>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Operator binary to measure (default: the one built with this
    /// benchmark), e.g. another build of it for a side-by-side comparison.
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

type Res<T> = anyhow::Result<T>;

/// The results, by section of the JSON.
type Results = BTreeMap<&'static str, Value>;

/// What every phase works with.
pub struct Bench {
    args: Args,
    client: Client,
    audit: Audit,
    catalogue: tenant_capacity_operator::capacity::Catalogue,
    /// Authenticates the operator as its own ServiceAccount.
    kubeconfig: PathBuf,
}

impl Bench {
    fn tenants(&self) -> usize {
        self.args.tenants
    }
}

fn main() -> Res<()> {
    // `cargo bench` passes --bench. Anything else (`cargo test --all-targets`)
    // gets a smoke run: three tenants through every phase, so the harness is
    // known to work without spending minutes on figures.
    let args = if std::env::args().any(|a| a == "--bench") {
        Args::parse()
    } else {
        Args::parse_from([
            "scale",
            "--tenants",
            "3",
            "--sweep",
            "8",
            "--idle-seconds",
            "5",
            "--change-seconds",
            "1",
            "--helm-parallel",
            "3",
        ])
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Res<()> {
    started();
    let client = Client::try_default()
        .await
        .context("no cluster: run hack/cluster.sh up (or hack/bench.sh)")?;
    let n = args.tenants;
    let audit_path = args
        .audit_log
        .clone()
        .unwrap_or_else(Audit::local_cluster_path);
    let audit = Audit::open(audit_path.clone()).context("pass --audit-log")?;
    let machine = report::machine();
    log(format!("{n} tenants × 3 modules on {machine}"));

    setup::cleanup(&client).await?;
    setup::install(&client).await?;
    setup::ensure_capacity(&client, n).await?;
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list_metadata(&Default::default())
        .await?
        .items
        .len();
    let control_plane = report::control_plane(&audit_path, nodes);
    log(format!("control plane: {control_plane}"));
    let catalogue = objects::catalogue(&client).await?;
    let kubeconfig = setup::operator_kubeconfig(&client).await?;
    let b = Bench {
        args,
        client,
        audit,
        catalogue,
        kubeconfig,
    };
    let mut results = Results::new();
    results.insert(
        "machine",
        json!({"description": machine, "cores": report::num_cpus(), "memory_gib": report::mem_gib(), "date": jiff::Timestamp::now().to_string()}),
    );
    results.insert("control_plane", control_plane);
    results.insert("tenants", json!(n));
    if let Some(bin) = &b.args.operator_bin {
        results.insert("operator_bin", json!(bin));
    }
    results.insert(
        "objects_per_tenant",
        json!(objects::desired(&b.catalogue, "x", 0).len()),
    );

    let floor = floor::run(&b, &mut results).await?;
    let cold = cold::run(&b, &floor, &mut results).await?;
    let steady = idle::run(&b, &cold.op, &mut results).await?;
    let op = restart::run(&b, cold.op, cold.peak_rss, &steady, &mut results).await?;
    let latency = change::run(&b, &op, &cold.tracker, &cold.namespaces, &mut results).await?;

    // Over the whole run of the operator, from its cold start.
    let after = operator::writes_since(&b, &cold.audit_start)?;
    let (steady_rss_after, _) = op.memory();
    results.insert(
        "conflicts_and_throttling",
        json!({"operator_409": after.code(409), "operator_429": after.code(429), "all_operator_writes": after.total()}),
    );
    results.get_mut("memory").unwrap()["rss_after_changes_mib"] =
        json!(report::mib(steady_rss_after));
    operator::stop(op)?;
    drop(cold.tracker);
    if b.args.keep {
        log("--keep: leaving namespaces bo-* and their subscriptions");
    } else {
        setup::delete_namespaces(&b.client, "bo").await?;
    }

    if !b.args.skip_helm {
        helm::run(&b, cold.seconds, &latency, &mut results).await?;
    }

    if !b.args.keep {
        setup::cleanup(&b.client).await?;
    }
    report::write(&b.args, &results)
}

/// A time limit of `secs` per 1,000 tenants (at least `secs`): what is
/// generous at 1,000 would cut a 10,000-tenant run short.
fn per_thousand(n: usize, secs: u64) -> Duration {
    Duration::from_secs(secs * (n as u64).div_ceil(1000).max(1))
}

fn log(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {:>7.1}s] {}",
        started().elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

fn started() -> &'static Instant {
    &anchor().0
}

/// One moment on both clocks: this process's instants and the wall clock
/// (which the API server's audit log and the operator's log use).
fn anchor() -> &'static (Instant, jiff::Timestamp) {
    static ANCHOR: std::sync::OnceLock<(Instant, jiff::Timestamp)> = std::sync::OnceLock::new();
    ANCHOR.get_or_init(|| (Instant::now(), jiff::Timestamp::now()))
}

/// How often the benchmark looks at the cluster: no more often, so the
/// looking does not load the API server it measures.
const POLL: Duration = Duration::from_millis(250);

async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    Ok(poll(what, timeout, POLL, check).await?)
}
