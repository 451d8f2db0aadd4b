//! Data-parallel loops for the pure-Rust kernels.
//!
//! In builds with oneDNN they run as OpenMP parallel regions on oneDNN's own thread pool: between
//! two GEMMs its workers spin-wait for the next region, and Rust threads started beside them would
//! compete with that spinning for the same cores. Elsewhere they run on scoped threads.

use super::backend::{parallel_for, parallel_threads};
use crate::EngineError;

/// Threads a loop is split over.
pub(crate) fn threads() -> usize {
    parallel_threads()
}

/// Calls `f(begin, end)` on contiguous runs covering `0..n`, in parallel.
pub(crate) fn for_each_range(
    n: usize,
    f: &(dyn Fn(usize, usize) + Sync),
) -> Result<(), EngineError> {
    parallel_for(n, f)
}

/// A raw pointer that may cross threads, for loops whose iterations write disjoint elements.
pub(crate) struct SharedMut<T>(pub *mut T);

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: only shared where every user writes elements no other user touches (see each use).
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

/// A loop body over a run of rows: the run's first row index and its values.
pub(crate) type RowsBody<'a, T> = dyn Fn(usize, &mut [T]) -> Result<(), EngineError> + Sync + 'a;

/// Splits `data` (whole rows of `width`) into contiguous runs of rows and calls
/// `f(first_row, run)` for each, in parallel.
pub(crate) fn rows_mut<T: Send>(
    data: &mut [T],
    width: usize,
    f: &RowsBody<'_, T>,
) -> Result<(), EngineError> {
    if width == 0 || !data.len().is_multiple_of(width) {
        return Err(EngineError::Internal(format!(
            "{} values are not whole rows of {width}",
            data.len()
        )));
    }
    let rows = data.len() / width;
    let ptr = SharedMut(data.as_mut_ptr());
    let failure = std::sync::Mutex::new(None);
    for_each_range(rows, &|begin, end| {
        let base = ptr;
        // SAFETY: the runs [begin, end) of one loop are disjoint and lie within `rows` rows of
        // `data`, which this call borrows mutably for the whole loop.
        let run = unsafe {
            std::slice::from_raw_parts_mut(base.0.add(begin * width), (end - begin) * width)
        };
        if let Err(e) = f(begin, run) {
            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
    })?;
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_visited_once_with_its_index() {
        let mut data = vec![0usize; 7 * 3];
        rows_mut(&mut data, 3, &|first, run| {
            for (i, row) in run.chunks_exact_mut(3).enumerate() {
                row.fill(first + i + 1);
            }
            Ok(())
        })
        .expect("runs");
        let want: Vec<usize> = (1..=7).flat_map(|r| [r, r, r]).collect();
        assert_eq!(data, want);
        assert!(rows_mut(&mut data[..5], 3, &|_, _| Ok(())).is_err());
        let failing = rows_mut(&mut data, 3, &|_, _| {
            Err(EngineError::Internal("no".into()))
        });
        assert!(failing.is_err());
    }
}
