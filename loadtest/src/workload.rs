//! What the benchmark sends: rerank requests either loaded from a JSON file or generated from a
//! seed.
//!
//! Every request is addressed by its index in the run, and the generated ones are a pure function
//! of `(seed, index)`. That keeps a run reproducible whatever order the concurrent workers pull
//! indices in, and lets a `--duration` run draw as many requests as it needs without building
//! them up front.

use std::borrow::Cow;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// One rerank call: a query and the documents to score against it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct RerankItem {
    /// The query text.
    pub query: String,
    /// The documents to rank for the query.
    pub documents: Vec<String>,
}

/// The shape of a `--workload` file: `{"requests": [{"query": ..., "documents": [...]}, ...]}`.
#[derive(Debug, Deserialize)]
struct WorkloadFile {
    requests: Vec<RerankItem>,
}

/// Where the requests of a run come from.
#[derive(Debug)]
pub enum Workload {
    /// Requests from a file, cycled through in order.
    File(Vec<RerankItem>),
    /// Requests generated on demand from a seed.
    Generated(Generator),
}

impl Workload {
    /// Reads and checks a workload file; an empty list or a request without documents is refused
    /// up front rather than turned into a run of server-side 4xx errors.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading workload file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in workload file {}", path.display()))
    }

    /// Parses the JSON text of a workload file (see [`Workload::load`]).
    pub fn parse(text: &str) -> Result<Self> {
        let file: WorkloadFile = serde_json::from_str(text).context(
            "expected {\"requests\": [{\"query\": str, \"documents\": [str, ...]}, ...]}",
        )?;
        if file.requests.is_empty() {
            bail!("\"requests\" is empty");
        }
        if let Some(i) = file.requests.iter().position(|r| r.documents.is_empty()) {
            bail!("request {i} has no documents");
        }
        Ok(Self::File(file.requests))
    }

    /// The request to send as the `index`-th of the run (warm-up included).
    pub fn request(&self, index: u64) -> Cow<'_, RerankItem> {
        match self {
            Self::File(items) => {
                // `parse` guarantees a non-empty list, so the modulus is never zero.
                let len = items.len() as u64;
                let slot = usize::try_from(index % len).unwrap_or(0);
                Cow::Borrowed(&items[slot])
            }
            Self::Generated(generator) => generator.request(index),
        }
    }

    /// The number of documents every request carries, or `None` when a file mixes sizes; it is
    /// shown in the settings so a pairs/s figure can be read against it.
    pub fn docs_per_request(&self) -> Option<usize> {
        match self {
            Self::File(items) => {
                let first = items.first().map(|r| r.documents.len())?;
                items
                    .iter()
                    .all(|r| r.documents.len() == first)
                    .then_some(first)
            }
            Self::Generated(generator) => Some(generator.params.docs_per_request),
        }
    }
}

/// The knobs of the request generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratorParams {
    /// Documents in each request.
    pub docs_per_request: usize,
    /// Words drawn for each document (a unique tag is added to fresh documents on top).
    pub doc_words: usize,
    /// Probability, in `[0, 1]`, that a request is an exact copy of a "popular" one.
    pub duplicate_ratio: f64,
    /// How many distinct popular requests there are.
    pub duplicate_pool: usize,
    /// Seed for every random choice; the same seed gives the same workload.
    pub seed: u64,
    /// Seed of the popular requests' texts (usually `seed`; shared across generators that model
    /// clients of one service).
    pub pool_seed: u64,
}

/// Words in each generated query.
const QUERY_WORDS: usize = 8;

/// RNG streams, so the pool, the duplicate decisions and fresh texts never share random numbers.
const STREAM_POOL: u64 = 1;
const STREAM_REQUEST: u64 = 2;

/// Generates requests that model a cache-friendly or cache-hostile traffic mix.
///
/// A duplicate is an exact copy of one of a small pool of popular requests, so it exercises
/// response and embedding caches; a fresh request carries unique tags in its query and in every
/// document, so no cache can answer it.
#[derive(Debug)]
pub struct Generator {
    params: GeneratorParams,
    pool: Vec<RerankItem>,
}

