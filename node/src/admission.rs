//! Admission control: `MAX_PARALLEL_REQUESTS` requests run at once, at most
//! `MAX_QUEUED_REQUESTS` wait behind them, and the rest are turned away at once (429) rather
//! than queueing without bound while their clients time out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;

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
