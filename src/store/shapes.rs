//! Statement shapes: few distinct SQL texts, so that prepared statements stay
//! prepared.
//!
//! The driver prepares every distinct statement text once per connection and
//! keeps it in that connection's cache (sqlx: 100 statements, least recently
//! used evicted and closed). A multi-row `INSERT` of *n* rows, or an `IN (…)`
//! list of *n* values, is a different text for every *n*. At 300 sagas/s the
//! saga shell's dozen statements came in ~40 lengths each, the caches
//! thrashed, and a third of all executions first paid a prepare (a round trip
//! and a parse) and later a close (BENCHMARKS.md, "Prepared statements").
//!
//! So lengths are rounded to powers of two:
//! * value lists (`IN (…)`, `CASE … WHEN`) are **padded** by repeating their
//!   last value: a repeated value matches the same rows, so the statement
//!   means the same;
//! * multi-row `INSERT`s are **cut into pieces** whose sizes are powers of
//!   two, largest first (13 rows: 8 + 4 + 1).
//!
//! A text per power of two up to the largest batch is ~10 texts per statement
//! family, most of them rare.

use std::ops::Range;

/// The largest power of two that is at most `n` (`n` ≥ 1).
fn floor_pow2(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// The ranges of `0..n` an `INSERT` of `n` rows is cut into: each a power of
/// two long and at most `max` (itself rounded down to a power of two), the
/// longest first, together covering `0..n` in order.
pub fn pieces(n: usize, max: usize) -> impl Iterator<Item = Range<usize>> {
    let max = floor_pow2(max.max(1));
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= n {
            return None;
        }
        let len = floor_pow2(n - start).min(max);
        let range = start..start + len;
        start += len;
        Some(range)
    })
}

/// `items`, then its last item repeated up to the next power of two (nothing
/// for an empty slice).
pub fn padded<T>(items: &[T]) -> impl Iterator<Item = &T> + Clone {
    let extra = items.len().checked_next_power_of_two().unwrap_or(items.len()) - items.len();
    items.iter().chain(items.last().into_iter().cycle().take(extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens(n: usize, max: usize) -> Vec<usize> {
        pieces(n, max).map(|r| r.len()).collect()
    }

    #[test]
    fn inserts_are_cut_into_powers_of_two_longest_first() {
        assert_eq!(lens(0, 512), Vec::<usize>::new());
        assert_eq!(lens(1, 512), [1]);
        assert_eq!(lens(13, 512), [8, 4, 1]);
        assert_eq!(lens(16, 512), [16]);
        assert_eq!(lens(1_000, 1_000), [512, 256, 128, 64, 32, 8]);
        assert_eq!(lens(5, 1), [1, 1, 1, 1, 1], "a maximum of one row per statement holds");
        assert_eq!(lens(7, 3), [2, 2, 2, 1], "the maximum is rounded down to a power of two");
    }

    #[test]
    fn pieces_cover_every_row_once_in_order() {
        for n in 0..300 {
            let ranges: Vec<_> = pieces(n, 64).collect();
            let flat: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(flat, (0..n).collect::<Vec<_>>());
            assert!(ranges.iter().all(|r| r.len().is_power_of_two() && r.len() <= 64));
        }
    }

    #[test]
    fn lists_are_padded_with_their_last_value() {
        let pad = |v: &[u32]| padded(v).copied().collect::<Vec<_>>();
        assert_eq!(pad(&[]), Vec::<u32>::new());
        assert_eq!(pad(&[7]), [7]);
        assert_eq!(pad(&[1, 2, 3]), [1, 2, 3, 3]);
        assert_eq!(pad(&[1, 2, 3, 4]), [1, 2, 3, 4]);
        assert_eq!(pad(&[1, 2, 3, 4, 5]), [1, 2, 3, 4, 5, 5, 5, 5]);
    }

    #[test]
    fn few_texts_for_every_length() {
        // Lengths 1..=1000 come in at most 10 list lengths and 10 piece lengths.
        let lists: std::collections::BTreeSet<usize> = (1..=1000).map(|n| padded(&vec![0u8; n]).count()).collect();
        let cut: std::collections::BTreeSet<usize> = (1..=1000).flat_map(|n| lens(n, 1000)).collect();
        assert_eq!(lists.len(), 11);
        assert_eq!(cut.len(), 10);
    }
}
