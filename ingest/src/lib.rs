//! The HTTP front door for `/bot<token>/<method>` and `/bot<token>/test/<method>`.
//!
//! A request is parsed (query string; JSON, form, multipart or opaque body), its token sealed,
//! its file parts streamed to the blob store, and the whole call published to the `calls`
//! topic with this instance's reply topic in its header. The handler then waits for the answer
//! that egress hands over through the [`bus::reply::Correlator`]. Requests that cannot be
//! parsed are answered at once with a Bot API-shaped error, and still published, marked
//! rejected, for the audit log.
//!
//! # Layout
//! - [`Ingest`]: configuration, state and the request handler (this file).
//! - [`parse`]: path, token and body parsing.
//! - [`metrics`]: calls by method and outcome, in-flight, latency.

pub mod metrics;
pub mod parse;

use axum::body::Body;
use axum::response::IntoResponse;
use bus::reply::Correlator;
use bus::Bus;
use http::{header, Request, Response, StatusCode};
use schemas::{ApiError, BodyBytes, Call, CallBody, CallId, Envelope, Sealer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::blobs::Blobs;
use tracing::Instrument;

#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// This instance's name; its reply topic is `responses.<instance>`.
    pub instance: String,
    /// Largest non-multipart body (JSON, form).
    pub max_body: usize,
    /// Largest single file part of a multipart body.
    pub max_upload: u64,
    /// Largest text part of a multipart body.
    pub max_text_part: usize,
    /// Most parts in one multipart body.
    pub max_parts: usize,
    /// How long a call may take end to end, before a long poll's own timeout is added.
    pub call_timeout: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            instance: "local".into(),
            max_body: 10 * 1024 * 1024,
            max_upload: 2000 * 1024 * 1024,
            max_text_part: 1024 * 1024,
            max_parts: 200,
            call_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: IngestConfig,
    bus: Arc<dyn Bus>,
    blobs: Arc<dyn Blobs>,
    sealer: Sealer,
    correlator: Arc<Correlator>,
    reply_topic: String,
    producer: String,
}

/// How long past a call's deadline ingest still waits: the processor answers by the deadline,
/// this covers the trip back.
const REPLY_GRACE: Duration = Duration::from_secs(5);

/// The answer to a call the bus did not take. Refused outright, nothing will run it: a 503,
/// and the bot may send it again. Unconfirmed, it may yet run: unless it only reads, the 409
/// of an unknown outcome, since a 5xx would invite a second send.
fn not_queued(error: &bus::BusError, method: &str) -> ApiError {
    if error.may_have_been_stored() && !schemas::catalogue::only_reads(method) {
        ApiError::unknown_outcome(schemas::UnknownOutcome::Unconfirmed)
    } else {
        ApiError::unavailable("the gateway cannot accept calls now")
    }
}

impl Ingest {
    pub fn new(
        cfg: IngestConfig,
        bus: Arc<dyn Bus>,
        blobs: Arc<dyn Blobs>,
        sealer: Sealer,
        correlator: Arc<Correlator>,
    ) -> Self {
        let reply_topic = bus::topics::responses(&cfg.instance);
        let producer = format!("ingest/{}", cfg.instance);
        Self {
            inner: Arc::new(Inner {
                cfg,
                bus,
                blobs,
                sealer,
                correlator,
                reply_topic,
                producer,
            }),
        }
    }

    /// The topics this instance needs.
    pub fn topics(&self) -> Vec<String> {
        vec![
            bus::topics::CALLS.to_owned(),
            bus::topics::CALLS_CANCEL.to_owned(),
            self.inner.reply_topic.clone(),
        ]
    }

