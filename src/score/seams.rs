//! Seam error: how much more the output jumps at batch boundaries than inside batches.

use std::ops::Range;

/// Indices t of the frame pairs (t, t+1) that touch a batch boundary: every pair with a
/// frame in the overlap of two neighbouring batches, plus the pair entering the overlap.
/// With no overlap, the single pair that crosses from one batch to the next.
pub fn boundary_pairs(batches: &[Range<u64>]) -> Vec<u64> {
    let mut pairs = Vec::new();
    for window in batches.windows(2) {
        let (a, b) = (&window[0], &window[1]);
        let first = b.start.saturating_sub(1);
        // Pair (last, last + 1) leaves the overlap (with no overlap: crosses the cut).
        let last = a.end.max(b.start).saturating_sub(1);
        pairs.extend(first..=last);
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Mean warp error on boundary pairs divided by mean warp error on the other pairs.
/// 1.0 means no visible seams. `pair_errors[t]` is the error of pair (t, t+1); `None`
/// entries (no trusted pixels) are skipped. `None` when either group is empty.
pub fn seam_error(pair_errors: &[Option<f64>], boundary: &[u64]) -> Option<f64> {
    let mut at_seams = (0.0, 0usize);
    let mut interior = (0.0, 0usize);
    for (t, e) in pair_errors.iter().enumerate() {
        let Some(e) = e else { continue };
        let group = if boundary.binary_search(&(t as u64)).is_ok() {
            &mut at_seams
        } else {
            &mut interior
        };
        group.0 += e;
        group.1 += 1;
    }
    if at_seams.1 == 0 || interior.1 == 0 {
        return None;
    }
    let interior_mean = interior.0 / interior.1 as f64;
    (interior_mean > 0.0).then(|| (at_seams.0 / at_seams.1 as f64) / interior_mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_batches_mark_the_overlap_pairs() {
        // Batches 0..10 and 7..20 share frames 7, 8, 9: pairs (6,7) .. (9,10).
        assert_eq!(boundary_pairs(&[0..10, 7..20]), vec![6, 7, 8, 9]);
    }

    #[test]
    fn hard_cuts_mark_the_crossing_pair() {
        assert_eq!(boundary_pairs(&[0..10, 10..20, 20..25]), vec![9, 19]);
    }

    #[test]
    fn a_single_batch_has_no_seams() {
        assert!(boundary_pairs(&[0..50]).is_empty());
    }

    #[test]
    fn seam_error_is_the_ratio_of_means() {
        let errors = [Some(1.0), Some(1.0), Some(4.0), None, Some(1.0)];
        assert_eq!(seam_error(&errors, &[2, 3]), Some(4.0));
        assert_eq!(seam_error(&errors, &[]), None);
    }
}
