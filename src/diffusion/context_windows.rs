//! Context windows: a batch of N frames is denoised as overlapping windows of at most
//! `length` frames (the motion modules' sequence length), and at every sampling step the
//! noise predictions of windows that share a frame are averaged, weighted per frame.
//!
//! The schedule is AnimateDiff-Evolved's "standard static" one (the same windows at every
//! step): windows start every `length - overlap` frames, and the last one is moved back so
//! that it ends at the last frame (it then overlaps its neighbour by more than `overlap`).
//! A batch of at most `length` frames is one window. Weights within a window are flat (all
//! ones) or a pyramid rising linearly from the window's edges to its centre
//! (`1, 2, …, 2, 1`, as in FreeNoise and AnimateDiff-Evolved); a frame's prediction is
//! `Σ_k w_k·ε_k / Σ_k w_k` over the windows `k` containing it.

use std::ops::Range;

use candle_core::{Result as CandleResult, Tensor};

use crate::preset::motion::{ContextOptions, ContextWeighting};

/// Errors of the window planner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("context_length must be at least 1")]
    ZeroLength,
    #[error("context_overlap ({overlap}) must be smaller than context_length ({length})")]
    OverlapTooLarge { length: usize, overlap: usize },
    #[error("no frames to split into context windows")]
    NoFrames,
}

impl ContextOptions {
    pub fn validate(&self) -> Result<(), ContextError> {
        if self.length == 0 {
            return Err(ContextError::ZeroLength);
        }
        if self.overlap >= self.length {
            return Err(ContextError::OverlapTooLarge {
                length: self.length,
                overlap: self.overlap,
            });
        }
        Ok(())
    }
}

/// The windows of a batch of `frames` frames ("standard static" schedule, see module docs).
pub fn plan_windows(
    frames: usize,
    options: &ContextOptions,
) -> Result<Vec<Range<usize>>, ContextError> {
    options.validate()?;
    if frames == 0 {
        return Err(ContextError::NoFrames);
    }
    let length = options.length;
    if frames <= length {
        return Ok(std::iter::once(0..frames).collect());
    }
    let stride = length - options.overlap;
    let mut windows = Vec::new();
    let mut start = 0;
    loop {
        if start + length >= frames {
            windows.push(frames - length..frames);
            return Ok(windows);
        }
        windows.push(start..start + length);
        start += stride;
    }
}

/// Raw weights of a window of `len` frames.
pub fn window_weights(len: usize, weighting: ContextWeighting) -> Vec<f64> {
    match weighting {
        ContextWeighting::Flat => vec![1.0; len],
        // Distance to the nearer edge, counted from 1: [1, 2, 2, 1], [1, 2, 3, 2, 1].
        ContextWeighting::Pyramid => (0..len).map(|i| (i.min(len - 1 - i) + 1) as f64).collect(),
    }
}

/// One window with its frames' share of the average.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextWindow {
    pub frames: Range<usize>,
    /// For each frame of the window, its weight divided by the sum of the weights all windows
    /// give that frame (exactly 1 where the window is the only one).
    pub shares: Vec<f32>,
}

/// The windows of a batch with normalised weights.
pub fn context_windows(
    frames: usize,
    options: &ContextOptions,
) -> Result<Vec<ContextWindow>, ContextError> {
    let ranges = plan_windows(frames, options)?;
    let raw: Vec<Vec<f64>> = ranges
        .iter()
        .map(|r| window_weights(r.len(), options.weighting))
        .collect();
    let mut totals = vec![0f64; frames];
    for (range, weights) in ranges.iter().zip(&raw) {
        for (f, w) in range.clone().zip(weights) {
            totals[f] += w;
        }
    }
    Ok(ranges
        .into_iter()
        .zip(raw)
        .map(|(range, weights)| {
            let shares = range
                .clone()
                .zip(weights)
                .map(|(f, w)| (w / totals[f]) as f32)
                .collect();
            ContextWindow {
                frames: range,
                shares,
            }
        })
        .collect())
}

