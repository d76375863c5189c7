//! Watching the benchmark's subscriptions and video HPAs: when each reached
//! a state, as a watching client sees it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::bail;
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tenant_capacity_operator::{api::TenantSubscription, render};

use crate::{Res, log, objects::BENCH_LABEL, support::is_ready};

/// Watches the bench's subscriptions and HPAs and records when each reached
/// a state, as seen by a watching client.
pub struct Tracker {
    pub state: Arc<Mutex<TrackerState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
pub struct TrackerState {
    /// namespace → (generation, Ready at that generation, when first seen so)
    pub subs: HashMap<String, (i64, bool, Instant)>,
    /// namespace → (video HPA maxReplicas, when first seen)
    pub hpas: HashMap<String, (i32, Instant)>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Tracker {
    pub async fn start(client: &Client) -> Self {
        let state = Arc::new(Mutex::new(TrackerState::default()));
        let subs: Api<TenantSubscription> = Api::all(client.clone());
        let s = state.clone();
        let t1 = tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(&format!("{BENCH_LABEL}=true"));
            let mut w = std::pin::pin!(watcher(subs, cfg).default_backoff().applied_objects());
            while let Some(Ok(sub)) = w.next().await {
                let generation = sub.metadata.generation.unwrap_or(0);
                let ready = is_ready(&sub);
                let key = sub.namespace().unwrap_or_default();
                let mut st = s.lock().unwrap();
                let entry = st
                    .subs
                    .entry(key)
                    .or_insert((generation, ready, Instant::now()));
                if entry.0 != generation || entry.1 != ready {
                    *entry = (generation, ready, Instant::now());
                }
            }
        });
        let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
        let s = state.clone();
        let t2 = tokio::spawn(async move {
            let cfg =
                watcher::Config::default().labels(&format!("{}=bench-video", render::LABEL_MODULE));
            let mut w = std::pin::pin!(watcher(hpas, cfg).default_backoff().applied_objects());
            while let Some(Ok(h)) = w.next().await {
                let key = h.namespace().unwrap_or_default();
                let max = h.spec.max_replicas;
                let mut st = s.lock().unwrap();
                let entry = st.hpas.entry(key).or_insert((max, Instant::now()));
                if entry.0 != max {
                    *entry = (max, Instant::now());
                }
            }
        });
        Self {
            state,
            tasks: vec![t1, t2],
        }
    }

    pub async fn wait_ready(&self, n: usize, timeout: Duration) -> Res<()> {
        let t0 = Instant::now();
        let mut last_log = Instant::now();
        loop {
            let ready = self
                .state
                .lock()
                .unwrap()
                .subs
                .values()
                .filter(|(_, r, _)| *r)
                .count();
            if ready >= n {
                return Ok(());
            }
            if last_log.elapsed() > Duration::from_secs(15) {
                log(format!("{ready}/{n} subscriptions Ready"));
                last_log = Instant::now();
            }
            if t0.elapsed() > timeout {
                bail!("only {ready} of {n} subscriptions Ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
