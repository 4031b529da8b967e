//! The HTTP surface of a process: bot calls go to ingest, file downloads to egress (each when
//! the process runs that role), plus `/metrics` and `/healthz` always. A panic before an
//! answer's head is sent becomes a Bot API-shaped 500; one while a body streams (a download)
//! drops that connection, its head already sent.

use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{header, Request, Response};
use schemas::ApiError;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

#[derive(Clone)]
pub struct Surface {
    /// Bot calls, when this process runs ingest.
    pub ingest: Option<ingest::Ingest>,
    /// `/file/bot...`, when this process serves downloads.
    pub downloads: Option<egress::downloads::Downloads>,
    /// `/hook/<bot_id>/<secret>` (Telegram pushing updates), with the ingest role: the
    /// webhook stages' dependencies and the producer name.
    pub hooks: Option<(webhooks::Deps, String)>,
    pub bus: Arc<dyn bus::Bus>,
    /// The lanes bots' connections are dealt to (`--lanes`), for `/metrics`.
    pub lanes: Option<Arc<lifecycle::lanes::Lanes>>,
}

/// The process's HTTP service: a bot call straight to ingest, anything else through the
/// router. Straight, because under load nearly every request is a bot call, and the router's
/// work for one (its path tree searched, the URL parameters kept in the request's extensions,
/// the answer mapped by two layers) was about a twenty-fifth of a passthrough call's
/// instructions.
#[derive(Clone)]
pub struct Service {
    ingest: Option<ingest::Ingest>,
    router: Router,
}

impl tower::Service<Request<Body>> for Service {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match &self.ingest {
            Some(i) if req.uri().path().starts_with("/bot") => {
                let i = i.clone();
                Box::pin(shielded(async move { i.handle(req).await }))
            }
            _ => {
                let router = self.router.clone();
                Box::pin(shielded(async move {
                    match tower::ServiceExt::oneshot(router, req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }))
            }
        }
    }
}

/// A request's work, a panic in it answered with a Bot API-shaped 500, on every route. The
/// work is made inside the future, so nothing of it runs outside the catch.
async fn shielded(
    work: impl std::future::Future<Output = Response<Body>>,
) -> Result<Response<Body>, Infallible> {
    Ok(AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(on_panic))
}

pub fn service(mut s: Surface) -> Service {
    // The router never sees a bot call while ingest runs here.
    let ingest = s.ingest.take();
    Service {
        ingest,
        router: router(s),
    }
}

fn router(s: Surface) -> Router {
    let (bus, lanes) = (s.bus.clone(), s.lanes.clone());
    // Shared, not cloned per request (a clone of every role's handles).
    let s = Arc::new(s);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let (bus, lanes) = (bus.clone(), lanes.clone());
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        crate::metrics::render(bus.as_ref(), lanes.as_deref()),
                    )
                }
            })
            .fallback(wrong_verb),
        )
        .route("/healthz", get(|| async { "ok" }).fallback(wrong_verb))
        .fallback(move |req: Request<Body>| dispatch(&s, req))
}

/// The request's branch, boxed: axum boxes the future of every request, and an `async fn`
/// with every branch inside would be as large as its largest branch (a download's state, ten
/// times a bot call's), copied for every call (`bench/README.md`).
///
/// Bot calls come here only when this process does not run ingest ([`Service`] takes them
/// otherwise): they are not found.
fn dispatch(s: &Arc<Surface>, req: Request<Body>) -> BoxFuture<'static, Response<Body>> {
    let path = req.uri().path();
    match &s.downloads {
        Some(d) if path.starts_with("/file/bot") => {
            let d = d.clone();
            Box::pin(async move { d.handle(req).await })
        }
        Some(d) if path.starts_with("/storage/") => {
            let d = d.clone();
            Box::pin(async move { d.storage(req).await })
        }
        _ if path.starts_with("/hook/") && s.hooks.is_some() => {
            let s = s.clone();
            Box::pin(async move { hook(&s, req).await })
        }
        _ => Box::pin(std::future::ready(ApiError::not_found().into_response())),
    }
}

async fn hook(s: &Surface, req: Request<Body>) -> Response<Body> {
    let Some((deps, producer)) = &s.hooks else {
        return ApiError::not_found().into_response();
    };
    if req.method() != http::Method::POST {
        return ApiError::method_not_allowed().into_response();
    }
    let path = req.uri().path().to_owned();
    let secret = req
        .headers()
        .get("x-telegram-bot-api-secret-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Ok(body) = axum::body::to_bytes(req.into_body(), 1024 * 1024 + 1).await else {
        return ApiError::too_large().into_response();
    };
    let a = webhooks::hook::receive(deps, producer, &path, secret.as_deref(), &body).await;
    Response::builder()
        .status(a.status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(a.body))
        .unwrap_or_default()
}

