//! The Helm chart in charts/tenant-capacity-operator, as the chart tests
//! (tests/helm_chart.rs offline, tests/helm.rs on the cluster) read it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    cluster::unique,
    tools::{ok, run, try_kubectl_apply},
};

pub const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/tenant-capacity-operator"
);
pub const CHART_NAME: &str = "tenant-capacity-operator";
/// Lets pods onto the local cluster's fake (kwok) nodes.
pub const KWOK_TOLERATION: &str =
    "{key: kwok.x-k8s.io/node, operator: Equal, value: fake, effect: NoSchedule}";

/// Write `text` to `dir/name` (a values file, say) and return its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

/// The operator container's arguments in a rendered or live Deployment.
pub fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// Whether `flag` is followed by `value` in `args`.
pub fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
    args.windows(2).any(|w| w[0] == flag && w[1] == value)
}

/// Objects of one chart template, rendered under a release name of their
/// own with `--set`s that scope them (policies bound cluster-wide would
/// judge other tests' objects on the shared cluster), applied, and deleted
/// when dropped.
pub struct ChartObjects {
    pub docs: Vec<Value>,
}

impl ChartObjects {
    pub fn apply(release_prefix: &str, template: &str, sets: &[String]) -> Self {
        let release = unique(release_prefix);
        let mut args = vec![
            "template",
            release.as_str(),
            CHART,
            "--namespace",
            "tenant-capacity-system",
            "--show-only",
            template,
        ];
        for set in sets {
            args.extend_from_slice(&["--set", set.as_str()]);
        }
        let rendered = ok("helm", &args);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered).expect("rendered YAML");
        let objects = Self { docs };
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects.docs});
        try_kubectl_apply(None, &list.to_string()).expect("apply the chart's objects");
        objects
    }

    /// (kind, name) of each object.
    pub fn names(&self) -> Vec<(String, String)> {
        self.docs
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for ChartObjects {
    fn drop(&mut self) {
        for (kind, name) in self.names() {
            let _ = run(
                "kubectl",
                &[
                    "delete",
                    &kind.to_lowercase(),
                    &name,
                    "--ignore-not-found",
                    "--wait=false",
                ],
                None,
            );
        }
    }
}
