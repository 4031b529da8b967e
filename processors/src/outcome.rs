//! Recording a call's outcome and answering its caller. The two run together; the offset is
//! committed only after both (invariant 3 asks for the outcome before the commit). Answering
//! before the write lands does not widen the window in which a crash could make a call run
//! twice: that window is from upstream's answer to the write, whatever the client got.

use crate::{metrics, Deps, Run};
use schemas::{ApiError, Call, Envelope, Response};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use store::{CallRow, Outcome, StoreError};

/// Retries a store write that may succeed on a second try; gives up after three.
async fn retry<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=3 {
        match f().await {
            Ok(()) => return,
            Err(error) if error.is_retriable() && attempt < 3 => {
                tracing::warn!(%error, attempt, what, "store write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(error) => {
                metrics::STORE_ERRORS.inc();
                tracing::error!(%error, what, "store write failed; giving up");
                return;
            }
        }
    }
}

/// The secret part of the call's token (after `:`), opened from its sealing: what must not
/// appear in clear in the record, wherever a bot put it (`setWebhook url=https://host/<token>`)
/// or an answer echoes it.
fn token_secret(deps: &Deps, env: &Envelope<Call>) -> Option<String> {
    let sealed = env.payload.token.as_ref()?;
    let token = deps.sealer.open(env.header.bot_id, sealed).ok()?;
    Some(token.expose().split_once(':')?.1.to_owned())
}

const SCRUBBED: &str = "<token>";

fn scrub_value(v: &mut serde_json::Value, secret: &str) {
    match v {
        serde_json::Value::String(s) if s.contains(secret) => *s = s.replace(secret, SCRUBBED),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| scrub_value(v, secret)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|v| scrub_value(v, secret)),
        _ => {}
    }
}

/// The response as the record keeps it: the token, if the answer echoes it, replaced.
fn scrubbed(response: Response, secret: Option<&str>) -> Response {
    // Text is searched as text (a substring search, not a comparison at every offset): every
    // call's answer is looked through.
    let echoed = secret
        .filter(|secret| !secret.is_empty())
        .filter(|secret| match &response.body {
            schemas::BodyBytes::Base64 { .. } => response
                .body
                .inline_bytes()
                .is_some_and(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes())),
            body => schemas::mask::body_contains(body, secret),
        });
    let Some(secret) = echoed else {
        return response;
    };
    let text = response
        .body
        .inline_bytes()
        .map(|b| String::from_utf8_lossy(&b).replace(secret, SCRUBBED))
        .unwrap_or_default();
    Response {
        body: schemas::BodyBytes::inline(text.as_bytes()),
        ..response
    }
}

/// `answered_ms`: when the caller was answered (or is, on the way that records first).
fn audit_row(
    deps: &Deps,
    env: &Envelope<Call>,
    outcome: Outcome,
    response: &Response,
    secret: Option<&str>,
    answered_ms: i64,
) -> CallRow {
    let call = &env.payload;
    // Arrival is when the call id was made, as the request came in; the header's time is
    // when ingest published it, after reading the body (a long upload).
    let arrived = env.header.call_id.time_ms();
    CallRow {
        call_id: env.header.call_id,
        bot_id: env.header.bot_id,
        received_ms: arrived,
        token_fingerprint: call.token_fingerprint.0.clone(),
        method: call.method.clone(),
        http_method: call.http_method.clone(),
        test_env: call.test_env,
        params: {
            let mut p = call.audit_params();
            if let Some(secret) = secret {
                for v in p.values_mut() {
                    scrub_value(v, secret);
                }
            }
            p
        },
        blobs: call.blobs().into_iter().cloned().collect(),
        outcome,
        http_status: Some(response.status),
        error_code: response.error_code(),
        description: if response.status >= 400 {
            response.description()
        } else {
            None
        },
        latency_ms: Some((answered_ms - arrived).max(0) as u64),
        stages: response.stages,
        encoding: call.encoding(),
        request: Some(call.seal_request(&deps.sealer, env.header.bot_id)),
        answer_sha256: answer_digest(response),
        answer: None,
    }
}

/// The sha256 of the body the client got: hashed here when it is inline; a body kept as a
/// blob is content-addressed, so its reference carries it.
fn answer_digest(response: &Response) -> Option<String> {
    use sha2::Digest;
    match &response.body {
        schemas::BodyBytes::Blob { blob } => Some(blob.sha256.clone()),
        body => body.inline_bytes().map(|b| {
            // Into a buffer at once: `hex::encode` pushes its digits one by one.
            let mut digits = [0u8; 64];
            hex::encode_to_slice(sha2::Sha256::digest(&b), &mut digits)
                .expect("a sha256 is 64 hex digits");
            String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
        }),
    }
}

