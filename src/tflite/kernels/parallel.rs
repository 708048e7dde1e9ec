//! When to spread a kernel's rows over rayon's pool. Handing work from the caller to the
//! pool and waking another thread costs tens of microseconds, more than many layers of these
//! small models take in total, so small layers run on the calling thread.

use rayon::prelude::*;

/// Work (multiply-adds or element updates) below which a task is not worth a thread hop.
pub const MIN_TASK_WORK: usize = 1 << 16;

/// Rows per task so that each task has at least [`MIN_TASK_WORK`]; `None` when the whole
/// job is too small to split (or there is only one thread).
fn rows_per_task(rows: usize, work_per_row: usize) -> Option<usize> {
    let per_task = (MIN_TASK_WORK / work_per_row.max(1)).max(1);
    (rayon::current_num_threads() > 1 && rows >= 2 * per_task).then_some(per_task)
}

/// Calls `f(row_index, row)` for each `row_len`-sized chunk of `data` (`work_per_row` units
/// of work each), in parallel only when that is worth it.
pub fn for_each_row<F>(data: &mut [f32], row_len: usize, work_per_row: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let row_len = row_len.max(1);
    match rows_per_task(data.len().div_ceil(row_len), work_per_row) {
        None => data
            .chunks_mut(row_len)
            .enumerate()
            .for_each(|(i, r)| f(i, r)),
        Some(min) => data
            .par_chunks_mut(row_len)
            .enumerate()
            .with_min_len(min)
            .for_each(|(i, r)| f(i, r)),
    }
}

/// Like [`for_each_row`] over two slices chunked in lockstep: `f(a_row, b_row)`.
pub fn for_each_row_zip<F>(
    a: &mut [f32],
    a_row: usize,
    b: &[f32],
    b_row: usize,
    work_per_row: usize,
    f: F,
) where
    F: Fn(&mut [f32], &[f32]) + Sync + Send,
{
    let (a_row, b_row) = (a_row.max(1), b_row.max(1));
    match rows_per_task(a.len().div_ceil(a_row), work_per_row) {
        None => a
            .chunks_mut(a_row)
            .zip(b.chunks(b_row))
            .for_each(|(x, y)| f(x, y)),
        Some(min) => a
            .par_chunks_mut(a_row)
            .zip(b.par_chunks(b_row))
            .with_min_len(min)
            .for_each(|(x, y)| f(x, y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_every_row_once_small_or_large() {
        for (rows, work) in [(3, 1), (10_000, 1_000)] {
            let mut data = vec![0.0f32; rows * 4];
            for_each_row(&mut data, 4, work, |i, row| {
                row.iter_mut().for_each(|v| *v += i as f32)
            });
            assert!(data
                .chunks(4)
                .enumerate()
                .all(|(i, r)| r.iter().all(|&v| v == i as f32)));
            let b: Vec<f32> = (0..rows * 2).map(|v| v as f32).collect();
            for_each_row_zip(&mut data, 4, &b, 2, work, |x, y| x[0] = y[1]);
            assert!(data
                .chunks(4)
                .enumerate()
                .all(|(i, r)| r[0] == (2 * i + 1) as f32));
        }
    }
}