impl Generator {
    /// Builds the generator and its pool of popular requests; the parameters are expected to have
    /// been checked by the CLI (at least one document, one word and one pool entry).
    pub fn new(params: GeneratorParams) -> Self {
        let pool_size = if params.duplicate_ratio > 0.0 {
            params.duplicate_pool
        } else {
            0
        };
        let pool = (0..pool_size as u64)
            .map(|slot| {
                let mut rng = rng_for(params.pool_seed, STREAM_POOL, slot);
                let tag = format!("s{}p{slot}", params.pool_seed);
                make_item(&mut rng, &tag, &params)
            })
            .collect();
        Self { params, pool }
    }

    /// Which popular request the `index`-th request copies, or `None` when it is fresh.
    pub fn pool_slot(&self, index: u64) -> Option<usize> {
        if self.pool.is_empty() {
            return None;
        }
        let mut rng = rng_for(self.params.seed, STREAM_REQUEST, index);
        let draw: f64 = rng.random();
        (draw < self.params.duplicate_ratio).then(|| rng.random_range(0..self.pool.len()))
    }

    /// The `index`-th request: a borrowed pool entry for a duplicate, a new item otherwise.
    pub fn request(&self, index: u64) -> Cow<'_, RerankItem> {
        match self.pool_slot(index) {
            Some(slot) => Cow::Borrowed(&self.pool[slot]),
            None => {
                // Its own stream, so the texts don't depend on how the duplicate draw went.
                let mut rng = rng_for(self.params.seed, STREAM_REQUEST ^ 0x100, index);
                let tag = format!("s{}r{index}", self.params.seed);
                Cow::Owned(make_item(&mut rng, &tag, &self.params))
            }
        }
    }
}

/// A query and documents made of random words, each stamped with `tag` so items with different
/// tags can never be equal.
fn make_item(rng: &mut StdRng, tag: &str, params: &GeneratorParams) -> RerankItem {
    let query = format!("{} (query {tag})", words(rng, QUERY_WORDS));
    let documents = (0..params.docs_per_request)
        .map(|d| format!("{} (doc {tag}d{d})", words(rng, params.doc_words)))
        .collect();
    RerankItem { query, documents }
}

/// `n` words from [`WORDS`], space-separated.
fn words(rng: &mut StdRng, n: usize) -> String {
    let mut out = String::with_capacity(n * 8);
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    out
}

/// An RNG for one `(seed, stream, index)` triple, independent of every other triple.
fn rng_for(seed: u64, stream: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ index))
}

