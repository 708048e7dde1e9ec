//! DEPTHWISE_CONV_2D in NHWC. Output channel `o` reads input channel `o / multiplier`;
//! weights are `[1, kh, kw, out_channels]`. Each task computes one output row, walking the
//! filter taps outermost so the innermost loop runs over contiguous channels.

use super::parallel::for_each_row;

use super::activation::Activation;
use super::taps::{accumulate_row, TapTiles, Window};
use crate::tflite::array::Array;
use crate::tflite::padding::{source_index, spatial_windows, Padding};

#[derive(Debug, Clone)]
pub struct DepthwiseConv2d {
    /// `[kh][kw][out_channels]`.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub multiplier: usize,
    pub out_channels: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub padding: Padding,
    /// `[(top, bottom), (left, right)]` zero padding of a PAD folded into this layer
    /// (overrides `padding`).
    pub explicit_padding: Option<[(usize, usize); 2]>,
    pub activation: Activation,
    /// The weights laid out for the SIMD row kernel (multiplier 1).
    tiles: TapTiles,
}

impl DepthwiseConv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        weights: Vec<f32>,
        bias: Vec<f32>,
        kernel: (usize, usize),
        multiplier: usize,
        out_channels: usize,
        stride: (usize, usize),
        dilation: (usize, usize),
        padding: Padding,
        activation: Activation,
    ) -> Self {
        let tiles = TapTiles::new(&weights, out_channels);
        DepthwiseConv2d {
            weights,
            bias,
            kernel_h: kernel.0,
            kernel_w: kernel.1,
            multiplier,
            out_channels,
            stride,
            dilation,
            padding,
            explicit_padding: None,
            activation,
            tiles,
        }
    }

    /// Depth multiplier > 1: output channel `o` reads input channel `o / multiplier`.
    fn accumulate_row_multiplied(&self, dst: &mut [f32], image: &[f32], oy: usize, g: &Window) {
        let c = self.out_channels / self.multiplier;
        for ky in 0..self.kernel_h {
            let Some(iy) = source_index(oy, ky, g.stride.0, g.dilation.0, g.y.pad_before, g.h)
            else {
                continue;
            };
            for kx in 0..self.kernel_w {
                let taps = &self.weights[(ky * self.kernel_w + kx) * self.out_channels..]
                    [..self.out_channels];
                for (ox, px) in dst.chunks_exact_mut(self.out_channels).enumerate() {
                    let Some(ix) =
                        source_index(ox, kx, g.stride.1, g.dilation.1, g.x.pad_before, g.w)
                    else {
                        continue;
                    };
                    let src = &image[(iy * g.w + ix) * c..][..c];
                    for (o, (acc, &t)) in px.iter_mut().zip(taps).enumerate() {
                        *acc += src[o / self.multiplier] * t;
                    }
                }
            }
        }
    }

    pub fn run(&self, input: &Array) -> Result<Array, String> {
        let (batch, h, w, c) = input
            .nhwc()
            .ok_or_else(|| format!("input must be NHWC, got shape {:?}", input.shape))?;
        if c * self.multiplier != self.out_channels {
            return Err(format!(
                "input has {c} channels; with depth multiplier {} the filter's {} output channels do not match",
                self.multiplier, self.out_channels
            ));
        }
        let (wy, wx) = spatial_windows(
            self.padding,
            self.explicit_padding,
            (h, w),
            (self.kernel_h, self.kernel_w),
            self.stride,
            self.dilation,
        )?;
        let (oh, ow, oc) = (wy.out, wx.out, self.out_channels);
        let mut out = vec![0.0f32; batch * oh * ow * oc];
        let window = Window {
            h,
            w,
            kernel: (self.kernel_h, self.kernel_w),
            stride: self.stride,
            dilation: self.dilation,
            y: wy,
            x: wx,
        };
        let work = ow * oc * self.kernel_h * self.kernel_w;
        for_each_row(&mut out, ow * oc, work, |row, dst| {
            let (b, oy) = (row / oh, row % oh);
            for px in dst.chunks_exact_mut(oc) {
                px.copy_from_slice(&self.bias);
            }
            let image = &input.data[b * h * w * c..][..h * w * c];
            if self.multiplier == 1 {
                accumulate_row(dst, image, oy, &window, &self.tiles);
            } else {
                self.accumulate_row_multiplied(dst, image, oy, &window);
            }
            self.activation.apply_serial(dst);
        });
        Ok(Array::new(vec![batch, oh, ow, oc], out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * f).cos()).collect()
    }

    /// Direct evaluation of the definition.
    fn naive(d: &DepthwiseConv2d, input: &Array) -> Array {
        let (batch, h, w, c) = input.nhwc().unwrap();
        let (wy, wx) = spatial_windows(
            d.padding,
            d.explicit_padding,
            (h, w),
            (d.kernel_h, d.kernel_w),
            d.stride,
            d.dilation,
        )
        .unwrap();
        let mut out = Array::zeros(vec![batch, wy.out, wx.out, d.out_channels]);
        for b in 0..batch {
            for oy in 0..wy.out {
                for ox in 0..wx.out {
                    for o in 0..d.out_channels {
                        let mut acc = d.bias[o];
                        for ky in 0..d.kernel_h {
                            for kx in 0..d.kernel_w {
                                let iy = (oy * d.stride.0 + ky * d.dilation.0) as isize
                                    - wy.pad_before as isize;
                                let ix = (ox * d.stride.1 + kx * d.dilation.1) as isize
                                    - wx.pad_before as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let x = input.data[((b * h + iy as usize) * w + ix as usize) * c
                                    + o / d.multiplier];
                                acc += x * d.weights[(ky * d.kernel_w + kx) * d.out_channels + o];
                            }
                        }
                        out.data[((b * wy.out + oy) * wx.out + ox) * d.out_channels + o] =
                            d.activation.apply_scalar(acc);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_including_depth_multiplier() {
        for &(k, stride, multiplier, padding, dilation) in &[
            (3, (1, 1), 1, Padding::Same, (1, 1)),
            (5, (2, 2), 1, Padding::Same, (1, 1)),
            (3, (2, 2), 1, Padding::Valid, (1, 1)),
            (3, (1, 1), 2, Padding::Same, (1, 1)),
            (3, (2, 1), 3, Padding::Valid, (1, 2)),
        ] {
            let c = 4;
            let oc = c * multiplier;
            let d = DepthwiseConv2d::new(
                wave(k * k * oc, 0.9),
                wave(oc, 2.1),
                (k, k),
                multiplier,
                oc,
                stride,
                dilation,
                padding,
                Activation::Relu,
            );
            let input = Array::new(vec![1, 11, 10, c], wave(11 * 10 * c, 0.21));
            let fast = d.run(&input).unwrap();
            let slow = naive(&d, &input);
            assert_eq!(fast.shape, slow.shape);
            for (a, b) in fast.data.iter().zip(&slow.data) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "k{k} {stride:?} m{multiplier}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn explicit_padding_equals_valid_on_zero_padded_input() {
        for (c, k, stride) in [(8, 3, (1, 1)), (32, 5, (2, 2)), (24, 3, (2, 2))] {
            let mut d = DepthwiseConv2d::new(
                wave(k * k * c, 0.9),
                wave(c, 2.1),
                (k, k),
                1,
                c,
                stride,
                (1, 1),
                Padding::Valid,
                Activation::Relu6,
            );
            let input = Array::new(vec![1, 12, 11, c], wave(12 * 11 * c, 0.21));
            let pads = [(1, 2), (2, 2)];
            let padded =
                crate::tflite::kernels::shape::pad(&input, &[(0, 0), pads[0], pads[1], (0, 0)])
                    .unwrap();
            let want = d.run(&padded).unwrap();
            d.explicit_padding = Some(pads);
            let got = d.run(&input).unwrap();
            assert_eq!(got.shape, want.shape);
            for (a, b) in got.data.iter().zip(&want.data) {
                assert!((a - b).abs() < 1e-5, "c{c} k{k} {stride:?}: {a} vs {b}");
            }
        }
    }
}