/// Accumulates the windows' predictions of one step into per-frame weighted averages.
pub struct WindowAverager {
    frames: Vec<Option<Tensor>>,
}

impl WindowAverager {
    pub fn new(frames: usize) -> Self {
        Self {
            frames: vec![None; frames],
        }
    }

    /// Adds `prediction` `(window frames, …)` of `window`.
    pub fn add(&mut self, window: &ContextWindow, prediction: &Tensor) -> CandleResult<()> {
        if prediction.dim(0)? != window.frames.len() {
            candle_core::bail!(
                "context window {:?}: prediction for {} frames",
                window.frames,
                prediction.dim(0)?
            );
        }
        for (k, (frame, &share)) in window.frames.clone().zip(&window.shares).enumerate() {
            let part = prediction.get(k)?;
            let weighted = if share == 1.0 {
                part
            } else {
                (part * share as f64)?
            };
            let slot = self.frames.get_mut(frame).ok_or_else(|| {
                candle_core::Error::Msg(format!("context window frame {frame} outside the batch"))
            })?;
            *slot = Some(match slot.take() {
                None => weighted,
                Some(sum) => (sum + weighted)?,
            });
        }
        Ok(())
    }

    /// The averaged predictions `(frames, …)`; every frame must have been covered.
    pub fn finish(self) -> CandleResult<Tensor> {
        let frames = self
            .frames
            .into_iter()
            .enumerate()
            .map(|(f, t)| {
                t.ok_or_else(|| {
                    candle_core::Error::Msg(format!("frame {f} is in no context window"))
                })
            })
            .collect::<CandleResult<Vec<_>>>()?;
        Tensor::stack(&frames, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn opts(length: usize, overlap: usize, weighting: ContextWeighting) -> ContextOptions {
        ContextOptions {
            length,
            overlap,
            weighting,
        }
    }

    #[test]
    fn static_schedule_shifts_the_last_window_back() {
        let flat = ContextWeighting::Flat;
        assert_eq!(
            plan_windows(6, &opts(4, 2, flat)).unwrap(),
            vec![0..4, 2..6]
        );
        // 8 frames, length 4, overlap 1: starts 0, 3, then 6 → moved back to 4.
        assert_eq!(
            plan_windows(8, &opts(4, 1, flat)).unwrap(),
            vec![0..4, 3..7, 4..8]
        );
        // The defaults over a 64-frame batch: every 12 frames, the last ending at 64.
        assert_eq!(
            plan_windows(64, &ContextOptions::default()).unwrap(),
            vec![0..16, 12..28, 24..40, 36..52, 48..64]
        );
        // Short batches are one window; a batch of exactly one window too.
        assert_eq!(
            plan_windows(5, &ContextOptions::default()).unwrap(),
            vec![0..5]
        );
        assert_eq!(
            plan_windows(16, &ContextOptions::default()).unwrap(),
            vec![0..16]
        );
        // Overlap 0: plain tiling.
        assert_eq!(
            plan_windows(6, &opts(3, 0, flat)).unwrap(),
            vec![0..3, 3..6]
        );
        assert_eq!(
            plan_windows(6, &opts(4, 4, flat)),
            Err(ContextError::OverlapTooLarge {
                length: 4,
                overlap: 4
            })
        );
        assert_eq!(
            plan_windows(6, &opts(0, 0, flat)),
            Err(ContextError::ZeroLength)
        );
        assert_eq!(
            plan_windows(0, &opts(4, 1, flat)),
            Err(ContextError::NoFrames)
        );
    }

    #[test]
    fn every_frame_is_covered_and_shares_sum_to_one() {
        for frames in 1..40 {
            for (length, overlap) in [(16, 4), (8, 3), (5, 0), (4, 3)] {
                let windows =
                    context_windows(frames, &opts(length, overlap, ContextWeighting::Pyramid))
                        .unwrap();
                let mut total = vec![0f32; frames];
                for w in &windows {
                    assert!(w.frames.len() <= length && w.frames.end <= frames);
                    for (f, s) in w.frames.clone().zip(&w.shares) {
                        total[f] += s;
                    }
                }
                assert!(
                    total.iter().all(|t| (t - 1.0).abs() < 1e-6),
                    "{frames} {length} {overlap}: {total:?}"
                );
            }
        }
    }

    #[test]
    fn pyramid_weights_rise_to_the_centre() {
        assert_eq!(
            window_weights(4, ContextWeighting::Pyramid),
            vec![1.0, 2.0, 2.0, 1.0]
        );
        assert_eq!(
            window_weights(5, ContextWeighting::Pyramid),
            vec![1.0, 2.0, 3.0, 2.0, 1.0]
        );
        assert_eq!(window_weights(1, ContextWeighting::Pyramid), vec![1.0]);
        assert_eq!(window_weights(3, ContextWeighting::Flat), vec![1.0; 3]);
    }

    /// Hand-computed: 6 frames, windows of 4 overlapping by 2 → [0..4] and [2..6]. Window 0
    /// predicts 10 + f for frame f, window 1 predicts 100 + f (one value per frame).
    ///
    /// flat: frames 2, 3 are the mean of both: (12 + 102) / 2 = 57, (13 + 103) / 2 = 58.
    /// pyramid (weights 1 2 2 1): frame 2 gets weight 2 from window 0 (its 3rd frame) and 1 from
    /// window 1 (its 1st): (2·12 + 1·102) / 3 = 42; frame 3 gets 1 and 2:
    /// (1·13 + 2·103) / 3 = 73. Frames 0, 1, 4, 5 keep their only window's values.
    #[test]
    fn averaging_matches_hand_computed_example() {
        let dev = Device::Cpu;
        let run = |weighting| {
            let windows = context_windows(6, &opts(4, 2, weighting)).unwrap();
            let mut avg = WindowAverager::new(6);
            for (k, w) in windows.iter().enumerate() {
                let base = if k == 0 { 10.0 } else { 100.0 };
                let values: Vec<f32> = w.frames.clone().map(|f| base + f as f32).collect();
                let pred = Tensor::from_vec(values, (4, 1), &dev).unwrap();
                avg.add(w, &pred).unwrap();
            }
            avg.finish()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(
            run(ContextWeighting::Flat),
            vec![10.0, 11.0, 57.0, 58.0, 104.0, 105.0]
        );
        let pyramid = run(ContextWeighting::Pyramid);
        let expected = [10.0, 11.0, 42.0, 73.0, 104.0, 105.0];
        for (a, b) in pyramid.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{pyramid:?}");
        }
        let windows = context_windows(6, &opts(4, 2, ContextWeighting::Pyramid)).unwrap();
        assert_eq!(windows[0].shares[0], 1.0);
        assert!((windows[0].shares[2] - 2.0 / 3.0).abs() < 1e-7);
        assert!((windows[1].shares[0] - 1.0 / 3.0).abs() < 1e-7);
    }

    #[test]
    fn a_single_window_passes_predictions_through_exactly() {
        let dev = Device::Cpu;
        let windows = context_windows(5, &ContextOptions::default()).unwrap();
        assert_eq!(windows.len(), 1);
        assert!(windows[0].shares.iter().all(|&s| s == 1.0));
        let pred = Tensor::randn(0f32, 1.0, (5, 2, 3), &dev).unwrap();
        let mut avg = WindowAverager::new(5);
        avg.add(&windows[0], &pred).unwrap();
        let out = avg.finish().unwrap();
        assert_eq!(
            out.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            pred.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn uncovered_frames_are_an_error() {
        let dev = Device::Cpu;
        let window = ContextWindow {
            frames: 0..2,
            shares: vec![1.0, 1.0],
        };
        let mut avg = WindowAverager::new(3);
        avg.add(
            &window,
            &Tensor::zeros((2, 1), candle_core::DType::F32, &dev).unwrap(),
        )
        .unwrap();
        assert!(avg.finish().is_err());
        let mut avg = WindowAverager::new(3);
        assert!(avg
            .add(
                &window,
                &Tensor::zeros((3, 1), candle_core::DType::F32, &dev).unwrap()
            )
            .is_err());
    }
}
