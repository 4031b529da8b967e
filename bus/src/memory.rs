//! The in-process bus of embedded mode: the same semantics the roles rely on from Kafka
//! (keyed partitions, per-partition order, consumer groups sharing partitions, commits, a new
//! group reading from the earliest record held), in memory.
//!
//! Records are dropped once every group of their topic has committed past them; a topic with
//! no group keeps at most `retain_without_groups` records. The durable copy of the traffic in
//! embedded mode is the store's audit log, not this bus.
//!
//! Its readers share the producer's memory, so it [carries values](crate::Bus::carries_values):
//! an envelope goes in and comes out as the value it is, never encoded. Bytes published with
//! [`crate::Bus::publish`] are carried as bytes.
//!
//! A topic whose reader is a stage in this process may be [pushed](crate::Bus::push_to): its
//! records then go from the publisher's task straight to the stage ([`crate::stage::run_pushed`])
//! and are not kept, so no consumer task has to be woken to read them.

use crate::{Bus, BusError, Consumer, Depth, Push, Record, Value};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    partitions: u32,
    retain_without_groups: usize,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    next_member: AtomicU64,
}

struct Topic {
    name: String,
    logs: Vec<Mutex<Log>>,
    groups: Mutex<HashMap<String, Group>>,
    /// Bumped on every publish and membership change; consumers wait on it.
    changed: watch::Sender<u64>,
    /// The stage taking this topic's records as they are published, if one does.
    push: Mutex<Option<Push>>,
}

#[derive(Default)]
struct Log {
    /// Offset of `records[0]`.
    base: u64,
    records: VecDeque<Entry>,
}

struct Entry {
    key: Arc<str>,
    payload: Bytes,
    value: Option<Value>,
}

struct Group {
    /// Next offset to read, per partition.
    committed: Vec<u64>,
    members: Vec<u64>,
    generation: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// FNV-1a: stable across runs and builds, so a key always maps to one partition.
fn partition_of(key: &str, n: u32) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in key.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h % n
}

impl MemoryBus {
    pub fn new(partitions: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                partitions: partitions.max(1),
                retain_without_groups: 100_000,
                topics: Mutex::new(HashMap::new()),
                next_member: AtomicU64::new(1),
            }),
        }
    }

    fn topic(&self, name: &str) -> Arc<Topic> {
        self.inner.topic(name)
    }

    /// Whether `topic`'s records go to a stage as they are published ([`Bus::push_to`]).
    pub fn pushed(&self, topic: &str) -> bool {
        lock(&self.topic(topic).push).is_some()
    }

    /// Hands a record to the stage the topic is pushed to (and keeps it for the topic's groups,
    /// if any), or appends it to its log. Under the topic's push lock, so a stage registering
    /// meanwhile ([`Bus::push_to`]) gets it either in its backlog or from here, never neither.
    fn deliver(&self, topic: &str, key: &str, payload: Bytes, value: Option<Value>) {
        let t = self.topic(topic);
        let guard = lock(&t.push);
        let Some(push) = guard.clone() else {
            self.append(&t, key, payload, value);
            return;
        };
        // Kept only for other groups (copies: the record's value is shared, not copied).
        if !lock(&t.groups).is_empty() {
            self.append(&t, key, payload.clone(), value.clone());
        }
        drop(guard);
        let record = Record {
            topic: t.name.clone(),
            partition: partition_of(key, t.logs.len() as u32),
            // The stage's own copy is at no offset.
            offset: 0,
            key: key.to_owned(),
            payload,
            value,
            handed: crate::Handed::Read,
        };
        (push.take)(record);
    }

    fn append(&self, t: &Topic, key: &str, payload: Bytes, value: Option<Value>) {
        let p = partition_of(key, t.logs.len() as u32) as usize;
        let no_groups = lock(&t.groups).is_empty();
        {
            let mut log = lock(&t.logs[p]);
            log.records.push_back(Entry {
                key: Arc::from(key),
                payload,
                value,
            });
            if no_groups && log.records.len() > self.inner.retain_without_groups {
                log.records.pop_front();
                log.base += 1;
            }
        }
        t.bump();
    }
}

