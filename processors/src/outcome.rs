//! Recording a call's outcome and answering its caller. The two run together; the offset is
//! committed only after both (invariant 3 asks for the outcome before the commit). Answering
//! before the write lands does not widen the window in which a crash could make a call run
//! twice: that window is from upstream's answer to the write, whatever the client got.

use crate::{metrics, Deps, Run};
use schemas::{ApiError, Call, Envelope, Response};
use std::future::Future;
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

fn audit_row(env: &Envelope<Call>, outcome: Outcome, response: &Response) -> CallRow {
    let call = &env.payload;
    CallRow {
        call_id: env.header.call_id,
        bot_id: env.header.bot_id,
        received_ms: env.header.time_ms,
        token_fingerprint: call.token_fingerprint.0.clone(),
        method: call.method.clone(),
        http_method: call.http_method.clone(),
        test_env: call.test_env,
        params: call.audit_params(),
        blobs: call.blobs().into_iter().cloned().collect(),
        outcome,
        http_status: Some(response.status),
        error_code: response.error_code(),
        description: if response.status >= 400 {
            response.description()
        } else {
            None
        },
        latency_ms: Some((schemas::now_ms() - env.header.time_ms).max(0) as u64),
        stages: response.stages,
    }
}

/// Records the outcome (the audit row, and the result for redeliveries when the bus can
/// redeliver) and answers, concurrently. Without redeliveries nothing waits for the audit row:
/// it is queued for the store's next batch.
pub(crate) async fn finish(deps: &Deps, run: &Run, env: &Envelope<Call>, response: Response) {
    let outcome = if response.status < 400 {
        Outcome::Ok
    } else {
        Outcome::Error
    };
    let row = audit_row(env, outcome, &response);
    let Some(ttl) = run.result_ttl else {
        let (queued, ()) = tokio::join!(
            deps.store.queue_call(row),
            reply(deps, &run.producer, env, response),
        );
        if let Err(error) = queued {
            metrics::STORE_ERRORS.inc();
            tracing::error!(%error, "could not queue the audit row");
        }
        return;
    };
    let expires = schemas::now_ms() + ttl.as_millis() as i64;
    tokio::join!(
        retry("outcome", || deps
            .store
            .record_outcome(&row, &response, expires)),
        reply(deps, &run.producer, env, response.clone()),
    );
}

/// A call that ingest refused: only the audit row.
pub async fn record_rejected(deps: &Deps, env: &Envelope<Call>, err: &ApiError) {
    let row = audit_row(env, Outcome::Rejected, &Response::from_error(err));
    retry("audit row", || deps.store.record_call(&row)).await;
}

/// Publishes the answer to the caller's reply topic.
pub async fn reply(deps: &Deps, producer: &str, env: &Envelope<Call>, response: Response) {
    let Some(topic) = &env.header.reply_to else {
        return;
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
            Delivery::Taken => return,
            Delivery::ClientGone => {
                tracing::debug!("answer ready after its client left");
                return;
            }
            // Not a call of this process (another one shares the instance name, or its client
            // left before the answer): the topic, as without the shortcut.
            Delivery::NotHere(back) => out = back,
        }
    }
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        match bus::publish_envelope(deps.bus.as_ref(), topic, &out).await {
            Ok(()) => return,
            Err(error) if error.is_retriable() && attempt < 5 => {
                tracing::warn!(%error, attempt, "could not publish an answer; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                tracing::error!(%error, "could not publish an answer; the outcome is in the store");
                return;
            }
        }
    }
}
