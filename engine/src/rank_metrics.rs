//! How far one mode's scores are from the reference's: absolute differences over all pairs,
//! and per query Spearman's ρ and top-k agreement over that query's documents.
//!
//! Everything is computed in f64 from the engine's f32 scores, so the comparison itself adds
//! no rounding of its own.

/// Largest and mean absolute difference between two score lists of equal length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreDifference {
    pub max: f64,
    pub mean: f64,
}

/// Absolute differences `|a[i] - b[i]|` over every pair (an empty list differs by nothing).
pub fn score_difference(a: &[f64], b: &[f64]) -> ScoreDifference {
    let mut max = 0f64;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        // A NaN score must show up as NaN, not vanish the way `f64::max` drops it.
        if d > max || d.is_nan() {
            max = d;
        }
        sum += d;
    }
    let n = a.len().min(b.len());
    ScoreDifference {
        max,
        mean: if n == 0 { 0.0 } else { sum / n as f64 },
    }
}

/// Ranks of `values` (0 = smallest); tied values all get the average of the ranks they span.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && values[order[end + 1]] == values[order[start]] {
            end += 1;
        }
        let shared = (start + end) as f64 / 2.0;
        for &i in &order[start..=end] {
            ranks[i] = shared;
        }
        start = end + 1;
    }
    ranks
}

/// Spearman's rank correlation: Pearson's correlation of the average ranks.
///
/// It is undefined when either side has no spread (one document, or all scores tied); then it
/// is 1 when both sides rank identically and 0 otherwise, so such a query neither hides a
/// disagreement nor invents one.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    // Identical rankings are exactly 1 (the formula below can land an ulp short of it), which
    // also covers no documents and a query whose scores are all tied on both sides.
    if ra == rb {
        return 1.0;
    }
    let n = ra.len().min(rb.len()) as f64;
    let mean_a = ra.iter().sum::<f64>() / n;
    let mean_b = rb.iter().sum::<f64>() / n;
    let mut cov = 0.0;
    let mut var_a = 0.0;
    let mut var_b = 0.0;
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - mean_a) * (y - mean_b);
        var_a += (x - mean_a).powi(2);
        var_b += (y - mean_b).powi(2);
    }
    if var_a == 0.0 || var_b == 0.0 {
        return 0.0;
    }
    cov / (var_a.sqrt() * var_b.sqrt())
}

/// Indices of the `k` highest scores, best first; ties go to the earlier document, as a stable
/// sort of the engine's output would order them.
pub fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(k);
    order
}

/// Overlap of the two top-`k` sets divided by their size (`k`, or fewer when a query has fewer
/// documents): 1 when both modes put the same documents in their top `k`, in any order.
pub fn top_k_agreement(a: &[f64], b: &[f64], k: usize) -> f64 {
    let (top_a, top_b) = (top_k(a, k), top_k(b, k));
    if top_a.is_empty() {
        return 1.0;
    }
    let shared = top_a.iter().filter(|i| top_b.contains(i)).count();
    shared as f64 / top_a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_share_their_average_rank() {
        assert_eq!(
            average_ranks(&[0.5, 0.1, 0.5, 0.9, 0.5]),
            vec![2.0, 0.0, 2.0, 4.0, 2.0]
        );
        assert_eq!(average_ranks(&[3.0, 3.0]), vec![0.5, 0.5]);
    }

    #[test]
    fn spearman_of_identical_reversed_and_monotone_rankings() {
        let a = [0.1, 0.4, 0.3, 0.9];
        assert_eq!(spearman(&a, &a), 1.0);
        assert!((spearman(&a, &[0.9, 0.3, 0.4, 0.1]) + 1.0).abs() < 1e-12);
        // Only the order matters, not the scale.
        assert!((spearman(&a, &[-5.0, 2.0, 1.0, 10.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn spearman_with_ties_matches_pearson_on_average_ranks() {
        // Ranks: a = [0, 1.5, 1.5, 3], b = [0, 1, 2, 3]; Pearson of those is 0.9486833.
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]);
        assert!((rho - 0.948_683_298).abs() < 1e-6, "{rho}");
        // A tie broken one way or the other is the same distance from the tie.
        let up = spearman(&[1.0, 2.0, 2.0], &[1.0, 2.0, 3.0]);
        let down = spearman(&[1.0, 2.0, 2.0], &[1.0, 3.0, 2.0]);
        assert!((up - down).abs() < 1e-12);
    }

    #[test]
    fn spearman_without_spread_is_one_only_for_identical_rankings() {
        assert_eq!(spearman(&[0.2, 0.2, 0.2], &[0.7, 0.7, 0.7]), 1.0);
        assert_eq!(spearman(&[0.2, 0.2, 0.2], &[0.1, 0.7, 0.7]), 0.0);
        assert_eq!(spearman(&[0.4], &[0.8]), 1.0);
    }

    #[test]
    fn top_k_prefers_the_earlier_document_on_ties() {
        assert_eq!(top_k(&[0.2, 0.9, 0.9, 0.1], 2), vec![1, 2]);
        assert_eq!(top_k(&[0.5, 0.5, 0.5], 1), vec![0]);
        assert_eq!(top_k(&[0.3, 0.1], 5), vec![0, 1]);
    }

    #[test]
    fn top_k_agreement_counts_the_shared_set_not_its_order() {
        let a = [0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.0];
        let reordered = [0.5, 0.6, 0.7, 0.8, 0.9, 0.1, 0.0];
        assert_eq!(top_k_agreement(&a, &reordered, 5), 1.0);
        // Document 4 drops out of the top 5 in favour of document 6: 4 of 5 shared.
        let swapped = [0.9, 0.8, 0.7, 0.6, 0.0, 0.1, 0.5];
        assert!((top_k_agreement(&a, &swapped, 5) - 0.8).abs() < 1e-12);
        assert_eq!(top_k_agreement(&a, &swapped, 1), 1.0);
        // Fewer documents than k: the whole list is the top set.
        assert_eq!(top_k_agreement(&[0.1, 0.2], &[0.2, 0.1], 5), 1.0);
    }

    #[test]
    fn score_difference_is_max_and_mean_of_absolute_differences() {
        let d = score_difference(&[1.0, 2.0, 3.0], &[1.5, 2.0, 2.0]);
        assert_eq!(d.max, 1.0);
        assert!((d.mean - 0.5).abs() < 1e-12);
        assert_eq!(score_difference(&[], &[]).mean, 0.0);
        assert!(score_difference(&[f64::NAN], &[0.0]).max.is_nan());
    }
}
