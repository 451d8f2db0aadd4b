//! Admission control, by count and by work.
//!
//! - Count: `MAX_PARALLEL_REQUESTS` requests run at once, at most `MAX_QUEUED_REQUESTS` wait
//!   behind them, and the rest are turned away at once (429) rather than queueing without bound
//!   while their clients time out.
//! - Work: a running request reserves the tokens of the pairs it sends to the model
//!   ([`TokenBudget`], `MAX_QUEUED_TOKENS`) until they are scored. A request that does not fit
//!   beside the others gets 429; one larger than the whole budget could never fit and gets 413.
//!   Counting requests alone let one 1000-document request hold the model for minutes while
//!   looking like one unit of load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The request was refused because the node is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node overloaded: {running} requests running and {queued} queued")]
pub struct Overloaded {
    pub running: usize,
    pub queued: usize,
}

/// Counts running and waiting requests against their limits.
pub struct Admission {
    running: Arc<Semaphore>,
    max_running: usize,
    queued: AtomicUsize,
    max_queued: usize,
}

/// Held while a request runs; dropping it admits the next one.
pub struct AdmissionPermit {
    _permit: OwnedSemaphorePermit,
}

/// Decrements the waiting count however the wait ends (admitted or cancelled).
struct QueuedGuard<'a>(&'a AtomicUsize);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Limits of `max_running` running and `max_queued` waiting requests.
    pub fn new(max_running: usize, max_queued: usize) -> Self {
        Self {
            running: Arc::new(Semaphore::new(max_running)),
            max_running,
            queued: AtomicUsize::new(0),
            max_queued,
        }
    }

    /// Admits the caller now, after a wait in the queue, or refuses when the queue is full.
    pub async fn admit(&self) -> Result<AdmissionPermit, Overloaded> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(AdmissionPermit { _permit: permit });
        }
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        let guard = QueuedGuard(&self.queued);
        if queued >= self.max_queued {
            return Err(Overloaded {
                running: self.running_count(),
                queued,
            });
        }
        let permit = self.running.clone().acquire_owned().await;
        drop(guard);
        // The semaphore is never closed, so acquiring only fails if that invariant breaks.
        permit
            .map(|p| AdmissionPermit { _permit: p })
            .map_err(|_| Overloaded {
                running: self.max_running,
                queued,
            })
    }

    /// Requests running now.
    pub fn running_count(&self) -> usize {
        self.max_running - self.running.available_permits()
    }

    /// Requests waiting for admission now.
    pub fn queued_count(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// Why a request's tokens were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokensRefused {
    /// The request alone needs more than the whole budget (413: it can never be admitted).
    #[error(
        "the request needs {tokens} tokens, over the limit of {limit} tokens a node admits \
         at once (MAX_QUEUED_TOKENS); send fewer or shorter documents"
    )]
    TooLarge { tokens: usize, limit: usize },
    /// Other requests hold too much of the budget now (429: retry later).
    #[error(
        "node overloaded: the request needs {tokens} tokens and {queued} of {limit} are \
         already admitted (MAX_QUEUED_TOKENS)"
    )]
    Busy {
        tokens: usize,
        queued: usize,
        limit: usize,
    },
}

/// The tokens admitted and not yet scored, against `MAX_QUEUED_TOKENS`.
pub struct TokenBudget {
    limit: usize,
    reserved: Arc<AtomicUsize>,
    /// Mirrors `reserved` for `/metrics` (`rerank_queued_tokens`).
    gauge: IntGauge,
}

/// Tokens held by a request; released when dropped (scored, failed, cancelled or timed out).
pub struct TokenReservation {
    tokens: usize,
    reserved: Arc<AtomicUsize>,
    gauge: IntGauge,
}

impl Drop for TokenReservation {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.tokens, Ordering::AcqRel);
        self.gauge
            .sub(i64::try_from(self.tokens).unwrap_or(i64::MAX));
    }
}

impl TokenBudget {
    /// A budget of `limit` tokens, reported in `gauge`.
    pub fn new(limit: usize, gauge: IntGauge) -> Self {
        Self {
            limit,
            reserved: Arc::new(AtomicUsize::new(0)),
            gauge,
        }
    }

    /// Reserves `tokens`, or says why not. Never waits: a client told 429 can go elsewhere.
    pub fn reserve(&self, tokens: usize) -> Result<TokenReservation, TokensRefused> {
        if tokens > self.limit {
            return Err(TokensRefused::TooLarge {
                tokens,
                limit: self.limit,
            });
        }
        let mut queued = self.reserved.load(Ordering::Acquire);
        loop {
            if queued + tokens > self.limit {
                return Err(TokensRefused::Busy {
                    tokens,
                    queued,
                    limit: self.limit,
                });
            }
            match self.reserved.compare_exchange_weak(
                queued,
                queued + tokens,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.gauge.add(i64::try_from(tokens).unwrap_or(i64::MAX));
                    return Ok(TokenReservation {
                        tokens,
                        reserved: self.reserved.clone(),
                        gauge: self.gauge.clone(),
                    });
                }
                Err(now) => queued = now,
            }
        }
    }

    /// Tokens reserved now.
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
    }

    /// The budget (`MAX_QUEUED_TOKENS`).
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_reserved_until_dropped_and_oversized_requests_never_fit() {
        let gauge = IntGauge::new("queued_tokens", "test").expect("gauge");
        let budget = TokenBudget::new(100, gauge.clone());
        let a = budget.reserve(60).expect("fits");
        assert_eq!(
            budget.reserve(50).err(),
            Some(TokensRefused::Busy {
                tokens: 50,
                queued: 60,
                limit: 100
            })
        );
        assert_eq!(
            budget.reserve(101).err(),
            Some(TokensRefused::TooLarge {
                tokens: 101,
                limit: 100
            })
        );
        assert_eq!(gauge.get(), 60);
        drop(a);
        assert_eq!(budget.reserved(), 0);
        assert_eq!(gauge.get(), 0);
        let _b = budget
            .reserve(100)
            .expect("the whole budget fits when free");
    }

    #[tokio::test]
    async fn admits_up_to_the_limit_then_queues_then_refuses() {
        let admission = Arc::new(Admission::new(2, 1));
        let a = admission.admit().await.expect("first");
        let _b = admission.admit().await.expect("second");
        assert_eq!(admission.running_count(), 2);
        let waiting = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.admit().await.map(|_| ()) })
        };
        while admission.queued_count() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            admission.admit().await.err(),
            Some(Overloaded {
                running: 2,
                queued: 1
            })
        );
        drop(a);
        waiting
            .await
            .expect("joined")
            .expect("queued request admitted");
        assert_eq!(admission.queued_count(), 0);
    }
}
