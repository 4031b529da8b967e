//! The hot path's HTTP/1.1 connections to upstream, each driven by the call using it.
//!
//! A pooled client (hyper's) gives every connection a task of its own: a call hands its request
//! to that task and waits to be woken with the answer, two task hand-offs per call, most often
//! across threads, and on this path they cost more than the request itself. Here a connection
//! is a value: a call takes an idle one (or opens one), writes its request and reads its answer
//! by polling the connection itself, and puts it back. Nobody polls an idle connection; one the
//! server closed meanwhile is seen closed when taken, and thrown away.
//!
//! A request on a connection taken from the pool that fails before any of it was written (hyper
//! says "canceled": the server had closed it) is sent once more on a new connection. Any other
//! failure is the caller's to classify: the request may have reached upstream.

use bytes::Bytes;
use futures_util::future::{self, Either};
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tower::ServiceExt;

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Idle connections kept per upstream; more are closed as they come back.
const MAX_IDLE: usize = 512;

/// An idle connection older than this is closed rather than used (servers close theirs).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
    /// The connection's state machine; polled only by the call holding it.
    conn: Pin<Box<http1::Connection<Io, Full<Bytes>>>>,
    idle_since: Instant,
    /// The lane ([`lifecycle::lanes`]) that opened it, 0 off the lanes: its socket is driven by
    /// that lane's runtime, so only calls on that lane take it.
    lane: usize,
}

impl Conn {
    /// Whether an idle connection can take a request now: the server has not closed it, and
    /// the last answer is wholly read.
    fn ready(&mut self) -> bool {
        if self.idle_since.elapsed() > IDLE_TIMEOUT {
            return false;
        }
        if (&mut self.conn).now_or_never().is_some() {
            return false;
        }
        matches!(
            future::poll_fn(|cx| self.send.poll_ready(cx)).now_or_never(),
            Some(Ok(()))
        )
    }
}

/// Why an exchange failed.
pub(crate) enum Failure {
    /// Nothing was sent: no connection could be made, or the request could not be.
    Connect(String),
    /// The request may have reached upstream; it or its answer failed.
    Request(String),
    /// The answer broke off or was larger than allowed.
    Answer(String),
}

/// What upstream answered.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Where requests go: made once per upstream, not per call (parsing a URL and formatting
/// its parts took as much as the rest of a request's set-up).
pub(crate) struct Origin {
    /// The pool's key: scheme and authority.
    key: std::sync::Arc<str>,
    /// The host and port only: never credentials a base URL may carry.
    host: http::HeaderValue,
    /// What a new connection is made to: never the path, which holds the token.
    uri: http::Uri,
}

impl Origin {
    /// The origin of an absolute URI.
    pub fn of(uri: &http::Uri) -> Result<Self, Failure> {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(Failure::Connect("the upstream URL is not absolute".into()));
        };
        let host = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_owned(),
        };
        Ok(Self {
            key: format!("{scheme}://{authority}").into(),
            host: http::HeaderValue::from_str(&host)
                .map_err(|e| Failure::Connect(e.to_string()))?,
            uri: http::Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .map_err(|e| Failure::Connect(e.to_string()))?,
        })
    }
}

pub(crate) struct Conns {
    connector: HttpsConnector<HttpConnector>,
    /// Idle connections, by scheme and authority and lane; the last one back is the first
    /// taken.
    idle: Mutex<Vec<(std::sync::Arc<str>, Conn)>>,
    /// Tests: an idle connection is taken unchecked (the server's close not yet seen).
    #[cfg(test)]
    unchecked: std::sync::atomic::AtomicBool,
}

impl Conns {
    pub fn new(connector: HttpsConnector<HttpConnector>) -> Self {
        Self {
            connector,
            idle: Mutex::new(Vec::new()),
            #[cfg(test)]
            unchecked: Default::default(),
        }
    }

