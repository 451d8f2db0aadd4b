//! The router: owns the ring and the node membership, and orders the nodes a request may try.
//!
//! Membership comes from `COORDINATOR_NODES`, the admin API, the addresses of
//! `COORDINATOR_NODES_DNS` and, with Redis, nodes whose registrations are signed with
//! `CLUSTER_SECRET`. A node's ring points stay put while it is unhealthy (its keys come back to
//! it when it recovers); routing just skips it. Each source adds and removes only its own
//! members: a node that several sources name is kept by the first that added it.
//!
//! A self-registered node removed through the admin API stays out while its registration is
//! the same incarnation: the router remembers the drained incarnation and ignores it until the
//! node registers anew (a restart) or an operator adds it back. A DNS member removed that way
//! stays out while the name still resolves to it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler, Message, MessageResult};
use rerank_shared::config::Routing;
use rerank_shared::hash_ring::{bounded_order, HashRing};
use serde::Serialize;

use super::node_client::{NodeClient, NodeShared, NodeState, Retire};

mod membership_sync;

pub use membership_sync::{SyncDns, SyncRegistry};

/// How the router was configured.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub routing: Routing,
    pub epsilon: f64,
    pub virtual_nodes: usize,
    pub health_interval: Duration,
}

/// Where a member came from. Each is a source the coordinator trusts with client traffic and
/// the admin token: its own configuration, an operator holding the admin token, or a
/// registration whose signature proves `CLUSTER_SECRET`. Registry members leave when their
/// registration expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeSource {
    /// `COORDINATOR_NODES`.
    Static,
    /// `POST /admin/nodes`.
    Admin,
    /// A verified registration in Redis.
    Registry,
    /// An address of `COORDINATOR_NODES_DNS`.
    Dns,
}

struct Member {
    client: Addr<NodeClient>,
    shared: Arc<NodeShared>,
    source: NodeSource,
    /// The registration's incarnation (registry members only).
    incarnation: Option<String>,
}

/// See the module docs.
pub struct RouterActor {
    settings: RouterSettings,
    http: reqwest::Client,
    ring: HashRing,
    members: HashMap<String, Member>,
    /// Node id → the incarnation of its registration when an operator removed it.
    drained: HashMap<String, String>,
    /// DNS members an operator removed, kept out while the name resolves to them.
    drained_dns: HashSet<String>,
    round_robin: usize,
}