/// The SplitMix64 finaliser: spreads nearby inputs (index 1, 2, 3...) over the whole seed space.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fixed vocabulary so generated text tokenizes like ordinary English prose.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "a", "to", "in", "is", "that", "for", "it", "as", "was", "with", "on",
    "by", "at", "from", "this", "which", "are", "be", "or", "an", "have", "not", "their", "more",
    "system", "data", "model", "search", "query", "document", "result", "server", "network",
    "cluster", "memory", "latency", "request", "response", "cache", "index", "vector", "score",
    "rank", "relevant", "language", "machine", "learning", "training", "neural", "token",
    "sentence", "paragraph", "article", "history", "science", "research", "energy", "water",
    "city", "river", "mountain", "forest", "ocean", "weather", "climate", "market", "price",
    "company", "product", "customer", "service", "health", "medicine", "patient", "doctor",
    "school", "student", "teacher", "library", "book", "music", "film", "game", "sport",
    "team", "player", "season", "travel", "train", "airport", "hotel", "food", "coffee",
    "bread", "garden", "house", "window", "light", "color", "green", "blue", "large", "small",
    "quick", "slow", "early", "late", "new", "old", "important", "simple", "complex", "public",
    "private", "local", "global", "build", "measure", "compare", "explain", "describe",
    "improve", "reduce", "increase", "support", "provide", "include", "develop", "consider",
];

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn params(duplicate_ratio: f64, seed: u64) -> GeneratorParams {
        GeneratorParams {
            docs_per_request: 4,
            doc_words: 40,
            duplicate_ratio,
            duplicate_pool: 8,
            seed,
            pool_seed: seed,
        }
    }

    fn draw(generator: &Generator, n: u64) -> Vec<RerankItem> {
        (0..n).map(|i| generator.request(i).into_owned()).collect()
    }

    #[test]
    fn duplicate_ratio_is_respected() {
        for ratio in [0.0, 0.1, 0.3, 0.5, 0.9, 1.0] {
            let generator = Generator::new(params(ratio, 7));
            let dups = (0..1000)
                .filter(|&i| generator.pool_slot(i).is_some())
                .count();
            let observed = dups as f64 / 1000.0;
            // Binomial sd is at most 0.016 at n = 1000; 0.05 is over three of them.
            assert!(
                (observed - ratio).abs() <= 0.05,
                "ratio {ratio}: observed {observed}"
            );
        }
    }

    #[test]
    fn duplicates_are_exact_copies_of_pool_entries() {
        let generator = Generator::new(params(0.5, 42));
        let mut by_slot: HashMap<usize, RerankItem> = HashMap::new();
        for i in 0..1000 {
            let item = generator.request(i).into_owned();
            assert_eq!(item.documents.len(), 4);
            if let Some(slot) = generator.pool_slot(i) {
                let first = by_slot.entry(slot).or_insert_with(|| item.clone());
                assert_eq!(*first, item, "slot {slot} copies differ at request {i}");
            }
        }
        // 500-odd duplicates over 8 slots: every slot is used, so copies really repeat.
        assert_eq!(by_slot.len(), 8);
        let distinct: HashSet<_> = by_slot.values().collect();
        assert_eq!(
            distinct.len(),
            8,
            "pool entries must differ from each other"
        );
    }

    #[test]
    fn fresh_requests_are_unique() {
        let generator = Generator::new(params(0.3, 42));
        let mut queries = HashSet::new();
        let mut documents = HashSet::new();
        let mut pool_docs = HashSet::new();
        for i in 0..1000 {
            let item = generator.request(i).into_owned();
            if generator.pool_slot(i).is_some() {
                pool_docs.extend(item.documents);
                continue;
            }
            assert!(queries.insert(item.query.clone()), "query repeated at {i}");
            assert_eq!(item.documents.len(), 4);
            for doc in item.documents {
                // 40 words plus the tag.
                assert_eq!(doc.split(' ').count(), 40 + 2);
                assert!(documents.insert(doc), "document repeated at {i}");
            }
        }
        assert!(documents.is_disjoint(&pool_docs));
    }

    #[test]
    fn same_seed_gives_same_workload() {
        let a = draw(&Generator::new(params(0.3, 42)), 300);
        let b = draw(&Generator::new(params(0.3, 42)), 300);
        assert_eq!(a, b);
        let c = draw(&Generator::new(params(0.3, 43)), 300);
        assert_ne!(a, c);
        // Order independence: request 250 is the same whether or not 0..250 were drawn first.
        let late = Generator::new(params(0.3, 42)).request(250).into_owned();
        assert_eq!(late, a[250]);
    }

    #[test]
    fn zero_ratio_means_no_pool() {
        let generator = Generator::new(params(0.0, 42));
        assert!((0..1000).all(|i| generator.pool_slot(i).is_none()));
    }

    #[test]
    fn workload_file_is_loaded_and_cycled() {
        let json = r#"{"requests": [
            {"query": "q0", "documents": ["a", "b"]},
            {"query": "q1", "documents": ["c", "d"]},
            {"query": "q2", "documents": ["e", "f"]}
        ]}"#;
        let workload = Workload::parse(json).expect("valid workload");
        let queries: Vec<String> = (0..7).map(|i| workload.request(i).query.clone()).collect();
        assert_eq!(queries, ["q0", "q1", "q2", "q0", "q1", "q2", "q0"]);
        assert_eq!(workload.request(4).documents, ["c", "d"]);
        assert_eq!(workload.docs_per_request(), Some(2));
    }

    #[test]
    fn workload_file_from_disk() {
        let path =
            std::env::temp_dir().join(format!("rerank-bench-workload-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"requests": [{"query": "q", "documents": ["x"]}, {"query": "r", "documents": ["y", "z"]}]}"#,
        )
        .expect("write temp file");
        let loaded = Workload::load(&path);
        let _ = std::fs::remove_file(&path);
        let workload = loaded.expect("valid workload");
        assert_eq!(workload.request(1).query, "r");
        assert_eq!(workload.docs_per_request(), None, "sizes differ");
        assert!(Workload::load(&path).is_err(), "missing file is an error");
    }

    #[test]
    fn bad_workload_files_are_refused() {
        for bad in [
            "",
            "[]",
            r#"{"requests": []}"#,
            r#"{"requests": [{"query": "q", "documents": []}]}"#,
            r#"{"requests": [{"query": "q", "texts": ["a"]}]}"#,
            r#"{"requests": [{"query": 1, "documents": ["a"]}]}"#,
        ] {
            assert!(Workload::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
