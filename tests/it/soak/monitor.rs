//! Watches sdl's admin endpoint during the soak: the deepest the WAL got (unacknowledged records
//! and bytes, from `/status`) and the largest lags (from `/metrics`). Samples every 500 ms; while
//! sdl is down (killed, restarting) there is nothing to read and the sample is skipped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Default, Clone)]
pub struct Peaks {
    pub samples: u64,
    pub unacked_records: u64,
    pub unacked_bytes: u64,
    pub end_to_end_lag_seconds: f64,
    pub source_lag_seconds: f64,
}

pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Peaks>,
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Monitor {
    pub fn start(admin: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(2)))
                    .build()
                    .into();
                let get = |path: &str| -> Option<String> {
                    agent
                        .get(&format!("http://{admin}{path}"))
                        .call()
                        .ok()?
                        .body_mut()
                        .read_to_string()
                        .ok()
                };
                let mut peaks = Peaks::default();
                while !stop.load(Ordering::SeqCst) {
                    if let Some(status) = get("/status")
                        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                    {
                        peaks.samples += 1;
                        let wal = &status["wal"];
                        peaks.unacked_records = peaks
                            .unacked_records
                            .max(wal["unacked_records"].as_u64().unwrap_or(0));
                        peaks.unacked_bytes = peaks
                            .unacked_bytes
                            .max(wal["unacked_bytes"].as_u64().unwrap_or(0));
                    }
                    if let Some(metrics) = get("/metrics") {
                        let lag = metric(&metrics, "sdl_end_to_end_lag_seconds").unwrap_or(0.0);
                        peaks.end_to_end_lag_seconds = peaks.end_to_end_lag_seconds.max(lag);
                        let lag = metric(&metrics, "sdl_source_lag_seconds").unwrap_or(0.0);
                        peaks.source_lag_seconds = peaks.source_lag_seconds.max(lag);
                    }
                    // Sampling interval.
                    std::thread::sleep(Duration::from_millis(500));
                }
                peaks
            }
        });
        Self { stop, thread }
    }

    pub fn finish(self) -> Peaks {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("monitor thread")
    }
}
