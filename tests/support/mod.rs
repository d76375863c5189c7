//! Support for the tests against the real local control plane
//! (hack/cluster.sh) and for the scale benchmark (benches/scale, which
//! includes this module by path): each concept once, used everywhere.
//!
//! - [`cluster`]: a client, the CRDs, test namespaces, server-side apply,
//!   reading subscriptions;
//! - [`fixture`]: a namespace, two profiles and the operator in-process;
//! - [`process`]: the operator binary as a child process;
//! - [`https`]: scraping its HTTPS /metrics;
//! - [`audit`]: the API server's audit log;
//! - [`tools`]: kubectl and helm;
//! - [`health`]: what kstatus (Flux, kpt) and the Argo CD health check
//!   read as an object's health, from the tools' own code;
//! - [`wait`]: waiting for a check to hold;
//! - [`window`]: a seasonal window at the next full minute;
//! - [`chart`]: the Helm chart's paths, rendered arguments, and templates
//!   applied for one test;
//! - [`proxy`]: a proxy before the API server that can stall requests;
//! - [`sessions`]: live sessions per pod, written to the custom metrics API;
//! - [`prometheus`]: promtool and a real Prometheus scraping the operator.
#![allow(dead_code, unused_imports)]

pub mod audit;
pub mod chart;
pub mod cluster;
pub mod fixture;
pub mod health;
pub mod https;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod sessions;
pub mod tools;
pub mod wait;
pub mod window;

pub use audit::Audit;
pub use cluster::*;
pub use fixture::{Fixture, Operator, T};
pub use process::{OperatorProcess, http_get};
pub use proxy::StallingProxy;
pub use tools::kubectl;
pub use wait::{wait_blocking, wait_for};
pub use window::Window;
