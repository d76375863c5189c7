//! The Helm chart in charts/tenant-capacity-operator, as the chart tests
//! (tests/helm_chart.rs offline, tests/helm.rs on the cluster) read it.

use std::path::{Path, PathBuf};

use serde_json::Value;

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
