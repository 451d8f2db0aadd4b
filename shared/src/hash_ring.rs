//! The coordinator's consistent-hash ring with bounded loads.
//!
//! Each node owns `virtual_nodes` points on a 64-bit ring (xxh3 of `"{node}#{i}"`); a request's
//! key (xxh3 of model and query) belongs to the first point clockwise. The same query thus
//! lands on the same node — its local cache and batches stay warm — and adding or removing one
//! of N nodes moves only ~1/N of the keys.
//!
//! Bounded load (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads"): a
//! node whose in-flight load would exceed `ceil((1 + ε) × mean)` is passed over and the request
//! continues clockwise, so a hot key cannot pile onto one node.

use std::collections::BTreeMap;

use xxhash_rust::xxh3::xxh3_64;

/// The routing key of a request: model and query (documents do not matter for affinity).
pub fn request_key(model: &str, query: &str) -> u64 {
    let mut bytes = Vec::with_capacity(model.len() + query.len() + 1);
    bytes.extend_from_slice(model.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(query.as_bytes());
    xxh3_64(&bytes)
}

/// Nodes placed on a ring of virtual points.
#[derive(Debug, Clone)]
pub struct HashRing {
    points: BTreeMap<u64, String>,
    nodes: Vec<String>,
    virtual_nodes: usize,
}

impl HashRing {
    /// An empty ring giving each node `virtual_nodes` points.
    pub fn new(virtual_nodes: usize) -> Self {
        Self {
            points: BTreeMap::new(),
            nodes: Vec::new(),
            virtual_nodes: virtual_nodes.max(1),
        }
    }

    /// Adds `node` (no-op when present).
    pub fn add(&mut self, node: &str) {
        if self.nodes.iter().any(|n| n == node) {
            return;
        }
        self.nodes.push(node.to_string());
        for i in 0..self.virtual_nodes {
            self.points
                .insert(xxh3_64(format!("{node}#{i}").as_bytes()), node.to_string());
        }
    }

    /// Removes `node` (no-op when absent).
    pub fn remove(&mut self, node: &str) {
        self.nodes.retain(|n| n != node);
        self.points.retain(|_, n| n != node);
    }

    /// The nodes on the ring, in insertion order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Every node once, in clockwise order from `key`'s position: the owner first, then the
    /// nodes a request falls back to.
    pub fn successors(&self, key: u64) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::with_capacity(self.nodes.len());
        for (_, node) in self.points.range(key..).chain(self.points.range(..key)) {
            if !out.contains(&node.as_str()) {
                out.push(node);
                if out.len() == self.nodes.len() {
                    break;
                }
            }
        }
        out
    }

    /// The node owning `key`, if any.
    pub fn owner(&self, key: u64) -> Option<&str> {
        self.successors(key).into_iter().next()
    }

    /// Share of the key space each node owns (sums to 1).
    pub fn shares(&self) -> BTreeMap<String, f64> {
        let mut shares: BTreeMap<String, f64> =
            self.nodes.iter().map(|n| (n.clone(), 0.0)).collect();
        let Some((&first, _)) = self.points.iter().next() else {
            return shares;
        };
        let mut previous: Option<u64> = None;
        for (&point, node) in &self.points {
            let span = match previous {
                // The first point also owns the wrap-around arc from the last point.
                None => {
                    first.wrapping_sub(self.points.keys().next_back().copied().unwrap_or(first))
                }
                Some(p) => point - p,
            };
            *shares.entry(node.clone()).or_default() += span as f64 / u64::MAX as f64;
            previous = Some(point);
        }
        shares
    }
}

/// The most in-flight requests a node may hold under bounded load: `ceil((1 + ε) × mean)`
/// where the mean counts the request being placed.
pub fn load_bound(total_in_flight: usize, nodes: usize, epsilon: f64) -> usize {
    if nodes == 0 {
        return 0;
    }
    let mean = (total_in_flight + 1) as f64 / nodes as f64;
    ((1.0 + epsilon) * mean).ceil() as usize
}

