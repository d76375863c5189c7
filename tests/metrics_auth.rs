//! The operator's /metrics names every tenant, namespace and capacity, so
//! it answers only over HTTPS, and only callers the API server vouches for:
//! no token 401, the token of a ServiceAccount without the chart's
//! `-metrics-reader` role 403, with it 200 and the metrics; the verdicts are
//! kept for a minute (the API server's audit log counts the reviews); a
//! certificate from `--metrics-cert-dir` is served and its renewal picked up;
//! when the API server cannot give a verdict the caller gets 503, never the
//! metrics. docs/security.md, "The metrics endpoint is authenticated".
//!
//! The operators here run with the test's (admin) kubeconfig, or as a
//! ServiceAccount without any role; tests/helm.rs runs one as the chart's
//! ServiceAccount and scrapes it as a `metrics.readers` subject, and
//! tests/helm_chart.rs checks the chart grants the reviews.

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    Audit, OperatorProcess, TestNamespace,
    chart::ChartObjects,
    cluster::{client, install_crds, profile_yaml, unique},
    http_get,
    https::{self, Trust},
    token_kubeconfig,
    tools::{kubectl, kubectl_apply, kubectl_get, run},
    wait_blocking,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Cluster-scoped objects of one test, deleted when it ends (also when it fails).
struct ClusterScoped(Vec<(&'static str, String)>);

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let _ = run(
                "kubectl",
                &["delete", kind, name, "--ignore-not-found", "--wait=false"],
                None,
            );
        }
    }
}

fn install_crds_now() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { install_crds(&client().await).await });
}

/// A ServiceAccount in `ns` and a token of it.
fn service_account_token(ns: &str, name: &str) -> String {
    kubectl(&["create", "serviceaccount", name, "-n", ns]);
    kubectl(&["create", "token", name, "-n", ns, "--duration", "1h"])
        .trim()
        .to_string()
}

/// `kubectl auth can-i get /metrics` as `user`.
fn may_get_metrics(user: &str) -> bool {
    let out = run(
        "kubectl",
        &["auth", "can-i", "get", "/metrics", "--as", user],
        None,
    );
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

fn get(op: &OperatorProcess, token: Option<&str>) -> (u16, String) {
    https::get(op.metrics_address(), "/metrics", token, &Trust::Anything)
        .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", op.tail(20)))
}

#[test]
fn metrics_need_a_token_allowed_to_get_them() {
    install_crds_now();
    let ns = TestNamespace::with_kubectl_for("mauth", "m");
    let ns = ns.name();
    let module = unique("mauth");
    let _cleanup = ClusterScoped(vec![("moduleprofile", module.clone())]);
    kubectl_apply(None, &profile_yaml(&module, ""));
    let reader_token = service_account_token(ns, "reader");
    let other_token = service_account_token(ns, "other");
    // The chart's reader role, bound to `reader` through metrics.readers.
    let rbac = ChartObjects::apply(
        "mauth",
        "templates/metrics-rbac.yaml",
        &[
            "metrics.readers[0].kind=ServiceAccount".into(),
            "metrics.readers[0].name=reader".into(),
            format!("metrics.readers[0].namespace={ns}"),
        ],
    );
    assert!(
        rbac.names()
            .iter()
            .any(|(k, n)| k == "ClusterRoleBinding" && n.ends_with("-metrics-reader")),
        "{:?}",
        rbac.names()
    );
    // RBAC reaches the API server's authorizer within moments; a 403 asked
    // before that would be kept for a minute.
    let reader = format!("system:serviceaccount:{ns}:reader");
    wait_blocking("the reader may get /metrics", TIMEOUT, || {
        may_get_metrics(&reader).then_some(())
    });
    assert!(!may_get_metrics(&format!(
        "system:serviceaccount:{ns}:other"
    )));

    let op = OperatorProcess::launch()
        .namespace(ns)
        .args(["--require-plan=false"])
        .secure_metrics()
        .start();
    let (metrics, health) = op.addresses().clone();
    kubectl_apply(
        Some(ns),
        &format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: m}}\n\
             spec: {{tenantId: m, modules: [{{name: {module}, concurrency: 100}}]}}\n"
        ),
    );
    wait_blocking("the subscription Ready", TIMEOUT, || {
        let s = kubectl_get(&["tenantsubscription", "m", "-n", ns])?;
        let ready = s["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(())
    });
    let want = format!(
        "tenant_capacity_module_max_replicas{{namespace=\"{ns}\",subscription=\"m\",tenant=\"m\",module=\"{module}\"}} 3"
    );

    // The probes stay plain HTTP; /metrics is not served in the clear.
    assert_eq!(http_get(&health, "/healthz").map(|r| r.0), Some(200));
    let plain = http_get(&metrics, "/metrics");
    assert!(
        plain
            .as_ref()
            .is_none_or(|(code, body)| *code != 200 && !body.contains(&want)),
        "plain HTTP on the metrics port answered: {plain:?}"
    );

    // A client that connects and never says hello holds up no one.
    let _stalled = std::net::TcpStream::connect(&metrics).unwrap();
    // No token, a token the API server does not know, a user without the role.
    let start = Instant::now();
    let (code, body) = get(&op, None);
    assert_eq!(code, 401, "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a stalled handshake held up the next caller for {:?}",
        start.elapsed()
    );
    assert!(!body.contains("tenant_capacity"), "{body}");
    let (code, body) = get(&op, Some("not-a-token"));
    assert_eq!(code, 401, "{body}");
    let (code, body) = get(&op, Some(&other_token));
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("tenant_capacity"), "{body}");

    // The reader gets the metrics, the converged subscription's among them.
    let body = wait_blocking(
        "the reader's scrape to show the subscription",
        TIMEOUT,
        || {
            let (code, body) = get(&op, Some(&reader_token));
            assert_eq!(code, 200, "{body}");
            body.contains(&want).then_some(body)
        },
    );
    assert!(body.contains("tenant_capacity_reconciliations_total"));

    // A Prometheus scraping every 15 s: a fresh token costs one TokenReview
    // and one SubjectAccessReview, then the verdict is kept.
    let audit = Audit::local_cluster();
    let mark = audit.mark().unwrap();
    let fresh = kubectl(&["create", "token", "reader", "-n", ns, "--duration", "1h"]);
    let mut took = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(get(&op, Some(fresh.trim())).0, 200);
        took.push(start.elapsed());
    }
    eprintln!("five scrapes with a fresh token took {took:?} (the first asks the API server)");
    let user = operator_user();
    let reviews = || {
        let w = audit
            .writes_since(&mark, &["tokenreviews", "subjectaccessreviews"], |e| {
                e["user"]["username"] == user.as_str()
            })
            .unwrap();
        let n = |k: &str| w.by_key().get(k).copied().unwrap_or(0);
        (
            n("create tokenreviews 201"),
            n("create subjectaccessreviews 201"),
        )
    };
    wait_blocking("the reviews in the audit log", TIMEOUT, || {
        let (t, s) = reviews();
        (t >= 1 && s >= 1).then_some(())
    });
    assert_eq!(reviews(), (1, 1), "five scrapes, one pair of reviews");

    let log = op.log_text();
    assert!(!log.contains("could not check a /metrics caller"), "{log}");
    assert!(op.stop().success());
}

