//! MAX_POOL_2D and AVERAGE_POOL_2D in NHWC. As in TFLite, padding cells never take part:
//! the window is clipped to the input and the average divides by the clipped count.

use super::parallel::for_each_row;

use super::activation::Activation;
use crate::alloc::uninit_f32;
use crate::tflite::array::Array;
use crate::tflite::padding::{axis_window, Padding};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

#[derive(Debug, Clone)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub filter: (usize, usize),
    pub stride: (usize, usize),
    pub padding: Padding,
    pub activation: Activation,
}

impl Pool2d {
    pub fn run(&self, input: &Array) -> Result<Array, String> {
        let (batch, h, w, c) = input
            .nhwc()
            .ok_or_else(|| format!("input must be NHWC, got shape {:?}", input.shape))?;
        let too_big = || format!("pool window {:?} does not fit input {h}x{w}", self.filter);
        let wy =
            axis_window(self.padding, h, self.filter.0, self.stride.0, 1).ok_or_else(too_big)?;
        let wx =
            axis_window(self.padding, w, self.filter.1, self.stride.1, 1).ok_or_else(too_big)?;
        let (oh, ow) = (wy.out, wx.out);
        // SAFETY: each output pixel is filled with the pool's identity before it accumulates.
        let mut out = unsafe { uninit_f32(batch * oh * ow * c) };
        let work = ow * c * self.filter.0 * self.filter.1;
        for_each_row(&mut out, ow * c, work, |row, dst| {
            let (b, oy) = (row / oh, row % oh);
            let y_start = (oy * self.stride.0) as isize - wy.pad_before as isize;
            let y0 = y_start.max(0) as usize;
            let y1 = ((y_start + self.filter.0 as isize).min(h as isize)).max(0) as usize;
            for (ox, px) in dst.chunks_exact_mut(c).enumerate() {
                let x_start = (ox * self.stride.1) as isize - wx.pad_before as isize;
                let x0 = x_start.max(0) as usize;
                let x1 = ((x_start + self.filter.1 as isize).min(w as isize)).max(0) as usize;
                px.fill(match self.kind {
                    PoolKind::Max => f32::NEG_INFINITY,
                    PoolKind::Average => 0.0,
                });
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let src = &input.data[((b * h + iy) * w + ix) * c..][..c];
                        match self.kind {
                            PoolKind::Max => {
                                px.iter_mut().zip(src).for_each(|(a, &x)| *a = a.max(x))
                            }
                            PoolKind::Average => px.iter_mut().zip(src).for_each(|(a, &x)| *a += x),
                        }
                    }
                }
                let count = ((y1 - y0) * (x1 - x0)) as f32;
                for v in px.iter_mut() {
                    if self.kind == PoolKind::Average {
                        *v /= count;
                    }
                    *v = self.activation.apply_scalar(*v);
                }
            }
        });
        Ok(Array::new(vec![batch, oh, ow, c], out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_and_average_ignore_padding() {
        // 1x3x3x1 input 1..9, 2x2 window stride 2 SAME -> out 2x2, one padding row/col after.
        let input = Array::new(vec![1, 3, 3, 1], (1..=9).map(|v| v as f32).collect());
        let mut pool = Pool2d {
            kind: PoolKind::Max,
            filter: (2, 2),
            stride: (2, 2),
            padding: Padding::Same,
            activation: Activation::None,
        };
        assert_eq!(pool.run(&input).unwrap().data, vec![5.0, 6.0, 8.0, 9.0]);
        pool.kind = PoolKind::Average;
        assert_eq!(pool.run(&input).unwrap().data, vec![3.0, 4.5, 7.5, 9.0]);
        pool.padding = Padding::Valid;
        assert_eq!(pool.run(&input).unwrap().data, vec![3.0]);
    }
}
