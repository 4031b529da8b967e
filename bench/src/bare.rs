//! `bare-proxy` (hidden): the least a Rust proxy on telepipe's stack (tokio, hyper's HTTP/1
//! server and client, mimalloc) does for a call: read the request, send it upstream on a kept
//! connection, read the answer, send it back. No routing, parsing, bus, record or metrics.
//! `proxy` runs it beside nginx and telepipe: what the stack itself costs a call here, so the
//! gap to nginx reads as the stack's share and telepipe's own.
//!
//! Upstream connections are values taken from a pool and driven by the call using them, as
//! telepipe's `telegram::conns` does, so the two differ by what telepipe adds, not by how they
//! reach upstream; telepipe's retry of a request its pooled connection never sent, its answer
//! size limit and its idle timeout are left out, so their small cost counts as telepipe's.

use bytes::Bytes;
use futures_util::future::{self, Either};
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

type Upstream = TokioIo<tokio::net::TcpStream>;

struct Conn {
    send: client::SendRequest<Full<Bytes>>,
    conn: Pin<Box<client::Connection<Upstream, Full<Bytes>>>>,
}

#[derive(Clone)]
struct Pool {
    upstream: String,
    idle: Arc<Mutex<Vec<Conn>>>,
}

impl Conn {
    /// Whether an idle connection can take a request now: upstream has not closed it.
    fn ready(&mut self) -> bool {
        if (&mut self.conn).now_or_never().is_some() {
            return false;
        }
        matches!(
            future::poll_fn(|cx| self.send.poll_ready(cx)).now_or_never(),
            Some(Ok(()))
        )
    }
}

impl Pool {
    async fn take(&self) -> anyhow::Result<Conn> {
        // An idle connection upstream closed meanwhile is thrown away.
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(mut c) = idle else { break };
            if c.ready() {
                return Ok(c);
            }
        }
        let s = tokio::net::TcpStream::connect(&self.upstream).await?;
        s.set_nodelay(true)?;
        let (send, conn) = client::handshake(TokioIo::new(s)).await?;
        Ok(Conn {
            send,
            conn: Box::pin(conn),
        })
    }

    fn put_back(&self, c: Conn) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }

    /// One call: forwarded with its method, path, query and body; the answer's head and body
    /// back as they came. A connection that failed is dropped, and the call with it (a 502).
    async fn forward(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> anyhow::Result<hyper::Response<Full<Bytes>>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await?.to_bytes();
        let mut c = self.take().await?;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = hyper::Request::builder()
            .method(parts.method)
            .uri(path)
            .header(hyper::header::HOST, &self.upstream);
        if let Some(ct) = parts.headers.get(hyper::header::CONTENT_TYPE) {
            out = out.header(hyper::header::CONTENT_TYPE, ct);
        }
        let sent = std::pin::pin!(c.send.send_request(out.body(Full::new(body))?));
        let answer = match future::select(sent, c.conn.as_mut()).await {
            Either::Left((answer, _)) => answer?,
            Either::Right(_) => anyhow::bail!("upstream closed the connection"),
        };
        let (head, body) = answer.into_parts();
        let read = Box::pin(body.collect());
        let body = match future::select(read, c.conn.as_mut()).await {
            Either::Left((body, _)) => body?.to_bytes(),
            Either::Right(_) => anyhow::bail!("upstream closed the connection"),
        };
        self.put_back(c);
        Ok(hyper::Response::from_parts(head, Full::new(body)))
    }
}

/// Serves on 127.0.0.1 (an ephemeral port, printed as `... listening on http://ADDR`) until
/// killed.
pub async fn serve(upstream_port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("bare proxy listening on http://{}", listener.local_addr()?);
    let pool = Pool {
        upstream: format!("127.0.0.1:{upstream_port}"),
        idle: Arc::default(),
    };
    loop {
        // A client's failed connection (or no descriptor left) is that client's: the proxy
        // goes on.
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("bare proxy: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let pool = pool.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(match pool.forward(req).await {
                        Ok(answer) => answer,
                        Err(e) => {
                            let mut r = hyper::Response::new(Full::new(Bytes::from(e.to_string())));
                            *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                            r
                        }
                    })
                }
            });
            let _ = server::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
