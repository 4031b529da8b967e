//! The passthrough: a call goes to the Bot API upstream in the encoding the bot used, and the
//! answer comes back byte for byte — status, content type and body. One exception (ENHANCED.md):
//! an error answer that is not JSON (an HTML page from a proxy) is wrapped into the Bot API
//! error shape with the same status, because client libraries break on it.

use crate::failures;
use crate::{metrics, Deps};
use schemas::body::INLINE_LIMIT;
use schemas::{
    ApiError, BodyBytes, BotToken, Call, CallBody, Envelope, Origin, Part, Response, Stages,
};
use std::time::{Duration, Instant};
use telegram::botapi::{UpstreamAnswer, UpstreamBody, UpstreamError};
use tokio_util::io::ReaderStream;

/// Answer the client a little before its deadline, so the answer gets back in time.
pub(crate) const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// The call's token, unsealed; or the answer to give when it cannot be.
pub(crate) fn open_token(deps: &Deps, env: &Envelope<Call>) -> Result<BotToken, Response> {
    let Some(sealed) = &env.payload.token else {
        return Err(Response::from_error(&ApiError::unauthorized()));
    };
    deps.sealer.open(env.header.bot_id, sealed).map_err(|error| {
        tracing::error!(%error, "the call's token does not open; is TELEPIPE_SEAL_KEY the same on every role?");
        Response::from_error(&ApiError::internal("the call cannot be authenticated"))
    })
}

/// Time left before the client's deadline, less a margin for the answer to travel back.
/// At least a second, so a request upstream is never given no time at all.
pub(crate) fn time_left(call: &Call) -> Duration {
    crate::flood::time_left(call).max(Duration::from_secs(1))
}

/// Forwards the call; with flood control, a send or an edit waits its turn within Telegram's
/// limits first ([`crate::flood`]).
pub async fn execute(deps: &Deps, env: &Envelope<Call>) -> Response {
    match &deps.flood {
        // A bot without flood control pays a lookup or two, not a parse of its call.
        Some(flood)
            if flood.applies(env.header.bot_id)
                || crate::flood::Place::held_for(env.header.call_id) =>
        {
            if schemas::catalogue::puts_in_chat(&env.payload.method) {
                // Boxed: its queueing would otherwise be carried, and copied, by every call.
                return Box::pin(flood.send(deps, env)).await;
            }
            let answer = execute_once(deps, env).await;
            if env.payload.method.eq_ignore_ascii_case("getChat") {
                flood.learn_from_get_chat(env.header.bot_id, &env.payload, &answer);
            }
            answer
        }
        _ => execute_once(deps, env).await,
    }
}

