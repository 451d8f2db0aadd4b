//! A circuit breaker for the Redis tier: after a failure, Redis is skipped for a back-off period
//! (doubling up to a cap) instead of every request paying a timeout while it is down. A
//! background probe, not client traffic, closes it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Open/closed state with exponential back-off.
pub struct CircuitBreaker {
    state: Mutex<BreakerState>,
    base: Duration,
    cap: Duration,
}

#[derive(Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl CircuitBreaker {
    /// A breaker that opens for `base`, doubling per consecutive failure up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            state: Mutex::new(BreakerState::default()),
            base,
            cap,
        }
    }

    /// Whether a call may go to Redis now (closed, or its back-off has passed).
    pub fn allows(&self) -> bool {
        match self.state.lock() {
            Ok(s) => s.open_until.is_none_or(|t| Instant::now() >= t),
            Err(_) => true,
        }
    }

    /// True when no failure is outstanding.
    pub fn is_closed(&self) -> bool {
        self.state
            .lock()
            .map_or(true, |s| s.consecutive_failures == 0)
    }

    /// Closes the breaker.
    pub fn record_success(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = BreakerState::default();
        }
    }

    /// Opens the breaker for the next back-off period.
    pub fn record_failure(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            let factor = 1u32 << s.consecutive_failures.min(16).saturating_sub(1);
            let backoff = self.base.saturating_mul(factor).min(self.cap);
            s.open_until = Some(Instant::now() + backoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_failure_and_closes_on_success() {
        let b = CircuitBreaker::new(Duration::from_millis(30), Duration::from_millis(100));
        assert!(b.allows() && b.is_closed());
        b.record_failure();
        assert!(!b.allows() && !b.is_closed());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allows(), "half-open after the back-off");
        b.record_success();
        assert!(b.allows() && b.is_closed());
    }

    #[test]
    fn back_off_doubles_up_to_the_cap() {
        let b = CircuitBreaker::new(Duration::from_millis(10), Duration::from_millis(25));
        for _ in 0..5 {
            b.record_failure();
        }
        std::thread::sleep(Duration::from_millis(15));
        assert!(!b.allows(), "still open past the base period");
        std::thread::sleep(Duration::from_millis(15));
        assert!(b.allows(), "never longer than the cap");
    }
}
