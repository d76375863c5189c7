//! Live sessions, as a real product reports them: a per-pod count served by
//! the custom metrics API (custom.metrics.k8s.io), which the real HPA
//! controller reads. The local cluster's adapter (upstream's test adapter,
//! see hack/cluster.sh) serves what is POSTed to its write port; a
//! [`SessionLoad`] spreads a total over a module's pods and keeps writing
//! it, so new pods get their share as they come.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt, api::ListParams};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The metric the examples and tests name.
pub const METRIC: &str = "rtc_sessions_active";

/// A ModuleProfile that scales on [`METRIC`], aiming at 80 % of
/// `sessions_per_replica` a pod. `scaling` adds keys under `spec.scaling`
/// (4 spaces in), `spec` under `spec` (2 spaces in).
pub fn profile_yaml(name: &str, sessions_per_replica: u32, scaling: &str, spec: &str) -> String {
    super::cluster::profile_yaml_serving(
        name,
        sessions_per_replica,
        &format!(
            "  scaling:\n    sessions: {{metric: {METRIC}, targetPercent: 80}}\n{scaling}\n{spec}"
        ),
    )
}

/// `host:port` of the adapter's write endpoint (`hack/cluster.sh env`
/// exports its URL).
pub fn write_address() -> String {
    let url = std::env::var("TCO_CUSTOM_METRICS_WRITE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Sets `metric` of one pod to `value`: the adapter serves it until it is
/// written again.
pub async fn write(namespace: &str, pod: &str, metric: &str, value: i64) -> Result<(), String> {
    let addr = write_address();
    let body = format!("\"{value}\"");
    let request = format!(
        "POST /write-metrics/namespaces/{namespace}/pods/{pod}/{metric} HTTP/1.0\r\n\
         Host: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    match answer.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(format!(
            "write of {metric} for {namespace}/{pod} refused: {answer}"
        )),
    }
}

/// Shares `total` sessions out over `pods`, as a load balancer would:
/// equal parts, the remainder one each to the first pods.
pub fn shares(total: i64, pods: usize) -> Vec<i64> {
    if pods == 0 {
        return vec![];
    }
    let n = pods as i64;
    (0..n)
        .map(|i| total / n + i64::from(i < total % n))
        .collect()
}

/// Keeps the pods matching a selector reporting, between them, the total
/// of live sessions it is set to. Stops when dropped.
pub struct SessionLoad {
    total: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl SessionLoad {
    /// Starts writing `metric` for the running pods of `selector` in
    /// `namespace` every `every`, spreading the total over them.
    pub fn start(
        client: &Client,
        namespace: &str,
        selector: &str,
        metric: &str,
        every: Duration,
    ) -> Self {
        let total = Arc::new(AtomicI64::new(0));
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let (ns, selector, metric) = (
            namespace.to_string(),
            selector.to_string(),
            metric.to_string(),
        );
        let shared = total.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                    let mut running: Vec<String> = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| {
                            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        })
                        .map(|p| p.name_any())
                        .collect();
                    running.sort();
                    let all = shares(shared.load(Ordering::Relaxed), running.len());
                    for (pod, value) in running.iter().zip(all) {
                        if let Err(e) = write(&ns, pod, &metric, value).await {
                            eprintln!("session load: {e}");
                        }
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Self { total, task }
    }

    /// The live sessions from now on.
    pub fn set(&self, total: i64) {
        self.total.store(total, Ordering::Relaxed);
    }
}

impl Drop for SessionLoad {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shares_add_up() {
        assert_eq!(super::shares(10, 3), vec![4, 3, 3]);
        assert_eq!(super::shares(2, 4), vec![1, 1, 0, 0]);
        assert!(super::shares(5, 0).is_empty());
    }
}
