//! The actor that owns the model.
//!
//! It runs under a `SyncArbiter` on a dedicated OS thread: a forward pass takes tens of
//! milliseconds of CPU, which must never run on the HTTP event loop. Messages queue in its
//! mailbox, so one model thread serves all requests in arrival order; candle parallelises each
//! forward pass across the cores itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Handler, Message, SyncContext};

use rerank_engine::{EncodedPair, EngineError, RerankBackend};

/// Score already-tokenized pairs.
#[derive(Debug)]
pub struct ScorePairs {
    pub pairs: Vec<EncodedPair>,
    /// When the request sent the message, to measure queue time.
    pub enqueued_at: Instant,
}

/// Raw scores in pair order, with where the time went.
#[derive(Debug, Clone)]
pub struct ScoredPairs {
    pub raw_scores: Vec<f32>,
    /// Time in the mailbox before the model picked the message up.
    pub queue_time: Duration,
    /// Time in forward passes.
    pub inference_time: Duration,
}

impl Message for ScorePairs {
    type Result = Result<ScoredPairs, EngineError>;
}

/// Owns a loaded backend; see the module docs for why it runs on its own thread.
pub struct ModelActor {
    backend: Arc<dyn RerankBackend>,
}

impl ModelActor {
    /// Wraps a loaded backend.
    pub fn new(backend: Arc<dyn RerankBackend>) -> Self {
        Self { backend }
    }
}

impl Actor for ModelActor {
    type Context = SyncContext<Self>;
}

impl Handler<ScorePairs> for ModelActor {
    type Result = Result<ScoredPairs, EngineError>;

    fn handle(&mut self, msg: ScorePairs, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let queue_time = started.duration_since(msg.enqueued_at);
        let raw_scores = self.backend.score(&msg.pairs)?;
        Ok(ScoredPairs {
            raw_scores,
            queue_time,
            inference_time: started.elapsed(),
        })
    }
}
