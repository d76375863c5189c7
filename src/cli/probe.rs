//! `probe`: one plain-HTTP GET of a health endpoint, answered 200 or not.
//! The chart's `helm test` hook runs it in the operator's own image (no curl
//! in a distroless image) against the operator's `/readyz`.

use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, Uri, body::Bytes, header::HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a probe got no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{url:?} is not a URL like http://host:8081/readyz")]
    Url { url: String },
    #[error("only http:// is probed (the health port serves plain HTTP), not {url:?}")]
    Scheme { url: String },
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("GET {url}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("GET {url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// The answer to `GET url`: its status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub body: String,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.code == 200
    }
}

/// `GET url` over plain HTTP/1.1, the whole exchange bounded by `timeout`.
pub async fn get(url: &str, timeout: Duration) -> Result<Answer, ProbeError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| ProbeError::Url { url: url.into() })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(ProbeError::Scheme { url: url.into() }),
        None => return Err(ProbeError::Url { url: url.into() }),
    }
    let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
        return Err(ProbeError::Url { url: url.into() });
    };
    let port = uri.port_u16().unwrap_or(80);
    let address = format!("{host}:{port}");
    // An IPv6 literal is written in brackets in a URL, without them in a socket address.
    let ip_or_name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let request = Request::get(path)
        .header(HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|_| ProbeError::Url { url: url.into() })?;
    let exchange = async {
        let stream = TcpStream::connect((ip_or_name.as_str(), port))
            .await
            .map_err(|source| ProbeError::Connect {
                address: address.clone(),
                source,
            })?;
        let http = |source| ProbeError::Http {
            url: url.into(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // The connection is driven beside the request; a connection that
        // fails fails the request, so its own result adds nothing.
        tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(http)?;
        let code = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(http)?;
        Ok(Answer {
            code,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout {
            url: url.into(),
            timeout,
        })?
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A server on loopback answering every connection with `answer`
    /// (nothing at all when `None`); returns its address.
    async fn serve(answer: Option<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    match answer {
                        Some(a) => {
                            conn.write_all(a.as_bytes()).await.unwrap();
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        address
    }

    const QUICK: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn a_200_is_ok_and_its_body_is_kept() {
        let a = serve(Some(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        ))
        .await;
        let answer = get(&format!("http://{a}/readyz"), QUICK).await.unwrap();
        assert!(answer.ok());
        assert_eq!(answer.body, "ok");
    }

    #[tokio::test]
    async fn a_503_is_not_ok_and_says_why() {
        let a = serve(Some(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 17\r\nconnection: close\r\n\r\ncaches not synced",
        ))
        .await;
        let answer = get(&format!("http://{a}/readyz"), QUICK).await.unwrap();
        assert!(!answer.ok());
        assert_eq!(
            (answer.code, answer.body.as_str()),
            (503, "caches not synced")
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let a = serve(None).await;
        let e = get(&format!("http://{a}/readyz"), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Timeout { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_closed_port_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = get(&format!("http://{a}/readyz"), QUICK).await.unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("connecting to {a}: ")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn only_plain_http_urls_are_probed() {
        for (url, want) in [
            ("https://x:8081/readyz", "only http://"),
            ("x:8081", "not a URL"),
            ("/readyz", "not a URL"),
        ] {
            let e = get(url, QUICK).await.unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
