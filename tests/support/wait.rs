//! Waiting on the cluster: a check repeated until it holds or time runs out.

use std::{
    fmt,
    time::{Duration, Instant},
};

/// How often a check is repeated.
pub const POLL: Duration = Duration::from_millis(200);

/// One look at the cluster. `Some` or `Ok` ends the wait; an `Err` says what
/// was seen instead, and the last one is reported if time runs out.
pub trait Probe {
    type Output;
    fn outcome(self) -> Result<Self::Output, Option<String>>;
}

impl<T> Probe for Option<T> {
    type Output = T;
    fn outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T> Probe for Result<T, String> {
    type Output = T;
    fn outcome(self) -> Result<T, Option<String>> {
        self.map_err(Some)
    }
}

/// A wait that ran out of time.
#[derive(Debug)]
pub struct TimedOut {
    pub what: String,
    pub timeout: Duration,
    pub last_seen: Option<String>,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.timeout, self.what
        )?;
        match &self.last_seen {
            Some(seen) => write!(f, "; last seen: {seen}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for TimedOut {}

/// Repeat `check` every `every` until it holds, or give up after `timeout`.
pub async fn poll<P, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<P::Output, TimedOut>
where
    P: Probe,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    let start = Instant::now();
    loop {
        let last_seen = match check().await.outcome() {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        if start.elapsed() > timeout {
            return Err(TimedOut {
                what: what.to_string(),
                timeout,
                last_seen,
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// Repeat `check` until it holds, failing the test with `what` after `timeout`.
pub async fn wait_for<P, F, Fut>(what: &str, timeout: Duration, check: F) -> P::Output
where
    P: Probe,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    poll(what, timeout, POLL, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`wait_for`] for tests without an async runtime (they drive the cluster
/// with its command-line tools).
pub fn wait_blocking<P: Probe>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> P,
) -> P::Output {
    let start = Instant::now();
    loop {
        let last_seen = match check().outcome() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if start.elapsed() > timeout {
            panic!(
                "{}",
                TimedOut {
                    what: what.to_string(),
                    timeout,
                    last_seen
                }
            );
        }
        std::thread::sleep(POLL);
    }
}
