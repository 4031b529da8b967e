//! One consume → handle → commit loop for every stage that reads the bus: the processors, the
//! reply consumer, the updates filter and the webhook deliverer.
//!
//! A stage takes records while it has a free slot (`concurrency`; 1 handles records one after
//! another, in order), hands them to its handler in batches of what is ready (up to `batch`),
//! and commits a record once it and every record before it on its partition are done
//! ([`OffsetTracker`]), so a crash redelivers and never skips. A handler that panics on a
//! record taken alone ends that record, not the stage: the panic is logged and counted and
//! the record released, so the partition's commit point moves on (a record that panics would
//! panic again). A batch of several that panics stops the stage with its records uncommitted,
//! as does a handler's error: the others in the batch were not necessarily done. A handler
//! that cannot finish (stopping, its store down) abandons its batch ([`Slot::abandon`]): not
//! committed, not waited for. On shutdown the stage takes nothing new, waits up to `drain` for
//! what is running (committing as it finishes), then makes the commits durable.
//!
//! A record handed over ahead of the consumer's fetch ([`Handed::Early`], the Kafka bus) is
//! worked on at once but counted as read only when its [`Handed::Echo`] comes (the fetch
//! reached it): a partition's commit never passes a record the fetch has not reached.
//!
//! [`run_pushed`] is the same stage on a bus that hands records over as they are published
//! (the in-process bus): no consumer, no commits, the same handler.

use crate::offsets::OffsetTracker;
use crate::{Bus, BusError, Consumer, Handed, Push, Record};
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a stage runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Names the stage in logs and metrics.
    pub name: &'static str,
    /// Batches handled at once.
    pub concurrency: usize,
    /// Most records a batch takes (those ready when the first arrives).
    pub batch: usize,
    /// How long shutdown waits for running batches.
    pub drain: Duration,
}

impl Options {
    /// One record at a time, in order.
    pub fn sequential(name: &'static str) -> Self {
        Self {
            name,
            concurrency: 1,
            batch: 1,
            drain: Duration::from_secs(10),
        }
    }
}

/// A running batch's place among the stage's `concurrency`, held until its work ends. A
/// handler whose work mostly waits (a long poll) may give it back early with
/// [`Slot::release`]; the batch is still tracked until its work ends.
#[derive(Clone)]
pub struct Slot(Arc<SlotState>);