    fn take(&self, key: &str) -> Option<Conn> {
        let lane = lifecycle::lanes::current();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = idle
            .iter()
            .rposition(|(k, c)| c.lane == lane && **k == *key)
        {
            let (_, mut conn) = idle.remove(i);
            #[cfg(test)]
            if self.unchecked.load(std::sync::atomic::Ordering::Relaxed) {
                return Some(conn);
            }
            if conn.ready() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, key: std::sync::Arc<str>, mut conn: Conn) {
        // The answer is read; one more poll lets the connection settle to idle (or end, when
        // the server said `Connection: close`).
        if (&mut conn.conn).now_or_never().is_some() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // The last back is the first taken, so the oldest wait at the front: one that has
        // waited too long goes with each return, and none is kept open for nothing for long.
        if idle
            .first()
            .is_some_and(|(_, c)| c.idle_since.elapsed() > IDLE_TIMEOUT)
        {
            idle.remove(0);
        }
        if idle.len() < MAX_IDLE {
            idle.push((key, conn));
        }
    }

    async fn connect(&self, origin: &http::Uri) -> Result<Conn, Failure> {
        let io = self
            .connector
            .clone()
            .oneshot(origin.clone())
            .await
            .map_err(|e| Failure::Connect(crate::botapi::chain("connection failed", &*e)))?;
        let (send, conn) = http1::handshake(io)
            .await
            .map_err(|e| Failure::Connect(crate::botapi::chain("handshake failed", &e)))?;
        Ok(Conn {
            send,
            conn: Box::pin(conn),
            idle_since: Instant::now(),
            lane: lifecycle::lanes::current(),
        })
    }

    /// Sends a request for `path` (origin form: the path and query) to `origin` and reads the
    /// whole answer, up to `max_answer` bytes.
    pub async fn exchange(
        &self,
        origin: &Origin,
        method: http::Method,
        path: &http::Uri,
        content_type: Option<http::HeaderValue>,
        data: Bytes,
        max_answer: usize,
    ) -> Result<Answer, Failure> {
        let mut pooled = self.take(&origin.key);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) => c,
                // Boxed: a call's future would otherwise carry the handshake's state, which
                // only a new connection needs, and be copied with it on every call.
                None => Box::pin(self.connect(&origin.uri)).await?,
            };
            // On the wire in origin form: the path, and the host in its header.
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(path.clone())
                .header(http::header::HOST, origin.host.clone());
            if let Some(ct) = &content_type {
                req = req.header(http::header::CONTENT_TYPE, ct.clone());
            }
            let req = req
                .body(Full::new(data.clone()))
                .map_err(|e| Failure::Connect(e.to_string()))?;
            let sent = std::pin::pin!(conn.send.try_send_request(req));
            // The connection ended before the answer: hyper settles what was asked of it only
            // when it is dropped, and the request's own outcome then says how it went.
            let first = match future::select(sent, conn.conn.as_mut()).await {
                Either::Left((response, _)) => Ok(response),
                Either::Right((_, sent)) => Err(sent),
            };
            let (response, conn) = match first {
                Ok(response) => (response, Some(conn)),
                Err(sent) => {
                    drop(conn);
                    (sent.await, None)
                }
            };
            let response = match response {
                Ok(r) => r,
                // None of it was written (the server had closed the connection): on a reused
                // connection once more, anew; on a new one, as a connection that failed.
                Err(e) if e.message().is_some() => {
                    if reused {
                        continue;
                    }
                    return Err(Failure::Connect(crate::botapi::chain(
                        "the connection closed before the request was written",
                        e.error(),
                    )));
                }
                Err(e) => {
                    return Err(Failure::Request(crate::botapi::chain(
                        "request error",
                        e.error(),
                    )))
                }
            };
            let (head, body) = response.into_parts();
            let read = Box::pin(Limited::new(body, max_answer).collect());
            let (body, conn) = match conn {
                Some(mut conn) => {
                    let first = match future::select(read, conn.conn.as_mut()).await {
                        Either::Left((body, _)) => Ok(body),
                        Either::Right((_, read)) => Err(read),
                    };
                    match first {
                        Ok(body) => (body, Some(conn)),
                        Err(read) => {
                            drop(conn);
                            (read.await, None)
                        }
                    }
                }
                None => (read.await, None),
            };
            let body = body.map_err(|e| Failure::Answer(e.to_string()))?.to_bytes();
            if let Some(conn) = conn {
                self.put_back(origin.key.clone(), conn);
            }
            return Ok(Answer {
                status: head.status.as_u16(),
                headers: head.headers,
                body,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering each request on a connection with `answer`; after `per_conn`
    /// answers it closes the connection without saying so. Counts connections and requests.
    async fn server(
        answer: &'static str,
        per_conn: usize,
    ) -> (http::Uri, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        server_closing(answer, per_conn, 0).await
    }

    /// [`server`], closing its first `close_first` connections at once, unanswered.
    async fn server_closing(
        answer: &'static str,
        per_conn: usize,
        close_first: usize,
    ) -> (http::Uri, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r) = (conns.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                if c.fetch_add(1, Ordering::SeqCst) < close_first {
                    continue;
                }
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_conn {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        r.fetch_add(1, Ordering::SeqCst);
                        s.write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        let uri = format!("http://{addr}/bot1:secret/getMe?x=1")
            .parse()
            .unwrap();
        (uri, conns, requests)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";

    fn conns() -> Conns {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        Conns::new(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .wrap_connector(tcp),
        )
    }

    async fn get(c: &Conns, uri: &http::Uri, max: usize) -> Result<Answer, Failure> {
        let origin = Origin::of(uri)?;
        let path = uri.path_and_query().unwrap().as_str().parse().unwrap();
        c.exchange(&origin, http::Method::GET, &path, None, Bytes::new(), max)
            .await
    }

    #[tokio::test]
    async fn a_connection_is_used_again() {
        let (uri, opened, requests) = server(OK, 100).await;
        let c = conns();
        for _ in 0..3 {
            let a = get(&c, &uri, 1024).await.ok().expect("answered");
            assert_eq!((a.status, &a.body[..]), (200, &b"{\"ok\":true}"[..]));
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(requests.load(Ordering::SeqCst), 3);
    }

    /// A connection is driven by the runtime that opened it: one opened on a lane is used
    /// again on that lane and never on another (nor off the lanes), which opens its own.
    #[tokio::test]
    async fn a_connection_stays_with_the_lane_that_opened_it() {
        let (uri, opened, requests) = server(OK, 100).await;
        let c = Arc::new(conns());
        let lanes = lifecycle::lanes::Lanes::start("test-lane", 2).unwrap();
        // Dealt to the least busy lane: held open, the first call's work keeps lane 1 busy
        // so the second goes to lane 2.
        let on_lane = |hold: tokio_util::sync::CancellationToken| {
            let (c, uri) = (c.clone(), uri.clone());
            let (tx, rx) = tokio::sync::oneshot::channel();
            lanes.spawn(async move {
                let answered = get(&c, &uri, 1024).await.is_ok();
                let _ = tx.send((lifecycle::lanes::current(), answered));
                hold.cancelled().await;
            });
            rx
        };
        let hold = tokio_util::sync::CancellationToken::new();
        let ids = lanes.ids();
        assert_eq!(on_lane(hold.clone()).await.unwrap(), (ids[0], true));
        assert_eq!(on_lane(hold.clone()).await.unwrap(), (ids[1], true));
        assert_eq!(opened.load(Ordering::SeqCst), 2, "lane 2 opened its own");
        assert!(get(&c, &uri, 1024).await.is_ok());
        assert_eq!(
            opened.load(Ordering::SeqCst),
            3,
            "and so does the shared runtime"
        );
        hold.cancel();
        while lanes.open() != [0, 0] {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let first = on_lane(tokio_util::sync::CancellationToken::new()).await;
        assert_eq!(first.unwrap(), (ids[0], true));
        assert_eq!(
            opened.load(Ordering::SeqCst),
            3,
            "lane 1's connection used again"
        );
        lanes.stop(std::time::Duration::ZERO).await;
        // A lane started later never takes a connection of one that has ended (its runtime,
        // which drove the socket, is gone).
        let later = lifecycle::lanes::Lanes::start("test-lane", 1).unwrap();
        let (c2, uri2) = (c.clone(), uri.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        later.spawn(async move {
            let _ = tx.send(get(&c2, &uri2, 1024).await.is_ok());
        });
        assert!(rx.await.unwrap());
        assert_eq!(opened.load(Ordering::SeqCst), 4);
        assert_eq!(requests.load(Ordering::SeqCst), 5);
        later.stop(std::time::Duration::ZERO).await;
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_and_nothing_is_sent_twice() {
        let (uri, opened, requests) = server(OK, 1).await;
        let c = conns();
        for _ in 0..3 {
            get(&c, &uri, 1024).await.ok().expect("answered");
            // Let the server's close arrive.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(requests.load(Ordering::SeqCst), 3, "one request each");
        assert_eq!(opened.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_the_server_means_to_close_is_not_kept() {
        let close = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";
        let (uri, opened, _) = server(close, 1).await;
        let c = conns();
        get(&c, &uri, 1024).await.ok().expect("answered");
        get(&c, &uri, 1024).await.ok().expect("answered");
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        assert!(c.idle.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_fails_and_nobody_listening_is_a_connect_failure() {
        let (uri, _, _) = server(OK, 100).await;
        let c = conns();
        assert!(matches!(get(&c, &uri, 4).await, Err(Failure::Answer(_))));
        let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let nowhere: http::Uri = format!("http://127.0.0.1:{port}/x").parse().unwrap();
        assert!(matches!(
            get(&c, &nowhere, 4).await,
            Err(Failure::Connect(_))
        ));
    }

    /// The race the check on taking cannot close: the server closed an idle connection just
    /// before the request. The request is not left waiting on a connection that has ended: it
    /// goes out once on a new one (or fails), promptly.
    #[tokio::test]
    async fn a_request_on_a_connection_closed_under_it_goes_out_once_anew() {
        let (uri, opened, requests) = server_closing(OK, 100, 1).await;
        let c = conns();
        c.unchecked.store(true, Ordering::Relaxed);
        let origin: http::Uri = format!("http://{}/", uri.authority().unwrap())
            .parse()
            .unwrap();
        let conn = c.connect(&origin).await.ok().expect("connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.idle
            .lock()
            .unwrap()
            .push((format!("http://{}", uri.authority().unwrap()).into(), conn));
        let answer = tokio::time::timeout(Duration::from_secs(5), get(&c, &uri, 1024))
            .await
            .expect("no wait on a connection that ended");
        match answer {
            Ok(a) => {
                assert_eq!(a.status, 200);
                assert_eq!(opened.load(Ordering::SeqCst), 2);
                assert_eq!(requests.load(Ordering::SeqCst), 1, "sent once");
            }
            // Written before the close was seen: reported as possibly sent, not sent again.
            Err(Failure::Request(_)) => assert_eq!(opened.load(Ordering::SeqCst), 1),
            Err(_) => panic!("neither answered nor reported as possibly sent"),
        }
    }
}