/// Serves `service` on `listener` until `stop`: then takes no more connections, lets each open
/// one finish the request it is answering (an idle one closes), and returns when all have
/// ended, or after `wait` (a client that stops sending mid-body must not keep the process:
/// what is left is dropped with the runtime it runs on). With `lanes`, each connection is dealt to a lane ([`lifecycle::lanes`]) and served
/// there, with every task its calls spawn; without, on the runtime this runs on.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    lanes: Option<Arc<lifecycle::lanes::Lanes>>,
    stop: tokio_util::sync::CancellationToken,
    wait: std::time::Duration,
) {
    let open = tokio_util::task::TaskTracker::new();
    loop {
        let tcp = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // A client's connection that failed before it was taken, or no descriptor
                    // left: the open connections go on, and accepting is tried again.
                    tracing::debug!(%error, "could not accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Answers go out as they are written, as nginx's `tcp_nodelay on`: a response written
        // in two parts (a streamed body) must not wait for the client's ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let (service, stop) = (service.clone(), stop.clone());
        match &lanes {
            Some(lanes) => {
                // Registered again by the lane's runtime, which drives its reads and writes.
                let tcp = match tcp.into_std() {
                    Ok(tcp) => tcp,
                    Err(error) => {
                        tracing::debug!(%error, "could not hand a connection to a lane");
                        continue;
                    }
                };
                lanes.spawn(open.track_future(async move {
                    match tokio::net::TcpStream::from_std(tcp) {
                        Ok(tcp) => connection(tcp, service, stop).await,
                        Err(error) => tracing::debug!(%error, "a lane could not take a connection"),
                    }
                }));
            }
            None => {
                open.spawn(connection(tcp, service, stop));
            }
        }
    }
    // Closed before the wait: a client connecting now is refused at once (and knows nothing
    // was sent), not left in the backlog until the process exits.
    drop(listener);
    open.close();
    if tokio::time::timeout(wait, open.wait()).await.is_err() {
        tracing::warn!(
            connections = open.len(),
            "connections still open past the drain; closing them"
        );
    }
}

/// One client's connection, HTTP/1.1 or HTTP/2, until it closes or `stop` (then after the
/// request in hand is answered).
async fn connection(
    tcp: tokio::net::TcpStream,
    service: Service,
    stop: tokio_util::sync::CancellationToken,
) {
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let service = tower::ServiceExt::map_request(service, |req: Request<hyper::body::Incoming>| {
        req.map(Body::new)
    });
    let conn = builder.serve_connection(
        hyper_util::rt::TokioIo::new(tcp),
        hyper_util::service::TowerToHyperService::new(service),
    );
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::trace!(%error, "a connection ended with an error");
            }
            return;
        }
        _ = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(error) = conn.await {
        tracing::trace!(%error, "a connection ended with an error");
    }
}

async fn wrong_verb() -> Response<Body> {
    ApiError::method_not_allowed().into_response()
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    ApiError::internal("unexpected failure").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn assert_shaped_500(answer: Response<Body>) {
        assert_eq!(answer.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["error_code"], 500, "{v}");
        assert!(v["description"].is_string(), "{v}");
    }

    /// A panicking handler gets the bot a shaped 500, and the process goes on.
    #[tokio::test]
    async fn a_panic_in_a_bot_call_is_a_shaped_500() {
        let answer = shielded(async {
            if std::hint::black_box(true) {
                panic!("a handler's bug");
            }
            Response::new(Body::empty())
        })
        .await
        .unwrap();
        assert_shaped_500(answer).await;
    }

    /// The router's routes are behind the same catch: a panic there is a shaped 500 too.
    #[tokio::test]
    async fn a_panic_on_another_route_is_a_shaped_500() {
        let service = Service {
            ingest: None,
            router: Router::new().route(
                "/metrics",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("a route's bug");
                    }
                    "never"
                }),
            ),
        };
        let req = Request::get("/metrics").body(Body::empty()).unwrap();
        let answer = tower::ServiceExt::oneshot(service, req).await.unwrap();
        assert_shaped_500(answer).await;
    }
}
