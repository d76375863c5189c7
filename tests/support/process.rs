//! The operator binary as a child process: started with the flags a test
//! gives, every log line kept, stopped with SIGTERM or killed with SIGKILL.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex, OnceLock},
    time::{Duration, Instant},
};

/// The binary built with these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tenant-capacity-operator");

/// The line `run` logs once it serves metrics and health probes, with the
/// addresses it bound (port 0 picks free ports).
const STARTED: &str = "serving metrics and health probes";

/// How a process is started; see [`OperatorProcess::launch`].
pub struct Launch {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    json_logs: bool,
    ports: Option<(u16, u16)>,
    log_file: Option<PathBuf>,
    metrics_secure: Option<bool>,
}

impl Launch {
    /// Another build of the operator (the benchmark's `--operator-bin`).
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = bin.into();
        self
    }

    /// Serve /metrics over HTTPS to authorised callers, as the operator does
    /// by default (without it a test's operator serves plain HTTP on its
    /// loopback address, `--metrics-secure=false`, read by
    /// [`OperatorProcess::metrics`]); read it with [`super::https::get`].
    pub fn secure_metrics(mut self) -> Self {
        self.metrics_secure = Some(true);
        self
    }

    /// Pass no `--metrics-secure` at all: a build from before the flag, which
    /// serves plain HTTP.
    pub fn without_metrics_secure_flag(mut self) -> Self {
        self.metrics_secure = None;
        self
    }

    /// Watch only `namespace` (all namespaces without it).
    pub fn namespace(self, namespace: &str) -> Self {
        self.args(["--namespace", namespace])
    }

    /// More flags for `run`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Authenticate with this kubeconfig instead of the test's KUBECONFIG.
    pub fn kubeconfig(self, path: &Path) -> Self {
        self.env("KUBECONFIG", path.to_str().expect("UTF-8 kubeconfig path"))
    }

    /// Log as text, the way a person reads it, instead of JSON. The addresses
    /// are then not read from the log: use [`Launch::free_ports`].
    pub fn text_logs(mut self) -> Self {
        self.json_logs = false;
        self
    }

    /// Bind metrics and health probes to ports picked now, rather than to
    /// port 0 and reading the ports from the startup line.
    pub fn free_ports(mut self) -> std::io::Result<Self> {
        self.ports = Some((free_port()?, free_port()?));
        Ok(self)
    }

    /// Also write every log line to this file.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    pub fn spawn(self) -> std::io::Result<OperatorProcess> {
        let (metrics_port, health_port) = self.ports.unwrap_or((0, 0));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .args([
                "--metrics-bind-address",
                &format!("127.0.0.1:{metrics_port}"),
                "--health-probe-bind-address",
                &format!("127.0.0.1:{health_port}"),
            ])
            .args(
                self.metrics_secure
                    .map(|secure| format!("--metrics-secure={secure}")),
            )
            .args(if self.json_logs {
                &["--log-format", "json"][..]
            } else {
                &[]
            })
            .args(&self.args)
            // What it watches comes from the flags alone.
            .env_remove("WATCH_NAMESPACE")
            .env_remove("POD_NAMESPACE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let file = self.log_file.as_ref().map(File::create).transpose()?;
        let mut child = cmd.spawn()?;
        let log = Arc::new(Log {
            lines: Mutex::new(Vec::new()),
            grew: Condvar::new(),
            file: Mutex::new(file),
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        Log::follow(&log, stdout);
        Log::follow(&log, stderr);
        let addresses = OnceLock::new();
        if let Some((m, h)) = self.ports {
            let _ = addresses.set((format!("127.0.0.1:{m}"), format!("127.0.0.1:{h}")));
        }
        Ok(OperatorProcess {
            child,
            log,
            addresses,
        })
    }

    /// [`Launch::spawn`], failing the test when the binary does not start.
    pub fn start(self) -> OperatorProcess {
        self.spawn().expect("start the operator binary")
    }
}

/// Every line the process wrote, in arrival order.
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
    file: Mutex<Option<File>>,
}

impl Log {
    fn follow(log: &Arc<Self>, stream: impl Read + Send + 'static) {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                buf.clear();
                if let Some(f) = log.file.lock().unwrap().as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                log.lines.lock().unwrap().push(line);
                log.grew.notify_all();
            }
        });
    }
}

