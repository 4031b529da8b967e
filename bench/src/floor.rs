//! The broker's own round trip, through the very client the gateway uses (`bus::kafka`):
//! a record published to `ping` is read by an echo consumer and published to `pong`, where the
//! origin reads it. That is a call's trip on Kafka (ingest → `calls` → processor →
//! `responses` → ingest) with no gateway work in it: what the gateway adds beyond it is its own.

use anyhow::Context;
use bus::kafka::{KafkaBus, KafkaConfig};
use bus::Bus;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Floor {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rounds: usize,
}

pub async fn ping_pong(brokers: &str, rounds: usize) -> anyhow::Result<Floor> {
    let mut cfg = KafkaConfig::from_url(&format!("kafka://{brokers}"))?;
    cfg.prefix = format!("floor{}.", std::process::id());
    cfg.session_timeout_ms = 2000;
    cfg.client_id = "telepipe-bench-floor".into();
    let bus = Arc::new(KafkaBus::new(cfg)?);
    let (ping, pong) = ("ping".to_owned(), "pong".to_owned());
    bus.ensure_topics(&[ping.clone(), pong.clone()]).await?;
    let mut echo = bus.subscribe("echo", std::slice::from_ref(&ping)).await?;
    let mut origin = bus.subscribe("origin", std::slice::from_ref(&pong)).await?;
    let echo_bus = bus.clone();
    let echo_task = tokio::spawn(async move {
        loop {
            let r = echo.next().await?;
            echo_bus.publish("pong", &r.key, r.payload.to_vec()).await?;
            echo.commit(&r.topic, r.partition, r.offset).await?;
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    });
    // Until both consumers have joined their groups, pings go unanswered for a while.
    let mut lat = Vec::with_capacity(rounds);
    let mut seq = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while lat.len() < rounds {
        seq += 1;
        let t = Instant::now();
        bus.publish("ping", "bot", seq.to_be_bytes().to_vec())
            .await
            .context("publishing a ping")?;
        loop {
            let r = tokio::time::timeout(Duration::from_secs(10), origin.next())
                .await
                .context("no pong within 10 s")??;
            origin.commit(&r.topic, r.partition, r.offset).await?;
            if r.payload[..] == seq.to_be_bytes() {
                break;
            }
        }
        // The first rounds include group joins.
        if seq > 20 {
            lat.push(t.elapsed());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "ping-pong took over five minutes"
        );
    }
    echo_task.abort();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    Ok(Floor {
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        rounds: lat.len(),
    })
}
