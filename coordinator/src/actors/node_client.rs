//! One node as the coordinator sees it: the requests in flight, a latency window, and a health
//! state fed both by periodic `GET /health` checks (this actor) and by failures of real
//! requests (passive detection, recorded by `crate::forward`, opens the node at once on a
//! connect error or a timeout). An answer that carries the draining header (a node shutting
//! down: its `/health` or a refused request) takes the node out at once; it is back when a
//! health check passes (the node restarted at the same address).
//!
//! The actor lives exactly as long as the node is a member: the router sends [`Retire`] when it
//! removes the node, which stops the health checks with it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};
use rerank_shared::api::health::DRAINING_HEADER;

/// How many recent latencies feed the p50/p99 of `GET /admin/nodes`.
const LATENCY_WINDOW: usize = 1024;
/// Consecutive 5xx answers after which a node is taken out until a health check passes.
const SERVER_ERRORS_TO_OPEN: u64 = 3;

/// Health of a node as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Receives traffic.
    Healthy,
    /// Failed a health check or a request; skipped until a health check passes.
    Unhealthy,
    /// Being removed by an operator, or shutting down by its own account: no new requests,
    /// in-flight ones finish.
    Draining,
}

impl NodeState {
    /// The state's name as `/health` and `/admin/nodes` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Draining => "draining",
        }
    }
}

/// The stored states. Two kinds of draining: an operator's (`DELETE /admin/nodes/{id}`) is
/// final — the node is about to leave the membership; a node's own (it is shutting down) lasts
/// until a health check passes, since the same address may serve again after a restart.
const HEALTHY: u8 = 0;
const UNHEALTHY: u8 = 1;
const DRAINED_BY_OPERATOR: u8 = 2;
const DRAINING_ITSELF: u8 = 3;

/// Whether a node's answer says it is draining.
pub fn says_draining(headers: &reqwest::header::HeaderMap) -> bool {
    headers.contains_key(DRAINING_HEADER)
}

/// How one forwarded attempt ended, as far as the node's health counts it (the forwarding
/// code's own result, reduced to what [`NodeShared::record`] reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The node answered with `status`; `draining` when its draining header was set.
    Answered { status: u16, draining: bool },
    /// No answer: refused, reset, timed out or unreadable.
    Failed,
}

/// Counters shared between a node's actor, the router and the admin API.
#[derive(Debug)]
pub struct NodeShared {
    pub id: String,
    pub url: String,
    state: AtomicU8,
    pub in_flight: AtomicUsize,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    consecutive_server_errors: AtomicU64,
    latencies_ms: Mutex<VecDeque<f64>>,
}

impl NodeShared {
    /// A node not yet checked (healthy until proven otherwise, so a fresh cluster serves at once).
    pub fn new(id: String, url: String) -> Self {
        Self {
            id,
            url,
            state: AtomicU8::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            consecutive_server_errors: AtomicU64::new(0),
            latencies_ms: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
        }
    }

    /// The current state.
    pub fn state(&self) -> NodeState {
        match self.state.load(Ordering::Acquire) {
            HEALTHY => NodeState::Healthy,
            UNHEALTHY => NodeState::Unhealthy,
            _ => NodeState::Draining,
        }
    }

