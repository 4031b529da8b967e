//! The files stage's attempt, recorded when the call is about to reach upstream rather than
//! when it starts: a URL fetch or a probe can take minutes, and a stage that dies during them
//! has sent nothing, so its call may simply run again after the restart instead of being
//! answered with the 409 of an unknown outcome.
//!
//! [`scope`] runs a call's handler with a gate; [`pass`] (called by the passthrough before
//! every request it makes upstream) records the attempt the first time (`Store::begin`) and
//! lets the call on only if no other run recorded one. Outside a scope (the router, which
//! records its attempt at once: its calls go straight upstream) `pass` lets everything on.

use schemas::{ApiError, CallId, Response, UnknownOutcome};
use std::future::Future;
use std::sync::Arc;
use store::OutcomeStore;
use tokio::sync::OnceCell;

pub(crate) struct Gate {
    store: Arc<dyn OutcomeStore>,
    call_id: CallId,
    expires_ms: i64,
    /// The method only reads: a run before may have reached upstream, and it runs again.
    repeatable: bool,
    passed: OnceCell<Result<(), Response>>,
}

impl Gate {
    pub(crate) fn new(
        store: Arc<dyn OutcomeStore>,
        call_id: CallId,
        method: &str,
        expires_ms: i64,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            store,
            call_id,
            expires_ms,
            repeatable: crate::router::safe_to_repeat(method),
            passed: OnceCell::new(),
        })
    }
}

/// Whether the current call was stopped at the gate: its answer then is the gate's, not
/// upstream's (a handler must not take it for a failed send and try again).
pub(crate) fn refused() -> bool {
    GATE.try_with(|g| matches!(g.passed.get(), Some(Err(_))))
        .unwrap_or(false)
}

tokio::task_local! {
    static GATE: Arc<Gate>;
}

/// Runs `fut` behind `gate`. Not an `async fn`, which would hold `fut` twice
/// ([`telegram::sent::track`]).
pub(crate) fn scope<F: Future>(gate: Arc<Gate>, fut: F) -> impl Future<Output = F::Output> {
    GATE.scope(gate, fut)
}

/// Whether the current call may go upstream now: `Err` carries its answer when another run
/// of it got there first (the 409 of an unknown outcome, or that run's recorded answer).
pub(crate) async fn pass() -> Result<(), Response> {
    let Ok(gate) = GATE.try_with(Arc::clone) else {
        return Ok(());
    };
    gate.passed
        .get_or_init(|| async {
            match gate.store.begin(gate.call_id, gate.expires_ms).await {
                Ok(store::Begin::Fresh) => Ok(()),
                Ok(store::Begin::Done(mut stored)) => {
                    stored.origin = schemas::Origin::Stored;
                    Err(stored)
                }
                Ok(store::Begin::InFlight) if gate.repeatable => Ok(()),
                Ok(store::Begin::InFlight) => {
                    tracing::warn!(
                        "another run of this call reached upstream; not sending it again"
                    );
                    crate::metrics::REDELIVERED
                        .with_label_values(&["unknown_outcome"])
                        .inc();
                    Err(Response::from_error(&ApiError::unknown_outcome(
                        UnknownOutcome::Restarted,
                    )))
                }
                Err(error) => {
                    // Without the store the call can still be served; a crash now could
                    // repeat it (as when the router cannot record its attempt).
                    tracing::warn!(%error, "could not record the attempt; going ahead");
                    Ok(())
                }
            }
        })
        .await
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::sqlite::SqliteStore;

    #[tokio::test]
    async fn the_first_run_to_reach_upstream_records_the_attempt_and_the_next_is_stopped() {
        let store: Arc<dyn OutcomeStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let id = CallId::new();
        // Outside a scope: always on.
        assert!(pass().await.is_ok());
        let first = Gate::new(store.clone(), id, "sendDocument", i64::MAX);
        let ok = scope(first, async {
            (pass().await.is_ok(), pass().await.is_ok(), refused())
        })
        .await;
        assert_eq!(
            ok,
            (true, true, false),
            "one run passes as often as it asks"
        );
        // A second run of the same call (its stage died after the first got through).
        let second = Gate::new(store.clone(), id, "sendDocument", i64::MAX);
        let (answer, stopped) = scope(second, async { (pass().await, refused()) }).await;
        assert_eq!(answer.unwrap_err().status, 409);
        assert!(
            stopped,
            "the handler can tell the gate's answer from upstream's"
        );
        // A method that only reads runs again.
        let read = Gate::new(store.clone(), id, "getFile", i64::MAX);
        assert!(scope(read, pass()).await.is_ok());
        // A run that never reached upstream recorded nothing: another call id passes.
        let other = Gate::new(store, CallId::new(), "sendDocument", i64::MAX);
        assert!(scope(other, pass()).await.is_ok());
    }
}
