//! Named tasks and graceful shutdown, shared by every role.
//!
//! A role spawns its tasks into a [`Tasks`] group. Each task has a name that appears on every
//! log line it writes; when one fails, the group cancels the shared shutdown token so the rest
//! drain and stop (a half-running gateway is worse than a stopped one). [`Tasks::join`] waits
//! for all of them and reports the first failure.
//!
//! # Layout
//! This file: [`Tasks`], [`TaskFailed`], [`shutdown_on_signal`]. [`lanes`]: single-threaded
//! runtimes, one per core, that a process deals its connections to.

use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub mod lanes;

pub use tokio_util::sync::CancellationToken as Shutdown;

#[derive(Debug, Clone, thiserror::Error)]
#[error("task {task} failed: {error}")]
pub struct TaskFailed {
    pub task: String,
    pub error: String,
}

/// A group of named tasks under one shutdown token.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    first_failure: Arc<Mutex<Option<TaskFailed>>>,
}

impl Tasks {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shutdown,
            first_failure: Arc::new(Mutex::new(None)),
        }
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Spawns a task that runs until it returns; an error cancels the whole group.
    pub fn spawn<F, E>(&self, name: impl Into<String>, fut: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let name = name.into();
        let shutdown = self.shutdown.clone();
        let failure = self.first_failure.clone();
        let span = tracing::info_span!("task", name = %name);
        self.tracker.spawn(
            async move {
                tracing::debug!("task started");
                // A panic is a failure like any other: the group stops, rather than run on
                // without the task.
                let result = match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(panic) => Err(format!("panicked: {}", panic_message(&*panic))),
                };
                match result {
                    Ok(()) => tracing::debug!("task finished"),
                    Err(e) => {
                        tracing::error!(error = %e, "task failed; shutting down");
                        let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                        if slot.is_none() {
                            *slot = Some(TaskFailed {
                                task: name,
                                error: e,
                            });
                        }
                        shutdown.cancel();
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Waits for every task to end (they end when the shutdown token is cancelled and they have
    /// drained); returns the first failure, if any.
    pub async fn join(&self) -> Result<(), TaskFailed> {
        self.tracker.close();
        self.tracker.wait().await;
        match self
            .first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

/// What a panic said (`panic!("...")` carries a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
pub async fn shutdown_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
        _ = shutdown.cancelled() => return,
    }
    tracing::info!("signal received; shutting down");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_cancels_the_group_and_is_reported() {
        let tasks = Tasks::new(CancellationToken::new());
        let sd = tasks.shutdown().clone();
        tasks.spawn("waits", async move {
            sd.cancelled().await;
            Ok::<(), String>(())
        });
        tasks.spawn("fails", async { Err::<(), _>("boom".to_string()) });
        let err = tasks.join().await.unwrap_err();
        assert_eq!(err.task, "fails");
        assert!(tasks.shutdown().is_cancelled());
    }

    /// A task that panics fails its group like one that returns an error.
    #[tokio::test]
    async fn a_panic_cancels_the_group_too() {
        let tasks = Tasks::new(CancellationToken::new());
        let sd = tasks.shutdown().clone();
        tasks.spawn("waits", async move {
            sd.cancelled().await;
            Ok::<(), String>(())
        });
        tasks.spawn("panics", async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            if std::hint::black_box(true) {
                panic!("index out of bounds");
            }
            Ok::<(), String>(())
        });
        let err = tasks.join().await.unwrap_err();
        assert_eq!(err.task, "panics");
        assert!(err.error.contains("index out of bounds"), "{}", err.error);
        assert!(tasks.shutdown().is_cancelled());
    }
}
