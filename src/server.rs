//! HTTP endpoints next to the controller: /metrics on one address,
//! /healthz and /readyz on another, as platform teams expect from operators.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Parse `:8080`, `0.0.0.0:8080` or `127.0.0.1:0` (port 0 picks a free port).
pub fn parse_bind_address(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .map_err(|_| format!("{s:?} is not an address like :8080 or 127.0.0.1:8080"))
}

/// Whether the controller has synced its caches and can serve.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

async fn metrics(State(m): State<Metrics>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(r): State<Readiness>) -> (StatusCode, &'static str) {
    if r.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

/// Bind both listeners, returning the bound addresses and the serving future.
pub async fn bind(
    metrics_addr: SocketAddr,
    health_addr: SocketAddr,
    m: Metrics,
    readiness: Readiness,
) -> std::io::Result<(
    SocketAddr,
    SocketAddr,
    impl Future<Output = std::io::Result<()>>,
)> {
    let ml = TcpListener::bind(metrics_addr).await?;
    let hl = TcpListener::bind(health_addr).await?;
    let (ma, ha) = (ml.local_addr()?, hl.local_addr()?);
    let metrics_app = Router::new().route("/metrics", get(metrics)).with_state(m);
    let health_app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness);
    let serve = async move {
        tokio::try_join!(axum::serve(ml, metrics_app), axum::serve(hl, health_app))?;
        Ok(())
    };
    Ok((ma, ha, serve))
}
