//! `telepipe audit --stats`: per method (or per bot) the number of calls, how many failed,
//! and latency percentiles. Latencies are counted per group in a sparse log-linear histogram:
//! exact below 2,048 ms, within 0.8% above; memory grows with the distinct buckets a group
//! uses (a few hundred), not with the calls. At most [`MAX_GROUPS`] groups (method names come
//! from clients); the rest count as `(other)`.

use std::collections::BTreeMap;
use std::io::Write;
use store::{CallRow, Outcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Method,
    Bot,
}

impl std::str::FromStr for By {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "method" => Ok(By::Method),
            "bot" => Ok(By::Bot),
            other => Err(format!("--by is method or bot, not {other:?}")),
        }
    }
}

/// Most groups reported one by one.
pub const MAX_GROUPS: usize = 10_000;

#[derive(Default)]
struct Group {
    calls: u64,
    errors: u64,
    /// Histogram bucket → calls.
    latencies: BTreeMap<u32, u64>,
    timed: u64,
}

/// The bucket of a latency: the value itself below 2,048; above, its power of two and the
/// next 7 bits.
fn bucket(ms: u64) -> u32 {
    if ms < 2048 {
        return ms as u32;
    }
    let e = 63 - ms.leading_zeros();
    let sub = (ms >> (e - 7)) & 127;
    2048 + (e - 11) * 128 + sub as u32
}

/// The smallest latency of a bucket.
fn low(bucket: u32) -> u64 {
    if bucket < 2048 {
        return bucket as u64;
    }
    let e = (bucket - 2048) / 128 + 11;
    let sub = ((bucket - 2048) % 128) as u64;
    (128 + sub) << (e - 7)
}

/// Counts fed one row at a time.
pub struct Stats {
    by: By,
    groups: BTreeMap<String, Group>,
    total: Group,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Line {
    pub key: String,
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<u32>,
    pub p95_ms: Option<u32>,
    pub p99_ms: Option<u32>,
}

impl Stats {
    pub fn new(by: By) -> Self {
        Self {
            by,
            groups: BTreeMap::new(),
            total: Group::default(),
        }
    }

    pub fn add(&mut self, r: &CallRow) {
        let mut key = match self.by {
            // Method names are case-insensitive: one group per name.
            By::Method => r.method.to_ascii_lowercase(),
            By::Bot => r.bot_id.0.to_string(),
        };
        if self.groups.len() >= MAX_GROUPS && !self.groups.contains_key(&key) {
            key = "(other)".into();
        }
        let failed = r.outcome != Outcome::Ok;
        for g in [self.groups.entry(key).or_default(), &mut self.total] {
            g.calls += 1;
            g.errors += failed as u64;
            if let Some(ms) = r.latency_ms {
                *g.latencies.entry(bucket(ms)).or_default() += 1;
                g.timed += 1;
            }
        }
    }

    /// The lines, most called first, then the total.
    pub fn lines(mut self) -> Vec<Line> {
        let mut out: Vec<Line> = std::mem::take(&mut self.groups)
            .into_iter()
            .map(|(key, g)| line(key, g))
            .collect();
        out.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.key.cmp(&b.key)));
        out.push(line("(all)".into(), self.total));
        out
    }
}

fn line(key: String, g: Group) -> Line {
    let pct = |p: f64| -> Option<u32> {
        if g.timed == 0 {
            return None;
        }
        // Nearest rank: the smallest value with at least p of the values at or below it.
        let rank = ((p * g.timed as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in &g.latencies {
            seen += n;
            if seen >= rank {
                return Some(low(*b).min(u32::MAX as u64) as u32);
            }
        }
        None
    };
    Line {
        calls: g.calls,
        errors: g.errors,
        error_rate: if g.calls == 0 {
            0.0
        } else {
            g.errors as f64 / g.calls as f64
        },
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        key,
    }
}

/// The report as a table (`json`: one JSON object a line).
pub fn write(out: &mut impl Write, by: By, lines: &[Line], json: bool) -> std::io::Result<()> {
    if json {
        for l in lines {
            serde_json::to_writer(&mut *out, l)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let what = match by {
        By::Method => "METHOD",
        By::Bot => "BOT",
    };
    writeln!(
        out,
        "{what:<32}  {:>10}  {:>8}  {:>7}  {:>7}  {:>7}  {:>7}",
        "CALLS", "ERRORS", "ERROR%", "P50 MS", "P95 MS", "P99 MS"
    )?;
    let ms = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for l in lines {
        writeln!(
            out,
            "{:<32}  {:>10}  {:>8}  {:>7.2}  {:>7}  {:>7}  {:>7}",
            l.key,
            l.calls,
            l.errors,
            l.error_rate * 100.0,
            ms(l.p50_ms),
            ms(l.p95_ms),
            ms(l.p99_ms)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_percentiles_per_group() {
        let mut s = Stats::new(By::Method);
        for i in 1..=100u64 {
            let mut r = store::testsuite::call_row(1, 1000 + i as i64, "sendMessage");
            r.latency_ms = Some(i);
            if i % 10 == 0 {
                r.outcome = Outcome::Error;
            }
            s.add(&r);
        }
        let mut r = store::testsuite::call_row(2, 5000, "GETME");
        r.latency_ms = None;
        s.add(&r);
        let lines = s.lines();
        assert_eq!(lines.len(), 3);
        let send = &lines[0];
        assert_eq!(
            (send.key.as_str(), send.calls, send.errors),
            ("sendmessage", 100, 10)
        );
        assert_eq!(
            (send.p50_ms, send.p95_ms, send.p99_ms),
            (Some(50), Some(95), Some(99))
        );
        assert!((send.error_rate - 0.1).abs() < 1e-9);
        assert_eq!((lines[1].key.as_str(), lines[1].p50_ms), ("getme", None));
        assert_eq!((lines[2].key.as_str(), lines[2].calls), ("(all)", 101));
        let mut out = Vec::new();
        write(&mut out, By::Method, &lines, false).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("sendmessage"));
    }

    /// Buckets are exact below 2,048 ms and within 1% above; every value lands in the bucket
    /// whose range holds it.
    #[test]
    fn buckets_are_tight() {
        for v in [0, 1, 2047, 2048, 2049, 3000, 65_535, 1 << 40, u64::MAX] {
            let b = bucket(v);
            assert!(low(b) <= v, "{v}");
            assert!((v - low(b)) as f64 <= v as f64 * 0.008, "{v}");
            if v < 2048 {
                assert_eq!(low(b), v);
            }
        }
        assert!(bucket(2047) < bucket(2048) && bucket(2048) < bucket(4096));
    }
}