/// The user the test's kubeconfig (and so the operator) authenticates as.
fn operator_user() -> String {
    kubectl(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])
    .trim()
    .to_string()
}

/// A CA and a certificate for `localhost` it signed, as PEM files in `dir`
/// (tls.crt, tls.key); the CA's certificate is returned.
fn issue(dir: &Path, ca_name: &str) -> rustls::pki_types::CertificateDer<'static> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    // Written as a kubelet updates a Secret volume: whole files, replaced.
    for (name, pem) in [("tls.crt", cert.pem()), ("tls.key", key.serialize_pem())] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    ca_cert.der().clone()
}

#[test]
fn a_certificate_from_the_cert_dir_is_served_and_its_renewal_picked_up() {
    install_crds_now();
    let ns = TestNamespace::with_kubectl("mcert");
    let dir = tempfile::tempdir().unwrap();
    let first_ca = issue(dir.path(), "first CA");
    let op = OperatorProcess::launch()
        .namespace(ns.name())
        .secure_metrics()
        .args(["--metrics-cert-dir", dir.path().to_str().unwrap()])
        .start();
    let addr = op.metrics_address().to_string();
    let scrape = |trust: &Trust| https::get(&addr, "/metrics", None, trust);
    // The certificate verifies against its CA (and the caller still needs a token).
    assert_eq!(scrape(&Trust::Ca(first_ca.clone())).map(|r| r.0), Ok(401));

    let second_ca = issue(dir.path(), "second CA");
    wait_blocking(
        "the renewed certificate served",
        Duration::from_secs(30),
        || match scrape(&Trust::Ca(second_ca.clone())) {
            Ok((code, _)) => Ok(code),
            Err(e) => Err(e),
        },
    );
    let old = scrape(&Trust::Ca(first_ca));
    assert!(old.is_err(), "the old certificate is still served: {old:?}");
    assert!(op.logged("serving a renewed metrics certificate"));

    // A broken renewal keeps the certificate served so far.
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    op.wait_line(
        "keeping the metrics certificate served so far",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("no warning about the broken key\n{}", op.tail(20)));
    assert_eq!(scrape(&Trust::Ca(second_ca)).map(|r| r.0), Ok(401));
    assert!(op.stop().success());
}

#[test]
fn without_a_verdict_from_the_api_server_a_caller_gets_503() {
    install_crds_now();
    let ns = TestNamespace::with_kubectl("mdown");
    // The operator runs as a ServiceAccount that may not create reviews.
    let token = service_account_token(ns.name(), "no-reviews");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(&dir.path().join("kubeconfig"), &token).unwrap();
    let op = OperatorProcess::launch()
        .kubeconfig(&kubeconfig)
        .namespace(ns.name())
        .secure_metrics()
        .start();
    let caller = service_account_token(ns.name(), "caller");
    for _ in 0..2 {
        let (code, body) = get(&op, Some(&caller));
        assert_eq!(code, 503, "{body}");
        assert!(!body.contains("tenant_capacity"), "{body}");
    }
    let line = op
        .wait_line("could not check a /metrics caller", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no log line\n{}", op.tail(20)));
    let v: Value = serde_json::from_str(&line).unwrap();
    let error = v["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("TokenReview") && error.to_lowercase().contains("forbidden"),
        "{line}"
    );
    // No token needs no review: still 401.
    assert_eq!(get(&op, None).0, 401);
}
