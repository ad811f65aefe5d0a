//! The forwarder's circuit breaker: how long to wait between MongoDB commit attempts, and what
//! state the connection to MongoDB is in.
//!
//! # Guarantees
//! - **Closed** (normal): a failed attempt is retried after a short backoff; after
//!   `sink.breaker_failures` consecutive failures the breaker **opens**.
//! - **Open**: attempts pause with exponential backoff and jitter, from 100 ms up to
//!   `sink.retry_max_delay` (default 30 s). The next attempt after a pause is a **half-open**
//!   probe: success closes the breaker, failure opens it again with a longer pause.
//! - There is no limit on how long an outage may last: the breaker never gives up. Only
//!   transient errors reach it; a definite error stops the forwarder before it gets here.
//! - Each state change is logged once per outage (open: warn; first probe: info; closed: info
//!   with the outage's length and failed attempts), not once per retry: further probes and
//!   failures inside one outage are logged at debug level.
//! - An outage lasts from the start of its first failed attempt (not the moment that attempt
//!   gave up, which can be a server-selection timeout later) to the success that ends it; its
//!   start is published ([`BreakerStatus::failing_since`]) so that health checks can tell how long
//!   the forwarder has been failing.
//! - The current state is published on a `watch` channel ([`BreakerStatus`]) for whoever wants to
//!   read it (metrics, health checks). The breaker reads and calls nothing else: the end of an
//!   outage is returned by [`CircuitBreaker::on_success`], and the forwarder publishes it.
//!
//! Backoff delays come from `backon`'s `ExponentialBuilder` (see docs/decisions.md).

use std::fmt::Display;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use crate::telemetry::{BreakerState, BreakerStatus};

/// The first pause after a failure.
pub const MIN_DELAY: Duration = Duration::from_millis(100);

pub struct CircuitBreaker {
    threshold: u32,
    max_delay: Duration,
    builder: ExponentialBuilder,
    backoff: ExponentialBackoff,
    outage_started: Option<Instant>,
    /// When the attempt under way started (set by [`CircuitBreaker::before_attempt`]).
    attempt_started: Option<Instant>,
    probes: u64,
    status: watch::Sender<BreakerStatus>,
}

