//! The chart's alert rules and Grafana dashboard against the real thing:
//! `promtool` checks and unit-tests the rules, and a real `prometheus`
//! scrapes the operator and answers the dashboard's queries. Both are
//! built from the pinned github.com/prometheus/prometheus module by
//! `hack/cluster.sh build-tools` and put on PATH by
//! `eval "$(hack/cluster.sh env)"`; without them these tests fail.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use super::{chart::CHART, tools::ok};

/// The promtool unit tests of the alerts (they name `rules.yaml` beside them).
pub const ALERT_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/prometheus/alerts.test.yaml"
);
/// The dashboard the chart ships.
pub const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/tenant-capacity-operator/dashboards/tenant-capacity.json"
);
/// The release the rules are rendered for: their job is then
/// `tco-tenant-capacity-operator-metrics`, as a ServiceMonitor names it.
pub const RELEASE: &str = "tco";
pub const JOB: &str = "tco-tenant-capacity-operator-metrics";

/// The chart's PrometheusRule, rendered with the rule enabled and `extra`
/// arguments to `helm template` (`--set`s).
pub fn rendered_rule(extra: &[&str]) -> Value {
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        "tenant-capacity-system",
        "--show-only",
        "templates/prometheusrule.yaml",
        "--set",
        "prometheusRule.enabled=true",
    ];
    args.extend_from_slice(extra);
    let text = ok("helm", &args);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rendered YAML");
    assert_eq!(docs.len(), 1, "one PrometheusRule: {text}");
    docs.into_iter().next().unwrap()
}

/// A Prometheus rules file of the rule's groups (JSON, which is YAML), in `dir`.
pub fn write_rules_file(dir: &Path, rule: &Value) -> PathBuf {
    let groups = &rule["spec"]["groups"];
    assert!(
        groups.as_array().is_some_and(|g| !g.is_empty()),
        "no groups in {rule}"
    );
    let path = dir.join("rules.yaml");
    std::fs::write(&path, json!({ "groups": groups }).to_string()).expect("write rules");
    path
}

/// Every alert of the rule: (name, expression).
pub fn alerts(rule: &Value) -> Vec<(String, String)> {
    rule["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert name").to_string(),
                r["expr"].as_str().expect("expr").to_string(),
            )
        })
        .collect()
}

/// `promtool ARGS` in `dir`.
pub fn promtool(dir: &Path, args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): build it with `hack/cluster.sh build-tools` and \
                 put it on PATH with `eval \"$(hack/cluster.sh env)\"`"
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A real Prometheus in a directory of its own, scraping one target every
/// second; killed (and its directory removed) when dropped.
pub struct Prometheus {
    child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Prometheus {
    /// Scrape `target` (`host:port`, plain HTTP `/metrics`) as job `job`,
    /// with the rules file `rules` loaded when given.
    pub fn start(job: &str, target: &str, rules: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().expect("a directory for Prometheus");
        let rule_files = match rules {
            Some(r) => format!("rule_files: [{:?}]\n", r.to_str().expect("UTF-8 path")),
            None => String::new(),
        };
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
                 {rule_files}\
                 scrape_configs:\n  - job_name: {job:?}\n    static_configs:\n      - targets: [{target:?}]\n"
            ),
        )
        .expect("write prometheus.yml");
        let address = format!("127.0.0.1:{}", free_port());
        let log = dir.path().join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run prometheus ({e}): build it with `hack/cluster.sh build-tools` and \
                     put it on PATH with `eval \"$(hack/cluster.sh env)\"`"
                )
            });
        Self {
            child,
            address,
            _dir: dir,
            log,
        }
    }

    /// Its log so far, to explain a failure.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` with `params`: the JSON answer's `data`, or why not.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let query = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut s = TcpStream::connect(&self.address).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path}?{query} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.address
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        let (_, json) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no HTTP body in {answer:?}"))?;
        let v: Value = serde_json::from_str(json).map_err(|e| format!("{e}: {json}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"].clone())
    }

    /// The rules it loaded, with their health and state (`/api/v1/rules`).
    pub fn rules(&self) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/rules", &[])?;
        Ok(data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// An instant query: its result vector (an error names what Prometheus said).
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", promql)])?;
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                Ok(data["result"].as_array().cloned().unwrap_or_default())
            }
            Some("scalar") => Ok(vec![data["result"].clone()]),
            other => Err(format!("unexpected result type {other:?}: {data}")),
        }
    }

    /// The series a selector matches.
    pub fn series(&self, selector: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/series", &[("match[]", selector)])?;
        Ok(data.as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding of a form value: everything but the unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every query of the dashboard: (panel title, target expression), rows included.
pub fn dashboard_targets(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    t["expr"].as_str().expect("a target's expr").to_string(),
                ));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The dashboard's template variables: (name, query) of each `query` variable.
pub fn dashboard_variables(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = &v["query"];
            let q = q["query"]
                .as_str()
                .or(q.as_str())
                .expect("a variable's query");
            (v["name"].as_str().unwrap().to_string(), q.to_string())
        })
        .collect()
}

/// `expr` with Grafana's variables replaced: `$name` and `${name}` by
/// `values`, longest names first (so `$__rate_interval` is not read as
/// `$__rate`). Fails on a variable left over.
pub fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = expr.to_string();
    for (k, v) in sorted {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    assert!(!out.contains('$'), "a variable not substituted in {out:?}");
    out
}

/// The operator's metric names (`tenant_capacity_...`) an expression reads.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = expr
        .match_indices("tenant_capacity_")
        .map(|(i, _)| {
            expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
