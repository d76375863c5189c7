//! A TCP proxy in front of the API server that can stall what clients send
//! (TLS passes through untouched): requests already sent and watch streams
//! keep flowing back, new requests hang as on a saturated API server.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct StallingProxy {
    addr: SocketAddr,
    stall: watch::Sender<bool>,
    held: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    /// Proxies to the API server of the admin KUBECONFIG.
    pub async fn start() -> Self {
        let server = admin_server();
        let upstream = server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let (stall, stalled) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let counted = held.clone();
        let task = tokio::spawn(async move {
            let held = counted;
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let stalled = stalled.clone();
                let held = held.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut stalled = stalled;
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // Hold what the client sends while stalled.
                            if *stalled.borrow() {
                                held.fetch_add(n, Ordering::SeqCst);
                            }
                            if stalled.wait_for(|s| !*s).await.is_err() {
                                return;
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Self {
            addr,
            stall,
            held,
            task,
        }
    }

    /// From now on, nothing clients send reaches the API server.
    pub fn stall(&self) {
        self.stall.send_replace(true);
    }

    /// Bytes clients sent while stalled: a request is waiting.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub fn resume(&self) {
        self.stall.send_replace(false);
    }

    /// The admin kubeconfig, pointed at the proxy, written to `path`.
    pub fn kubeconfig(&self, path: &Path) -> PathBuf {
        let mut config = kube::config::Kubeconfig::read().expect("read KUBECONFIG");
        for named in &mut config.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(format!("https://{}", self.addr));
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        std::fs::canonicalize(path).unwrap()
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn admin_server() -> String {
    let config = kube::config::Kubeconfig::read().expect("read KUBECONFIG");
    config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .expect("a server in KUBECONFIG")
}
