//! HTTP endpoints next to the controller: /metrics on one address,
//! /healthz and /readyz on another, as platform teams expect from operators.
//!
//! /metrics names every tenant, namespace and capacity, so by default it is
//! served over HTTPS ([`tls`]) to callers the API server vouches for
//! ([`access`]), as kubebuilder operators serve theirs. The probes stay plain
//! HTTP for the kubelet.

pub mod access;
pub mod tls;

use std::{
    collections::BTreeMap,
    future::IntoFuture,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn};

use self::{
    access::{MetricsAccess, Reviews, Verdict},
    tls::{ServingCert, TlsListener},
};
use crate::metrics::Metrics;

/// Parse `:8443`, `0.0.0.0:8443` or `127.0.0.1:0` (port 0 picks a free port).
pub fn parse_bind_address(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .map_err(|_| format!("{s:?} is not an address like :8443 or 127.0.0.1:8443"))
}

/// Whether the controller can serve: its caches are synced, and the API
/// server is not refusing it anything (a removed RBAC rule, a deleted
/// CustomResourceDefinition). `/readyz` fails with each reason.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Inner>);

#[derive(Default)]
struct Inner {
    synced: AtomicBool,
    /// Cheap check on every watch event and write: is anything refused?
    any_refused: AtomicBool,
    refusals: Mutex<BTreeMap<String, Refusal>>,
}

struct Refusal {
    why: String,
    last: Instant,
}

/// A refusal not seen again for this long is forgotten. A refused watch is
/// retried every few seconds and a refused write at least every minute, so
/// one still in force is seen again well before; one whose subscription
/// went away (and so is never retried) stops failing readiness.
pub const REFUSAL_FORGOTTEN_AFTER: Duration = Duration::from_secs(180);

/// At most this many refusals are listed by `/readyz` (then a count).
const LISTED: usize = 10;

impl Readiness {
    pub fn set_ready(&self) {
        self.0.synced.store(true, Ordering::SeqCst);
    }

    /// Ready: synced and refused nothing.
    pub fn is_ready(&self) -> bool {
        self.problems().is_empty()
    }

    /// The API server refuses `what` (e.g. "list/watch LimitRange",
    /// "apply HorizontalPodAutoscaler in namespace a") because `why` (its
    /// message). Logged as an error when it starts; readiness fails until
    /// [`Self::allowed`] or until it is not seen again for a while.
    pub fn refused(&self, what: &str, why: &str) {
        let mut refusals = self.0.refusals.lock().unwrap();
        let now = Instant::now();
        match refusals.get_mut(what) {
            Some(r) => {
                r.last = now;
                r.why = why.to_string();
            }
            None => {
                error!(refused = %what, reason = %why, "the API server refuses the operator; not ready until it is allowed again");
                refusals.insert(
                    what.to_string(),
                    Refusal {
                        why: why.to_string(),
                        last: now,
                    },
                );
                self.0.any_refused.store(true, Ordering::SeqCst);
            }
        }
    }

    /// `what` worked: a refusal of it, if any, is over.
    pub fn allowed(&self, what: &str) {
        self.allowed_where(|w| w == what);
    }

    /// Every refusal whose `what` matches is over.
    pub fn allowed_where(&self, matches: impl Fn(&str) -> bool) {
        if !self.0.any_refused.load(Ordering::SeqCst) {
            return;
        }
        let mut refusals = self.0.refusals.lock().unwrap();
        refusals.retain(|what, _| {
            let over = matches(what);
            if over {
                info!(allowed = %what, "the API server allows the operator again");
            }
            !over
        });
        self.0
            .any_refused
            .store(!refusals.is_empty(), Ordering::SeqCst);
    }

    /// Why the operator is not ready, one line each; empty when ready.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.0.synced.load(Ordering::SeqCst) {
            out.push("caches not synced".to_string());
        }
        if self.0.any_refused.load(Ordering::SeqCst) {
            let mut refusals = self.0.refusals.lock().unwrap();
            refusals.retain(|_, r| r.last.elapsed() < REFUSAL_FORGOTTEN_AFTER);
            self.0
                .any_refused
                .store(!refusals.is_empty(), Ordering::SeqCst);
            out.extend(
                refusals
                    .iter()
                    .take(LISTED)
                    .map(|(what, r)| format!("refused: {what}: {}", r.why)),
            );
            if refusals.len() > LISTED {
                out.push(format!("and {} more refusals", refusals.len() - LISTED));
            }
        }
        out
    }
}

