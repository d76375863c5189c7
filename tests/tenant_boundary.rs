//! What a tenant bought is a boundary: someone holding `admin` in the
//! tenant's namespace (impersonated with `--as`, under the chart's RBAC)
//! tries every way to get more than the plan sells or to bill someone else,
//! and after each attempt the tenant's quota and HPA ceilings are still
//! within its plan, the refusal or status says why, and other tenants are
//! untouched. docs/security.md lists the attacks and what stops each.
//!
//! One submodule per family of attacks (tests/tenant_boundary/*.rs); this
//! file holds what they share: [`Tenant`], a namespace with the operator
//! running, a plan, and a namespace admin who is not a cluster admin.

mod support;

#[path = "tenant_boundary/admission.rs"]
mod admission;
#[path = "tenant_boundary/children.rs"]
mod children;
#[path = "tenant_boundary/drain.rs"]
mod drain;
#[path = "tenant_boundary/namespace.rs"]
mod namespace;
#[path = "tenant_boundary/pause.rs"]
mod pause;
#[path = "tenant_boundary/quota.rs"]
mod quota;
#[path = "tenant_boundary/ramp.rs"]
mod ramp;

use std::time::Duration;

use serde_json::Value;
use support::{
    Fixture,
    chart::CHART,
    tools::{kubectl, ok, run, try_kubectl, try_kubectl_apply},
    wait_blocking,
};

/// The release name the chart's RBAC is rendered under for these tests.
const RELEASE: &str = "tenant-boundary";

/// The user who holds `admin` in the tenant's namespace and nothing else.
pub const TENANT_ADMIN: &str = "tenant-admin@example.com";

/// The chart's ClusterRoles (rendered with default values) on the cluster,
/// as an installation would have them; ones an earlier version of the chart
/// rendered under this release are removed, so a narrowed role is tested as
/// narrowed.
pub fn install_chart_rbac() {
    let rendered = ok(
        "helm",
        &[
            "template",
            RELEASE,
            CHART,
            "--namespace",
            "tenant-capacity-system",
            "--show-only",
            "templates/rbac.yaml",
        ],
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered).expect("rendered RBAC is YAML");
    let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ClusterRole").collect();
    assert!(!roles.is_empty(), "the chart renders no ClusterRole");
    let names: Vec<&str> = roles
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": roles});
    // Tests running at once apply the same roles: a create may lose the race
    // to another test's (AlreadyExists); the next attempt updates instead.
    wait_blocking(
        "the chart's ClusterRoles applied",
        Duration::from_secs(30),
        || try_kubectl_apply(None, &list.to_string()).map(|_| ()),
    );
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let existing = kubectl(&["get", "clusterroles", "-l", &selector, "-o", "name"]);
    for old in existing.lines() {
        let name = old.trim_start_matches("clusterrole.rbac.authorization.k8s.io/");
        if !names.contains(&name) {
            kubectl(&["delete", "clusterrole", name, "--ignore-not-found"]);
        }
    }
}

/// A tenant: the usual fixture (its namespace, two profiles, the operator
/// watching the namespace) plus a namespace admin to attack with.
pub struct Tenant {
    pub f: Fixture,
}

impl Tenant {
    pub async fn new(prefix: &str) -> Self {
        install_chart_rbac();
        let f = Fixture::new(prefix).await;
        let ns = f.ns.name.clone();
        kubectl(&[
            "create",
            "rolebinding",
            "tenant-admin",
            "--clusterrole=admin",
            &format!("--user={TENANT_ADMIN}"),
            "-n",
            &ns,
        ]);
        // The built-in admin role picks up aggregated rules asynchronously.
        wait_blocking(
            "the tenant admin to read subscriptions in its namespace",
            Duration::from_secs(60),
            || {
                let out = run(
                    "kubectl",
                    &[
                        "auth",
                        "can-i",
                        "get",
                        "tenantsubscriptions.capacity.tenancy.dev",
                        "-n",
                        &ns,
                        "--as",
                        TENANT_ADMIN,
                    ],
                    None,
                );
                out.status.success().then_some(())
            },
        );
        Self { f }
    }

    pub fn ns(&self) -> &str {
        &self.f.ns.name
    }

    /// kubectl as the namespace admin, in the tenant's namespace: stdout, or
    /// stderr when the API server refuses.
    pub fn as_admin(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["--as", TENANT_ADMIN, "-n", self.ns()];
        all.extend_from_slice(args);
        try_kubectl(&all)
    }

    /// `kubectl apply -f -` of `manifest` as the namespace admin.
    pub fn apply_as_admin(&self, manifest: &str) -> Result<String, String> {
        let out = run(
            "kubectl",
            &[
                "--request-timeout=20s",
                "--as",
                TENANT_ADMIN,
                "-n",
                self.ns(),
                "apply",
                "--server-side",
                "--field-manager=tenant-admin",
                "-f",
                "-",
            ],
            Some(manifest),
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Whether the namespace admin may `verb` `resource` in its namespace.
    pub fn admin_can(&self, verb: &str, resource: &str) -> bool {
        run(
            "kubectl",
            &[
                "auth",
                "can-i",
                verb,
                resource,
                "-n",
                self.ns(),
                "--as",
                TENANT_ADMIN,
            ],
            None,
        )
        .status
        .success()
    }
}

/// The tenant's namespace admin reads its subscription (and `kubectl get
/// tsub` shows it) but cannot change it.
#[tokio::test]
async fn the_namespace_admin_reads_its_subscription() {
    let t = Tenant::new("tb-read").await;
    t.f.apply_sub(
        "acme",
        &format!(
            "  tenantId: acme\n  modules:\n    - {{name: {}, concurrency: 100}}\n",
            t.f.im
        ),
    )
    .await;
    let table = t.as_admin(&["get", "tsub"]).expect("admin reads tsub");
    assert!(table.contains("acme"), "kubectl get tsub as admin: {table}");
    assert!(t.admin_can("get", "tenantsubscriptions.capacity.tenancy.dev"));
    t.f.finish().await;
}
