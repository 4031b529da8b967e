//! Whether the call being processed has gone to Telegram yet: what decides the answer when
//! its handler fails halfway (a panic). Before anything went out a 500 is honest; after, the
//! call may have been executed, and an error that invites a retry could send it twice.
//!
//! A task-local flag: the processors scope each call with [`track`]; [`mark`] (called as a
//! request leaves for upstream) sets it. Outside a scope, marking does nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

tokio::task_local! {
    static SENT: Arc<AtomicBool>;
}

/// Runs `fut` with a fresh flag; `flag` reads it afterwards (a panic included).
///
/// Not an `async fn`: one would keep `fut` in its own state beside the scope holding it,
/// doubling the size of every call's future.
pub fn track<F: std::future::Future>(
    flag: Arc<AtomicBool>,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    SENT.scope(flag, fut)
}

/// Records that the current call reached (or is about to reach) upstream.
pub fn mark() {
    let _ = SENT.try_with(|f| f.store(true, Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_reach_the_scope_that_tracks_them() {
        let flag = Arc::new(AtomicBool::new(false));
        track(flag.clone(), async {}).await;
        assert!(!flag.load(Ordering::Relaxed));
        track(flag.clone(), async { mark() }).await;
        assert!(flag.load(Ordering::Relaxed));
        mark(); // outside any scope: nothing happens
    }
}
