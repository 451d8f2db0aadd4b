//! Splitting work into forward passes bounded by a token budget.
//!
//! A padded batch costs `rows × longest row` tokens, so inputs are sorted by length (longest
//! first) before packing: neighbours have similar lengths and padding stays small.

/// Groups the inputs with the given token `lengths` into batches whose padded size
/// (`rows × longest`) stays within `max_batch_tokens`. Returns indices into `lengths`.
///
/// An input longer than the budget on its own still gets a batch of one: the budget bounds
/// memory, it never rejects an input the model accepts.
pub fn token_budget_batches(lengths: &[usize], max_batch_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for index in order {
        let len = lengths[index].max(1);
        let widest = longest.max(len);
        if !current.is_empty() && (current.len() + 1) * widest > max_batch_tokens {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(index);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Groups the inputs into packed batches of at most `max_batch_tokens` real tokens (packed
/// execution has no padding, so order does not matter and inputs keep theirs). An input longer
/// than the budget still gets a batch of its own.
pub fn packed_batches(lengths: &[usize], max_batch_tokens: usize) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut tokens = 0;
    for (index, &len) in lengths.iter().enumerate() {
        if !current.is_empty() && tokens + len > max_batch_tokens {
            batches.push(std::mem::take(&mut current));
            tokens = 0;
        }
        tokens += len;
        current.push(index);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded_cost(batch: &[usize], lengths: &[usize]) -> usize {
        batch.len() * batch.iter().map(|&i| lengths[i]).max().unwrap_or(0)
    }

    #[test]
    fn every_input_lands_in_exactly_one_batch() {
        let lengths = [5, 90, 12, 12, 300, 7, 64, 64, 1];
        let batches = token_budget_batches(&lengths, 256);
        let mut seen: Vec<usize> = batches.concat();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
    }

    #[test]
    fn batches_respect_the_budget_except_single_oversized_inputs() {
        let lengths = [5, 90, 12, 12, 300, 7, 64, 64, 1, 33, 33, 33];
        for budget in [64, 128, 256, 1000] {
            for batch in token_budget_batches(&lengths, budget) {
                let cost = padded_cost(&batch, &lengths);
                assert!(
                    cost <= budget || batch.len() == 1,
                    "{batch:?} costs {cost} > {budget}"
                );
            }
        }
    }

    #[test]
    fn similar_lengths_are_batched_together() {
        let lengths = [100, 10, 100, 10];
        let batches = token_budget_batches(&lengths, 200);
        assert_eq!(batches, vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn empty_input_gives_no_batches() {
        assert!(token_budget_batches(&[], 100).is_empty());
        assert!(packed_batches(&[], 100).is_empty());
    }

    #[test]
    fn packed_batches_count_real_tokens_only() {
        let lengths = [300, 10, 10, 10, 200, 90, 5];
        let batches = packed_batches(&lengths, 320);
        assert_eq!(batches, vec![vec![0, 1, 2], vec![3, 4, 5, 6]]);
        let lone = packed_batches(&[500, 20], 100);
        assert_eq!(lone, vec![vec![0], vec![1]]);
    }
}