/// One allocation a batch: a slot is made for every record a pushed stage takes.
struct SlotState {
    permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
    /// Wakes the stage's loop, which may be waiting for a free slot.
    freed: Option<Arc<Notify>>,
    abandoned: std::sync::atomic::AtomicBool,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, freed: Option<Arc<Notify>>) -> Self {
        Self(Arc::new(SlotState {
            permit: std::sync::Mutex::new(Some(permit)),
            freed,
            abandoned: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The batch will not be done here: its records stay uncommitted (another member of the
    /// group, or this one after a restart, takes them again) and the drain does not wait.
    pub fn abandon(&self) {
        self.0
            .abandoned
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_abandoned(&self) -> bool {
        self.0.abandoned.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn release(&self) {
        let taken = self
            .0
            .permit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if taken.is_some() {
            drop(taken);
            if let Some(freed) = &self.0.freed {
                freed.notify_one();
            }
        }
    }
}

/// Where a record is: `(topic, partition, offset)`.
type Key = (String, u32, u64);

/// A batch's records, and whether each was handed over early.
type Keys = Vec<(Key, bool)>;

/// What a stage knows of its records: the tracker of those read (in partition order, which
/// commits follow) and those handed over early, until the fetch reaches them.
#[derive(Default)]
struct Books {
    tracker: OffsetTracker,
    early: std::collections::HashMap<Key, Early>,
    /// Early records whose work runs and that are not in the tracker (`Running`, `Lost`).
    early_running: usize,
    /// Records in the tracker that will never finish (abandoned batches): not waited for.
    abandoned: usize,
}

/// Where a record handed over early stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Early {
    /// Its work runs; the fetch has not reached it.
    Running,
    /// Its work runs; the fetch reached it (it is in the tracker).
    Read,
    /// Its work is done; the fetch has not reached it.
    Done,
    /// Its batch was abandoned; the fetch has not reached it.
    Abandoned,
    /// Its work runs; the fetch will not reach it (not this consumer's to commit).
    Lost,
}

impl Books {
    /// A record from the consumer: whether it is work for the handler (not a notice).
    async fn take(&mut self, r: &Record, consumer: &mut dyn Consumer) -> Result<bool, BusError> {
        // A record read with nothing handed over outstanding: no key to build and look up.
        if matches!(r.handed, Handed::Read) && self.early.is_empty() {
            self.tracker.start(&r.topic, r.partition, r.offset);
            return Ok(true);
        }
        let key = (r.topic.clone(), r.partition, r.offset);
        match r.handed {
            // A record handed over whose partition was taken away and given back: read again
            // from the group's commit, it is its echo (its work ran or runs here already).
            Handed::Read if self.early.contains_key(&key) => {
                self.echo(key, consumer).await?;
                Ok(false)
            }
            Handed::Read => {
                self.tracker.start(&key.0, key.1, key.2);
                Ok(true)
            }
            Handed::Early => {
                if self.early.insert(key, Early::Running) != Some(Early::Running) {
                    self.early_running += 1;
                }
                Ok(true)
            }
            Handed::Echo => {
                self.echo(key, consumer).await?;
                Ok(false)
            }
            Handed::Lost => {
                // Its work, if it still runs, is waited for as any other's; nothing commits it.
                // One read again already (its partition given back) stays as it is.
                match self.early.get(&key) {
                    Some(Early::Running) => {
                        self.early.insert(key, Early::Lost);
                    }
                    Some(Early::Done | Early::Abandoned) => {
                        self.early.remove(&key);
                    }
                    Some(Early::Read | Early::Lost) | None => {}
                }
                Ok(false)
            }
        }
    }

    /// The fetch reached a record handed over earlier: it is read now.
    async fn echo(&mut self, key: Key, consumer: &mut dyn Consumer) -> Result<(), BusError> {
        self.tracker.start(&key.0, key.1, key.2);
        match self.early.remove(&key) {
            Some(Early::Running | Early::Lost) => {
                self.early_running -= 1;
                self.early.insert(key, Early::Read);
            }
            Some(Early::Abandoned) => self.abandoned += 1,
            // Done already (or never seen, which a consumer does not do): read and finished at
            // once.
            Some(Early::Done) | None => self.finish(vec![(key, false)], consumer).await?,
            // Read twice: the tracker had it already.
            Some(Early::Read) => {
                self.early.insert(key, Early::Read);
            }
        }
        Ok(())
    }

    /// Records handed over that the fetch has not reached yet and may still reach (their
    /// commit waits for it).
    fn unread(&self) -> usize {
        self.early
            .values()
            .filter(|e| matches!(e, Early::Running | Early::Done))
            .count()
    }

    /// A batch's work is done: its records read are finished, and committed as far as that
    /// lets the commit point move.
    async fn finish(&mut self, keys: Keys, consumer: &mut dyn Consumer) -> Result<(), BusError> {
        for (key, early) in keys {
            if early {
                match self.early.get(&key).copied() {
                    Some(Early::Running) => {
                        self.early.insert(key, Early::Done);
                        self.early_running -= 1;
                        continue;
                    }
                    Some(Early::Read) => {
                        self.early.remove(&key);
                    }
                    Some(Early::Lost) => {
                        self.early.remove(&key);
                        self.early_running -= 1;
                        continue;
                    }
                    _ => continue,
                }
            }
            let (topic, partition, offset) = key;
            if let Some(o) = self.tracker.finish(&topic, partition, offset) {
                consumer.commit(&topic, partition, o).await?;
            }
        }
        Ok(())
    }

    /// A batch abandoned: its records read stay in flight for good, uncommitted.
    fn abandon(&mut self, keys: Keys) {
        for (key, early) in keys {
            if !early {
                self.abandoned += 1;
                continue;
            }
            match self.early.get(&key).copied() {
                Some(Early::Running) => {
                    self.early.insert(key, Early::Abandoned);
                    self.early_running -= 1;
                }
                Some(Early::Read) => {
                    self.early.remove(&key);
                    self.abandoned += 1;
                }
                Some(Early::Lost) => {
                    self.early.remove(&key);
                    self.early_running -= 1;
                }
                _ => {}
            }
        }
    }

    /// Records whose work runs and is waited for.
    fn running(&self) -> usize {
        (self.tracker.in_flight() + self.early_running).saturating_sub(self.abandoned)
    }
}

/// How a batch ended.
enum End<E> {
    Done,
    Abandoned,
    Failed(E),
}

/// Runs a stage until `shutdown` (or until a handler fails). `handle` is called on the
/// stage's loop with each batch and its slot and returns the work, which runs on a task of
/// its own.
pub async fn run<E, F, Fut>(
    mut consumer: Box<dyn Consumer>,
    opts: Options,
    shutdown: CancellationToken,
    mut handle: F,
) -> Result<(), E>
where
    E: From<BusError> + Send + 'static,
    F: FnMut(Vec<Record>, Slot) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let freed = Arc::new(Notify::new());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Keys, End<E>)>();
    let mut books = Books::default();
    let stage = opts.name;

    let failed = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break None,
            Some((keys, end)) = done_rx.recv() => match end {
                End::Done => books.finish(keys, consumer.as_mut()).await?,
                End::Abandoned => books.abandon(keys),
                End::Failed(e) => break Some(e),
            },
            // A slot given back early: look at the bus again.
            _ = freed.notified() => {}
            first = consumer.next(), if slots.available_permits() > 0 => {
                let first = first?;
                let mut batch = Vec::new();
                if books.take(&first, consumer.as_mut()).await? {
                    batch.push(first);
                }
                while batch.len() < opts.batch.max(1) {
                    match consumer.next().now_or_never() {
                        Some(r) => {
                            let r = r?;
                            if books.take(&r, consumer.as_mut()).await? {
                                batch.push(r);
                            }
                        }
                        None => break,
                    }
                }
                if batch.is_empty() {
                    // Notices only.
                    continue;
                }
                let keys: Keys = batch
                    .iter()
                    .map(|r| ((r.topic.clone(), r.partition, r.offset), r.handed == Handed::Early))
                    .collect();
                let permit = slots.clone().try_acquire_owned().expect("a slot is free");
                let slot = Slot::new(permit, Some(freed.clone()));
                // Boxed: a handler's future is kilobytes (the largest of its routes), and a
                // spawned future is moved whole several times on its way into its task and
                // again when it completes; a pointer is cheap to move.
                let work = Box::pin(handle(batch, slot.clone()));
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let end = match AssertUnwindSafe(work).catch_unwind().await {
                        Ok(_) if slot.is_abandoned() => End::Abandoned,
                        Ok(Ok(())) => End::Done,
                        Ok(Err(e)) => End::Failed(e),
                        Err(panic) => {
                            crate::metrics::STAGE_PANICS.with_label_values(&[stage]).inc();
                            let panic = lifecycle::panic_message(&*panic);
                            if keys.len() == 1 {
                                tracing::error!(stage, %panic, "a stage's handler panicked; its record is released");
                                End::Done
                            } else {
                                tracing::error!(stage, %panic, "a stage's handler panicked on a batch; the stage stops");
                                End::Failed(E::from(BusError::Backend(format!(
                                    "the {stage} stage's handler panicked: {panic}"
                                ))))
                            }
                        }
                    };
                    // Free the slot before reporting, so the loop sees it free when it reads
                    // the report.
                    slot.release();
                    let _ = done.send((keys, end));
                });
            }
        }
    };
    if let Some(e) = failed {
        return Err(e);
    }

    // Drain: nothing new; what runs finishes (up to `drain`), committed as it does.
    drop(done_tx);
    // Records handed over whose fetch has not come yet are read to, as long as the consumer
    // gives nothing but their echoes: the first record not started (whose place the commits
    // must not pass) ends the reading.
    let deadline = tokio::time::Instant::now() + opts.drain;
    let (mut reading, mut open) = (true, true);
    loop {
        let echoes = reading && books.unread() > 0;
        if !echoes && (books.running() == 0 || !open) {
            break;
        }
        let step = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                biased;
                done = done_rx.recv(), if open => Ok(done),
                read = consumer.next(), if echoes => Err(read),
            }
        })
        .await;
        match step {
            Ok(Ok(Some((keys, End::Done)))) => books.finish(keys, consumer.as_mut()).await?,
            Ok(Ok(Some((keys, End::Abandoned)))) => books.abandon(keys),
            Ok(Ok(Some((_, End::Failed(e))))) => return Err(e),
            Ok(Ok(None)) => open = false,
            Ok(Err(Ok(r))) if matches!(r.handed, Handed::Echo | Handed::Lost) => {
                books.take(&r, consumer.as_mut()).await?;
            }
            Ok(Err(_)) => reading = false,
            Err(_) => {
                tracing::warn!(
                    stage,
                    in_flight = books.running(),
                    unread = books.unread(),
                    "drain timed out; unfinished records will be redelivered"
                );
                break;
            }
        }
    }
    consumer.flush().await?;
    Ok(())
}