/// A node's id: the authority of its URL (`127.0.0.1:8001`), stable across sources.
pub fn node_id(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

impl RouterActor {
    /// A router with no members yet.
    pub fn new(settings: RouterSettings, http: reqwest::Client) -> Self {
        Self {
            ring: HashRing::new(settings.virtual_nodes),
            settings,
            http,
            members: HashMap::new(),
            drained: HashMap::new(),
            drained_dns: HashSet::new(),
            round_robin: 0,
        }
    }

    fn add(&mut self, url: &str, source: NodeSource, incarnation: Option<String>) -> String {
        let url = url.trim().trim_end_matches('/').to_string();
        let id = node_id(&url);
        if !self.members.contains_key(&id) {
            let shared = Arc::new(NodeShared::new(id.clone(), url));
            let client = NodeClient::new(
                shared.clone(),
                self.http.clone(),
                self.settings.health_interval,
            )
            .start();
            self.ring.add(&id);
            self.members.insert(
                id.clone(),
                Member {
                    client,
                    shared,
                    source,
                    incarnation,
                },
            );
            tracing::info!(node = %id, ?source, "node joined");
        }
        id
    }

    /// Takes the node out of the ring and stops its actor (its health checks).
    fn remove(&mut self, id: &str) -> Option<Member> {
        let member = self.members.remove(id)?;
        self.ring.remove(id);
        member.client.do_send(Retire);
        tracing::info!(node = %id, "node left");
        Some(member)
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;
}

/// Which nodes, in order, a request with this routing key should try.
pub struct Route {
    pub key: u64,
}

impl Message for Route {
    type Result = Vec<Arc<NodeShared>>;
}

impl Handler<Route> for RouterActor {
    type Result = MessageResult<Route>;

    fn handle(&mut self, msg: Route, _: &mut Context<Self>) -> Self::Result {
        let healthy = |id: &str| {
            self.members
                .get(id)
                .is_some_and(|m| m.shared.state() == NodeState::Healthy)
        };
        let order: Vec<&str> = match self.settings.routing {
            Routing::ConsistentHash => {
                let successors: Vec<&str> = self
                    .ring
                    .successors(msg.key)
                    .into_iter()
                    .filter(|id| healthy(id))
                    .collect();
                let load = |id: &str| self.members.get(id).map_or(0, |m| m.shared.in_flight());
                bounded_order(&successors, load, self.settings.epsilon)
            }
            Routing::RoundRobin => {
                let nodes: Vec<&str> = self
                    .ring
                    .nodes()
                    .iter()
                    .map(String::as_str)
                    .filter(|id| healthy(id))
                    .collect();
                self.round_robin = self.round_robin.wrapping_add(1);
                let start = if nodes.is_empty() {
                    0
                } else {
                    self.round_robin % nodes.len()
                };
                nodes[start..]
                    .iter()
                    .chain(&nodes[..start])
                    .copied()
                    .collect()
            }
        };
        MessageResult(
            order
                .into_iter()
                .filter_map(|id| self.members.get(id))
                .map(|m| m.shared.clone())
                .collect(),
        )
    }
}

/// Add a node by URL; returns its id.
pub struct AddNode {
    pub url: String,
    pub source: NodeSource,
}

impl Message for AddNode {
    type Result = String;
}

impl Handler<AddNode> for RouterActor {
    type Result = MessageResult<AddNode>;

    fn handle(&mut self, msg: AddNode, _: &mut Context<Self>) -> Self::Result {
        let id = self.add(&msg.url, msg.source, None);
        // An operator (or the configuration) naming the node lifts an earlier drain.
        self.drained.remove(&id);
        self.drained_dns.remove(&id);
        MessageResult(id)
    }
}

/// Stop sending new requests to a node; returns its counters so the caller can wait for its
/// in-flight requests (`None` when unknown).
pub struct DrainNode {
    pub id: String,
}

impl Message for DrainNode {
    type Result = Option<Arc<NodeShared>>;
}

impl Handler<DrainNode> for RouterActor {
    type Result = Option<Arc<NodeShared>>;

    fn handle(&mut self, msg: DrainNode, _: &mut Context<Self>) -> Self::Result {
        let member = self.members.get(&msg.id)?;
        member.shared.start_draining();
        Some(member.shared.clone())
    }
}

/// Remove a node from the ring and membership; a self-registered node stays out until it
/// registers anew.
pub struct ForgetNode {
    pub id: String,
}

impl Message for ForgetNode {
    type Result = ();
}

impl Handler<ForgetNode> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: ForgetNode, _: &mut Context<Self>) {
        match self.remove(&msg.id) {
            Some(Member {
                source: NodeSource::Registry,
                incarnation: Some(incarnation),
                ..
            }) => {
                tracing::info!(node = %msg.id, %incarnation, "drained registration ignored until the node registers anew");
                self.drained.insert(msg.id, incarnation);
            }
            Some(Member {
                source: NodeSource::Dns,
                ..
            }) => {
                tracing::info!(node = %msg.id, "drained DNS address ignored while the name resolves to it");
                self.drained_dns.insert(msg.id);
            }
            Some(_) | None => {}
        }
    }
}

/// One node in `GET /admin/nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSnapshot {
    pub id: String,
    pub url: String,
    pub state: NodeState,
    pub source: NodeSource,
    pub ring_share: f64,
    pub in_flight: usize,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// List the members with their counters.
pub struct ListNodes;

impl Message for ListNodes {
    type Result = Vec<NodeSnapshot>;
}

impl Handler<ListNodes> for RouterActor {
    type Result = MessageResult<ListNodes>;

    fn handle(&mut self, _: ListNodes, _: &mut Context<Self>) -> Self::Result {
        let shares = self.ring.shares();
        let mut out: Vec<NodeSnapshot> = self
            .members
            .iter()
            .map(|(id, m)| {
                let s = &m.shared;
                let (p50_ms, p99_ms) = s.latency_percentiles();
                NodeSnapshot {
                    id: id.clone(),
                    url: s.url.clone(),
                    state: s.state(),
                    source: m.source,
                    ring_share: shares.get(id).copied().unwrap_or(0.0),
                    in_flight: s.in_flight(),
                    requests: s.requests.load(std::sync::atomic::Ordering::Relaxed),
                    errors: s.errors.load(std::sync::atomic::Ordering::Relaxed),
                    p50_ms,
                    p99_ms,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        MessageResult(out)
    }
}

/// The ring as `GET /admin/ring` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RingView {
    pub routing: Routing,
    pub virtual_nodes: usize,
    pub load_bound_epsilon: f64,
    /// Node id → share of the key space.
    pub shares: BTreeMap<String, f64>,
}

/// Describe the ring.
pub struct GetRing;

impl Message for GetRing {
    type Result = RingView;
}

impl Handler<GetRing> for RouterActor {
    type Result = MessageResult<GetRing>;

    fn handle(&mut self, _: GetRing, _: &mut Context<Self>) -> Self::Result {
        MessageResult(RingView {
            routing: self.settings.routing,
            virtual_nodes: self.settings.virtual_nodes,
            load_bound_epsilon: self.settings.epsilon,
            shares: self.ring.shares(),
        })
    }
}