impl CircuitBreaker {
    /// `threshold`: consecutive failures that open the breaker; `max_delay`: the longest pause.
    pub fn new(threshold: u32, max_delay: Duration, status: watch::Sender<BreakerStatus>) -> Self {
        let max_delay = max_delay.max(MIN_DELAY);
        let builder = ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        status.send_replace(BreakerStatus::default());
        Self {
            threshold: threshold.max(1),
            max_delay,
            builder,
            backoff: builder.build(),
            outage_started: None,
            attempt_started: None,
            probes: 0,
            status,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.status.borrow().state
    }

    /// Call before each attempt: after a pause in the open state, the attempt is a probe.
    pub fn before_attempt(&mut self) {
        self.attempt_started = Some(Instant::now());
        if self.state() == BreakerState::Open {
            self.probes += 1;
            if self.probes == 1 {
                info!(target: "sdl::breaker", "circuit breaker half-open: probing MongoDB with the pending batch");
            } else {
                debug!(target: "sdl::breaker",
                    probe = self.probes,
                    "circuit breaker half-open: probing again"
                );
            }
            self.status
                .send_modify(|s| s.state = BreakerState::HalfOpen);
        }
    }

    /// Records a successful attempt: the breaker closes. Returns true when this success ended an
    /// outage (the breaker was open or half-open): the caller publishes that the forwarder
    /// recovered. The breaker itself publishes nothing but its [`BreakerStatus`].
    #[must_use = "a recovery is published by the caller"]
    pub fn on_success(&mut self) -> bool {
        let status = self.status.borrow().clone();
        let recovered = status.state != BreakerState::Closed;
        if recovered {
            let outage = self.outage_started.map(|t| t.elapsed()).unwrap_or_default();
            info!(target: "sdl::breaker",
                outage = ?Duration::from_millis(outage.as_millis() as u64),
                failed_attempts = status.consecutive_failures,
                probes = self.probes,
                "circuit breaker closed: MongoDB accepts commits again"
            );
        }
        if status.state != BreakerState::Closed || status.consecutive_failures > 0 {
            self.backoff = self.builder.build();
            self.outage_started = None;
            self.probes = 0;
            self.status.send_modify(|s| {
                s.state = BreakerState::Closed;
                s.consecutive_failures = 0;
                s.failing_since = None;
            });
        }
        recovered
    }

    /// Records a transient failure; returns how long to pause before the next attempt.
    pub fn on_failure(&mut self, error: &dyn Display) -> Duration {
        let delay = self
            .backoff
            .next()
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let status = self.status.borrow().clone();
        let failures = status.consecutive_failures.saturating_add(1);
        let attempt_started = self.attempt_started.take().unwrap_or_else(Instant::now);
        let outage_started = *self.outage_started.get_or_insert(attempt_started);
        let state = match status.state {
            BreakerState::Closed if failures >= self.threshold => {
                warn!(target: "sdl::breaker",
                    error = %error,
                    consecutive_failures = failures,
                    max_delay = ?self.max_delay,
                    "circuit breaker open: MongoDB commits are failing; probing with backoff until it answers (no limit); the ingester keeps filling the WAL meanwhile"
                );
                BreakerState::Open
            }
            BreakerState::Closed => {
                warn!(target: "sdl::breaker", error = %error, retry_in = ?delay, "MongoDB commit failed; retrying");
                BreakerState::Closed
            }
            BreakerState::Open | BreakerState::HalfOpen => {
                debug!(target: "sdl::breaker", error = %error, retry_in = ?delay, "probe failed; circuit breaker stays open");
                BreakerState::Open
            }
        };
        self.status.send_modify(|s| {
            if state == BreakerState::Open && s.state == BreakerState::Closed {
                s.times_opened += 1;
            }
            s.state = state;
            s.consecutive_failures = failures;
            s.failing_since = Some(outage_started);
        });
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_half_open_and_closes_on_success() {
        let (tx, rx) = watch::channel(BreakerStatus::default());
        let mut b = CircuitBreaker::new(3, Duration::from_secs(30), tx);
        for expected in [
            BreakerState::Closed,
            BreakerState::Closed,
            BreakerState::Open,
        ] {
            b.before_attempt();
            b.on_failure(&"down");
            assert_eq!(rx.borrow().state, expected);
        }
        assert_eq!(rx.borrow().times_opened, 1);
        b.before_attempt();
        assert_eq!(rx.borrow().state, BreakerState::HalfOpen);
        b.on_failure(&"still down");
        assert_eq!(rx.borrow().state, BreakerState::Open);
        assert_eq!(rx.borrow().consecutive_failures, 4);
        b.before_attempt();
        assert!(b.on_success(), "the success ends the outage");
        assert_eq!(
            *rx.borrow(),
            BreakerStatus {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                times_opened: 1,
                failing_since: None,
            }
        );
    }

    #[test]
    fn the_outage_counts_from_the_start_of_the_first_failed_attempt() {
        let (tx, rx) = watch::channel(BreakerStatus::default());
        let mut b = CircuitBreaker::new(3, Duration::from_secs(30), tx);
        b.before_attempt();
        let attempt_started = Instant::now();
        // The attempt takes a while to fail (a server-selection timeout, say).
        std::thread::sleep(Duration::from_millis(50));
        b.on_failure(&"down");
        let since = rx.borrow().failing_since.expect("failing");
        assert!(
            since <= attempt_started,
            "counted from the failure, not the attempt"
        );
        b.before_attempt();
        b.on_failure(&"down");
        assert_eq!(
            rx.borrow().failing_since,
            Some(since),
            "the first attempt stays the start"
        );
        b.before_attempt();
        assert!(
            !b.on_success(),
            "two failures under the threshold are no outage"
        );
        assert_eq!(rx.borrow().failing_since, None);
    }

    #[test]
    fn delays_grow_from_100ms_and_never_exceed_the_cap() {
        let (tx, _rx) = watch::channel(BreakerStatus::default());
        let cap = Duration::from_secs(2);
        let mut b = CircuitBreaker::new(1, cap, tx);
        let delays: Vec<Duration> = (0..40).map(|_| b.on_failure(&"x")).collect();
        assert!(
            delays[0] >= MIN_DELAY && delays[0] <= 2 * MIN_DELAY,
            "{delays:?}"
        );
        assert!(delays.iter().all(|d| *d <= cap), "{delays:?}");
        assert!(delays[39] >= cap / 2, "{delays:?}");
        // After a success the backoff starts from the beginning again.
        assert!(b.on_success());
        assert!(b.on_failure(&"x") <= 2 * MIN_DELAY);
    }
}