impl Inner {
    fn topic(&self, name: &str) -> Arc<Topic> {
        let mut topics = lock(&self.topics);
        // Looked up without building a key: this runs for every record.
        if let Some(t) = topics.get(name) {
            return t.clone();
        }
        topics
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Topic {
                    name: name.to_owned(),
                    logs: (0..self.partitions).map(|_| Mutex::default()).collect(),
                    groups: Mutex::new(HashMap::new()),
                    changed: watch::channel(0).0,
                    push: Mutex::new(None),
                })
            })
            .clone()
    }
}

impl Topic {
    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Drops the records of `partition` that every group has committed.
    fn trim(&self, partition: usize, groups: &HashMap<String, Group>) {
        let Some(low) = groups.values().map(|g| g.committed[partition]).min() else {
            return;
        };
        let mut log = lock(&self.logs[partition]);
        while log.base < low && !log.records.is_empty() {
            log.records.pop_front();
            log.base += 1;
        }
    }
}

impl MemoryBus {
    /// Joins `group` on `topics`; a new group starts at the earliest record held, or after the
    /// last (`from_end`).
    fn join(&self, group: &str, topics: &[String], from_end: bool) -> Box<dyn Consumer> {
        let member = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        let mut subs = Vec::new();
        for name in topics {
            let t = self.topic(name);
            {
                let mut groups = lock(&t.groups);
                let start: Vec<u64> = t
                    .logs
                    .iter()
                    .map(|l| {
                        let l = lock(l);
                        l.base + if from_end { l.records.len() as u64 } else { 0 }
                    })
                    .collect();
                let g = groups.entry(group.to_owned()).or_insert_with(|| Group {
                    committed: start,
                    members: Vec::new(),
                    generation: 0,
                });
                g.members.push(member);
                g.generation += 1;
            }
            t.bump();
            subs.push(Subscription {
                changed: t.changed.subscribe(),
                topic: t,
                generation: 0,
                positions: Vec::new(),
                next: 0,
            });
        }
        Box::new(MemoryConsumer {
            group: group.to_owned(),
            member,
            subs,
        })
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        for t in topics {
            self.topic(t);
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), BusError> {
        self.deliver(topic, key, Bytes::from(payload), None);
        Ok(())
    }

    fn carries_values(&self) -> bool {
        true
    }

    async fn publish_value(&self, topic: &str, key: &str, value: Value) -> Result<(), BusError> {
        self.deliver(topic, key, Bytes::new(), Some(value));
        Ok(())
    }

    fn pushes(&self) -> bool {
        true
    }

    fn push_to(&self, topic: &str, to: Option<Push>) {
        let t = self.topic(topic);
        let mut push = lock(&t.push);
        *push = to.clone();
        let Some(to) = to else {
            return;
        };
        // Records held now (published before the stage came: it starts on a task of its own)
        // go to it first, before any new one (the push lock keeps publishers out meanwhile);
        // copies when groups still read them, else they leave the log.
        let others = !lock(&t.groups).is_empty();
        for (p, log) in t.logs.iter().enumerate() {
            let mut log = lock(log);
            let base = log.base;
            let held: Vec<Record> = log
                .records
                .iter()
                .enumerate()
                .map(|(i, e)| Record {
                    topic: t.name.clone(),
                    partition: p as u32,
                    offset: base + i as u64,
                    key: e.key.to_string(),
                    payload: e.payload.clone(),
                    value: e.value.clone(),
                    handed: crate::Handed::Read,
                })
                .collect();
            if !others {
                log.base += log.records.len() as u64;
                log.records.clear();
            }
            drop(log);
            for r in held {
                (to.take)(r);
            }
        }
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, BusError> {
        Ok(self.join(group, topics, false))
    }

    async fn subscribe_from_end(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, BusError> {
        Ok(self.join(group, topics, true))
    }

    fn depth(&self) -> Vec<Depth> {
        let topics: Vec<Arc<Topic>> = lock(&self.inner.topics).values().cloned().collect();
        let mut out = Vec::new();
        for t in topics {
            if let Some(push) = lock(&t.push).as_ref() {
                out.push(Depth {
                    topic: t.name.clone(),
                    group: push.group.clone(),
                    records: push.pending.load(Ordering::Relaxed),
                });
            }
            let ends: Vec<u64> = t
                .logs
                .iter()
                .map(|l| {
                    let l = lock(l);
                    l.base + l.records.len() as u64
                })
                .collect();
            for (name, g) in lock(&t.groups).iter() {
                let records = ends
                    .iter()
                    .zip(&g.committed)
                    .map(|(e, c)| e.saturating_sub(*c))
                    .sum();
                out.push(Depth {
                    topic: t.name.clone(),
                    group: name.clone(),
                    records,
                });
            }
        }
        out
    }
}

struct MemoryConsumer {
    group: String,
    member: u64,
    subs: Vec<Subscription>,
}

struct Subscription {
    topic: Arc<Topic>,
    changed: watch::Receiver<u64>,
    /// The group generation `positions` was computed for.
    generation: u64,
    /// Assigned partitions and the next offset to read from each.
    positions: Vec<(u32, u64)>,
    /// Round-robin cursor over `positions`, so one busy partition cannot starve the others.
    next: usize,
}

impl Subscription {
    /// Recomputes the assignment when members joined or left: partition `p` belongs to the
    /// member at `p % members` in join order; newly assigned partitions restart at the commit.
    fn refresh(&mut self, group: &str, member: u64) {
        let groups = lock(&self.topic.groups);
        let Some(g) = groups.get(group) else { return };
        if g.generation == self.generation {
            return;
        }
        self.generation = g.generation;
        let n = g.members.len().max(1);
        let me = g.members.iter().position(|m| *m == member).unwrap_or(0);
        let old: HashMap<u32, u64> = self.positions.iter().copied().collect();
        self.positions = (0..self.topic.logs.len() as u32)
            .filter(|p| *p as usize % n == me)
            .map(|p| (p, *old.get(&p).unwrap_or(&g.committed[p as usize])))
            .collect();
    }

    fn poll(&mut self) -> Option<Record> {
        let n = self.positions.len();
        for i in 0..n {
            let idx = (self.next + i) % n;
            let (p, pos) = self.positions[idx];
            let log = lock(&self.topic.logs[p as usize]);
            let pos = pos.max(log.base);
            if let Some(e) = log.records.get((pos - log.base) as usize) {
                let rec = Record {
                    topic: self.topic.name.clone(),
                    partition: p,
                    offset: pos,
                    key: e.key.to_string(),
                    payload: e.payload.clone(),
                    value: e.value.clone(),
                    handed: crate::Handed::Read,
                };
                drop(log);
                self.positions[idx].1 = pos + 1;
                self.next = idx + 1;
                return Some(rec);
            }
        }
        None
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Result<Record, BusError> {
        loop {
            for s in &mut self.subs {
                // Mark the current state seen before looking, so a publish after the look
                // wakes the wait below.
                s.changed.borrow_and_update();
                s.refresh(&self.group, self.member);
                if let Some(r) = s.poll() {
                    return Ok(r);
                }
            }
            if self.subs.is_empty() {
                return Err(BusError::Closed);
            }
            let waits = self.subs.iter_mut().map(|s| Box::pin(s.changed.changed()));
            let (res, _, _) = futures_util::future::select_all(waits).await;
            if res.is_err() {
                return Err(BusError::Closed);
            }
        }
    }

    async fn commit(&mut self, topic: &str, partition: u32, offset: u64) -> Result<(), BusError> {
        let s = self
            .subs
            .iter()
            .find(|s| s.topic.name == topic)
            .ok_or_else(|| BusError::UnknownTopic(topic.to_owned()))?;
        let mut groups = lock(&s.topic.groups);
        if let Some(g) = groups.get_mut(&self.group) {
            if let Some(c) = g.committed.get_mut(partition as usize) {
                *c = (*c).max(offset + 1);
            }
        }
        s.topic.trim(partition as usize, &groups);
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        for s in &self.subs {
            {
                let mut groups = lock(&s.topic.groups);
                if let Some(g) = groups.get_mut(&self.group) {
                    g.members.retain(|m| *m != self.member);
                    g.generation += 1;
                }
            }
            s.topic.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next(c: &mut Box<dyn Consumer>) -> Record {
        tokio::time::timeout(Duration::from_secs(2), c.next())
            .await
            .expect("a record within 2 s")
            .unwrap()
    }

    fn t(s: &str) -> Vec<String> {
        vec![s.to_owned()]
    }

    /// Records of one key come out in the order they went in.
    #[tokio::test]
    async fn per_key_order() {
        let bus = MemoryBus::new(4);
        for i in 0..50u32 {
            bus.publish("calls", &format!("bot{}", i % 3), i.to_be_bytes().to_vec())
                .await
                .unwrap();
        }
        let mut c = bus.subscribe("g", &t("calls")).await.unwrap();
        let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
        for _ in 0..50 {
            let r = next(&mut c).await;
            seen.entry(r.key)
                .or_default()
                .push(u32::from_be_bytes(r.payload[..].try_into().unwrap()));
        }
        for v in seen.values() {
            assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
        }
    }

    /// A pushed topic's records go to its stage as they are published, and none is kept; those
    /// published before the stage came are handed to it when it comes.
    #[tokio::test]
    async fn a_pushed_topic_hands_its_records_over_and_keeps_none() {
        let bus = MemoryBus::new(2);
        bus.publish("calls", "early", vec![0]).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let push = Push {
            group: "g".into(),
            pending: Arc::default(),
            take: Arc::new(move |r: Record| {
                let _ = tx.send((r.key, r.payload[0]));
            }),
        };
        bus.push_to("calls", Some(push));
        for i in 1..=3u8 {
            bus.publish("calls", "bot", vec![i]).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(
                tokio::time::timeout(Duration::from_secs(2), rx.recv())
                    .await
                    .expect("handed over")
                    .unwrap(),
            );
        }
        got.sort();
        assert_eq!(
            got,
            vec![
                ("bot".to_owned(), 1),
                ("bot".to_owned(), 2),
                ("bot".to_owned(), 3),
                ("early".to_owned(), 0)
            ]
        );
        let logs: usize = bus
            .topic("calls")
            .logs
            .iter()
            .map(|l| lock(l).records.len())
            .sum();
        assert_eq!(logs, 0, "nothing kept");
        // Stopped: records are kept again, for a group to read.
        bus.push_to("calls", None);
        bus.publish("calls", "bot", vec![9]).await.unwrap();
        let mut c = bus.subscribe("g", &t("calls")).await.unwrap();
        assert_eq!(next(&mut c).await.payload[0], 9);
    }

    /// A consumer waiting on an empty topic wakes when a record arrives.
    #[tokio::test]
    async fn waits_for_records() {
        let bus = Arc::new(MemoryBus::new(2));
        let mut c = bus.subscribe("g", &t("x")).await.unwrap();
        let b = bus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            b.publish("x", "k", b"v".to_vec()).await.unwrap();
        });
        assert_eq!(&next(&mut c).await.payload[..], b"v");
    }

    /// A member that leaves without committing has its records re-delivered to the group.
    #[tokio::test]
    async fn uncommitted_records_are_redelivered() {
        let bus = MemoryBus::new(1);
        for i in 0..3u8 {
            bus.publish("calls", "k", vec![i]).await.unwrap();
        }
        let mut c = bus.subscribe("g", &t("calls")).await.unwrap();
        let r0 = next(&mut c).await;
        c.commit("calls", r0.partition, r0.offset).await.unwrap();
        let _r1 = next(&mut c).await;
        drop(c);
        let mut c = bus.subscribe("g", &t("calls")).await.unwrap();
        assert_eq!(next(&mut c).await.payload[0], 1);
        assert_eq!(bus.depth()[0].records, 2);
    }

    /// Two members of a group split the partitions; separate groups each see everything.
    #[tokio::test]
    async fn groups_share_and_separate() {
        let bus = MemoryBus::new(4);
        let mut a = bus.subscribe("g", &t("calls")).await.unwrap();
        let mut b = bus.subscribe("g", &t("calls")).await.unwrap();
        let mut other = bus.subscribe("h", &t("calls")).await.unwrap();
        for i in 0..40u8 {
            bus.publish("calls", &format!("key{i}"), vec![i])
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..40 {
            got.push(next(&mut other).await.payload[0]);
        }
        assert_eq!(got.len(), 40);
        let mut split = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while split.len() < 40 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                r = a.next() => split.push(("a", r.unwrap().partition)),
                r = b.next() => split.push(("b", r.unwrap().partition)),
            }
        }
        assert_eq!(split.len(), 40);
        for (who, p) in &split {
            assert!(
                !split.iter().any(|(w, q)| q == p && w != who),
                "partition {p} shared"
            );
        }
    }

    /// An envelope goes through as the value it is (no bytes); read as another kind it is
    /// skipped, and a record published as bytes still decodes from them.
    #[tokio::test]
    async fn envelopes_travel_as_values() {
        use schemas::{ApiError, BotId, CallId, Envelope, Response, Update};
        let bus = MemoryBus::new(2);
        let mut c = bus.subscribe("g", &t("responses.x")).await.unwrap();
        let env = Envelope::new(
            CallId::new(),
            BotId(7),
            "test",
            None,
            Response::from_error(&ApiError::bad_request("chat not found")),
        );
        crate::publish_envelope(&bus, "responses.x", &env)
            .await
            .unwrap();
        let r = next(&mut c).await;
        assert!(r.payload.is_empty() && r.value.is_some());
        assert_eq!(crate::decode_or_skip::<Response>(&r), Some(env.clone()));
        assert_eq!(crate::decode_or_skip::<Update>(&r), None, "another kind");
        bus.publish("responses.x", "7", env.encode()).await.unwrap();
        let r = next(&mut c).await;
        assert!(r.value.is_none());
        assert_eq!(crate::decode_or_skip::<Response>(&r), Some(env));
    }

    /// A record's value nobody else holds is taken as it is (its strings where they were);
    /// a shared one is copied and the other holder keeps it; another kind is skipped.
    #[tokio::test]
    async fn a_value_held_once_is_taken_without_a_copy() {
        use schemas::{BotId, CallId, Envelope, Response, Update};
        let env = Envelope::new(
            CallId::new(),
            BotId(7),
            "a producer",
            Some("responses.x".into()),
            Response::from_error(&schemas::ApiError::bad_request("chat not found")),
        );
        let at = env.header.producer.as_ptr();
        let record = |value: crate::Value| crate::Record {
            topic: "responses.x".into(),
            partition: 0,
            offset: 0,
            key: "7".into(),
            payload: Bytes::new(),
            value: Some(value),
            handed: crate::Handed::Read,
        };
        let held = record(std::sync::Arc::new(env.clone()));
        let copy = held.clone();
        let taken = crate::take_or_skip::<Response>(copy).unwrap();
        assert_eq!(taken, env);
        assert_ne!(taken.header.producer.as_ptr(), held_producer(&held));
        let taken = crate::take_or_skip::<Response>(held).unwrap();
        assert_eq!(taken, env);

        let alone = record(std::sync::Arc::new(env));
        let before = held_producer(&alone);
        let taken = crate::take_or_skip::<Response>(alone).unwrap();
        assert_eq!(taken.header.producer.as_ptr(), before, "moved, not copied");
        assert_eq!(before, at, "into the record as it was");
        assert_eq!(
            crate::take_or_skip::<Update>(record(std::sync::Arc::new(taken))),
            None,
            "another kind"
        );
    }

    fn held_producer(r: &crate::Record) -> *const u8 {
        let env = r.value.as_ref().unwrap();
        let env = env
            .downcast_ref::<schemas::Envelope<schemas::Response>>()
            .unwrap();
        env.header.producer.as_ptr()
    }

    /// Committed records are dropped from memory.
    #[tokio::test]
    async fn commits_trim_the_log() {
        let bus = MemoryBus::new(1);
        let mut c = bus.subscribe("g", &t("calls")).await.unwrap();
        for i in 0..10u8 {
            bus.publish("calls", "k", vec![i]).await.unwrap();
        }
        for _ in 0..10 {
            let r = next(&mut c).await;
            c.commit(&r.topic, r.partition, r.offset).await.unwrap();
        }
        let topic = bus.topic("calls");
        assert_eq!(lock(&topic.logs[0]).records.len(), 0);
        assert_eq!(bus.depth()[0].records, 0);
    }
}

#[cfg(test)]
mod contract {
    /// The in-process bus passes the bus contract.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_bus_suite() {
        crate::testsuite::run_all(std::sync::Arc::new(super::MemoryBus::new(4)), "").await;
    }
}
