//! Phase 1, the floor: the tenants' child objects, rendered by the
//! operator's own code, written by a bare server-side-apply loop at each
//! concurrency of the sweep, until every Deployment has an available replica
//! (the end state the operator's Ready stands for). The best of the sweep is
//! the floor.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use serde_json::json;
use tenant_capacity_operator::render::{self, Child};

use crate::{
    Bench, Res, Results, log,
    objects::{desired, ssa},
    report::secs,
    setup::{delete_namespaces, namespaces, wait_available},
};

/// The best of the sweep, in seconds (infinite when skipped).
pub struct Floor {
    pub written: f64,
    pub available: f64,
}

pub async fn run(b: &Bench, results: &mut Results) -> Res<Floor> {
    let n = b.tenants();
    let mut sweep = Vec::new();
    for &c in b.args.sweep.iter().filter(|_| !b.args.skip_floor) {
        let ns = namespaces(&b.client, "bf", n).await?;
        let children: Vec<(String, Child)> = ns
            .iter()
            .enumerate()
            .flat_map(|(i, ns)| {
                desired(&b.catalogue, ns, i)
                    .into_iter()
                    .map(move |c| (ns.clone(), c))
            })
            .collect();
        let total = children.len();
        let t0 = Instant::now();
        stream::iter(children)
            .map(|(ns, child)| {
                let client = b.client.clone();
                async move { ssa(&client, &ns, &child, "bench-floor").await }
            })
            .buffer_unordered(c)
            .try_collect::<Vec<_>>()
            .await?;
        let written = t0.elapsed();
        let selector = format!("{}={}", render::LABEL_MANAGED_BY, render::MANAGER);
        wait_available(&b.client, &selector, 3 * n, Duration::from_secs(1800)).await?;
        let available = t0.elapsed();
        log(format!(
            "floor c={c}: {total} objects written in {:.1}s, all Deployments available after {:.1}s",
            written.as_secs_f64(),
            available.as_secs_f64()
        ));
        sweep.push(json!({"concurrency": c, "objects": total, "written_s": secs(written), "available_s": secs(available)}));
        delete_namespaces(&b.client, "bf").await?;
    }
    let best = |key: &str| {
        sweep
            .iter()
            .filter_map(|f| f[key].as_f64())
            .fold(f64::INFINITY, f64::min)
    };
    let floor = Floor {
        written: best("written_s"),
        available: best("available_s"),
    };
    results.insert(
        "floor",
        json!({"sweep": sweep, "best_written_s": floor.written, "best_available_s": floor.available}),
    );
    Ok(floor)
}
