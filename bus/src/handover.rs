//! The Kafka bus's hand-over: a record of a topic on the request path, acknowledged by the
//! broker, goes straight to a consumer of it in the publisher's own process, if that consumer
//! reads the record's partition ([`crate::Handed`]). Without it a call waits, after its
//! publish, for the router's fetch to reach it: on Tansu a waiting fetch is answered when its
//! wait ends, not when a record arrives, so that was most of what Kafka added to a call.
//!
//! A [`Desk`] is one consumer's side of it, shared with the bus that offers it records:
//! - [`Desk::offer`] (the publisher, after the broker's acknowledgement): the record is queued
//!   for the consumer as `Early` if the consumer reads its partition, its fetch has not reached
//!   it yet and the queue has room; otherwise the fetch brings it, as without a hand-over.
//! - The consumer gives what is queued first ([`Desk::next_ready`]), then reads the broker;
//!   each record read goes through [`Desk::read`]: one handed over already becomes an `Echo`
//!   notice (its payload compared with what was handed over, so a broker that reported other
//!   offsets than it stored turns the hand-over off rather than run a call twice), and records
//!   handed over that the fetch went past become `Lost` notices.
//! - Partitions the consumer loses ([`Desk::revoked`]) take their handed-over records with
//!   them: those still queued are dropped (their new owner reads them), the others are `Lost`.
//!
//! Everything is under one lock, so a record's `Early` always reaches the consumer before its
//! `Echo` or `Lost`, and each `Early` it got is followed by exactly one of them.