    /// Handles one request whose path starts with `/bot`.
    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let call_id = CallId::new();
        // A span is ~2.5% of a plain call's instructions in the gateway (made, its fields
        // formatted, entered on every poll), and the ingest's own events name the call: only an
        // upload, whose parts stream through the blob store (which logs its failures deep
        // inside), gets one. The processors' span covers the call's work.
        if parse::is_multipart(req.headers()) {
            let span = tracing::info_span!("call", %call_id);
            self.handle_inner(call_id, req).instrument(span).await
        } else {
            self.handle_inner(call_id, req).await
        }
    }

    async fn handle_inner(&self, call_id: CallId, req: Request<Body>) -> Response<Body> {
        let started = Instant::now();
        let me = &self.inner;
        let (parts, body) = req.into_parts();
        let target = parse::target(parts.uri.path());
        let (fingerprint, token) = me.sealer.admit(&target.token);
        let bot_id = token
            .as_ref()
            .map_or(schemas::BotId::UNKNOWN, |(t, _)| t.bot_id());
        let mut call = Call {
            token: token.as_ref().map(|(_, sealed)| sealed.clone()),
            token_fingerprint: fingerprint,
            test_env: target.test_env,
            method: target.method.clone(),
            http_method: parts.method.as_str().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            body: CallBody::Empty,
            deadline_ms: 0,
            rejected: None,
            staged: None,
        };
        let label = schemas::catalogue::label(&call.method);
        let _in_flight = metrics::InFlight::start();

        let refusal = if token.is_none() {
            Some(ApiError::unauthorized())
        } else if call.method.is_empty() || call.method.contains('/') {
            Some(ApiError::not_found())
        } else if parts.method != http::Method::GET && parts.method != http::Method::POST {
            Some(ApiError::method_not_allowed())
        } else {
            match parse::body(&me.cfg, me.blobs.as_ref(), &parts.headers, body, call_id).await {
                Ok(b) => {
                    call.body = b;
                    None
                }
                Err(e) => Some(e),
            }
        };
        // On the bus the token's secret, wherever the bot put it, is the call's mark.
        let secret = token
            .as_ref()
            .and_then(|(t, _)| t.expose().split_once(':').map(|(_, s)| s.to_owned()));
        if let Some(secret) = secret
            .as_deref()
            .filter(|s| schemas::mask::call_contains(&call, s))
        {
            let mark = me.sealer.token_mark(call_id);
            schemas::mask::replace_in_call(&mut call, secret, &mark);
        }
        let timeout = me.cfg.call_timeout + parse::long_poll(&call);
        call.deadline_ms = schemas::now_ms() + timeout.as_millis() as i64;
        tracing::debug!(%call_id, bot_id = %bot_id, method = %call.method, "call received");

        if let Some(err) = refusal {
            call.rejected = Some(err.clone());
            let env = Envelope::new(call_id, bot_id, &me.producer, None, call);
            if let Err(error) =
                bus::publish_envelope_owned(me.bus.as_ref(), bus::topics::CALLS, env).await
            {
                tracing::warn!(%error, %call_id, "could not record a rejected call");
            }
            metrics::observe(label, "rejected", started);
            return err.into_response();
        }

        // Register before publishing: the answer may come back before `publish` returns.
        let waiter = me.correlator.register(call_id);
        let env = Envelope::new(
            call_id,
            bot_id,
            &me.producer,
            Some(me.reply_topic.clone()),
            call,
        );
        if let Err(error) =
            bus::publish_envelope_owned(me.bus.as_ref(), bus::topics::CALLS, env).await
        {
            tracing::error!(%error, %call_id, "could not publish a call");
            metrics::observe(label, "unavailable", started);
            return not_queued(&error, &target.method).into_response();
        }
        // Dropped with the request when its client goes away first: a send still waiting in a
        // flood control queue is then not sent.
        let gone = schemas::catalogue::puts_in_chat(&target.method)
            .then(|| ClientGone::arm(&self.inner, call_id, bot_id));
        let reply = waiter.wait(timeout + REPLY_GRACE).await;
        if let Some(gone) = gone {
            gone.disarm();
        }
        match reply {
            Some(reply) => {
                let mut r = reply.payload;
                if let Some(secret) = secret
                    .as_deref()
                    .filter(|_| schemas::mask::body_contains(&r.body, schemas::mask::MARK_PREFIX))
                {
                    let mark = me.sealer.token_mark(call_id);
                    schemas::mask::replace_in_response(&mut r, &mark, secret);
                }
                let outcome = if r.status < 400 { "ok" } else { "error" };
                metrics::observe(label, outcome, started);
                let reads = schemas::catalogue::only_reads(&target.method);
                self.respond(call_id, r, reads).await
            }
            None => {
                tracing::warn!(%call_id, "no answer from the pipeline before the deadline");
                metrics::observe(label, "timeout", started);
                // The call is on the bus: it may have been sent, or be sent yet. A 5xx would
                // invite a resend (ENHANCED.md), so only a read gets one.
                if schemas::catalogue::only_reads(&target.method) {
                    ApiError::gateway_timeout("the call took too long").into_response()
                } else {
                    ApiError::unknown_outcome(schemas::UnknownOutcome::NoAnswer).into_response()
                }
            }
        }
    }

    /// The answer as HTTP. `reads`: the call only reads, so losing its answer may be a 5xx.
    async fn respond(&self, call_id: CallId, r: schemas::Response, reads: bool) -> Response<Body> {
        let mut builder = Response::builder()
            .status(StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY));
        if let Some(ct) = &r.content_type {
            builder = builder.header(header::CONTENT_TYPE, ct.as_str());
        }
        let body = match r.body {
            BodyBytes::Blob { blob } => match self.inner.blobs.open(&blob).await {
                Ok(reader) => {
                    builder = builder.header(header::CONTENT_LENGTH, blob.size);
                    Body::from_stream(tokio_util::io::ReaderStream::new(reader))
                }
                Err(error) => {
                    tracing::error!(%error, %call_id, "answer blob is missing");
                    // The call went upstream: no 5xx for one that may have changed something.
                    return if reads {
                        ApiError::internal("the answer was lost")
                    } else {
                        ApiError::unknown_outcome(schemas::UnknownOutcome::AnswerLost)
                    }
                    .into_response();
                }
            },
            inline => Body::from(inline.into_inline_bytes().unwrap_or_default()),
        };
        builder
            .body(body)
            .unwrap_or_else(|_| ApiError::internal("bad answer headers").into_response())
    }
}