tokio::task_local! {
    static ANSWERING: Arc<AtomicBool>;
}

/// Runs a call's `work`, setting `answering` once the work has its answer ([`mark_answering`]):
/// from then on it only delivers and records that answer, which a stop must not cut short (a
/// long poll's `select!` in `run` reads it). Not an `async fn`, for the reason
/// `telegram::sent::track` gives.
pub(crate) fn watch_answering<F: Future>(
    answering: Arc<AtomicBool>,
    work: F,
) -> impl Future<Output = F::Output> {
    ANSWERING.scope(answering, work)
}

/// The call's answer is settled (made, stored before, or given by ingest): see
/// [`watch_answering`]. Outside its scope, nothing happens.
pub(crate) fn mark_answering() {
    let _ = ANSWERING.try_with(|a| a.store(true, Ordering::Relaxed));
}

/// Records the outcome (the audit row, and the result for redeliveries when the bus can
/// redeliver) and answers, concurrently. Without redeliveries nothing waits for the audit row:
/// the caller is answered, then the row is made and queued for the store's next batch.
pub(crate) async fn finish(deps: &Deps, run: &Run, env: &Envelope<Call>, response: Response) {
    mark_answering();
    let outcome = if response.status < 400 {
        Outcome::Ok
    } else {
        Outcome::Error
    };
    learn_username(deps, env, &response).await;
    if !run.durable {
        // Nothing waits for the record, so the caller is answered first and the record (its
        // request sealed, its answer hashed) made after: it is queued, the answer kept beside
        // it while results are.
        let answered = response.clone();
        let here = reply(deps, &run.producer, env, response).await;
        let answered_ms = schemas::now_ms();
        if here {
            // The caller's task was woken on this worker, behind this one: it writes the
            // answer to the bot when this task gives the worker up, so the record is made
            // after that, not before it (a call's latency without the record's few
            // microseconds, which at a bot's fixed concurrency is throughput). Deferred, the
            // task comes back once the worker has run what else was ready (a long poll
            // stopped meanwhile waits for it: `watch_answering`).
            tokio::task::yield_now().await;
        }
        let secret = token_secret(deps, env);
        let row = audit_row(
            deps,
            env,
            outcome,
            &answered,
            secret.as_deref(),
            answered_ms,
        );
        let queued = if run.result_ttl.is_zero() {
            deps.store.queue_call(row).await
        } else {
            let kept = scrubbed(answered, secret.as_deref());
            let expires = schemas::now_ms() + run.result_ttl.as_millis() as i64;
            deps.store.queue_outcome(row, kept, expires).await
        };
        if let Err(error) = queued {
            metrics::STORE_ERRORS.inc();
            tracing::error!(%error, "could not queue the audit row");
        }
        return;
    }
    let secret = token_secret(deps, env);
    let expires = schemas::now_ms() + run.result_ttl.as_millis() as i64;
    let row = audit_row(
        deps,
        env,
        outcome,
        &response,
        secret.as_deref(),
        schemas::now_ms(),
    );
    // A redelivered call is answered from this: with the token scrubbed if it was echoed.
    let kept = scrubbed(response.clone(), secret.as_deref());
    // Boxed: only a durable bus takes this way, and both futures at once would otherwise make
    // every call's future (moved for each call) larger.
    Box::pin(async {
        tokio::join!(
            retry("outcome", || deps
                .store
                .record_outcome(&row, &kept, expires)),
            reply(deps, &run.producer, env, response),
        )
    })
    .await;
}

