//! CONV_2D in NHWC: im2col (skipped for 1×1 stride-1 convs, which are a plain matmul) then
//! one GEMM against the OHWI weights, bias folded into the GEMM's output.

use rayon::prelude::*;

use super::activation::Activation;
use super::gemm::matmul_bt;
use crate::preprocess::tflite::array::Array;
use crate::preprocess::tflite::padding::{axis_window, Padding};

/// Static parameters of one CONV_2D, weights kept in TFLite's OHWI order which is already
/// the `[out_channels × (kh·kw·in_channels)]` matrix the im2col rows multiply.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub in_channels: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub padding: Padding,
    pub activation: Activation,
}

impl Conv2d {
    pub fn run(&self, input: &Array) -> Result<Array, String> {
        let (batch, h, w, c) = input
            .nhwc()
            .ok_or_else(|| format!("input must be NHWC, got shape {:?}", input.shape))?;
        if c != self.in_channels {
            return Err(format!(
                "input has {c} channels, the filter expects {}",
                self.in_channels
            ));
        }
        let wy = axis_window(
            self.padding,
            h,
            self.kernel_h,
            self.stride.0,
            self.dilation.0,
        )
        .ok_or_else(|| {
            format!(
                "filter {}x{} does not fit input {h}x{w}",
                self.kernel_h, self.kernel_w
            )
        })?;
        let wx = axis_window(
            self.padding,
            w,
            self.kernel_w,
            self.stride.1,
            self.dilation.1,
        )
        .ok_or_else(|| {
            format!(
                "filter {}x{} does not fit input {h}x{w}",
                self.kernel_h, self.kernel_w
            )
        })?;
        let (oh, ow) = (wy.out, wx.out);
        let k = self.kernel_h * self.kernel_w * c;
        let m = batch * oh * ow;
        let mut out = vec![0.0f32; m * self.out_channels];
        let pointwise = self.kernel_h == 1 && self.kernel_w == 1 && self.stride == (1, 1);
        let bias = Some(&self.bias[..]);
        if pointwise {
            matmul_bt(
                &input.data,
                &self.weights,
                bias,
                &mut out,
                m,
                k,
                self.out_channels,
            );
        } else {
            let mut cols = vec![0.0f32; m * k];
            let (sy, sx) = self.stride;
            let (dy, dx) = self.dilation;
            // One output row (all ox, all patch entries) per task; padding cells stay zero.
            cols.par_chunks_mut(ow * k)
                .enumerate()
                .for_each(|(row, dst)| {
                    let (b, oy) = (row / oh, row % oh);
                    for ky in 0..self.kernel_h {
                        let iy = (oy * sy + ky * dy) as isize - wy.pad_before as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let src_row = &input.data[((b * h + iy as usize) * w) * c..][..w * c];
                        for ox in 0..ow {
                            for kx in 0..self.kernel_w {
                                let ix = (ox * sx + kx * dx) as isize - wx.pad_before as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let at = ox * k + (ky * self.kernel_w + kx) * c;
                                dst[at..at + c].copy_from_slice(&src_row[ix as usize * c..][..c]);
                            }
                        }
                    }
                });
            matmul_bt(
                &cols,
                &self.weights,
                bias,
                &mut out,
                m,
                k,
                self.out_channels,
            );
        }
        self.activation.apply(&mut out);
        Ok(Array::new(vec![batch, oh, ow, self.out_channels], out))
    }
}

/// Direct (slow, obvious) convolution used to check the fast path in tests.
#[cfg(test)]
pub fn conv2d_naive(conv: &Conv2d, input: &Array) -> Array {
    let (batch, h, w, c) = input.nhwc().unwrap();
    let wy = axis_window(
        conv.padding,
        h,
        conv.kernel_h,
        conv.stride.0,
        conv.dilation.0,
    )
    .unwrap();
    let wx = axis_window(
        conv.padding,
        w,
        conv.kernel_w,
        conv.stride.1,
        conv.dilation.1,
    )
    .unwrap();
    let mut out = Array::zeros(vec![batch, wy.out, wx.out, conv.out_channels]);
    for b in 0..batch {
        for oy in 0..wy.out {
            for ox in 0..wx.out {
                for o in 0..conv.out_channels {
                    let mut acc = conv.bias[o];
                    for ky in 0..conv.kernel_h {
                        for kx in 0..conv.kernel_w {
                            let iy = (oy * conv.stride.0 + ky * conv.dilation.0) as isize
                                - wy.pad_before as isize;
                            let ix = (ox * conv.stride.1 + kx * conv.dilation.1) as isize
                                - wx.pad_before as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            for i in 0..c {
                                let x =
                                    input.data[((b * h + iy as usize) * w + ix as usize) * c + i];
                                acc += x * conv.weights
                                    [((o * conv.kernel_h + ky) * conv.kernel_w + kx) * c + i];
                            }
                        }
                    }
                    out.data[((b * wy.out + oy) * wx.out + ox) * conv.out_channels + o] =
                        conv.activation.apply_scalar(acc);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * f).sin()).collect()
    }

    #[test]
    fn matches_naive_for_strides_paddings_dilations() {
        for &(kh, kw, stride, dilation, padding) in &[
            (1, 1, (1, 1), (1, 1), Padding::Same),
            (1, 1, (2, 2), (1, 1), Padding::Valid),
            (3, 3, (2, 2), (1, 1), Padding::Same),
            (3, 3, (3, 3), (1, 1), Padding::Valid),
            (5, 5, (2, 2), (1, 1), Padding::Same),
            (2, 2, (1, 1), (1, 1), Padding::Valid),
            (3, 2, (1, 2), (2, 1), Padding::Same),
        ] {
            let (c, o) = (3, 4);
            let conv = Conv2d {
                weights: wave(o * kh * kw * c, 0.7),
                bias: wave(o, 1.3),
                out_channels: o,
                kernel_h: kh,
                kernel_w: kw,
                in_channels: c,
                stride,
                dilation,
                padding,
                activation: Activation::Relu6,
            };
            let input = Array::new(vec![2, 9, 8, c], wave(2 * 9 * 8 * c, 0.3));
            let fast = conv.run(&input).unwrap();
            let slow = conv2d_naive(&conv, &input);
            assert_eq!(fast.shape, slow.shape);
            for (a, b) in fast.data.iter().zip(&slow.data) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{kh}x{kw} {stride:?} {padding:?}: {a} vs {b}"
                );
            }
        }
    }
}