fn metrics_text(m: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

async fn metrics(State(m): State<Metrics>) -> Response {
    metrics_text(&m)
}

/// The metrics, for a caller allowed `get` on `/metrics`.
async fn metrics_checked<R: Reviews>(
    State((m, access)): State<(Metrics, Arc<MetricsAccess<R>>)>,
    headers: HeaderMap,
) -> Response {
    match access.check(headers.get(header::AUTHORIZATION)).await {
        Ok(Verdict::Allowed) => metrics_text(&m),
        Ok(Verdict::Unauthenticated) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "Unauthorized: a bearer token the API server accepts is required\n",
        )
            .into_response(),
        Ok(Verdict::Forbidden) => {
            debug!("a /metrics caller without get on /metrics was refused");
            (
                StatusCode::FORBIDDEN,
                "Forbidden: get on the non-resource URL /metrics is not allowed\n",
            )
                .into_response()
        }
        Err(e) => {
            warn!(error = %e, "could not check a /metrics caller with the API server");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the caller could not be checked with the API server\n",
            )
                .into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(r): State<Readiness>) -> (StatusCode, String) {
    let problems = r.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ok".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}

/// How /metrics is served.
pub enum MetricsServing<R> {
    /// HTTPS with `cert`, to callers `access` lets in.
    Secure {
        cert: Arc<ServingCert>,
        access: MetricsAccess<R>,
    },
    /// Plain HTTP to anyone who can connect: for development on a loopback
    /// address (`--metrics-secure=false`).
    Plain,
}

/// Bind both listeners, returning the bound addresses and the serving future.
pub async fn bind<R: Reviews>(
    metrics_addr: SocketAddr,
    health_addr: SocketAddr,
    m: Metrics,
    readiness: Readiness,
    serving: MetricsServing<R>,
) -> std::io::Result<(
    SocketAddr,
    SocketAddr,
    impl Future<Output = std::io::Result<()>>,
)> {
    let ml = TcpListener::bind(metrics_addr).await?;
    let hl = TcpListener::bind(health_addr).await?;
    let (ma, ha) = (ml.local_addr()?, hl.local_addr()?);
    let health_app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness);
    let metrics_served: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match serving {
        MetricsServing::Plain => {
            let app = Router::new().route("/metrics", get(metrics)).with_state(m);
            Box::pin(axum::serve(ml, app).into_future())
        }
        MetricsServing::Secure { cert, access } => {
            let config = cert.server_config().map_err(std::io::Error::other)?;
            let app = Router::new()
                .route("/metrics", get(metrics_checked::<R>))
                .with_state((m, Arc::new(access)));
            Box::pin(async move {
                tokio::select! {
                    r = axum::serve(TlsListener::new(ml, config), app) => r,
                    () = cert.keep_current() => Ok(()),
                }
            })
        }
    };
    let serve = async move {
        tokio::try_join!(metrics_served, axum::serve(hl, health_app))?;
        Ok(())
    };
    Ok((ma, ha, serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_fails_readiness_until_it_is_allowed() {
        let r = Readiness::default();
        assert_eq!(r.problems(), ["caches not synced"]);
        r.set_ready();
        assert!(r.is_ready());
        r.refused("list/watch LimitRange", "limitranges is forbidden");
        r.refused(
            "apply Deployment in namespace a",
            "deployments.apps is forbidden",
        );
        r.refused("list/watch LimitRange", "still forbidden");
        assert_eq!(
            r.problems(),
            [
                "refused: apply Deployment in namespace a: deployments.apps is forbidden",
                "refused: list/watch LimitRange: still forbidden",
            ]
        );
        r.allowed("list/watch LimitRange");
        r.allowed("list/watch Service");
        assert_eq!(r.problems().len(), 1);
        r.allowed_where(|w| w.ends_with(" in namespace a"));
        assert!(r.is_ready());
    }

    #[test]
    fn many_refusals_are_listed_with_a_count() {
        let r = Readiness::default();
        r.set_ready();
        for i in 0..25 {
            r.refused(&format!("apply Service in namespace n{i:02}"), "forbidden");
        }
        let p = r.problems();
        assert_eq!(p.len(), LISTED + 1);
        assert_eq!(p.last().unwrap(), "and 15 more refusals");
    }
}
