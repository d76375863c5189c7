//! Who may read /metrics: the caller's bearer token is checked with the API
//! server (a TokenReview), and the user it names must be allowed `get` on
//! the non-resource URL `/metrics` (a SubjectAccessReview), as a
//! kube-apiserver or a kubebuilder operator checks its own /metrics.
//! Verdicts are kept for a minute, so a Prometheus scraping every 15 s costs
//! the API server two requests a minute, not two a scrape.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use axum::http::HeaderValue;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use tokio::{sync::Semaphore, time::Instant};

/// The non-resource URL, and the verb on it, a caller must be allowed.
pub const METRICS_PATH: &str = "/metrics";
pub const METRICS_VERB: &str = "get";

/// How long a verdict is kept (controller-runtime's filter keeps its
/// authentication and authorization results as long).
pub const VERDICT_TTL: Duration = Duration::from_secs(60);
/// Tokens remembered at most; a flood of made-up tokens evicts the verdicts
/// closest to expiry instead of growing memory.
pub const MAX_VERDICTS: usize = 1024;
/// Reviews in flight at once: callers with unknown tokens cannot turn the
/// endpoint into a flood of requests to the API server.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 4;
/// How long a caller waits for a review slot before getting 503.
const REVIEW_WAIT: Duration = Duration::from_secs(5);

/// What a caller may do with /metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated and allowed `get` on `/metrics`: 200.
    Allowed,
    /// No bearer token, or one the API server does not accept: 401.
    Unauthenticated,
    /// A known user without `get` on `/metrics`: 403.
    Forbidden,
}

/// The API server could not give a verdict; the caller gets 503, never the
/// metrics.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("creating a {review} failed: {source}")]
    Api {
        review: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("no review slot free within {REVIEW_WAIT:?} ({MAX_REVIEWS_IN_FLIGHT} in flight)")]
    Busy,
}

/// The two questions asked of the API server. [`ApiReviews`] asks the real
/// one; tests answer them from a table.
pub trait Reviews: Send + Sync + 'static {
    /// The user a bearer token belongs to, or `None` when it is not valid.
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Option<UserInfo>, ReviewError>> + Send;

    /// Whether `user` may `get` the non-resource URL `/metrics`.
    fn authorize(&self, user: &UserInfo) -> impl Future<Output = Result<bool, ReviewError>> + Send;
}

/// TokenReview (authentication.k8s.io/v1) and SubjectAccessReview
/// (authorization.k8s.io/v1), created with the operator's own client; its
/// RBAC needs `create` on both (the chart's `-metrics-auth` ClusterRole).
#[derive(Clone)]
pub struct ApiReviews {
    client: Client,
}

impl ApiReviews {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Reviews for ApiReviews {
    async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                // The API server's own audiences, as for any client of it.
                audiences: None,
            },
            ..Default::default()
        };
        let done = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| ReviewError::Api {
                review: "TokenReview",
                source,
            })?;
        Ok(done
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user))
    }

    async fn authorize(&self, user: &UserInfo) -> Result<bool, ReviewError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid.clone(),
                groups: user.groups.clone(),
                extra: user.extra.clone(),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(METRICS_PATH.to_string()),
                    verb: Some(METRICS_VERB.to_string()),
                }),
                resource_attributes: None,
            },
            ..Default::default()
        };
        let done = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| ReviewError::Api {
                review: "SubjectAccessReview",
                source,
            })?;
        Ok(done.status.is_some_and(|s| s.allowed))
    }
}

/// Verdicts by token, each until it expires.
#[derive(Default)]
struct Verdicts {
    /// SHA-256 of the token: the tokens themselves are not kept.
    by_token: HashMap<[u8; 32], (Verdict, Instant)>,
}

impl Verdicts {
    fn get(&self, key: &[u8; 32], now: Instant) -> Option<Verdict> {
        self.by_token
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| *v)
    }

    fn insert(&mut self, key: [u8; 32], verdict: Verdict, now: Instant) {
        if self.by_token.len() >= MAX_VERDICTS && !self.by_token.contains_key(&key) {
            self.by_token.retain(|_, (_, until)| *until > now);
            if self.by_token.len() >= MAX_VERDICTS
                && let Some(soonest) = self
                    .by_token
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(k, _)| *k)
            {
                self.by_token.remove(&soonest);
            }
        }
        self.by_token.insert(key, (verdict, now + VERDICT_TTL));
    }
}