/// The operator binary running `run`. Killed when dropped.
pub struct OperatorProcess {
    child: Child,
    log: Arc<Log>,
    addresses: OnceLock<(String, String)>,
}

impl OperatorProcess {
    /// The binary built with these tests, running `run` with metrics (plain
    /// HTTP) and health probes on free local ports and JSON logs.
    pub fn launch() -> Launch {
        Launch {
            bin: PathBuf::from(BIN),
            args: Vec::new(),
            env: Vec::new(),
            json_logs: true,
            ports: None,
            log_file: None,
            metrics_secure: Some(false),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("check the operator process")
            .is_none()
    }

    /// SIGTERM: a graceful stop (releases a held Lease).
    pub fn terminate(&self) {
        signal(self.pid(), SIGTERM);
    }

    /// SIGKILL, no chance to clean up (a held Lease must expire); returns once
    /// the process is gone.
    pub fn kill(&mut self) {
        signal(self.pid(), SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status once it has exited, or `None` if it is
    /// still running after `timeout`.
    pub fn stop_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.terminate();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the operator") {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and its exit status; fails the test when it has not exited
    /// within 30 s.
    pub fn stop(mut self) -> ExitStatus {
        let timeout = Duration::from_secs(30);
        self.stop_within(timeout).unwrap_or_else(|| {
            panic!(
                "the operator did not exit within {timeout:?} after SIGTERM; its log:\n{}",
                self.log_text()
            )
        })
    }

    /// Every line it has logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lines.lock().unwrap().clone()
    }

    /// How many lines it has logged so far (for [`Self::lines_since`]).
    pub fn line_count(&self) -> usize {
        self.log.lines.lock().unwrap().len()
    }

    pub fn lines_since(&self, count: usize) -> Vec<String> {
        self.log.lines.lock().unwrap()[count..].to_vec()
    }

    pub fn log_text(&self) -> String {
        self.lines().join("\n")
    }

    /// The last `n` lines, to explain a failure.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.log.lines.lock().unwrap();
        format!(
            "operator log (last {n} lines):\n{}",
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    /// Whether any line so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// The first line containing `needle`, waiting up to `timeout` for it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let left = timeout.checked_sub(start.elapsed())?;
            lines = self.log.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// (metrics, health) addresses: the ports picked, or as the startup line
    /// says (waiting up to 30 s for it).
    pub fn addresses(&self) -> &(String, String) {
        self.addresses.get_or_init(|| {
            let line = self
                .wait_line(STARTED, Duration::from_secs(30))
                .unwrap_or_else(|| panic!("no startup line\n{}", self.tail(30)));
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
            let field = |k: &str| {
                v["fields"][k]
                    .as_str()
                    .unwrap_or_else(|| panic!("no {k} address in {line}"))
                    .to_string()
            };
            (field("metrics"), field("health"))
        })
    }

    pub fn metrics_address(&self) -> &str {
        &self.addresses().0
    }

    /// The text of its plain-HTTP /metrics, or `None` when it does not answer.
    pub fn metrics(&self) -> Option<String> {
        let (code, body) = http_get(self.metrics_address(), "/metrics")?;
        (code == 200).then_some(body)
    }

    /// Writes it made to the API server, by its own count.
    pub fn writes(&self) -> u64 {
        writes_in(&self.metrics().expect("the operator's /metrics"))
    }

    /// (current RSS, peak RSS) in bytes, from /proc; zeros once it has exited.
    pub fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

fn signal(pid: u32, sig: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) only sends a signal; the pid is our own child's.
    unsafe {
        kill(pid as i32, sig);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain HTTP/1.0 GET: (status code, the whole response), or `None` when
/// nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let code = body.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body))
}

/// The sum of `tenant_capacity_api_writes_total` in a /metrics text.
pub fn writes_in(metrics: &str) -> u64 {
    sum_in(metrics, "tenant_capacity_api_writes_total")
}

/// The sum over every label set of counter `name` in a /metrics text.
pub fn sum_in(metrics: &str, name: &str) -> u64 {
    let series = format!("{name}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The value of an unlabelled metric in a /metrics text.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
}