use crate::{Handed, Record};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Most records handed over and not yet taken by the consumer (a stage with no free slot
/// takes none): beyond it, records wait for the fetch as they would without a hand-over.
pub const QUEUE_LIMIT: usize = 256;

/// Most records handed over and not yet read by the consumer's fetch (queued, or given and
/// waiting for their echo). The bound keeps a stage that cannot keep up reading its broker:
/// while records are queued the consumer gives them first, so with no bound an overloaded
/// stage would be handed a record for every one it finished and never read an echo (nothing
/// committed, the books growing, librdkafka's poll interval missed). It is wide because
/// echoes come a fetch at a time: at 10k calls a second and a fetch every 100 ms, a thousand
/// wait for theirs (at 256, a quarter of the calls waited for the fetch: p99 32 ms).
pub const UNREAD_LIMIT: usize = 4096;

/// One consumer's hand-over desk, for one topic.
pub struct Desk {
    topic: String,
    state: Mutex<State>,
    /// Wakes the consumer waiting on the broker when a record is queued (one bell for every
    /// desk of a consumer that reads several topics).
    pub(crate) ready: Arc<Notify>,
}

#[derive(Default)]
struct State {
    assigned: HashSet<u32>,
    partitions: HashMap<u32, Partition>,
    /// Handed over, not yet given to the consumer.
    queue: VecDeque<Record>,
    /// `Echo` and `Lost` notices not yet given to the consumer.
    notices: VecDeque<Record>,
    /// The broker was seen storing a record at another offset than it acknowledged: nothing
    /// is handed over any more.
    off: bool,
}

impl State {
    fn outstanding(&self) -> usize {
        self.partitions.values().map(|p| p.handed.len()).sum()
    }
}

#[derive(Default)]
struct Partition {
    /// The last offset the fetch gave.
    read: Option<u64>,
    /// Handed over and not yet read, with what was handed over.
    handed: BTreeMap<u64, Bytes>,
}

impl Desk {
    pub fn new(topic: &str, ready: Arc<Notify>) -> Self {
        Self {
            topic: topic.to_owned(),
            state: Mutex::default(),
            ready,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A record the broker acknowledged at `partition`/`offset`: whether it was handed over.
    pub fn offer(&self, partition: u32, offset: u64, key: &str, payload: Bytes) -> bool {
        let mut s = self.lock();
        if s.off
            || !s.assigned.contains(&partition)
            || s.queue.len() >= QUEUE_LIMIT
            || s.outstanding() >= UNREAD_LIMIT
        {
            return false;
        }
        let p = s.partitions.entry(partition).or_default();
        if p.read.is_some_and(|read| read >= offset) {
            // The fetch was quicker: the consumer has it already.
            return false;
        }
        p.handed.insert(offset, payload.clone());
        s.queue.push_back(Record {
            topic: self.topic.clone(),
            partition,
            offset,
            key: key.to_owned(),
            payload,
            value: None,
            handed: Handed::Early,
        });
        drop(s);
        self.ready.notify_one();
        true
    }

    /// What the consumer gives next without reading the broker: a record handed over, else a
    /// notice.
    pub fn next_ready(&self) -> Option<Record> {
        let mut s = self.lock();
        s.queue.pop_front().or_else(|| s.notices.pop_front())
    }

    /// A record the consumer read from the broker: whether to give it as read (`false`: it was
    /// handed over, and its `Echo` is queued instead).
    pub fn read(&self, partition: u32, offset: u64, payload: &[u8]) -> bool {
        let mut s = self.lock();
        let p = s.partitions.entry(partition).or_default();
        p.read = Some(offset);
        let from_here = p.handed.split_off(&offset);
        let passed = std::mem::replace(&mut p.handed, from_here);
        let handed = p.handed.remove(&offset);
        for o in passed.into_keys() {
            self.lose(&mut s, partition, o);
        }
        match handed {
            None => true,
            Some(was) if was == payload => {
                let notice = self.notice(partition, offset, Handed::Echo);
                s.notices.push_back(notice);
                false
            }
            Some(_) => {
                // Not what was handed over at this offset: the broker acknowledged records at
                // offsets other than where it stored them. The consumer reads this one as
                // usual; what was handed over is lost to it (the store answers it if read
                // again), and nothing more is handed over.
                tracing::error!(
                    topic = %self.topic,
                    partition,
                    offset,
                    "the broker stored a record at another offset than it acknowledged; records are no longer handed over"
                );
                s.off = true;
                self.lose(&mut s, partition, offset);
                true
            }
        }
    }

    /// Partitions the consumer was given.
    pub fn assigned(&self, partitions: impl IntoIterator<Item = u32>) {
        self.lock().assigned.extend(partitions);
    }

    /// Partitions the consumer lost: what was handed over of them is dropped or lost.
    pub fn revoked(&self, partitions: impl IntoIterator<Item = u32>) {
        let mut s = self.lock();
        for partition in partitions {
            s.assigned.remove(&partition);
            if let Some(p) = s.partitions.remove(&partition) {
                for offset in p.handed.into_keys() {
                    self.lose(&mut s, partition, offset);
                }
            }
        }
        // The consumer may be waiting on its broker: its notices are ready now.
        let told = !s.notices.is_empty();
        drop(s);
        if told {
            self.ready.notify_one();
        }
    }

    /// A handed-over record the consumer will not read: dropped if it was not given yet, else
    /// a `Lost` notice.
    fn lose(&self, s: &mut State, partition: u32, offset: u64) {
        let queued = s
            .queue
            .iter()
            .position(|r| r.partition == partition && r.offset == offset);
        match queued {
            Some(i) => drop(s.queue.remove(i)),
            None => {
                let notice = self.notice(partition, offset, Handed::Lost);
                s.notices.push_back(notice);
            }
        }
    }

    fn notice(&self, partition: u32, offset: u64, handed: Handed) -> Record {
        Record {
            topic: self.topic.clone(),
            partition,
            offset,
            key: String::new(),
            payload: Bytes::new(),
            value: None,
            handed,
        }
    }

    /// Records handed over and not read yet, queued or given.
    pub fn outstanding(&self) -> usize {
        self.lock().outstanding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk() -> Desk {
        let d = Desk::new("calls", Arc::default());
        d.assigned([0, 1]);
        d
    }

    fn drain(d: &Desk) -> Vec<(Handed, u32, u64)> {
        std::iter::from_fn(|| d.next_ready())
            .map(|r| (r.handed, r.partition, r.offset))
            .collect()
    }

    /// A record handed over reaches the consumer at once, and its read becomes its echo.
    #[test]
    fn a_handed_record_is_given_early_then_echoed() {
        let d = desk();
        assert!(d.offer(0, 5, "k", Bytes::from_static(b"a")));
        assert_eq!(drain(&d), [(Handed::Early, 0, 5)]);
        assert!(d.read(0, 4, b"z"), "an earlier record is read as usual");
        assert!(!d.read(0, 5, b"a"));
        assert_eq!(drain(&d), [(Handed::Echo, 0, 5)]);
        assert_eq!(d.outstanding(), 0);
    }

    /// The echo never overtakes its record: read before the consumer took what was handed
    /// over, the record still comes first.
    #[test]
    fn an_echo_never_comes_before_its_record() {
        let d = desk();
        d.offer(0, 5, "k", Bytes::from_static(b"a"));
        assert!(!d.read(0, 5, b"a"));
        assert_eq!(drain(&d), [(Handed::Early, 0, 5), (Handed::Echo, 0, 5)]);
    }

    /// Nothing is handed over for a partition the consumer does not read, one its fetch has
    /// passed, or beyond the bound of what waits for the fetch, taken by the consumer or not:
    /// only echoes make room.
    #[test]
    fn only_what_the_fetch_has_not_reached_is_handed_over() {
        let d = desk();
        assert!(!d.offer(2, 0, "k", Bytes::new()), "not assigned");
        d.read(0, 9, b"");
        assert!(!d.offer(0, 9, "k", Bytes::new()), "already read");
        let mut o = 0;
        while d.outstanding() < UNREAD_LIMIT {
            for _ in 0..QUEUE_LIMIT {
                assert!(d.offer(1, o, "k", Bytes::new()));
                o += 1;
            }
            assert!(!d.offer(1, o, "k", Bytes::new()), "the queue is full");
            assert_eq!(drain(&d).len(), QUEUE_LIMIT);
        }
        assert!(
            !d.offer(1, o, "k", Bytes::new()),
            "taken, not yet read: at the bound"
        );
        assert!(!d.read(1, 0, b""));
        assert_eq!(drain(&d), [(Handed::Echo, 1, 0)]);
        assert!(d.offer(1, o, "k", Bytes::new()), "an echo made room");
    }

    /// A lost partition drops what the consumer was not given yet and loses the rest (and
    /// wakes the consumer for it); a fetch that moved past a handed-over record loses it; a
    /// partition given back starts afresh.
    #[test]
    fn what_will_not_be_read_is_dropped_or_lost() {
        let d = desk();
        d.offer(0, 1, "k", Bytes::new());
        d.offer(0, 2, "k", Bytes::new());
        assert_eq!(drain(&d).len(), 2);
        d.offer(0, 3, "k", Bytes::new());
        d.revoked([0]);
        let woken = d.ready.notified();
        futures_util::pin_mut!(woken);
        use futures_util::FutureExt;
        assert!(woken.now_or_never().is_some(), "the consumer is woken");
        assert_eq!(drain(&d), [(Handed::Lost, 0, 1), (Handed::Lost, 0, 2)]);
        assert!(!d.offer(0, 4, "k", Bytes::new()), "no longer ours");
        d.assigned([0]);
        assert!(d.read(0, 1, b""), "read again from the group's commit");
        assert!(d.offer(0, 4, "k", Bytes::new()));
        drain(&d);
        d.revoked([0]);
        assert_eq!(drain(&d), [(Handed::Lost, 0, 4)]);

        d.offer(1, 7, "k", Bytes::new());
        assert_eq!(drain(&d).len(), 1);
        assert!(d.read(1, 8, b""), "the fetch went past 7");
        assert_eq!(drain(&d), [(Handed::Lost, 1, 7)]);
        assert_eq!(d.outstanding(), 0);
    }

    /// A broker that stored a record elsewhere than it said: the read is given as usual, what
    /// was handed over is lost, and nothing is handed over again.
    #[test]
    fn a_misplaced_record_turns_the_hand_over_off() {
        let d = desk();
        d.offer(0, 5, "k", Bytes::from_static(b"mine"));
        drain(&d);
        assert!(d.read(0, 5, b"another"));
        assert_eq!(drain(&d), [(Handed::Lost, 0, 5)]);
        assert!(!d.offer(0, 6, "k", Bytes::new()));
    }
}
