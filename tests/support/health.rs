//! What GitOps tools read as an object's health, from the real code each
//! tool runs: kstatus (`status.Compute` of sigs.k8s.io/cli-utils, as Flux,
//! kpt and cli-utils use it) and the Argo CD health check in
//! docs/argocd-health.lua run as Argo CD runs it (gopher-lua, no open
//! libraries). Both are helpers of hack/tools (`tco-kstatus`,
//! `tco-argocd-health`), built by `hack/cluster.sh build-tools` and put on
//! PATH by `eval "$(hack/cluster.sh env)"`.

use super::tools::run;

/// One verdict: a tool's status word and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: String,
    pub message: String,
}

/// The Argo CD health check this repository ships.
pub const ARGOCD_HEALTH_LUA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/argocd-health.lua");

fn lines(cmd: &str, args: &[&str], json: &str) -> Vec<String> {
    let out = run(cmd, args, Some(json));
    assert!(
        out.status.success(),
        "`{cmd} {}` failed ({}): {}\ninput:\n{json}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// kstatus' verdict for each object of `json` (one object or a List, as
/// `kubectl get -o json` prints it), with its `namespace/name`.
pub fn kstatus(json: &str) -> Vec<(String, Verdict)> {
    lines("tco-kstatus", &[], json)
        .into_iter()
        .map(|line| {
            let mut f = line.splitn(3, '\t');
            let (Some(name), Some(status), Some(message)) = (f.next(), f.next(), f.next()) else {
                panic!("tco-kstatus printed {line:?}, not name<TAB>status<TAB>message");
            };
            (
                name.to_owned(),
                Verdict {
                    status: status.to_owned(),
                    message: message.to_owned(),
                },
            )
        })
        .collect()
}

/// Argo CD's health for each object of `json`, by docs/argocd-health.lua.
pub fn argocd(json: &str) -> Vec<Verdict> {
    lines("tco-argocd-health", &[ARGOCD_HEALTH_LUA], json)
        .into_iter()
        .map(|line| {
            let Some((status, message)) = line.split_once('\t') else {
                panic!("tco-argocd-health printed {line:?}, not status<TAB>message");
            };
            Verdict {
                status: status.to_owned(),
                message: message.to_owned(),
            }
        })
        .collect()
}
