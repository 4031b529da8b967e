//! Progress of long transfers (a URL being fetched, a file going up over MTProto): bytes into
//! `telepipe_upload_bytes_total{stage}`, the number running in `telepipe_uploads_running{stage}`,
//! and a log line every few seconds with how far it is, so a 2 GB upload is never silent.

use bytes::Bytes;
use futures_util::Stream;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(5);

/// A byte stream that reports how much of it has gone by.
pub struct Progress<S> {
    inner: S,
    stage: &'static str,
    /// Zero when not known (a URL without Content-Length).
    total: u64,
    done: u64,
    started: Instant,
    logged: Instant,
}

impl<S> Progress<S> {
    pub fn new(inner: S, stage: &'static str, total: u64) -> Self {
        crate::metrics::UPLOADS_RUNNING
            .with_label_values(&[stage])
            .inc();
        let now = Instant::now();
        Self {
            inner,
            stage,
            total,
            done: 0,
            started: now,
            logged: now,
        }
    }

    fn log(&self, what: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        let mb_s = self.done as f64 / 1e6 / secs.max(1e-3);
        if self.total > 0 {
            let percent = (self.done as f64 * 100.0 / self.total as f64).min(100.0);
            tracing::info!(
                stage = self.stage,
                bytes = self.done,
                total = self.total,
                percent = format!("{percent:.1}"),
                mb_s = format!("{mb_s:.1}"),
                "{what}"
            );
        } else {
            tracing::info!(
                stage = self.stage,
                bytes = self.done,
                mb_s = format!("{mb_s:.1}"),
                "{what}"
            );
        }
    }
}

impl<S> Drop for Progress<S> {
    fn drop(&mut self) {
        crate::metrics::UPLOADS_RUNNING
            .with_label_values(&[self.stage])
            .dec();
        if self.started.elapsed() >= LOG_EVERY {
            self.log("transfer ended");
        }
    }
}

impl<S: Stream<Item = io::Result<Bytes>> + Unpin> Stream for Progress<S> {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            let n = chunk.len() as u64;
            self.done += n;
            crate::metrics::UPLOAD_BYTES
                .with_label_values(&[self.stage])
                .inc_by(n);
            if self.logged.elapsed() >= LOG_EVERY {
                self.logged = Instant::now();
                self.log("transfer in progress");
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn counts_what_goes_by_and_how_many_run() {
        let chunks = (0..4).map(|_| Ok(Bytes::from_static(&[0u8; 1000])));
        let running = || {
            crate::metrics::UPLOADS_RUNNING
                .with_label_values(&["test"])
                .get()
        };
        let before = crate::metrics::UPLOAD_BYTES
            .with_label_values(&["test"])
            .get();
        let mut p = Progress::new(futures_util::stream::iter(chunks), "test", 4000);
        assert_eq!(running(), 1);
        while p.next().await.is_some() {}
        assert_eq!(p.done, 4000);
        drop(p);
        assert_eq!(running(), 0);
        let after = crate::metrics::UPLOAD_BYTES
            .with_label_values(&["test"])
            .get();
        assert_eq!(after - before, 4000);
    }
}