/// The check before every /metrics response.
pub struct MetricsAccess<R> {
    reviews: R,
    verdicts: Mutex<Verdicts>,
    in_flight: Semaphore,
}

impl<R: Reviews> MetricsAccess<R> {
    pub fn new(reviews: R) -> Self {
        Self {
            reviews,
            verdicts: Mutex::default(),
            in_flight: Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
        }
    }

    /// The verdict for a request with this `Authorization` header.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> Result<Verdict, ReviewError> {
        let Some(token) = authorization.and_then(bearer_token) else {
            return Ok(Verdict::Unauthenticated);
        };
        let key = token_key(token);
        if let Some(v) = self.cached(&key) {
            return Ok(v);
        }
        let _slot = tokio::time::timeout(REVIEW_WAIT, self.in_flight.acquire())
            .await
            .map_err(|_| ReviewError::Busy)?
            .expect("the semaphore is never closed");
        // Another request with the same token may have asked meanwhile.
        if let Some(v) = self.cached(&key) {
            return Ok(v);
        }
        let verdict = match self.reviews.authenticate(token).await? {
            None => Verdict::Unauthenticated,
            Some(user) if self.reviews.authorize(&user).await? => Verdict::Allowed,
            Some(_) => Verdict::Forbidden,
        };
        self.verdicts
            .lock()
            .unwrap()
            .insert(key, verdict, Instant::now());
        Ok(verdict)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Verdict> {
        self.verdicts.lock().unwrap().get(key, Instant::now())
    }