/// Runs a stage whose records their publishers hand over as they publish them
/// ([`Bus::push_to`]; the in-process bus): the work of [`run`] without its hops (a consumer
/// task woken for each record, which then starts the record's task). A record that finds a
/// free slot has `handle` called on the publisher's task and its work spawned; one that finds
/// none waits for one on a task of its own, in turn (the slots are handed out first come,
/// first served), so a publisher never waits and a record never depends on its publisher
/// staying. Nothing is kept, so nothing is committed: a panic is logged and counted, and its
/// slot freed. Until `shutdown` or a handler's error; then records are no longer taken (those
/// still waiting for a slot are dropped, as a stopping consumer leaves its records unread),
/// and what runs is waited for up to `drain`.
///
/// The work runs on the publisher's runtime (a call stays on its connection's lane), or on
/// `on` when given: a stage whose work is heavy keeps it off the lanes, where it would hold up
/// every other connection dealt to the same thread.
pub async fn run_pushed<E, F, Fut>(
    bus: &dyn Bus,
    topic: &str,
    group: &str,
    opts: Options,
    on: Option<tokio::runtime::Handle>,
    shutdown: CancellationToken,
    handle: F,
) -> Result<(), E>
where
    E: From<BusError> + Send + 'static,
    F: Fn(Vec<Record>, Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let running = TaskTracker::new();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel::<E>();
    let stage = opts.name;
    // A record with its slot: the handler called here, the work on a task of its own.
    let start = {
        let running = running.clone();
        Arc::new(
            move |record: Record, permit: OwnedSemaphorePermit, done: Pending| {
                // Nothing to wake: records waiting for a slot wait on the semaphore.
                let slot = Slot::new(permit, None);
                // Boxed, as in `run`: a pointer is cheap to move into the task.
                let work = Box::pin(handle(vec![record], slot.clone()));
                let fail = fail_tx.clone();
                let task = async move {
                    match AssertUnwindSafe(work).catch_unwind().await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            let _ = fail.send(e);
                        }
                        Err(panic) => {
                            crate::metrics::STAGE_PANICS
                                .with_label_values(&[stage])
                                .inc();
                            let panic = lifecycle::panic_message(&*panic);
                            tracing::error!(stage, %panic, "a stage's handler panicked; its record is released");
                        }
                    }
                    slot.release();
                    drop(done);
                };
                match &on {
                    Some(rt) => drop(running.spawn_on(task, rt)),
                    None => drop(running.spawn(task)),
                }
            },
        )
    };
    let pending = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let push = Push {
        group: group.to_owned(),
        pending: pending.clone(),
        take: Arc::new({
            let (slots, running) = (slots.clone(), running.clone());
            move |record| {
                let done = Pending::start(pending.clone());
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => start(record, permit, done),
                    Err(tokio::sync::TryAcquireError::NoPermits) => {
                        let (slots, start) = (slots.clone(), start.clone());
                        running.spawn(async move {
                            if let Ok(permit) = slots.acquire_owned().await {
                                start(record, permit, done);
                            }
                        });
                    }
                    // Stopping.
                    Err(tokio::sync::TryAcquireError::Closed) => {}
                }
            }
        }),
    };
    let registered = Registered::new(bus, topic, push);
    let failed = tokio::select! {
        _ = shutdown.cancelled() => None,
        Some(e) = fail_rx.recv() => Some(e),
    };
    drop(registered);
    slots.close();
    running.close();
    if tokio::time::timeout(opts.drain, running.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            stage,
            running = running.len(),
            "drain timed out; the unfinished calls are lost with the process"
        );
    }
    failed.map_or(Ok(()), Err)
}

