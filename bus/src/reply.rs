//! Request–reply over the bus, correlated by call id.
//!
//! Ingest registers a call before publishing it and waits on the returned [`Waiter`]; egress,
//! consuming this instance's reply topic, hands each response to [`Correlator::complete`].
//! When the client goes away the waiter is dropped and its entry removed, so a late answer is
//! counted and dropped here (the processor has already recorded it in the store).

use schemas::{CallId, Envelope, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Default)]
pub struct Correlator {
    waiting: Mutex<HashMap<CallId, oneshot::Sender<Envelope<Response>>>>,
}

impl Correlator {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn register(self: &Arc<Self>, call_id: CallId) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(call_id, tx);
        Waiter {
            call_id,
            rx,
            correlator: self.clone(),
        }
    }

    /// Hands a response to its waiting call; false when nobody waits for it any more.
    pub fn complete(&self, response: Envelope<Response>) -> bool {
        match self.deliver(response) {
            Delivery::Taken => true,
            Delivery::ClientGone => false,
            Delivery::NotHere(_) => {
                crate::metrics::LATE_REPLIES.inc();
                false
            }
        }
    }

    /// Hands a response to its call if the call is registered here; a call this correlator
    /// never had, or no longer has, gets the response back.
    pub fn deliver(&self, response: Envelope<Response>) -> Delivery {
        let tx = self.lock().remove(&response.header.call_id);
        match tx {
            Some(tx) => match tx.send(response) {
                Ok(()) => Delivery::Taken,
                Err(_) => Delivery::ClientGone,
            },
            None => Delivery::NotHere(response),
        }
    }

    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<CallId, oneshot::Sender<Envelope<Response>>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What became of a response handed to [`Correlator::deliver`].
pub enum Delivery {
    /// Its call was waiting here and has it.
    Taken,
    /// Its call was registered here, but the client had gone.
    ClientGone,
    /// No call of this correlator waits for it: the response, back.
    NotHere(Envelope<Response>),
}

/// One call's pending answer. Dropping it (the client left) unregisters the call.
pub struct Waiter {
    call_id: CallId,
    rx: oneshot::Receiver<Envelope<Response>>,
    correlator: Arc<Correlator>,
}

impl Waiter {
    /// The response, or `None` when the deadline passes first.
    pub async fn wait(mut self, timeout: std::time::Duration) -> Option<Envelope<Response>> {
        tokio::time::timeout(timeout, &mut self.rx).await.ok()?.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.correlator.lock().remove(&self.call_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{BodyBytes, BotId, Origin, Stages};
    use std::time::Duration;

    fn response(id: CallId) -> Envelope<Response> {
        Envelope::new(
            id,
            BotId(1),
            "test",
            None,
            Response {
                status: 200,
                content_type: None,
                body: BodyBytes::inline(b"{}"),
                origin: Origin::Upstream,
                stages: Stages::default(),
            },
        )
    }

    #[tokio::test]
    async fn resolves_by_call_id_and_forgets_dropped_waiters() {
        let c = Correlator::new();
        let (a, b) = (CallId::new(), CallId::new());
        let wa = c.register(a);
        let wb = c.register(b);
        assert!(c.complete(response(b)));
        assert_eq!(
            wb.wait(Duration::from_secs(1))
                .await
                .unwrap()
                .header
                .call_id,
            b
        );
        drop(wa);
        assert_eq!(c.waiting(), 0);
        assert!(!c.complete(response(a)));
        let wt = c.register(CallId::new());
        assert!(wt.wait(Duration::from_millis(10)).await.is_none());
        assert_eq!(c.waiting(), 0);
    }
}
