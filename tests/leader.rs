//! Two operator processes with leader election: one leads and writes, the
//! other stands by and writes nothing; kill the leader and the other takes
//! over within the lease duration.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, channel},
    time::{Duration, Instant},
};

use common::*;
use k8s_openapi::api::{autoscaling::v2::HorizontalPodAutoscaler, coordination::v1::Lease};
use kube::Api;

const BIN: &str = env!("CARGO_BIN_EXE_tenant-capacity-operator");
const LEASE_SECONDS: u64 = 6;

struct Proc {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    metrics: String,
}

impl Proc {
    fn start(ns: &str, name: &str) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "run",
                "--metrics-bind-address",
                "127.0.0.1:0",
                "--health-probe-bind-address",
                "127.0.0.1:0",
            ])
            .args([
                "--namespace",
                ns,
                "--log-format",
                "json",
                "--leader-elect",
                "--leader-election-namespace",
                ns,
            ])
            .args([
                "--leader-election-lease-seconds",
                &LEASE_SECONDS.to_string(),
            ])
            .env("POD_NAME", name)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut p = Self {
            child,
            lines,
            seen: vec![],
            metrics: String::new(),
        };
        let line = p
            .wait_line("serving metrics and health probes", Duration::from_secs(30))
            .expect("startup line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        p.metrics = v["fields"]["metrics"].as_str().unwrap().to_string();
        p
    }

    /// Wait for a log line containing `needle` (or one already seen).
    fn wait_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let start = Instant::now();
        while let Some(left) = timeout.checked_sub(start.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    fn leading(&mut self) -> bool {
        self.drain();
        self.seen
            .iter()
            .any(|l| l.contains("leading: starting the controller"))
    }

    fn writes(&self) -> u64 {
        let Ok(mut s) = TcpStream::connect(&self.metrics) else {
            return u64::MAX;
        };
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .filter(|l| l.starts_with("tenant_capacity_api_writes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "leader").await;
    let module = unique("im");
    apply_yaml(&client, None, &profile_yaml(&module, "")).await;
    let sub = |c: i64| {
        format!(
            "apiVersion: capacity.tenancy.dev/v1alpha1\nkind: TenantSubscription\nmetadata: {{name: l}}\nspec: {{tenantId: l, modules: [{{name: {module}, concurrency: {c}}}]}}"
        )
    };
    apply_yaml(&client, Some(&ns.name), &sub(100)).await;

    let mut a = Proc::start(&ns.name, "replica-a");
    let mut b = Proc::start(&ns.name, "replica-b");
    // Exactly one leads.
    let first = wait_for("a leader", Duration::from_secs(30), || {
        let r = match (a.leading(), b.leading()) {
            (true, false) => Some('a'),
            (false, true) => Some('b'),
            (true, true) => panic!("both replicas lead"),
            _ => None,
        };
        async move { r }
    })
    .await;
    let (leader, standby) = if first == 'a' {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let hpa = format!("l-{module}");
    wait_for("HPA from the leader", T, || async {
        get_opt::<HorizontalPodAutoscaler>(&client, &ns.name, &hpa).await
    })
    .await;
    assert!(leader.writes() > 0);
    assert_eq!(standby.writes(), 0, "the standby wrote");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let lease = leases.get("tenant-capacity-operator").await.unwrap();
    let holder = lease.spec.unwrap().holder_identity.unwrap();
    assert!(
        holder.starts_with(if first == 'a' {
            "replica-a"
        } else {
            "replica-b"
        }),
        "{holder}"
    );

    // SIGKILL the leader: no release, the lease must expire.
    let killed = Instant::now();
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    let line = standby.wait_line(
        "leading: starting the controller",
        Duration::from_secs(LEASE_SECONDS * 4),
    );
    let took = killed.elapsed();
    assert!(line.is_some(), "the standby did not take over");
    println!("takeover after {took:?} (lease {LEASE_SECONDS}s)");
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS * 2 + 2),
        "takeover took {took:?}"
    );

    // The new leader reconciles changes.
    apply_yaml(&client, Some(&ns.name), &sub(400)).await;
    wait_for("new leader applies the change", T, || async {
        let h = get_opt::<HorizontalPodAutoscaler>(&client, &ns.name, &hpa).await?;
        (h.spec.max_replicas == 10).then_some(())
    })
    .await;
    assert!(standby.writes() > 0);
    drop(a);
    drop(b);
    ns.delete().await;
}
