//! Temporal metrics for `rotoscope score` (docs/ARCHITECTURE.md, "Temporal metrics").
//!
//! Both metrics use the optical flow of the *input* video, so the output is judged on
//! whether it moves the way the source moves: warp error is the masked MSE between output
//! frame t and output frame t+1 warped back by that flow; seam error compares that error at
//! batch boundaries with the error inside batches. The same metrics on the input video
//! itself give the floor the flow allows.
//!
//! [`TemporalScorer`] is fed frame by frame and keeps one previous frame, so memory does not
//! grow with the clip.

mod seams;
mod warp_error;

pub use seams::{boundary_pairs, seam_error};
pub use warp_error::pair_warp_error;

use crate::flow::{estimate_flow, FlowParams, Plane};
use serde::Serialize;
use std::ops::Range;

/// Metrics of one video.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemporalMetrics {
    /// Mean over frame pairs of the masked warp MSE, RGB in [0, 1].
    pub warp_error: Option<f64>,
    /// Boundary over interior warp error; `None` without batch boundaries.
    pub seam_error: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreReport {
    pub frames: u64,
    pub width: u32,
    pub height: u32,
    pub output: TemporalMetrics,
    pub input: TemporalMetrics,
    /// Per-pair output warp errors, for plots.
    pub output_pairs: Vec<Option<f64>>,
}

struct Previous {
    input_luma: Plane,
    input_rgb: Vec<u8>,
    output_rgb: Vec<u8>,
}

/// Streaming scorer: push (input, output) frame pairs in order, then [`finish`](Self::finish).
pub struct TemporalScorer {
    params: FlowParams,
    width: u32,
    height: u32,
    previous: Option<Previous>,
    frames: u64,
    output_pairs: Vec<Option<f64>>,
    input_pairs: Vec<Option<f64>>,
}

impl TemporalScorer {
    /// Scores at the output resolution `width`×`height`; input frames are resized to it.
    pub fn new(width: u32, height: u32, params: FlowParams) -> Self {
        Self {
            params,
            width,
            height,
            previous: None,
            frames: 0,
            output_pairs: Vec::new(),
            input_pairs: Vec::new(),
        }
    }

    /// Add the next frame of both videos (tight RGB24 each).
    pub fn push(&mut self, input: (u32, u32, &[u8]), output: &[u8]) {
        let (w, h) = (self.width as usize, self.height as usize);
        assert_eq!(
            output.len(),
            w * h * 3,
            "output frame size differs from the scorer's"
        );
        let input_rgb = resize_rgb(input, self.width, self.height);
        let input_luma = Plane::from_rgb(w, h, &input_rgb);
        if let Some(prev) = &self.previous {
            let forward = estimate_flow(&prev.input_luma, &input_luma, &self.params);
            let backward = estimate_flow(&input_luma, &prev.input_luma, &self.params);
            self.output_pairs.push(pair_warp_error(
                &prev.output_rgb,
                output,
                &forward,
                &backward,
            ));
            self.input_pairs.push(pair_warp_error(
                &prev.input_rgb,
                &input_rgb,
                &forward,
                &backward,
            ));
        }
        self.previous = Some(Previous {
            input_luma,
            input_rgb,
            output_rgb: output.to_vec(),
        });
        self.frames += 1;
    }

    /// Final metrics. `batches` are the render batches (frame ranges) for the seam error.
    pub fn finish(self, batches: Option<&[Range<u64>]>) -> ScoreReport {
        let boundary = batches.map(boundary_pairs).unwrap_or_default();
        let metrics = |pairs: &[Option<f64>]| TemporalMetrics {
            warp_error: mean(pairs),
            seam_error: if boundary.is_empty() {
                None
            } else {
                seam_error(pairs, &boundary)
            },
        };
        ScoreReport {
            frames: self.frames,
            width: self.width,
            height: self.height,
            output: metrics(&self.output_pairs),
            input: metrics(&self.input_pairs),
            output_pairs: self.output_pairs,
        }
    }
}

fn mean(values: &[Option<f64>]) -> Option<f64> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
}

fn resize_rgb((w, h, data): (u32, u32, &[u8]), width: u32, height: u32) -> Vec<u8> {
    if (w, h) == (width, height) {
        return data.to_vec();
    }
    let image = image::RgbImage::from_raw(w, h, data.to_vec())
        .expect("input frame buffer matches its declared size");
    image::imageops::resize(&image, width, height, image::imageops::FilterType::Triangle).into_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(w: usize, h: usize, shift: f32) -> Vec<u8> {
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let fx = x as f32 - shift;
                let v = 0.5
                    + 0.25 * (fx * 0.3).sin() * (y as f32 * 0.23).cos()
                    + 0.2 * (fx * 0.07 + y as f32 * 0.11).sin();
                for c in 0..3 {
                    rgb[(y * w + x) * 3 + c] =
                        (v * 255.0 * (0.8 + 0.1 * c as f32)).clamp(0.0, 255.0) as u8;
                }
            }
        }
        rgb
    }

    #[test]
    fn output_that_follows_the_input_scores_better_than_flicker() {
        let (w, h) = (96usize, 64usize);
        let inputs: Vec<Vec<u8>> = (0..6).map(|t| textured(w, h, t as f32 * 1.5)).collect();
        let mut following = TemporalScorer::new(w as u32, h as u32, FlowParams::default());
        let mut flickering = TemporalScorer::new(w as u32, h as u32, FlowParams::default());
        for (t, input) in inputs.iter().enumerate() {
            following.push((w as u32, h as u32, input), input);
            // Same content, but every other frame brightened: temporal flicker.
            let flicker: Vec<u8> = input
                .iter()
                .map(|&p| if t % 2 == 1 { p.saturating_add(40) } else { p })
                .collect();
            flickering.push((w as u32, h as u32, input), &flicker);
        }
        let good = following.finish(None);
        let bad = flickering.finish(None);
        assert_eq!(good.frames, 6);
        assert_eq!(good.output_pairs.len(), 5);
        let (g, b) = (
            good.output.warp_error.unwrap(),
            bad.output.warp_error.unwrap(),
        );
        assert!(g < 1e-3, "following output warp error {g}");
        assert!(b > 10.0 * g, "flicker {b} vs following {g}");
        assert_eq!(
            good.output.warp_error, good.input.warp_error,
            "output equals input here"
        );
    }

    #[test]
    fn a_jump_at_the_batch_boundary_raises_the_seam_error() {
        let (w, h) = (64usize, 48usize);
        let batches = [0u64..6, 4..10];
        let mut scorer = TemporalScorer::new(w as u32, h as u32, FlowParams::default());
        for t in 0..10 {
            let input = textured(w, h, t as f32);
            // After the boundary the second batch renders a differently toned image.
            let output: Vec<u8> = input
                .iter()
                .map(|&p| if t >= 5 { p / 2 + 60 } else { p })
                .collect();
            scorer.push((w as u32, h as u32, &input), &output);
        }
        let report = scorer.finish(Some(&batches));
        let seam = report.output.seam_error.unwrap();
        assert!(seam > 5.0, "seam error {seam}");
    }
}
