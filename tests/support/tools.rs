//! The local cluster's command-line tools (kubectl, helm), found on PATH
//! after `eval "$(hack/cluster.sh env)"` (hack/test.sh does it). Without them
//! the tests fail: a missing tool must never look like a pass.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

/// Every kubectl call gives up after this, so a stuck API server fails the
/// test instead of hanging it.
const KUBECTL_TIMEOUT: &str = "--request-timeout=20s";

/// Run `cmd`, feeding it `stdin` if given.
pub fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(cmd);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().unwrap_or_else(|e| {
        panic!("cannot run {cmd} ({e}); put it on PATH with `eval \"$(hack/cluster.sh env)\"`")
    });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for command")
}

/// Run and return stdout, failing the test when the command fails.
pub fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args, None);
    assert!(
        out.status.success(),
        "`{cmd} {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn with_timeout<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![KUBECTL_TIMEOUT];
    all.extend_from_slice(args);
    all
}

/// kubectl's stdout, failing the test when it fails.
pub fn kubectl(args: &[&str]) -> String {
    ok("kubectl", &with_timeout(args))
}

/// kubectl's stdout, or its stderr when it fails (for polling).
pub fn try_kubectl(args: &[&str]) -> Result<String, String> {
    let out = run("kubectl", &with_timeout(args), None);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `kubectl get ... -o json`, or None when it does not exist.
pub fn kubectl_get(args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--ignore-not-found"]);
    let text = kubectl(&all);
    if text.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(&text).expect("kubectl JSON"))
    }
}

/// `kubectl apply` of a manifest, in `namespace` when given.
pub fn kubectl_apply(namespace: Option<&str>, manifest: &str) {
    let mut args = vec!["apply", "-f", "-"];
    if let Some(ns) = namespace {
        args.extend_from_slice(&["-n", ns]);
    }
    let out = run("kubectl", &with_timeout(&args), Some(manifest));
    assert!(
        out.status.success(),
        "kubectl apply failed: {}\n---\n{manifest}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails the test unless KUBECONFIG names a cluster that kubectl reaches.
pub fn require_cluster() {
    match std::env::var_os("KUBECONFIG") {
        Some(p) if !p.is_empty() => assert!(
            Path::new(&p).is_file(),
            "KUBECONFIG={} does not exist: start the cluster with `hack/cluster.sh up` (or use hack/test.sh)",
            p.to_string_lossy()
        ),
        _ => panic!(
            "KUBECONFIG is not set: these tests need the local cluster. Run \
             `hack/cluster.sh up && eval \"$(hack/cluster.sh env)\"` first, or use hack/test.sh"
        ),
    }
    let out = run("kubectl", &["version", "--request-timeout=10s"], None);
    assert!(
        out.status.success(),
        "kubectl cannot reach the cluster: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails the test unless helm is on PATH.
pub fn require_helm() {
    let out = Command::new("helm").arg("version").arg("--short").output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`helm version` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "helm is not on PATH ({e}): run `eval \"$(hack/cluster.sh env)\"` first (hack/test.sh does), \
             which puts the pinned helm and kubectl on PATH"
        ),
    }
}

/// `kubectl apply -f -` of a manifest (in `namespace` when given): stdout,
/// or stderr when the API server refuses it.
pub fn try_kubectl_apply(namespace: Option<&str>, manifest: &str) -> Result<String, String> {
    let mut args = vec!["apply", "-f", "-"];
    if let Some(ns) = namespace {
        args.extend_from_slice(&["-n", ns]);
    }
    let out = run("kubectl", &with_timeout(&args), Some(manifest));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
