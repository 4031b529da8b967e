//! Lanes: a single-threaded runtime on a thread of its own, one per core, each running the
//! works (connections) dealt to it from start to end.
//!
//! On the shared multi-threaded runtime a call's tasks wake each other across its worker
//! threads, idle workers are woken to steal, and a task queued behind a worker the kernel has
//! switched out waits for it. On a box whose cores are shared with the clients and the upstream
//! that is most of a call's tail: a bare hyper proxy with a call's worth of extra work answered
//! 1.5-1.9 ms at p99 on two shared cores, the same proxy on two lanes 0.6-0.7 ms at the same
//! rate (`bench/README.md`). A work dealt to a lane stays there: the tasks it spawns run on
//! its thread, and what it registers (sockets, timers) is driven by that thread, also for
//! others who use it later: a connection reqwest's pool opened there (multipart upstream
//! calls, URL fetches) serves other lanes' calls through that thread. `telegram::conns`, the
//! hot path's, keeps a connection for its lane instead.
//!
//! [`current`] tells code that pools per-thread resources (upstream connections, whose sockets
//! belong to the runtime that opened them) which lane it runs on.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// The lane this thread runs, or 0 on any other thread. Every lane the process starts has a
/// number of its own: a resource tied to a lane whose runtime has ended is never taken for
/// another's.
pub fn current() -> usize {
    LANE.with(Cell::get)
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A set of lanes; stopped (their threads told to end) when dropped.
pub struct Lanes {
    lanes: Vec<Lane>,
    stop: CancellationToken,
    /// How long a stopping lane waits for its blocking threads, in ms.
    grace: Arc<AtomicU64>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

struct Lane {
    id: usize,
    handle: Handle,
    /// Works dealt here and not yet ended.
    open: Arc<AtomicUsize>,
}

/// Counts a work as open on its lane until it ends (or is dropped with its lane).
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// Starts `n` lanes (at least one), their threads named `name-1`, `name-2`, ...
    pub fn start(name: &str, n: usize) -> std::io::Result<Self> {
        // Built in place: if a lane cannot start, those started are stopped as this drops.
        let mut lanes = Self {
            lanes: Vec::new(),
            stop: CancellationToken::new(),
            grace: Arc::new(AtomicU64::new(0)),
            threads: Mutex::new(Vec::new()),
        };
        for i in 1..=n.max(1) {
            let (stop, grace) = (lanes.stop.clone(), lanes.grace.clone());
            let id = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
            let (tx, rx) = std::sync::mpsc::channel();
            // The runtime is made and dropped on its thread: a runtime dropped where async code
            // runs (the caller's) panics.
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    LANE.with(|l| l.set(id));
                    rt.block_on(stop.cancelled());
                    // What still runs on it is dropped, and its blocking threads (a
                    // `spawn_blocking` of its works') are waited for as long as `stop` was told.
                    let grace = std::time::Duration::from_millis(grace.load(Ordering::Relaxed));
                    rt.shutdown_timeout(grace);
                })?;
            lanes
                .threads
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .push(thread);
            let handle = rx
                .recv()
                .map_err(|_| std::io::Error::other("a lane's thread ended as it started"))??;
            lanes.lanes.push(Lane {
                id,
                handle,
                open: Arc::default(),
            });
        }
        Ok(lanes)
    }

    /// Runs `work` on the lane with the fewest open works (the first of equals): connections
    /// dealt this way stay even however long each lives.
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let lane = self
            .lanes
            .iter()
            .min_by_key(|l| l.open.load(Ordering::Relaxed))
            .expect("at least one lane");
        lane.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(lane.open.clone());
        lane.handle.spawn(async move {
            let _open = open;
            work.await;
        });
    }

    /// The lanes' numbers, as [`current`] gives them on their threads.
    pub fn ids(&self) -> Vec<usize> {
        self.lanes.iter().map(|l| l.id).collect()
    }

    /// Works open on each lane, in lane order.
    pub fn open(&self) -> Vec<usize> {
        self.lanes
            .iter()
            .map(|l| l.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Ends the lanes and waits for their threads (off the async thread that calls it), each
    /// for at most `grace` more for its blocking threads. Works still open are dropped: stop
    /// the lanes after what runs on them has ended.
    pub async fn stop(&self, grace: std::time::Duration) {
        self.grace
            .store(grace.as_millis() as u64, Ordering::Relaxed);
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A work runs on its lane's thread, and what it spawns runs there too.
    #[tokio::test]
    async fn a_work_and_what_it_spawns_stay_on_its_lane() {
        let lanes = Lanes::start("test-lane", 2).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        lanes.spawn(async move {
            let here = (current(), std::thread::current().id());
            let spawned = tokio::spawn(async { (current(), std::thread::current().id()) })
                .await
                .unwrap();
            let _ = tx.send((here, spawned));
        });
        let (here, spawned) = rx.await.unwrap();
        assert_eq!(here.0, lanes.ids()[0], "the first of equals");
        assert_eq!(here, spawned);
        assert_eq!(current(), 0, "not a lane's thread");
        lanes.stop(std::time::Duration::ZERO).await;
    }

    /// Works go to the lane with the fewest open, and an ended work is counted off.
    #[tokio::test]
    async fn works_are_dealt_to_the_least_busy_lane() {
        let lanes = Lanes::start("test-lane", 3).unwrap();
        let hold = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..5 {
            let (hold, tx) = (hold.clone(), tx.clone());
            lanes.spawn(async move {
                let _ = tx.send(current());
                hold.cancelled().await;
            });
        }
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(rx.recv().await.unwrap());
        }
        let ids = lanes.ids();
        let mut expected = vec![ids[0], ids[0], ids[1], ids[1], ids[2]];
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected);
        assert_eq!(lanes.open(), [2, 2, 1]);
        hold.cancel();
        for _ in 0..100 {
            if lanes.open() == [0, 0, 0] {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(lanes.open(), [0, 0, 0]);
        lanes.stop(std::time::Duration::ZERO).await;
    }

    /// Stopping ends the threads, and drops a work still open with its runtime. Lanes started
    /// later have numbers of their own.
    #[tokio::test]
    async fn stopping_ends_the_threads_and_drops_open_works() {
        let lanes = Lanes::start("test-lane", 2).unwrap();
        let later = Lanes::start("test-lane", 2).unwrap();
        let mut ids = [lanes.ids(), later.ids()].concat();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert!(!ids.contains(&0));
        later.stop(std::time::Duration::ZERO).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        lanes.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        lanes.stop(std::time::Duration::ZERO).await;
        assert!(rx.await.is_err(), "the open work was dropped");
        assert_eq!(lanes.open(), [0, 0]);
    }
}