/// Forwards the call once, now.
pub(crate) async fn execute_once(deps: &Deps, env: &Envelope<Call>) -> Response {
    let call = &env.payload;
    let token = match open_token(deps, env) {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    let body = match upstream_body(deps, &call.body).await {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    let timeout = time_left(call);
    // In the files stage, the call's attempt is recorded now (a run before may have got here).
    if let Err(answer) = crate::gate::pass().await {
        return answer;
    }

    let started = Instant::now();
    let result = deps
        .upstream
        .call(
            &token,
            call.test_env,
            &call.http_method,
            &call.method,
            &call.query,
            body,
            timeout,
        )
        .await;
    let upstream_ms = started.elapsed().as_millis() as u64;
    bus::metrics::UPSTREAM_SECONDS.observe(started.elapsed().as_secs_f64());
    let mut response = match result {
        Ok(answer) => {
            metrics::UPSTREAM_ANSWERED.inc();
            from_answer(deps, answer).await
        }
        Err(error) if error.forwarded() && !crate::router::safe_to_repeat(&call.method) => {
            // The call went out and its answer never came back: it may have been executed.
            // No 5xx (ENHANCED.md): clients resend on those, and a message would go out twice.
            let why = match error {
                UpstreamError::Timeout => schemas::UnknownOutcome::Late,
                _ => schemas::UnknownOutcome::BrokeOff,
            };
            metrics::UPSTREAM.with_label_values(&[error.label()]).inc();
            tracing::warn!(%error, "no answer from upstream for a call it was sent");
            Response::from_error(&ApiError::unknown_outcome(why))
        }
        Err(error) => {
            metrics::UPSTREAM.with_label_values(&[error.label()]).inc();
            failures::upstream("call")(error).into()
        }
    };
    response.stages = Stages {
        queue_ms: 0,
        upstream_ms,
    };
    response
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

pub(crate) async fn from_answer(deps: &Deps, a: UpstreamAnswer) -> Response {
    if a.status >= 400 && !is_json(&a.body) {
        let reason = http::StatusCode::from_u16(a.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        return Response {
            origin: Origin::Upstream,
            ..Response::from_error(&ApiError::new(a.status, reason))
        };
    }
    let body = if a.body.len() <= INLINE_LIMIT {
        BodyBytes::inline(&a.body)
    } else {
        let size = a.body.len() as u64;
        match deps.blobs.put_bytes(a.body.clone(), size).await {
            Ok(blob) => BodyBytes::Blob { blob },
            Err(error) => {
                // The call was executed: its answer goes back as it is, only heavier on the
                // bus, rather than an error that would invite a resend.
                tracing::error!(%error, "could not keep a large answer; sending it inline");
                BodyBytes::inline(&a.body)
            }
        }
    };
    Response {
        status: a.status,
        content_type: a.content_type,
        body,
        origin: Origin::Upstream,
        stages: Stages::default(),
    }
}

/// The call's body in the encoding the bot used; file parts stream from the blob store.
async fn upstream_body(deps: &Deps, body: &CallBody) -> Result<UpstreamBody, ApiError> {
    Ok(match body {
        CallBody::Empty => UpstreamBody::Empty,
        CallBody::Json { value } => {
            UpstreamBody::Json(serde_json::to_vec(value).expect("JSON values serialise"))
        }
        CallBody::Form { pairs } => {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                ser.append_pair(k, v);
            }
            UpstreamBody::Form(ser.finish())
        }
        CallBody::Multipart { parts } => {
            let mut form = reqwest::multipart::Form::new();
            for p in parts {
                form = match p {
                    Part::Text { name, value } => form.text(name.clone(), value.clone()),
                    Part::File {
                        name,
                        file_name,
                        content_type,
                        blob,
                    } => {
                        let reader = deps
                            .blobs
                            .open(blob)
                            .await
                            .map_err(failures::lost("an uploaded file"))?;
                        let body = reqwest::Body::wrap_stream(ReaderStream::new(reader));
                        let mut part =
                            reqwest::multipart::Part::stream_with_length(body, blob.size);
                        if let Some(f) = file_name {
                            part = part.file_name(f.clone());
                        }
                        // An unparseable content type is dropped rather than refused: upstream
                        // would ignore it anyway.
                        if let Some(m) = content_type
                            .as_deref()
                            .and_then(|c| c.parse::<mime::Mime>().ok())
                        {
                            part = part
                                .mime_str(m.as_ref())
                                .expect("a parsed mime type is valid");
                        }
                        form.part(name.clone(), part)
                    }
                };
            }
            UpstreamBody::Multipart(form)
        }
        CallBody::Other { content_type, data } => {
            let bytes = match data {
                BodyBytes::Blob { blob } => {
                    let mut reader = deps
                        .blobs
                        .open(blob)
                        .await
                        .map_err(failures::lost("the request body"))?;
                    let mut buf = Vec::with_capacity(blob.size as usize);
                    tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut buf)
                        .await
                        .map_err(failures::lost("the request body"))?;
                    buf
                }
                inline => inline.inline_bytes().unwrap_or_default().into_owned(),
            };
            UpstreamBody::Raw {
                content_type: content_type.clone(),
                data: bytes.into(),
            }
        }
    })
}
