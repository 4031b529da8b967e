//! The broker's own round trip, through the very client the gateway uses (`bus::kafka`):
//! a record published to `ping` is read by an echo consumer and published to `pong`, where the
//! origin reads it. That is a call's trip on Kafka (ingest → `calls` → processor →
//! `responses` → ingest) with no gateway work in it: what the gateway adds beyond it is its own.
//! With one ping in flight it is the latency floor; with as many in flight as the bench has
//! clients, its rate is the most any gateway could get through this broker on this machine.

use crate::polls::percentile;
use anyhow::Context;
use bus::kafka::{KafkaBus, KafkaConfig};
use bus::Bus;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub struct Floor {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rounds: usize,
    pub in_flight: usize,
    pub per_second: f64,
    /// p50 of the publish alone (until the broker acknowledged the ping).
    pub ack_p50_ms: f64,
    /// p50 and p99 of each successive slice of the run (by when the ping left): a broker
    /// whose round trip grows with what a topic holds shows it here, not in the totals.
    pub windows: Vec<(f64, f64)>,
}

/// About the size of a sendMessage call's record on `calls`.
const PAYLOAD: usize = 512;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

pub async fn ping_pong(
    brokers: &str,
    rounds: usize,
    in_flight: usize,
    windows: usize,
) -> anyhow::Result<Floor> {
    let (in_flight, rounds) = (in_flight.max(1), rounds.max(1));
    let mut cfg = KafkaConfig::from_url(&format!("kafka://{brokers}"))?;
    // Topics and groups of their own for every run, so that no record of an earlier run can
    // answer a ping of this one.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    cfg.prefix = format!(
        "floor{}r{}.",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    cfg.session_timeout_ms = 2000;
    cfg.client_id = "telepipe-bench-floor".into();
    let bus = Arc::new(KafkaBus::new(cfg)?);
    let (ping, pong) = ("ping".to_owned(), "pong".to_owned());
    bus.ensure_topics(&[ping.clone(), pong.clone()]).await?;
    let mut echo = bus.subscribe("echo", std::slice::from_ref(&ping)).await?;
    let mut origin = bus.subscribe("origin", std::slice::from_ref(&pong)).await?;
    // The echo answers every ping without waiting for the previous answer's acknowledgement,
    // as the processors do.
    let echo_bus = bus.clone();
    let echo_task = tokio::spawn(async move {
        loop {
            let r = echo.next().await?;
            let b = echo_bus.clone();
            tokio::spawn(async move {
                if let Err(error) = b.publish("pong", &r.key, r.payload.to_vec()).await {
                    eprintln!("floor: could not publish a pong: {error}");
                }
            });
            echo.commit(&r.topic, r.partition, r.offset).await?;
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    });
    let waiters: Waiters = Arc::default();
    let w = waiters.clone();
    let origin_task = tokio::spawn(async move {
        loop {
            let r = origin.next().await?;
            origin.commit(&r.topic, r.partition, r.offset).await?;
            let seq = u64::from_be_bytes(r.payload[..8].try_into()?);
            if let Some(tx) = w.lock().expect("not poisoned").remove(&seq) {
                let _ = tx.send(());
            }
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    });
    let next = Arc::new(AtomicU64::new(0));
    let one = |bus: Arc<KafkaBus>, waiters: Waiters, next: Arc<AtomicU64>| async move {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        waiters.lock().expect("not poisoned").insert(seq, tx);
        let mut payload = seq.to_be_bytes().to_vec();
        payload.resize(PAYLOAD, b'x');
        let t = Instant::now();
        bus.publish("ping", "bot", payload)
            .await
            .context("publishing a ping")?;
        let acked = t.elapsed();
        // Until both consumers have joined their groups, pings wait unanswered.
        let answered = tokio::time::timeout(Duration::from_secs(120), rx).await;
        if answered.is_err() {
            waiters.lock().expect("not poisoned").remove(&seq);
        }
        answered.context("no pong within two minutes")??;
        anyhow::Ok((t, t.elapsed(), acked))
    };
    // Warm up: group joins, connections.
    for _ in 0..20 {
        one(bus.clone(), waiters.clone(), next.clone()).await?;
    }
    let started = Instant::now();
    let per_worker = rounds.div_ceil(in_flight);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (bus, waiters, next) = (bus.clone(), waiters.clone(), next.clone());
        workers.spawn(async move {
            let mut lat = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                lat.push(one(bus.clone(), waiters.clone(), next.clone()).await?);
            }
            anyhow::Ok(lat)
        });
    }
    let mut lat = Vec::with_capacity(rounds);
    while let Some(r) = workers.join_next().await {
        lat.extend(r??);
    }
    let seconds = started.elapsed().as_secs_f64();
    echo_task.abort();
    origin_task.abort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let windows = windows.clamp(1, lat.len());
    let mut slices = vec![Vec::new(); windows];
    for (sent, took, _) in &lat {
        let at = sent.duration_since(started).as_secs_f64() / seconds;
        slices[((at * windows as f64) as usize).min(windows - 1)].push(ms(*took));
    }
    let windows = slices
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            (percentile(&s, 0.5), percentile(&s, 0.99))
        })
        .collect();
    let mut acks: Vec<f64> = lat.iter().map(|(_, _, acked)| ms(*acked)).collect();
    acks.sort_by(f64::total_cmp);
    let mut all: Vec<f64> = lat.iter().map(|(_, took, _)| ms(*took)).collect();
    all.sort_by(f64::total_cmp);
    Ok(Floor {
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        rounds: all.len(),
        in_flight,
        per_second: all.len() as f64 / seconds,
        ack_p50_ms: percentile(&acks, 0.5),
        windows,
    })
}

impl std::fmt::Display for Floor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "broker ping-pong (publish -> consume -> publish -> consume), {} in flight: {:.0}/s, p50 {:.3} ms, p99 {:.3} ms over {} rounds (the publish alone: p50 {:.3} ms)",
            self.in_flight, self.per_second, self.p50_ms, self.p99_ms, self.rounds, self.ack_p50_ms
        )?;
        if self.windows.len() > 1 {
            write!(f, "\n  p50/p99 ms by slice of the run:")?;
            for (p50, p99) in &self.windows {
                write!(f, " {p50:.2}/{p99:.2}")?;
            }
        }
        Ok(())
    }
}