    /// Verdicts currently kept (expired ones included until evicted).
    pub fn kept(&self) -> usize {
        self.verdicts.lock().unwrap().by_token.len()
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer_token(header: &HeaderValue) -> Option<&str> {
    let value = header.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn token_key(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// Tokens `reader-*` belong to users allowed /metrics, `other-*` to users
    /// who are not, `down` makes the API server fail; anything else is not a
    /// token. Counts the reviews asked.
    #[derive(Default)]
    struct Table {
        authentications: AtomicUsize,
        authorizations: AtomicUsize,
        /// Reviews wait for this before answering (to hold them in flight).
        gate: Option<Arc<Semaphore>>,
    }

    impl Reviews for Arc<Table> {
        async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, ReviewError> {
            self.authentications.fetch_add(1, Ordering::SeqCst);
            if let Some(g) = &self.gate {
                let _ = g.acquire().await.unwrap();
            }
            if token == "down" {
                return Err(ReviewError::Api {
                    review: "TokenReview",
                    source: kube::Error::Service(Box::new(std::io::Error::other(
                        "connection refused",
                    ))),
                });
            }
            Ok(
                (token.starts_with("reader-") || token.starts_with("other-")).then(|| UserInfo {
                    username: Some(token.to_string()),
                    ..Default::default()
                }),
            )
        }

        async fn authorize(&self, user: &UserInfo) -> Result<bool, ReviewError> {
            self.authorizations.fetch_add(1, Ordering::SeqCst);
            Ok(user
                .username
                .as_deref()
                .is_some_and(|u| u.starts_with("reader-")))
        }
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    fn access() -> (Arc<Table>, MetricsAccess<Arc<Table>>) {
        let table = Arc::new(Table::default());
        (table.clone(), MetricsAccess::new(table))
    }

    #[tokio::test]
    async fn no_token_is_unauthenticated_without_asking_the_api_server() {
        let (table, access) = access();
        for header in [
            None,
            Some(HeaderValue::from_static("Bearer ")),
            Some(HeaderValue::from_static("Basic dXNlcjpwYXNz")),
            Some(HeaderValue::from_static("reader-1")),
        ] {
            assert_eq!(
                access.check(header.as_ref()).await.unwrap(),
                Verdict::Unauthenticated,
                "{header:?}"
            );
        }
        assert_eq!(table.authentications.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_token_gets_the_verdict_of_its_user() {
        let (_, access) = access();
        let verdict = async |t: &str| access.check(Some(&bearer(t))).await.unwrap();
        assert_eq!(verdict("reader-1").await, Verdict::Allowed);
        assert_eq!(verdict("other-1").await, Verdict::Forbidden);
        assert_eq!(verdict("made-up").await, Verdict::Unauthenticated);
        let lower = HeaderValue::from_static("bearer reader-2");
        assert_eq!(access.check(Some(&lower)).await.unwrap(), Verdict::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_verdict_is_kept_for_a_minute_then_asked_again() {
        let (table, access) = access();
        let reviews = || {
            (
                table.authentications.load(Ordering::SeqCst),
                table.authorizations.load(Ordering::SeqCst),
            )
        };
        // Prometheus scraping every 15 s for a minute: one pair of reviews.
        for _ in 0..4 {
            assert_eq!(
                access.check(Some(&bearer("reader-1"))).await.unwrap(),
                Verdict::Allowed
            );
            tokio::time::advance(Duration::from_secs(15)).await;
        }
        assert_eq!(reviews(), (1, 1));
        // The fifth scrape is a minute after the first: asked again.
        access.check(Some(&bearer("reader-1"))).await.unwrap();
        assert_eq!(reviews(), (2, 2));
        // Refusals are kept as long.
        access.check(Some(&bearer("other-1"))).await.unwrap();
        access.check(Some(&bearer("other-1"))).await.unwrap();
        access.check(Some(&bearer("made-up"))).await.unwrap();
        access.check(Some(&bearer("made-up"))).await.unwrap();
        assert_eq!(reviews(), (4, 3));
    }

    #[tokio::test]
    async fn an_api_server_failure_is_an_error_and_not_kept() {
        let (table, access) = access();
        for _ in 0..2 {
            let e = access.check(Some(&bearer("down"))).await.unwrap_err();
            assert!(e.to_string().contains("TokenReview"), "{e}");
        }
        assert_eq!(table.authentications.load(Ordering::SeqCst), 2);
        assert_eq!(access.kept(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn made_up_tokens_cannot_grow_the_verdicts_past_their_bound() {
        let (_, access) = access();
        access.check(Some(&bearer("reader-1"))).await.unwrap();
        for i in 0..MAX_VERDICTS + 100 {
            tokio::time::advance(Duration::from_millis(1)).await;
            access
                .check(Some(&bearer(&format!("made-up-{i}"))))
                .await
                .unwrap();
        }
        assert_eq!(access.kept(), MAX_VERDICTS);
        // The oldest went first; the newest are still kept.
        tokio::time::advance(Duration::from_secs(1)).await;
        let last = format!("made-up-{}", MAX_VERDICTS + 99);
        assert!(access.cached(&token_key(&last)).is_some());
        assert!(access.cached(&token_key("reader-1")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_a_few_reviews_are_in_flight() {
        let gate = Arc::new(Semaphore::new(0));
        let table = Arc::new(Table {
            gate: Some(gate.clone()),
            ..Default::default()
        });
        let access = Arc::new(MetricsAccess::new(table.clone()));
        let mut callers = Vec::new();
        for i in 0..MAX_REVIEWS_IN_FLIGHT + 3 {
            let access = access.clone();
            callers.push(tokio::spawn(async move {
                access.check(Some(&bearer(&format!("made-up-{i}")))).await
            }));
        }
        // The reviews in flight are held; the callers beyond wait, then give up.
        tokio::time::sleep(REVIEW_WAIT + Duration::from_secs(1)).await;
        assert_eq!(
            table.authentications.load(Ordering::SeqCst),
            MAX_REVIEWS_IN_FLIGHT
        );
        gate.add_permits(MAX_REVIEWS_IN_FLIGHT + 3);
        let mut busy = 0;
        for c in callers {
            match c.await.unwrap() {
                Ok(v) => assert_eq!(v, Verdict::Unauthenticated),
                Err(ReviewError::Busy) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(busy, 3);
    }
}
