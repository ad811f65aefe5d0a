//! Helpers shared by the benchmarks (not a benchmark itself): waiting on a condition, the raw
//! `insert_many` baseline, reading a running sdl's admin endpoint, and its memory from /proc;
//! the benchmark table and its writers in [`rows`].
#![allow(dead_code)]

pub mod rows;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::Collection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Documents per `insert_many` in the baseline: sdl's default `sink.batch_max_documents`.
pub const BATCH: usize = 1000;

/// Polls `check` every `period` until it holds; panics naming `what` (and `context()`, e.g.
/// sdl's logs) after `timeout`.
pub async fn wait_for<F, Fut>(
    what: &str,
    period: Duration,
    timeout: Duration,
    context: impl Fn() -> String,
    mut check: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}:\n{}",
            context()
        );
        tokio::time::sleep(period).await;
    }
}

/// The secondary indexes sdl creates on its change collection (src/sink/mod.rs), so that a
/// baseline collection costs the server the same work per document.
pub async fn create_change_indexes<T: Send + Sync>(target: &Collection<T>) {
    use mongodb::bson::doc;
    use mongodb::IndexModel;
    target
        .create_indexes([
            IndexModel::builder().keys(doc! { "ts": 1 }).build(),
            IndexModel::builder()
                .keys(doc! { "meta.db": 1, "meta.tbl": 1, "meta.pk": 1 })
                .build(),
        ])
        .await
        .unwrap();
}

/// The raw baseline: `docs` inserted into `target` by a plain driver loop, `BATCH` documents per
/// `insert_many`, with sdl's write concern (majority, journaled). Returns the seconds taken.
pub async fn insert_many_baseline<T>(target: &Collection<T>, docs: &[T]) -> f64
where
    T: serde::Serialize + Send + Sync,
{
    let concern = WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build();
    let started = Instant::now();
    for chunk in docs.chunks(BATCH) {
        target
            .insert_many(chunk)
            .write_concern(concern.clone())
            .await
            .unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// A running sdl's admin endpoint (`[admin] listen`).
pub struct Admin {
    pub addr: String,
}

impl Admin {
    pub fn new(addr: String) -> Self {
        Self { addr }
    }

    /// `GET path` → (status code, body); `None` when the endpoint does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let work = async {
            let mut stream = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
            // HTTP/1.0: the server closes the connection after one response, no chunking.
            let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.ok()?;
            let text = String::from_utf8_lossy(&response);
            let (head, body) = text.split_once("\r\n\r\n")?;
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            Some((status, body.to_string()))
        };
        tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .ok()
            .flatten()
    }

    /// The Prometheus metrics by name (`sdl_binlog_rows_total`, ...); empty when unreachable.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let Some((200, body)) = self.get("/metrics").await else {
            return HashMap::new();
        };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let (200, body) = self.get("/status").await? else {
            return None;
        };
        serde_json::from_str(&body).ok()
    }

    /// Whether `/readyz` answers 200 (following the binlog, circuit breaker closed).
    pub async fn ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _)))
    }
}

/// A counter from a metrics map (0 when absent).
/// A size or rate from the environment (`BENCH_ROWS`, ...), `default` when unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub fn counter(metrics: &HashMap<String, f64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0.0) as u64
}

/// A `Vm*` line of /proc/<pid>/status in MiB (`VmHWM`: peak resident set; `VmRSS`: current).
pub fn proc_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The sequence number of a single-domain MariaDB GTID position (`0-1-42` → 42).
pub fn gtid_seq(position: &str) -> u64 {
    position
        .trim()
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a single-domain MariaDB GTID position: {position:?}"))
}

/// CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

/// Seconds from the first line of `log` to the first line containing `needle`, from the
/// tracing timestamps (`2026-11-26T04:30:00.123456Z ...`; time of day only).
pub fn log_offset(log: &str, needle: &str) -> Option<f64> {
    let time = |line: &str| -> Option<f64> {
        let stamp = line.split_whitespace().next()?;
        let clock = stamp.split_once('T')?.1.trim_end_matches('Z');
        let mut parts = clock.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let first = log.lines().find_map(time)?;
    let at = log.lines().find(|l| l.contains(needle)).and_then(time)?;
    Some(at - first)
}

/// A Prometheus histogram read from a metrics map (`<name>_bucket{le="..."}`, `_sum`, `_count`).
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// (upper bound in the metric's unit, cumulative count), ascending; the last is +Inf.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    pub fn read(metrics: &HashMap<String, f64>, name: &str) -> Self {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = metrics
            .iter()
            .filter_map(|(series, count)| {
                let bound = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = match bound {
                    "+Inf" => f64::INFINITY,
                    b => b.parse().ok()?,
                };
                Some((bound, *count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self {
            buckets,
            sum: metrics.get(&format!("{name}_sum")).copied().unwrap_or(0.0),
            count: metrics
                .get(&format!("{name}_count"))
                .copied()
                .unwrap_or(0.0),
        }
    }

    /// The observations made since `earlier` (a reading of the same process's histogram).
    pub fn since(&self, earlier: &Histogram) -> Self {
        let before = |bound: f64| {
            earlier
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c)
        };
        Self {
            buckets: self
                .buckets
                .iter()
                .map(|(b, c)| (*b, c - before(*b)))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The upper bound of the bucket holding quantile `q` (the histogram's resolution: a
    /// factor of 2 for sdl's exponential buckets); `None` without observations.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = (self.count * q).ceil().max(1.0);
        self.buckets
            .iter()
            .find(|(_, c)| *c >= rank)
            .map(|(b, _)| *b)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}
