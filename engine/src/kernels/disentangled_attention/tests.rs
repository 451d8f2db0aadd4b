//! The op against transformers' formulation; the bucketing against transformers' table.

use super::linear_algebra::exp;
use super::*;

/// A small deterministic generator in −0.5..0.5.
fn noise(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5
}

/// transformers' formulation, in f64: full-width c2p/p2c products gathered with clamped
/// indices, p2c indexed by −bucket(j − i) as `disentangled_attention_bias` does.
fn reference(a: &DisentangledAttention, qkv: &[f32], offsets: &[usize]) -> Vec<f32> {
    let (heads, d) = (a.heads, a.head_dim);
    let h = heads * d;
    let span = a.positions.span() as i64;
    let row = |b: i64| (b + span).clamp(0, 2 * span - 1) as usize;
    let mut out = vec![0f32; qkv.len() / 3];
    for w in offsets.windows(2) {
        let (start, len) = (w[0], w[1] - w[0]);
        for head in 0..heads {
            let at = |t: usize, part: usize, c: usize| {
                f64::from(qkv[(start + t) * 3 * h + part * h + head * d + c])
            };
            let table = |t: &[f32], r: usize, c: usize| f64::from(t[r * h + head * d + c]);
            for i in 0..len {
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        let mut s: f64 = (0..d).map(|c| at(i, 0, c) * at(j, 1, c)).sum();
                        s *= f64::from(a.scale);
                        let c2p = row(a.positions.bucket(i as i64 - j as i64));
                        let p2c = row(-a.positions.bucket(j as i64 - i as i64));
                        if let Some(pk) = a.pos_key {
                            s += (0..d).map(|c| at(i, 0, c) * table(pk, c2p, c)).sum::<f64>();
                        }
                        if let Some(pq) = a.pos_query {
                            s += (0..d).map(|c| at(j, 1, c) * table(pq, p2c, c)).sum::<f64>();
                        }
                        s
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..d {
                    let v: f64 = (0..len).map(|j| e[j] / sum * at(j, 2, c)).sum();
                    out[(start + i) * h + head * d + c] = v as f32;
                }
            }
        }
    }
    out
}

fn check(buckets: i64, max_position: i64, lengths: &[usize], c2p: bool, p2c: bool) {
    let (heads, d) = (3, 8);
    let h = heads * d;
    let positions = RelativePositions::new(buckets, max_position).expect("valid");
    let rows = 2 * positions.span() * h;
    let mut seed = 7u64;
    let pk: Vec<f32> = (0..rows).map(|_| noise(&mut seed)).collect();
    let pq: Vec<f32> = (0..rows).map(|_| noise(&mut seed)).collect();
    let mut offsets = vec![0];
    for l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l);
    }
    let tokens = offsets[offsets.len() - 1];
    let qkv: Vec<f32> = (0..tokens * 3 * h)
        .map(|_| 2.0 * noise(&mut seed))
        .collect();
    let factor = 1 + usize::from(c2p) + usize::from(p2c);
    let attention = DisentangledAttention {
        heads,
        head_dim: d,
        scale: 1.0 / ((d * factor) as f32).sqrt(),
        pos_key: c2p.then_some(&pk[..]),
        pos_query: p2c.then_some(&pq[..]),
        positions,
    };
    let want = reference(&attention, &qkv, &offsets);
    for threads in [1, 2, 3] {
        let mut got = vec![0f32; tokens * h];
        let mut scratch = AttentionScratch::default();
        attention
            .forward(&qkv, &offsets, &mut got, &mut scratch, threads)
            .expect("runs");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-5,
            "buckets {buckets}, max {max_position}, {lengths:?}, c2p {c2p}, p2c {p2c}, \
             {threads} threads: off by {worst}"
        );
    }
}

/// Both the unbucketed fast path (contiguous slices, row blocks) and the bucket-table path,
/// either term alone, clamped spans, empty and one-token sequences, any thread count.
#[test]
fn matches_transformers_formulation() {
    check(8, 64, &[5, 40, 1, 0, 130, 17], true, true);
    check(-1, 24, &[5, 40, 1, 60], true, true);
    check(8, 64, &[30, 3], true, false);
    check(8, 64, &[30, 3], false, true);
    check(256, 512, &[100, 3, 70], true, true);
    check(8, 16, &[40], true, true);
}

#[test]
fn refuses_inconsistent_sizes() {
    let positions = RelativePositions::new(8, 64).expect("valid");
    let table = vec![0f32; 16 * 8];
    let attention = DisentangledAttention {
        heads: 2,
        head_dim: 4,
        scale: 0.5,
        pos_key: Some(&table),
        pos_query: None,
        positions,
    };
    let mut scratch = AttentionScratch::default();
    let qkv = vec![0f32; 3 * 24];
    let mut out = vec![0f32; 3 * 8];
    assert!(attention
        .forward(&qkv, &[0, 3], &mut out, &mut scratch, 1)
        .is_ok());
    for offsets in [&[0, 2][..], &[1, 3], &[0, 2, 1, 3], &[]] {
        assert!(attention
            .forward(&qkv, offsets, &mut out, &mut scratch, 1)
            .is_err());
    }
    let short = vec![0f32; 8 * 8];
    let bad = DisentangledAttention {
        pos_key: Some(&short),
        ..attention
    };
    assert!(bad
        .forward(&qkv, &[0, 3], &mut out, &mut scratch, 1)
        .is_err());
    assert!(RelativePositions::new(0, 0).is_err());
}

#[test]
fn exp_is_within_a_few_ulp() {
    let mut worst = 0f64;
    for i in 0..=87_000 {
        let x = -(i as f32) / 1000.0;
        let want = f64::from(x).exp();
        worst = worst.max(((f64::from(exp(x)) - want) / want).abs());
    }
    assert!(worst < 3e-7, "relative error {worst}");
    assert_eq!(exp(0.0), 1.0);
    assert!(exp(-1000.0) < 1e-37);
}

#[derive(serde::Deserialize)]
struct BucketTable {
    position_buckets: i64,
    max_relative_positions: i64,
    first: i64,
    buckets: Vec<i64>,
}

/// transformers' own `make_log_bucket_position` (tabulated by scripts/fixtures/deberta.py,
/// DeBERTa-v3-base's 256 buckets over 512 among them): the f32 rounding of the log decides
/// bucket edges, so ours must round the same way.
#[test]
fn buckets_match_transformers() {
    #[derive(serde::Deserialize)]
    struct Fixture {
        bucket_tables: Vec<BucketTable>,
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/deberta-ce/parity.json");
    let text = std::fs::read_to_string(path).expect("fixture");
    let fixture: Fixture = serde_json::from_str(&text).expect("parses");
    assert!(fixture.bucket_tables.len() >= 2);
    for t in &fixture.bucket_tables {
        let positions =
            RelativePositions::new(t.position_buckets, t.max_relative_positions).expect("valid");
        for (i, &want) in t.buckets.iter().enumerate() {
            let r = t.first + i as i64;
            assert_eq!(
                positions.bucket(r),
                want,
                "{} buckets over {}, relative position {r}",
                t.position_buckets,
                t.max_relative_positions
            );
        }
    }
}