    /// Stores `value` unless an operator drained the node: that stays whatever the node says.
    fn set(&self, value: u8) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current != DRAINED_BY_OPERATOR).then_some(value)
            });
    }

    fn set_state(&self, state: NodeState) {
        self.set(match state {
            NodeState::Healthy => HEALTHY,
            NodeState::Unhealthy => UNHEALTHY,
            NodeState::Draining => DRAINING_ITSELF,
        });
    }

    /// Stops new traffic to the node for good (an operator removes it).
    pub fn start_draining(&self) {
        self.state.store(DRAINED_BY_OPERATOR, Ordering::Release);
    }

    /// The node said it is shutting down: no new traffic until a health check passes.
    pub fn note_draining(&self) {
        self.set(DRAINING_ITSELF);
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// p50 and p99 of the latency window, in milliseconds.
    pub fn latency_percentiles(&self) -> (Option<f64>, Option<f64>) {
        let Ok(window) = self.latencies_ms.lock() else {
            return (None, None);
        };
        if window.is_empty() {
            return (None, None);
        }
        let mut sorted: Vec<f64> = window.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        (Some(at(0.5)), Some(at(0.99)))
    }

    /// Counts one finished attempt: its latency, and a failure or success for passive
    /// detection.
    pub(crate) fn record(&self, latency: Duration, attempt: Attempt) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.latencies_ms.lock() {
            if w.len() == LATENCY_WINDOW {
                w.pop_front();
            }
            w.push_back(latency.as_secs_f64() * 1000.0);
        }
        match attempt {
            // Not a failure: the node finishes its work elsewhere and refuses new work.
            Attempt::Answered { draining: true, .. } => self.note_draining(),
            Attempt::Answered { status, .. } if status >= 500 => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let n = self
                    .consecutive_server_errors
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if n >= SERVER_ERRORS_TO_OPEN {
                    self.set_state(NodeState::Unhealthy);
                }
            }
            Attempt::Answered { .. } => self.consecutive_server_errors.store(0, Ordering::Relaxed),
            Attempt::Failed => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.set_state(NodeState::Unhealthy);
            }
        }
    }
}

/// See the module docs.
pub struct NodeClient {
    shared: Arc<NodeShared>,
    http: reqwest::Client,
    health_interval: Duration,
}

impl NodeClient {
    /// A client for the node in `shared`, checking its health every `health_interval`.
    pub fn new(shared: Arc<NodeShared>, http: reqwest::Client, health_interval: Duration) -> Self {
        Self {
            shared,
            http,
            health_interval,
        }
    }

    fn check_health(&self, ctx: &mut Context<Self>) {
        let (http, shared) = (self.http.clone(), self.shared.clone());
        let timeout = self.health_interval.max(Duration::from_millis(500));
        let check = async move {
            let answer = http
                .get(format!("{}/health", shared.url))
                .timeout(timeout)
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    shared.consecutive_server_errors.store(0, Ordering::Relaxed);
                    shared.set_state(NodeState::Healthy);
                }
                Ok(r) if says_draining(r.headers()) => shared.note_draining(),
                Ok(_) | Err(_) => shared.set_state(NodeState::Unhealthy),
            }
        };
        ctx.spawn(actix::fut::wrap_future(check));
    }
}

impl Actor for NodeClient {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.check_health(ctx);
        ctx.run_interval(self.health_interval, |act, ctx| act.check_health(ctx));
    }
}

/// The node left the membership: stop checking it. Requests already sent to it finish on
/// their own (they do not run in this actor).
pub struct Retire;

impl Message for Retire {
    type Result = ();
}

impl Handler<Retire> for NodeClient {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's own drain ends when it is healthy again (restarted at the same address); an
    /// operator's drain is final.
    #[test]
    fn a_node_draining_itself_comes_back_an_operator_drain_does_not() {
        let node = NodeShared::new("n".into(), "http://127.0.0.1:1".into());
        node.note_draining();
        assert_eq!(node.state(), NodeState::Draining);
        node.set_state(NodeState::Unhealthy);
        assert_eq!(node.state(), NodeState::Unhealthy, "it went away");
        node.set_state(NodeState::Healthy);
        assert_eq!(node.state(), NodeState::Healthy, "it came back");

        node.start_draining();
        node.set_state(NodeState::Healthy);
        node.note_draining();
        assert_eq!(node.state(), NodeState::Draining);
        node.set_state(NodeState::Healthy);
        assert_eq!(
            node.state(),
            NodeState::Draining,
            "an operator's drain stays"
        );
    }

    /// A draining node's refusal takes it out without counting as an error.
    #[test]
    fn a_draining_refusal_is_not_a_failure() {
        let node = NodeShared::new("n".into(), "http://127.0.0.1:1".into());
        let refusal = Attempt::Answered {
            status: 503,
            draining: true,
        };
        node.record(Duration::from_millis(1), refusal);
        assert_eq!(node.state(), NodeState::Draining);
        assert_eq!(node.errors.load(Ordering::Relaxed), 0);
    }
}