/// A stage pushed to, until dropped (however [`run_pushed`] ends).
struct Registered<'a> {
    bus: &'a dyn Bus,
    topic: &'a str,
}

impl<'a> Registered<'a> {
    fn new(bus: &'a dyn Bus, topic: &'a str, push: Push) -> Self {
        bus.push_to(topic, Some(push));
        Self { bus, topic }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.bus.push_to(self.topic, None);
    }
}

/// A pushed record counted in its stage's depth until dropped (its work done, or never begun).
struct Pending(Arc<std::sync::atomic::AtomicU64>);

impl Pending {
    fn start(n: Arc<std::sync::atomic::AtomicU64>) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBus;
    use crate::Bus;
    use std::sync::Mutex;

    const TOPIC: &str = "t";

    async fn bus_with(n: u8) -> Arc<MemoryBus> {
        let bus = Arc::new(MemoryBus::new(1));
        bus.ensure_topics(&[TOPIC.into()]).await.unwrap();
        for i in 0..n {
            bus.publish(TOPIC, "k", vec![i]).await.unwrap();
        }
        bus
    }

    async fn consumer(bus: &MemoryBus) -> Box<dyn Consumer> {
        bus.subscribe("g", &[TOPIC.into()]).await.unwrap()
    }

    /// What a new member of the group gets within a short wait: the uncommitted records.
    async fn left_over(bus: &MemoryBus) -> Vec<u8> {
        let mut c = consumer(bus).await;
        let mut out = Vec::new();
        while let Ok(r) = tokio::time::timeout(Duration::from_millis(100), c.next()).await {
            out.push(r.unwrap().payload[0]);
        }
        out
    }