/// Publishes a call's `CallCancelled` when dropped armed: its request ended before the answer
/// came, which (the deadline aside, after which it is disarmed) is its client going away.
struct ClientGone {
    /// Armed: the ingest, and the call. Only a call whose client went away pays for its
    /// record.
    armed: Option<(Arc<Inner>, CallId, schemas::BotId)>,
}

impl ClientGone {
    fn arm(me: &Arc<Inner>, call_id: CallId, bot_id: schemas::BotId) -> Self {
        Self {
            armed: Some((me.clone(), call_id, bot_id)),
        }
    }

    fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for ClientGone {
    fn drop(&mut self) {
        let (Some((me, call_id, bot_id)), Ok(rt)) =
            (self.armed.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        metrics::CLIENTS_GONE.inc();
        rt.spawn(async move {
            let env = Envelope::new(
                call_id,
                bot_id,
                &me.producer,
                None,
                schemas::CallCancelled::default(),
            );
            if let Err(error) =
                bus::publish_envelope(me.bus.as_ref(), bus::topics::CALLS_CANCEL, &env).await
            {
                // The call then waits its turn and is sent: what happened before this existed.
                tracing::warn!(%error, %call_id, "could not publish a client's going away");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::not_queued;
    use bus::BusError;

    #[test]
    fn a_call_the_bus_may_hold_is_not_refused_with_a_5xx() {
        let unconfirmed = BusError::Unconfirmed("timed out".into());
        let refused = BusError::Backend("broker down".into());
        assert_eq!(not_queued(&unconfirmed, "sendMessage").error_code, 409);
        assert_eq!(not_queued(&unconfirmed, "getMe").error_code, 503);
        assert_eq!(not_queued(&refused, "sendMessage").error_code, 503);
    }
}