/// Orders `candidates` (clockwise successors) for a request under bounded load: nodes under
/// the bound first, in ring order, then the overloaded ones as a last resort.
pub fn bounded_order<'a>(
    candidates: &[&'a str],
    in_flight: impl Fn(&str) -> usize,
    epsilon: f64,
) -> Vec<&'a str> {
    let total: usize = candidates.iter().map(|n| in_flight(n)).sum();
    let bound = load_bound(total, candidates.len(), epsilon);
    let (mut under, over): (Vec<&str>, Vec<&str>) =
        candidates.iter().partition(|n| in_flight(n) < bound);
    under.extend(over);
    under
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ring(n: usize) -> HashRing {
        let mut r = HashRing::new(160);
        for i in 0..n {
            r.add(&format!("http://10.0.0.{i}:8000"));
        }
        r
    }

    fn owners(r: &HashRing, keys: u64) -> Vec<String> {
        (0..keys)
            .map(|k| {
                r.owner(request_key("m", &format!("query {k}")))
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn keys_spread_evenly_over_3_and_10_nodes() {
        for n in [3usize, 10] {
            let r = ring(n);
            let mut counts: HashMap<String, usize> = HashMap::new();
            for o in owners(&r, 60_000) {
                *counts.entry(o).or_default() += 1;
            }
            let mean = 60_000.0 / n as f64;
            for (node, c) in &counts {
                let dev = (*c as f64 - mean).abs() / mean;
                assert!(
                    dev < 0.25,
                    "{n} nodes: {node} holds {c} keys, {:.0}% off the mean",
                    dev * 100.0
                );
            }
            let shares: f64 = r.shares().values().sum();
            assert!((shares - 1.0).abs() < 1e-6, "shares sum to {shares}");
        }
    }

    #[test]
    fn adding_or_removing_a_node_moves_about_one_nth_of_keys() {
        let before = ring(4);
        let mut after = before.clone();
        after.add("http://10.0.0.99:8000");
        let (a, b) = (owners(&before, 20_000), owners(&after, 20_000));
        let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count() as f64 / 20_000.0;
        assert!(
            (0.12..0.28).contains(&moved),
            "adding a 5th node moved {moved:.3} of keys"
        );
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x == y || y == "http://10.0.0.99:8000"),
            "keys only move to the new node"
        );

        let mut removed = before.clone();
        removed.remove("http://10.0.0.1:8000");
        let c = owners(&removed, 20_000);
        assert!(
            a.iter()
                .zip(&c)
                .all(|(x, y)| x == y || x == "http://10.0.0.1:8000"),
            "only the removed node's keys move"
        );
    }

    #[test]
    fn hashing_is_deterministic_across_processes() {
        // Fixed values: a change would re-route every query of a running cluster.
        assert_eq!(request_key("m", "q"), request_key("m", "q"));
        assert_ne!(request_key("m", "q"), request_key("mq", ""));
        let r = ring(3);
        let o = r
            .owner(request_key("model", "What is the capital of France?"))
            .map(str::to_string);
        assert_eq!(
            o,
            ring(3)
                .owner(request_key("model", "What is the capital of France?"))
                .map(str::to_string)
        );
        assert_eq!(
            request_key("model", "What is the capital of France?"),
            0xa482_9bff_221c_6558
        );
    }

    #[test]
    fn every_node_appears_once_in_successors() {
        let r = ring(5);
        let s = r.successors(12345);
        assert_eq!(s.len(), 5);
        let mut sorted = s.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
    }

    #[test]
    fn bounded_load_is_never_exceeded_under_a_skewed_workload() {
        let r = ring(4);
        let epsilon = 0.25;
        let mut load: HashMap<String, usize> = HashMap::new();
        // 80% of requests carry one hot query; requests stay in flight (worst case).
        for i in 0..400u64 {
            let query = if i % 5 == 0 {
                format!("cold {i}")
            } else {
                "hot".to_string()
            };
            let candidates = r.successors(request_key("m", &query));
            let order = bounded_order(&candidates, |n| load.get(n).copied().unwrap_or(0), epsilon);
            let total: usize = load.values().sum();
            let bound = load_bound(total, 4, epsilon);
            let chosen = order[0].to_string();
            let current = load.get(&chosen).copied().unwrap_or(0);
            assert!(
                current < bound,
                "request {i}: {chosen} at {current} ≥ bound {bound}"
            );
            *load.entry(chosen).or_default() += 1;
        }
        let max = load.values().max().copied().unwrap_or(0);
        assert!(
            max as f64 <= (1.0 + epsilon) * 100.0 + 1.0,
            "max load {max} for mean 100"
        );
    }
}
