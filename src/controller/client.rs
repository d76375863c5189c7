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

/// The longest one request may take until the API server's answer starts,
/// retries included (a watch's answer starts at once and then streams; its
/// silence is bounded by the watcher's idle timeout). Without a bound, a
/// request the API server never answered (it went away mid-request, or
/// waited on an etcd that was gone) held a reconcile slot and a request
/// permit for as long as the connection lived.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a connection may stay silent, for every request including
/// watches, which the API server ends after `WATCH_TIMEOUT` (`watch.rs`): a
/// connection to a server that vanished without closing it is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(90);

/// Answers 429, 503 and 504 (an API server starting, overloaded or waiting
/// for etcd) are tried again up to this many times, within a second or the
/// server's Retry-After; then the failure goes to the controller, whose own
/// retry (5 s) and watch backoff (at most 5 s) take over. kube's default
/// policy tries 15 times with delays doubling towards 1,000 s: after an API
/// server and etcd restart, a watch whose requests met "storage is
/// initializing" a dozen times slept for tens of seconds before its next
/// try, while everything else had long recovered.
const RETRIES: u32 = 3;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MOST: Duration = Duration::from_secs(1);

/// A client for the cluster of the kubeconfig or the in-cluster service
/// account, with at most `MAX_REQUESTS_IN_FLIGHT` requests in flight (the rest
/// wait their turn, outside the timeout) and bounded time and retries per
/// request.
pub async fn client() -> Result<Client, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    let retry =
        RetryPolicy::new(RETRY_FIRST, RETRY_MOST, RETRIES, true).expect("retry delays are valid");
    Ok(kube::client::ClientBuilder::try_from(config)?
        // The retry layer calls the stack again for each try: make it cloneable.
        .with_layer(&BufferLayer::new(MAX_REQUESTS_IN_FLIGHT))
        .with_layer(&RetryLayer::new(retry))
        .with_layer(&TimeoutLayer::new(REQUEST_TIMEOUT))
        .with_layer(&ConcurrencyLimitLayer::new(MAX_REQUESTS_IN_FLIGHT))
        .build())
}
