//! Hardened by default: tenant pods that pass the `restricted` Pod Security
//! Standard, and an operator that says so when the API server refuses it.
//! One submodule per concern (tests/hardening/*.rs). Shutdown and leader
//! hand-over are in tests/leader.rs, the metrics endpoint's authentication
//! in tests/metrics_auth.rs.

mod support;

#[path = "hardening/pod_security.rs"]
mod pod_security;

#[path = "hardening/refusals.rs"]
mod refusals;