/// Remembers the username in a getMe answer, so the record can be searched by it
/// (`telepipe audit --bot @name`). getMe is rare: the write is awaited.
async fn learn_username(deps: &Deps, env: &Envelope<Call>, response: &Response) {
    if response.status != 200 || !env.payload.method.eq_ignore_ascii_case("getMe") {
        return;
    }
    let Some(body) = response.body.inline_bytes() else {
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    // The answer is the bot's own: its id must be the caller's.
    if let Some(name) = schemas::me_username(&v, env.header.bot_id.0) {
        keep_username(deps, env.header.bot_id, name).await;
    }
}

pub(crate) async fn keep_username(deps: &Deps, bot: schemas::BotId, name: &str) {
    if let Err(error) = deps.store.put_bot_username(bot, name).await {
        tracing::warn!(%error, "could not remember a bot's username");
    }
}

/// A call that ingest refused: only the audit row.
pub async fn record_rejected(deps: &Deps, env: &Envelope<Call>, err: &ApiError) {
    // Ingest gave the bot its answer; a stop must not record another.
    mark_answering();
    let secret = token_secret(deps, env);
    let row = audit_row(
        deps,
        env,
        Outcome::Rejected,
        &Response::from_error(err),
        secret.as_deref(),
        schemas::now_ms(),
    );
    retry("audit row", || deps.store.record_call(&row)).await;
}

/// Publishes the answer to the caller's reply topic; whether it was handed to the caller's
/// task in this process instead (woken on this worker: see [`finish`]).
pub async fn reply(deps: &Deps, producer: &str, env: &Envelope<Call>, response: Response) -> bool {
    let Some(topic) = &env.header.reply_to else {
        return false;
    };
    let mut out = Envelope::new(
        env.header.call_id,
        env.header.bot_id,
        producer,
        None,
        response,
    );
    if let Some(local) = deps.local_replies.as_ref().filter(|l| l.topic == *topic) {
        use bus::reply::Delivery;
        match local.correlator.deliver(out) {
            Delivery::Taken => return true,
            Delivery::ClientGone => {
                tracing::debug!("answer ready after its client left");
                return false;
            }
            // Not a call of this process (another one shares the instance name, or its client
            // left before the answer): the topic, as without the shortcut.
            Delivery::NotHere(back) => out = back,
        }
    }
    // Onto the bus: the token's secret, if the answer echoes it, as the call's mark.
    schemas::mask::mark_answer(&deps.sealer, env, &mut out.payload);
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        match bus::publish_envelope(deps.bus.as_ref(), topic, &out).await {
            Ok(()) => return false,
            Err(error) if error.is_retriable() && attempt < 5 => {
                tracing::warn!(%error, attempt, "could not publish an answer; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                tracing::error!(%error, "could not publish an answer; the outcome is in the store");
                return false;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row's digest is the lowercase hex sha256 of the bytes the client got; a body kept
    /// as a blob gives its own.
    #[test]
    fn the_answer_digest_is_the_bodys_sha256() {
        let answer = |body| Response {
            status: 200,
            content_type: None,
            body,
            origin: schemas::Origin::Upstream,
            stages: Default::default(),
        };
        assert_eq!(
            answer_digest(&answer(schemas::BodyBytes::inline(b"{}"))).as_deref(),
            Some("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
        );
        let blob = schemas::BlobRef {
            sha256: "ab".repeat(32),
            size: 1,
            key: "k".into(),
        };
        assert_eq!(
            answer_digest(&answer(schemas::BodyBytes::Blob { blob })),
            Some("ab".repeat(32))
        );
    }

    /// A token a bot put in a parameter, or an answer echoes, is kept out of the record.
    #[test]
    fn tokens_are_scrubbed_from_parameters_and_answers() {
        let secret = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
        let mut v = serde_json::json!({"url": format!("https://h/{secret}/hook"),
            "list": [secret], "n": 1});
        scrub_value(&mut v, secret);
        assert_eq!(v["url"], "https://h/<token>/hook");
        assert_eq!(v["list"][0], "<token>");
        let answer = Response {
            status: 200,
            content_type: None,
            body: schemas::BodyBytes::inline(
                format!(r#"{{"ok":true,"result":{{"url":"https://h/{secret}"}}}}"#).as_bytes(),
            ),
            origin: schemas::Origin::Upstream,
            stages: Default::default(),
        };
        let kept = scrubbed(answer.clone(), Some(secret));
        let text = String::from_utf8(kept.body.inline_bytes().unwrap().to_vec()).unwrap();
        assert_eq!(text, r#"{"ok":true,"result":{"url":"https://h/<token>"}}"#);
        assert_eq!(scrubbed(kept.clone(), Some(secret)), kept);
        assert_eq!(scrubbed(answer.clone(), None), answer);
        // Not JSON, and not text: found all the same.
        for raw in [format!("plain {secret} text").into_bytes(), {
            let mut b = vec![0xff, 0xfe];
            b.extend_from_slice(secret.as_bytes());
            b
        }] {
            let answer = Response {
                body: schemas::BodyBytes::inline(&raw),
                ..answer.clone()
            };
            let kept = scrubbed(answer.clone(), Some(secret));
            assert_ne!(kept, answer);
            let bytes = kept.body.inline_bytes().unwrap().to_vec();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
}