    fn opts(concurrency: usize, batch: usize) -> Options {
        Options {
            name: "test",
            concurrency,
            batch,
            drain: Duration::from_secs(5),
        }
    }

    /// Stops the stage once `n` records were handled.
    fn stop_after(n: usize, seen: &Arc<Mutex<Vec<u8>>>, stop: &CancellationToken) {
        let (seen, stop) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            while seen.lock().unwrap().len() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop.cancel();
        });
    }

    #[tokio::test]
    async fn one_at_a_time_in_order_and_all_committed() {
        let bus = bus_with(20).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        stop_after(20, &seen, &stop);
        let s = seen.clone();
        run::<BusError, _, _>(consumer(&bus).await, opts(1, 4), stop, move |records, _| {
            let s = s.clone();
            async move {
                // Slow enough that a second batch running beside this one would interleave.
                for r in records {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    s.lock().unwrap().push(r.payload[0]);
                }
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<u8>>());
        assert!(left_over(&bus).await.is_empty());
    }

    #[tokio::test]
    async fn a_panic_releases_its_record_and_the_stage_goes_on() {
        let bus = bus_with(5).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        stop_after(4, &seen, &stop);
        let s = seen.clone();
        run::<BusError, _, _>(consumer(&bus).await, opts(2, 1), stop, move |records, _| {
            let s = s.clone();
            async move {
                let v = records[0].payload[0];
                assert_ne!(v, 2, "a handler that panics");
                s.lock().unwrap().push(v);
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 4);
        // Record 2 is released with the others: the commit point is past it.
        assert!(left_over(&bus).await.is_empty());
    }

    #[tokio::test]
    async fn a_batch_that_panics_stops_the_stage_uncommitted() {
        let bus = bus_with(5).await;
        let result = run::<BusError, _, _>(
            consumer(&bus).await,
            opts(1, 8),
            CancellationToken::new(),
            |records, _| async move {
                // Records after the panicking one were never looked at.
                assert!(records.len() < 2, "a handler that panics");
                Ok(())
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(left_over(&bus).await, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn an_abandoned_batch_is_neither_committed_nor_waited_for() {
        let bus = bus_with(3).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        stop_after(2, &seen, &stop);
        let s = seen.clone();
        let mut o = opts(1, 1);
        o.drain = Duration::from_secs(60);
        let started = std::time::Instant::now();
        run::<BusError, _, _>(consumer(&bus).await, o, stop, move |records, slot| {
            let s = s.clone();
            async move {
                let v = records[0].payload[0];
                if v == 1 {
                    slot.abandon();
                }
                s.lock().unwrap().push(v);
                Ok(())
            }
        })
        .await
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the drain waited"
        );
        // 0 committed; 1 abandoned, so nothing after it is committed either.
        let left = left_over(&bus).await;
        assert_eq!(left.first(), Some(&1), "{left:?}");
    }

    #[tokio::test]
    async fn an_error_stops_the_stage_with_its_record_uncommitted() {
        let bus = bus_with(5).await;
        let result = run(
            consumer(&bus).await,
            opts(1, 1),
            CancellationToken::new(),
            |records, _| {
                let v = records[0].payload[0];
                async move {
                    if v == 2 {
                        Err(BusError::Backend("refused".into()))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(left_over(&bus).await, vec![2, 3, 4]);
    }

    #[tokio::test]
    async fn a_released_slot_lets_the_next_record_in_while_its_work_goes_on() {
        let bus = bus_with(3).await;
        let release_first = Arc::new(tokio::sync::Notify::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        stop_after(3, &seen, &stop);
        let (s, r) = (seen.clone(), release_first.clone());
        let running = tokio::spawn(run::<BusError, _, _>(
            consumer(&bus).await,
            opts(1, 1),
            stop,
            move |records, slot| {
                let (s, r) = (s.clone(), r.clone());
                async move {
                    let v = records[0].payload[0];
                    if v == 0 {
                        // Mostly waiting: the slot goes back, the work stays.
                        slot.release();
                        r.notified().await;
                    }
                    s.lock().unwrap().push(v);
                    Ok(())
                }
            },
        ));
        // 1 and 2 pass while 0 still waits.
        tokio::time::timeout(Duration::from_secs(5), async {
            while seen.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("later records are handled while the first waits");
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
        release_first.notify_one();
        running.await.unwrap().unwrap();
        assert!(left_over(&bus).await.is_empty());
    }

    /// A pushed stage's work runs on the publisher's runtime, or on the one it is given.
    #[tokio::test]
    async fn a_pushed_stages_work_runs_where_it_is_told() {
        let (tx, rx) = std::sync::mpsc::channel();
        let end = CancellationToken::new();
        let other = std::thread::spawn({
            let end = end.clone();
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                tx.send(rt.handle().clone()).unwrap();
                rt.block_on(end.cancelled());
            }
        });
        let elsewhere = rx.recv().unwrap();
        let here = std::thread::current().id();
        let elsewhere_id = {
            let (tx, rx) = tokio::sync::oneshot::channel();
            elsewhere.spawn(async move { tx.send(std::thread::current().id()).unwrap() });
            rx.await.unwrap()
        };
        for (on, expected) in [(None, here), (Some(elsewhere.clone()), elsewhere_id)] {
            let bus = Arc::new(MemoryBus::new(1));
            let stop = CancellationToken::new();
            let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
            let stage = tokio::spawn({
                let (bus, stop) = (bus.clone(), stop.clone());
                async move {
                    run_pushed::<BusError, _, _>(
                        bus.as_ref(),
                        TOPIC,
                        "g",
                        opts(4, 1),
                        on,
                        stop,
                        move |_, _| {
                            let seen_tx = seen_tx.clone();
                            async move {
                                let _ = seen_tx.send(std::thread::current().id());
                                Ok(())
                            }
                        },
                    )
                    .await
                }
            });
            while !bus.pushed(TOPIC) {
                tokio::task::yield_now().await;
            }
            bus.publish(TOPIC, "k", vec![1]).await.unwrap();
            assert_eq!(seen.recv().await, Some(expected));
            stop.cancel();
            stage.await.unwrap().unwrap();
        }
        end.cancel();
        other.join().unwrap();
    }

    /// A pushed stage: a record waits while every slot is taken (here the one), its publisher
    /// does not; a released slot lets the next in, a panic ends its record and not the stage,
    /// and shutdown waits for the work still running.
    #[tokio::test]
    async fn a_pushed_stage_bounds_its_work_survives_a_panic_and_drains() {
        let bus = Arc::new(MemoryBus::new(1));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Notify::new());
        let stop = CancellationToken::new();
        let (s, g) = (seen.clone(), gate.clone());
        let stage = tokio::spawn({
            let (bus, stop) = (bus.clone(), stop.clone());
            async move {
                run_pushed::<BusError, _, _>(
                    bus.as_ref(),
                    TOPIC,
                    "g",
                    opts(1, 1),
                    None,
                    stop,
                    move |records, slot| {
                        let (s, g) = (s.clone(), g.clone());
                        async move {
                            let v = records[0].payload[0];
                            assert_ne!(v, 1, "a handler that panics");
                            if v == 2 {
                                slot.release();
                            }
                            if v != 3 {
                                g.notified().await;
                            }
                            s.lock().unwrap().push(v);
                            Ok(())
                        }
                    },
                )
                .await
            }
        });
        // The stage registers on its task.
        while !bus.pushed(TOPIC) {
            tokio::task::yield_now().await;
        }
        bus.publish(TOPIC, "k", vec![0]).await.unwrap();
        // The one slot is 0's: 1 waits for it, but not its publisher.
        tokio::time::timeout(Duration::from_secs(1), bus.publish(TOPIC, "k", vec![1]))
            .await
            .expect("a publisher never waits")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let depth = |bus: &MemoryBus| -> Vec<(String, u64)> {
            bus.depth()
                .into_iter()
                .filter(|d| d.topic == TOPIC)
                .map(|d| (d.group, d.records))
                .collect()
        };
        assert_eq!(
            depth(&bus),
            vec![("g".to_owned(), 2)],
            "one running, one waiting"
        );
        assert!(seen.lock().unwrap().is_empty());
        gate.notify_one();
        // 1 panics once it has the slot; the slot is free again: 2 takes it and gives it back
        // while it waits.
        bus.publish(TOPIC, "k", vec![2]).await.unwrap();
        bus.publish(TOPIC, "k", vec![3]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while seen.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("0 and 3 done");
        // Shutdown waits for 2.
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stage.is_finished(), "the drain waits for the work running");
        gate.notify_one();
        stage.await.unwrap().unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![0, 3, 2]);
        assert!(depth(&bus).is_empty(), "stopped: no longer pushed");
    }

    /// Offsets, as a test's stage or consumer notes them.
    type Offsets = Arc<Mutex<Vec<u64>>>;

    /// A consumer that gives what the test sends it, and keeps what it is told to commit.
    struct Script {
        rx: mpsc::UnboundedReceiver<Record>,
        commits: Offsets,
    }

    #[async_trait::async_trait]
    impl Consumer for Script {
        async fn next(&mut self) -> Result<Record, BusError> {
            self.rx.recv().await.ok_or(BusError::Closed)
        }

        async fn commit(&mut self, _: &str, _: u32, offset: u64) -> Result<(), BusError> {
            self.commits.lock().unwrap().push(offset);
            Ok(())
        }
    }

    fn script() -> (mpsc::UnboundedSender<Record>, Box<dyn Consumer>, Offsets) {
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Arc::new(Mutex::new(Vec::new()));
        let consumer = Script {
            rx,
            commits: commits.clone(),
        };
        (tx, Box::new(consumer), commits)
    }

    fn handed(offset: u64, handed: Handed) -> Record {
        Record {
            topic: TOPIC.into(),
            partition: 0,
            offset,
            key: "k".into(),
            payload: bytes::Bytes::from(vec![offset as u8]),
            value: None,
            handed,
        }
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("never: {what}");
    }

    /// A stage whose handler notes each record and finishes it when the test says so.
    fn held_stage(
        consumer: Box<dyn Consumer>,
        stop: &CancellationToken,
    ) -> (
        Offsets,
        Arc<Semaphore>,
        tokio::task::JoinHandle<Result<(), BusError>>,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let go = Arc::new(Semaphore::new(0));
        let (s, g) = (seen.clone(), go.clone());
        let stage = tokio::spawn(run::<BusError, _, _>(
            consumer,
            opts(8, 1),
            stop.clone(),
            move |records, _| {
                let (s, g) = (s.clone(), g.clone());
                async move {
                    s.lock().unwrap().push(records[0].offset);
                    g.acquire().await.unwrap().forget();
                    Ok(())
                }
            },
        ));
        (seen, go, stage)
    }

    /// A record handed over early is worked on at once, but its offset is committed only once
    /// the fetch reached it (and every record before it): a crash in between reads it again.
    /// Its echo is not worked on.
    #[tokio::test]
    async fn a_record_handed_over_early_is_committed_only_once_read() {
        let (tx, consumer, commits) = script();
        let stop = CancellationToken::new();
        let (seen, go, stage) = held_stage(consumer, &stop);
        tx.send(handed(5, Handed::Early)).unwrap();
        until("the early record runs", || seen.lock().unwrap().len() == 1).await;
        go.add_permits(1);
        tx.send(handed(4, Handed::Read)).unwrap();
        until("the read record runs", || seen.lock().unwrap().len() == 2).await;
        go.add_permits(1);
        until("4 committed", || *commits.lock().unwrap() == [4]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(*commits.lock().unwrap(), [4], "5 is done but not read");
        tx.send(handed(5, Handed::Echo)).unwrap();
        until("5 committed", || *commits.lock().unwrap() == [4, 5]).await;
        stop.cancel();
        stage.await.unwrap().unwrap();
        assert_eq!(*seen.lock().unwrap(), [5, 4], "the echo is not worked on");
    }

    /// The fetch reaching a handed-over record whose work still runs: committed when it ends,
    /// and the drain waits for it.
    #[tokio::test]
    async fn a_record_read_while_its_work_runs_is_committed_when_it_ends() {
        let (tx, consumer, commits) = script();
        let stop = CancellationToken::new();
        let (seen, go, stage) = held_stage(consumer, &stop);
        tx.send(handed(0, Handed::Early)).unwrap();
        until("the early record runs", || seen.lock().unwrap().len() == 1).await;
        tx.send(handed(0, Handed::Echo)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(commits.lock().unwrap().is_empty(), "still running");
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!stage.is_finished(), "the drain waits for it");
        go.add_permits(1);
        stage.await.unwrap().unwrap();
        assert_eq!(*commits.lock().unwrap(), [0]);
    }

    /// A stopping stage reads the echoes of what it was handed and did, so it commits them
    /// before it goes (else every restart would read the last of them again), up to the first
    /// record it has not started.
    #[tokio::test]
    async fn a_stopping_stage_reads_the_echoes_of_what_it_did() {
        let (tx, consumer, commits) = script();
        let stop = CancellationToken::new();
        let (seen, go, stage) = held_stage(consumer, &stop);
        for o in [0, 1, 2] {
            tx.send(handed(o, Handed::Early)).unwrap();
        }
        until("they run", || seen.lock().unwrap().len() == 3).await;
        go.add_permits(3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!stage.is_finished(), "waiting for the echoes");
        tx.send(handed(0, Handed::Echo)).unwrap();
        tx.send(handed(1, Handed::Echo)).unwrap();
        // Not started: the reading ends here, and 2 stays uncommitted.
        tx.send(handed(7, Handed::Read)).unwrap();
        tx.send(handed(2, Handed::Echo)).unwrap();
        stage.await.unwrap().unwrap();
        assert_eq!(*commits.lock().unwrap(), [0, 1]);
        assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
    }

    /// A record handed over whose partition was taken away and given back is read again
    /// from the group's commit: that read is its echo, not new work, and its commit waits for
    /// its work, whichever of the read and the notice of the loss comes first.
    #[tokio::test]
    async fn a_record_read_again_after_a_rebalance_is_its_echo() {
        let (tx, consumer, commits) = script();
        let stop = CancellationToken::new();
        let (seen, go, stage) = held_stage(consumer, &stop);
        tx.send(handed(4, Handed::Early)).unwrap();
        tx.send(handed(5, Handed::Early)).unwrap();
        until("they run", || seen.lock().unwrap().len() == 2).await;
        tx.send(handed(4, Handed::Read)).unwrap();
        tx.send(handed(4, Handed::Lost)).unwrap();
        tx.send(handed(5, Handed::Lost)).unwrap();
        tx.send(handed(5, Handed::Read)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(commits.lock().unwrap().is_empty(), "both still running");
        go.add_permits(2);
        until("both committed", || {
            commits.lock().unwrap().last() == Some(&5)
        })
        .await;
        stop.cancel();
        stage.await.unwrap().unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2, "neither worked on twice");
    }

    /// A handed-over record the fetch will not reach (its partition went elsewhere) is never
    /// committed here, and its work, still running, is waited for by the drain.
    #[tokio::test]
    async fn a_lost_record_is_not_committed_but_its_work_is_waited_for() {
        let (tx, consumer, commits) = script();
        let stop = CancellationToken::new();
        let (seen, go, stage) = held_stage(consumer, &stop);
        tx.send(handed(3, Handed::Early)).unwrap();
        tx.send(handed(7, Handed::Early)).unwrap();
        until("both run", || seen.lock().unwrap().len() == 2).await;
        go.add_permits(1);
        tx.send(handed(3, Handed::Lost)).unwrap();
        tx.send(handed(7, Handed::Lost)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !stage.is_finished(),
            "the drain waits for the one still running"
        );
        go.add_permits(1);
        stage.await.unwrap().unwrap();
        assert!(commits.lock().unwrap().is_empty());
    }
}
