//! Pixel-space blending of the frames two neighbouring batches both render: a linear ramp
//! whose weight moves from the earlier batch to the later one across the overlap, so the
//! switch between batches is spread over the whole overlap instead of a visible cut.

use crate::preset::OverlapBlend;
use crate::video::Frame;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot blend frame {index}: renderings differ in size ({a_width}x{a_height} vs {b_width}x{b_height})")]
pub struct BlendError {
    pub index: u64,
    pub a_width: u32,
    pub a_height: u32,
    pub b_width: u32,
    pub b_height: u32,
}

/// Weight of the later batch at `position` (0-based) in an overlap of `overlap` frames:
/// `(position + 1) / (overlap + 1)`, so the earlier batch's weight falls from nearly 1 to
/// nearly 0 and neither end of the overlap is a hard switch.
pub fn ramp_weight(position: usize, overlap: usize) -> f32 {
    (position + 1) as f32 / (overlap + 1) as f32
}

impl OverlapBlend {
    /// Weight of the later batch at `position` of an overlap of `overlap` frames.
    pub fn weight(self, position: usize, overlap: usize) -> f32 {
        match self {
            OverlapBlend::Ramp => ramp_weight(position, overlap),
            OverlapBlend::Cut => cut_weight(position, overlap),
        }
    }
}

/// Hard cut: the later batch's rendering replaces the earlier one's on every shared frame.
pub fn cut_weight(_position: usize, _overlap: usize) -> f32 {
    1.0
}

/// `earlier · (1 − w) + later · w` per channel, rounded. Identical inputs give the input back
/// exactly, whatever `w`. The result keeps `later`'s index.
pub fn blend_frames(
    earlier: &Frame,
    later: &Frame,
    weight_later: f32,
) -> Result<Frame, BlendError> {
    if (earlier.width, earlier.height) != (later.width, later.height)
        || earlier.data.len() != later.data.len()
    {
        return Err(BlendError {
            index: later.index,
            a_width: earlier.width,
            a_height: earlier.height,
            b_width: later.width,
            b_height: later.height,
        });
    }
    let w = weight_later.clamp(0.0, 1.0);
    let data = earlier
        .data
        .iter()
        .zip(&later.data)
        .map(|(&a, &b)| {
            let (a, b) = (a as f32, b as f32);
            (a + (b - a) * w).round() as u8
        })
        .collect();
    Ok(Frame {
        index: later.index,
        width: later.width,
        height: later.height,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(index: u64, value: u8) -> Frame {
        Frame::new(index, 2, 1, vec![value; 6]).unwrap()
    }

    #[test]
    fn ramp_rises_strictly_inside_zero_one() {
        let weights: Vec<f32> = (0..4).map(|j| ramp_weight(j, 4)).collect();
        assert_eq!(weights, vec![0.2, 0.4, 0.6, 0.8]);
        assert_eq!(ramp_weight(0, 1), 0.5);
    }

    #[test]
    fn cut_takes_the_later_batch() {
        let weights: Vec<f32> = (0..4).map(|j| cut_weight(j, 4)).collect();
        assert_eq!(weights, vec![1.0; 4]);
        assert_eq!(OverlapBlend::Ramp.weight(1, 4), 0.4);
        assert_eq!(OverlapBlend::Cut.weight(1, 4), 1.0);
    }

    #[test]
    fn blend_interpolates_and_rounds() {
        let out = blend_frames(&flat(3, 0), &flat(3, 100), 0.25).unwrap();
        assert_eq!(out.data, vec![25; 6]);
        let out = blend_frames(&flat(3, 10), &flat(3, 11), 0.5).unwrap();
        assert_eq!(out.data, vec![11; 6]); // 10.5 rounds half away from zero
        assert_eq!(out.index, 3);
    }

    #[test]
    fn identical_renderings_blend_to_themselves() {
        let data: Vec<u8> = (0..=255).cycle().take(3 * 97).collect();
        let frame = Frame::new(0, 97, 1, data).unwrap();
        for j in 0..10 {
            let out = blend_frames(&frame, &frame, ramp_weight(j, 10)).unwrap();
            assert_eq!(out, frame);
        }
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let other = Frame::new(5, 1, 2, vec![0; 6]).unwrap();
        let err = blend_frames(&flat(5, 0), &other, 0.5).unwrap_err();
        assert!(err.to_string().contains("frame 5"));
    }
}
