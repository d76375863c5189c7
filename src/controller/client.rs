//! The operator's connection to the API server: how many requests may be in
//! flight, how long one may take, and how often a refused one is tried again.

use std::time::Duration;

use kube::{Client, client::retry::RetryPolicy};
use tower::{
    buffer::BufferLayer, limit::ConcurrencyLimitLayer, retry::RetryLayer, timeout::TimeoutLayer,
};

/// API requests in flight at once, across all reconciles. Unbounded, a cold
/// start of 1,000 tenants (64 reconciles, each writing a module's children at
/// once) opened about 300 connections to the API server, each with its TLS
/// and HTTP buffers (about 12 MiB, measured with a heap profiler), memory the
/// allocator kept after the burst; the API server answers no faster for more
/// (a bare apply loop was fastest at 64 in flight of 16, 64 and 256).
pub const MAX_REQUESTS_IN_FLIGHT: usize = 64;

/// How long requests may take and how often a refused one is tried again.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest one request may take until the API server's answer
    /// starts, retries included (a watch's answer starts at once and then
    /// streams; its silence is bounded by the watcher's idle timeout).
    /// Without a bound, a request the API server never answered (it went
    /// away mid-request, or waited on an etcd that was gone) held a
    /// reconcile slot and a request permit for as long as the connection
    /// lived.
    pub request_timeout: Duration,
    /// The longest a connection may stay silent, for every request including
    /// watches, which the API server ends after `WATCH_TIMEOUT_SECONDS`: a
    /// connection to a server that vanished without closing it is dropped.
    pub read_timeout: Duration,
    /// Answers 429, 503 and 504 (an API server starting, overloaded or
    /// waiting for etcd) are tried again up to this many times, first after
    /// `retry_first`, doubling to at most `retry_most`, or after the
    /// server's Retry-After when longer; then the failure goes to the
    /// controller, whose own retry (5 s) and watch backoff (at most 5 s)
    /// take over. kube's default policy tries 15 times with delays doubling
    /// towards 1,000 s: after an API server and etcd restart, a watch whose
    /// requests met "storage is (re)initializing" a dozen times slept tens
    /// of seconds before its next try, while everything else had long
    /// recovered.
    pub retries: u32,
    pub retry_first: Duration,
    pub retry_most: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(90),
            retries: 3,
            retry_first: Duration::from_millis(100),
            retry_most: Duration::from_secs(1),
        }
    }
}

/// A client for the cluster of the kubeconfig or the in-cluster service
/// account, with the default [`Limits`].
pub async fn client() -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    client_for(config, &Limits::default())
}

/// A client for `config` with at most `MAX_REQUESTS_IN_FLIGHT` requests in
/// flight (the rest wait their turn, outside the timeout), each bounded by
/// `limits`.
pub fn client_for(mut config: kube::Config, limits: &Limits) -> Result<Client, kube::Error> {
    config.read_timeout = Some(limits.read_timeout);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    let retry = RetryPolicy::new(limits.retry_first, limits.retry_most, limits.retries, true)
        .expect("retry delays are valid");
    Ok(kube::client::ClientBuilder::try_from(config)?
        // The retry layer calls the stack again for each try: make it cloneable.
        .with_layer(&BufferLayer::new(MAX_REQUESTS_IN_FLIGHT))
        .with_layer(&RetryLayer::new(retry))
        .with_layer(&TimeoutLayer::new(limits.request_timeout))
        .with_layer(&ConcurrencyLimitLayer::new(MAX_REQUESTS_IN_FLIGHT))
        .build())
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicU32, Ordering},
        },
        time::Instant,
    };

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// An HTTP endpoint on loopback that reads each request and answers it
    /// with `answer` (or never, when `None`), counting requests.
    async fn endpoint(answer: Option<&'static str>) -> (kube::Config, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicU32::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        match answer {
                            Some(a) => conn.write_all(a.as_bytes()).await.unwrap(),
                            // Hold the connection open, silent.
                            None => std::future::pending::<()>().await,
                        }
                    }
                });
            }
        });
        (kube::Config::new(url.parse().unwrap()), seen)
    }

    fn quick() -> Limits {
        Limits {
            request_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn a_refusing_server_is_asked_a_few_times_within_seconds() {
        let (config, seen) = endpoint(Some(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        ))
        .await;
        let client = client_for(config, &Limits::default()).unwrap();
        let started = Instant::now();
        let got = Api::<ConfigMap>::namespaced(client, "default")
            .get("x")
            .await;
        assert!(got.is_err());
        assert_eq!(seen.load(Ordering::SeqCst), 1 + Limits::default().retries);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "gave up after {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_silent_server_does_not_hold_a_request_for_ever() {
        let (config, seen) = endpoint(None).await;
        let client = client_for(config, &quick()).unwrap();
        let started = Instant::now();
        let got = Api::<ConfigMap>::namespaced(client, "default")
            .get("x")
            .await;
        assert!(got.is_err(), "{got:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(4),
            "gave up after {took:?}"
        );
    }
}
