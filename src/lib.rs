//! Tenant Capacity Operator: turns one `TenantSubscription` per tenant into
//! the Deployments, HorizontalPodAutoscalers, Services, ResourceQuota and LimitRange that
//! give the tenant exactly the capacity it bought.
//!
//! The crate is a pipeline: [`api`] (custom resources) → [`capacity`] (pure
//! capacity rules) → [`render`] (desired objects) → [`controller`] (watch,
//! decide, write, status). [`live`] is the cached form of children, shared by
//! the controller and [`metering`]. The binary in `main.rs` is a thin command
//! line over it, [`cli`] its cluster side (`status`, `render`, `probe`, and
//! the kubectl plugin); docs/architecture.md walks through it.

pub mod api;
pub mod capacity;
pub mod cli;
pub mod controller;
pub mod leader;
pub mod live;
pub mod metering;
pub mod metrics;
pub mod preview;
pub mod render;
pub mod server;
pub mod telemetry;
